#!/usr/bin/env python
"""Publish a trained recommender on the Hugging Face Hub: config, weights (without the frozen LM, which the config
names), model code, processor, item catalog and model card, in one commit.

    python examples/push_to_hub.py --checkpoint_dir outputs/stage2 --repo_id my-name/a-llmrec-ml-100k --dry_run
    python examples/push_to_hub.py --checkpoint_dir outputs/stage2 --repo_id my-name/a-llmrec-ml-100k

`--dry_run` checks the folder and lists what would be uploaded, without a network call. The upload uses the token
stored by `hf auth login` (or `HF_TOKEN`). Everything is checked first (`allmrec_hf.hub.prepare_upload`): the
folder must be a stage-2 checkpoint that names its LM by a Hub id and holds none of its weights, with its
processor and catalog; Trainer checkpoints, logs and `all_results.json` are left out. Afterwards the repo loads by
its id, with this package (`ALLMRecForConditionalGeneration.from_pretrained(repo_id)`) or without it
(`AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True)`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from allmrec_hf.hub import DEFAULT_COMMIT_MESSAGE, prepare_upload, push_to_hub
from allmrec_hf.training.runs import parse_arguments, run_script

logger = logging.getLogger("push_to_hub")


@dataclass
class PushArguments:
    checkpoint_dir: str = field(metadata={"help": "The recommender: an output folder of examples/train_stage2.py."})
    repo_id: str = field(metadata={"help": "The Hub repo, 'name' or 'org/name' (created if needed)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (an existing one keeps its own)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (default: main)."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    commit_message: str = field(default=DEFAULT_COMMIT_MESSAGE, metadata={"help": "The commit message."})
    dry_run: bool = field(default=False, metadata={"help": "Check the folder and list the files; upload nothing."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_arguments((PushArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    upload = prepare_upload(args.checkpoint_dir, args.repo_id)
    sizes = {path: os.path.getsize(local) for path, local in upload.files.items()}
    sizes["README.md"] = len(str(upload.model_card).encode("utf-8"))
    print(f"{len(sizes)} files for {args.repo_id} (base LM, not uploaded: {upload.base_model_name_or_path}):")
    for path in upload.paths_in_repo():
        print(f"  {path} ({sizes[path]:,} bytes)")
    result = {"repo_id": args.repo_id, "files": upload.paths_in_repo(), "commit_url": None}
    if args.dry_run:
        print("Dry run: nothing uploaded.")
        return result
    commit = push_to_hub(
        args.repo_id,
        args.checkpoint_dir,
        private=args.private or None,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
    )
    result["commit_url"] = commit.commit_url
    print(f"Uploaded: {commit.pr_url or commit.commit_url}")
    return result


if __name__ == "__main__":
    run_script(main)
