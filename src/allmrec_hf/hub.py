"""Publishing a trained recommender on the Hugging Face Hub: config, weights without the frozen LM, model code,
processor (both tokenizers), item catalog and model card, in one commit.

    from allmrec_hf.hub import push_to_hub

    push_to_hub("my-name/a-llmrec-movies", "outputs/stage2")  # a folder written by examples/train_stage2.py
    push_to_hub("my-name/a-llmrec-movies", model=model, processor=processor)  # or the objects in memory

The checkpoint is checked before anything is sent (`prepare_upload`): an A-LLMRec recommender whose weights hold
no LM weights and whose config names the LM by its Hub id, with its processor, catalog and model code, and a
model card whose `base_model` is that LM. The upload itself is `HfApi.create_repo` and one `HfApi.create_commit`.
What a training run leaves next to the model (Trainer checkpoints, TensorBoard logs, `all_results.json` with its
local paths) stays home. The repo then loads by its id, like the folder did:

    model = ALLMRecForConditionalGeneration.from_pretrained("my-name/a-llmrec-movies")  # with allmrec_hf
    model = AutoModelForCausalLM.from_pretrained("my-name/a-llmrec-movies", trust_remote_code=True)  # without

`examples/push_to_hub.py` is the command-line version (`--dry_run` lists the files without uploading).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard

from .catalog import CATALOG_FILE_NAME, ItemCatalog
from .model_card import CARD_FILE, _is_hub_id, build_model_card
from .version import __version__

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PROCESSOR_CONFIG_FILE = "processor_config.json"
LANGUAGE_MODEL_PREFIX = "language_model."
TEXT_ENCODER_TOKENIZER_SUBFOLDER = "text_encoder_tokenizer"
DEFAULT_COMMIT_MESSAGE = "Upload A-LLMRec recommender"
# What a training run leaves in its output folder besides the recommender; matched against every component of a
# file's path, so a whole `checkpoint-500/` or `runs/` folder stays out.
EXCLUDED_PATTERNS = (
    "checkpoint-*",  # Trainer checkpoints: optimizer, scheduler and RNG state
    "runs",  # TensorBoard logs
    "all_results.json",  # the run's results, with local paths
    "train_results.json",
    "eval_results.json",
    "trainer_state.json",
    "training_args.bin",
    "*.tmp",
    ".*",  # .cache/, .git/, editor files
)
# The sentence at the end of the model card's loading snippet (model_cards/model_card_template.md).
_CARD_CHECKPOINT_LINE = re.compile(
    r"^checkpoint = (?P<quote>['\"]).*?(?P=quote)(?P<comment>  # this folder, or the Hub repo it was uploaded to)$",
    re.MULTILINE,
)


@dataclass
class HubUpload:
    """What `push_to_hub` sends: `files` maps each path in the repo to its local file; `model_card` is the card
    (the folder's own `README.md` with its loading code pointed at `repo_id`, or a new one)."""

    repo_id: str
    checkpoint_dir: str
    files: dict[str, str]
    model_card: ModelCard
    base_model_name_or_path: str

    def operations(self) -> list[CommitOperationAdd]:
        """The commit: every file, and the card as `README.md`."""
        ops = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=local)
            for path, local in sorted(self.files.items())
            if path != CARD_FILE
        ]
        ops.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(self.model_card).encode("utf-8")))
        return ops

    def paths_in_repo(self) -> list[str]:
        """Every path the repo will hold after the commit, sorted."""
        return sorted({*self.files, CARD_FILE})


def prepare_upload(checkpoint_dir: str | os.PathLike, repo_id: str) -> HubUpload:
    """Check that `checkpoint_dir` is a publishable A-LLMRec recommender and list what to upload to `repo_id`.

    Raises `ValueError` naming every problem: not a stage-2 checkpoint, LM weights in it (a self-contained copy),
    an LM named by a local path (nobody else could load it), missing processor, catalog or model code, a catalog
    that does not fit the CF model, or a model card whose `base_model` is not the LM of `config.json`. A folder
    without a card gets one (`allmrec_hf.model_card.build_model_card`).
    """
    folder = os.fspath(checkpoint_dir)
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(f"{folder} holds no {CONFIG_FILE}: not a saved checkpoint.")
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    if config.get("model_type") != "allmrec":
        raise ValueError(
            f"{folder} is not an A-LLMRec recommender (model_type {config.get('model_type')!r}): push the output "
            "folder of examples/train_stage2.py."
        )
    files = _published_files(folder)
    problems = []
    base_model = config.get("base_model_name_or_path")
    if config.get("language_model_included"):
        problems.append(
            "it is a self-contained copy (saved with include_language_model=True): the LM's weights would be "
            "uploaded; publish the checkpoint saved without them, which names its LM instead"
        )
    if not base_model:
        problems.append("config.json does not name its LM (base_model_name_or_path is empty)")
    elif not _is_hub_id(base_model):
        problems.append(
            f"config.json names its LM by a local path ({base_model!r}) that nobody else can load: set "
            "model.config.base_model_name_or_path to the LM's Hub id and save the checkpoint again"
        )
    problems += _weight_problems(folder, files)
    problems += _code_problems(folder, config, files)
    problems += _processor_problems(folder, config, files)
    adapter = config.get("lm_adapter_subfolder")
    if adapter:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if f"{adapter}/{name}" not in files:
                problems.append(f"config.json names a LoRA adapter in {adapter}/ but {adapter}/{name} is missing")
    card = None
    if not problems:
        card = _model_card(folder, repo_id, files)
        card_base = card.data.base_model
        if (card_base if isinstance(card_base, str) else (card_base or [None])[0]) != base_model:
            problems.append(
                f"the model card's base_model is {card_base!r} but config.json names the LM {base_model!r}: fix the "
                f"card ({CARD_FILE}) or delete it to have a new one written"
            )
    if problems:
        raise ValueError(f"{folder} cannot be pushed to the Hub:\n- " + "\n- ".join(problems))
    return HubUpload(repo_id, folder, files, card, base_model)


def push_to_hub(
    repo_id: str,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    model=None,
    processor=None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Upload a trained recommender (config, weights without the LM, model code, processor, catalog, model card)
    to the Hub repo `repo_id` in one commit; the repo is created if needed.

    Args:
        repo_id: `"name"` or `"org/name"`.
        checkpoint_dir: A folder written by `examples/train_stage2.py` (or `model.save_pretrained` +
            `processor.save_pretrained`, with or without a card). Give it or `model`, not both.
        model: An `ALLMRecForConditionalGeneration` to save and push with `processor` (required with it); the card
            is built from the model.
        processor: The model's `ALLMRecProcessor`.
        commit_message, commit_description: The commit's text.
        private: Create the repo private (an existing repo keeps its visibility).
        token: A Hub token (default: the one `hf auth login` stored).
        revision: The branch to push to (created if needed).
        create_pr: Open a pull request instead of committing to the branch.

    Returns:
        The `huggingface_hub.CommitInfo` of the commit.
    """
    if (checkpoint_dir is None) == (model is None):
        raise ValueError("Pass either checkpoint_dir (a saved recommender) or model= and processor=, not both.")
    if model is not None:
        if processor is None:
            raise ValueError("push_to_hub(model=...) needs processor= too: the recommender is unusable without it.")
        model.check_processor(processor)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            build_model_card("recommender", folder, model=model, model_id=repo_id).save(os.path.join(folder, CARD_FILE))
            return push_to_hub(
                repo_id,
                folder,
                commit_message=commit_message,
                commit_description=commit_description,
                private=private,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    upload = prepare_upload(checkpoint_dir, repo_id)  # every check before the first request
    api = HfApi(library_name="allmrec-hf", library_version=__version__)
    created = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if created != repo_id:  # "name" became "user/name": the card's loading code says so
        upload = prepare_upload(checkpoint_dir, created)
    if revision is not None and not create_pr and not revision.startswith("refs/"):
        api.create_branch(repo_id=created, branch=revision, token=token, exist_ok=True)
    logger.info("Uploading %d files to %s: %s", len(upload.files) + 1, created, ", ".join(upload.paths_in_repo()))
    return api.create_commit(
        repo_id=created,
        operations=upload.operations(),
        commit_message=commit_message,
        commit_description=commit_description,
        token=token,
        revision=revision,
        create_pr=create_pr,
    )


# ============================================================================================== internals
def _published_files(folder: str) -> dict[str, str]:
    """Every file of `folder` (recursively) except what `EXCLUDED_PATTERNS` leaves out: path in repo -> local."""
    files = {}
    root = Path(folder)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(fnmatch.fnmatch(part, pattern) for part in relative.parts for pattern in EXCLUDED_PATTERNS):
            continue
        if path.is_file():
            files[relative.as_posix()] = str(path)
    return files


def _weight_problems(folder: str, files: dict[str, str]) -> list[str]:
    from safetensors import safe_open

    weights = [path for path in files if "/" not in path and path.endswith(".safetensors")]
    if not weights:
        return ["no model weights (model.safetensors)"]
    problems = []
    for path in weights:
        with safe_open(files[path], "pt") as handle:
            lm_keys = [key for key in handle.keys() if key.startswith(LANGUAGE_MODEL_PREFIX)]
        if lm_keys:
            problems.append(f"{path} holds {len(lm_keys)} weights of the frozen LM (e.g. {lm_keys[0]})")
    for path in files:
        if "/" not in path and path.endswith((".bin", ".pt", ".pth", ".ckpt")):
            problems.append(f"{path}: pickled weights are not published (the checkpoint is model.safetensors)")
    return problems


def _code_problems(folder: str, config: dict, files: dict[str, str]) -> list[str]:
    """The model code that `trust_remote_code=True` loads: the modules `auto_map` names and what they import."""
    auto_map = config.get("auto_map") or {}
    if "AutoModelForCausalLM" not in auto_map:
        return ["config.json has no auto_map for AutoModelForCausalLM: it would not load with trust_remote_code=True"]
    wanted = [reference.split(".")[0] for reference in auto_map.values()]
    seen, problems = set(), []
    while wanted:
        module = wanted.pop()
        if module in seen:
            continue
        seen.add(module)
        if f"{module}.py" not in files:
            problems.append(f"the model code {module}.py is missing")
            continue
        source = Path(files[f"{module}.py"]).read_text(encoding="utf-8")
        wanted += re.findall(r"^\s*from \.(\w+) import", source, flags=re.MULTILINE)
    return problems


def _processor_problems(folder: str, config: dict, files: dict[str, str]) -> list[str]:
    text_encoder_tokenizer = f"{TEXT_ENCODER_TOKENIZER_SUBFOLDER}/tokenizer_config.json"
    needed = (PROCESSOR_CONFIG_FILE, "tokenizer_config.json", text_encoder_tokenizer)
    missing = [path for path in needed if path not in files]
    if missing:
        return [f"the processor is missing ({', '.join(missing)}): save it with processor.save_pretrained(folder)"]
    if CATALOG_FILE_NAME not in files:
        return [f"the item catalog is missing ({CATALOG_FILE_NAME}): the processor was saved without one"]
    problems = []
    num_items = ((config.get("aligner_config") or {}).get("cf_config") or {}).get("num_items")
    catalog_items = ItemCatalog.load(files[CATALOG_FILE_NAME]).num_items
    if num_items is not None and catalog_items != num_items:
        problems.append(f"{CATALOG_FILE_NAME} has {catalog_items} items but the CF model has {num_items}")
    return problems


def _model_card(folder: str, repo_id: str, files: dict[str, str]) -> ModelCard:
    """The folder's card with its loading code pointed at the repo, or a new card."""
    if CARD_FILE not in files:
        logger.info("%s has no model card: writing one for the upload.", folder)
        return build_model_card("recommender", folder, model_id=repo_id)
    card = ModelCard.load(files[CARD_FILE])
    card.text = _CARD_CHECKPOINT_LINE.sub(
        lambda match: f"checkpoint = {repo_id!r}{match.group('comment')}", card.text, count=1
    )
    return card


__all__ = ["EXCLUDED_PATTERNS", "HubUpload", "prepare_upload", "push_to_hub"]
