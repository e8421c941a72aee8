#!/usr/bin/env python
"""Benchmark: recommending for many users with `examples/recommend.py` (1 and 2 processes) against calling
`model.recommend()` user by user, top `--k` over the whole catalog, on the same users in one run.

Modes, each on the same `--num_users` users (the first ones of the prepared dataset, whole sequences):

- `recommend() user by user`: `model.recommend(processor, [history], k)` in a loop, one LM forward per call (what
  a hand-written serving loop does), in this process with torch's own thread count;
- `recommend.py, 1 process`: the batch job (`--batch_size` users per forward, shards, manifest), its scoring time
  as the job reports it in `manifest.json` (model loading excluded, as for the loop);
- `recommend.py, N processes`: the same under `torchrun --nproc_per_node N` (`--processes`), each process with
  `cores / N` threads; the slowest process's time.

Prints users/s and each mode's ratio to the loop, and the share of users each mode gave the loop's items (in bf16,
batching users changes sums in the last bits, which can swap two items with nearly equal scores).

    python benchmarks/batch_recommend.py --model_path outputs/ranking_head --dataset_dir outputs/data/ml-100k
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "recommend.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="a ranking-head checkpoint (train_ranking_head.py)")
    parser.add_argument("--dataset_dir", required=True, help="a prepared dataset whose users are recommended for")
    parser.add_argument("--num_users", type=int, default=200, help="the first N users of the dataset")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=16, help="users per forward in the batch job")
    parser.add_argument("--processes", type=int, default=2, help="processes of the multi-process run")
    parser.add_argument("--lm_dtype", default="bfloat16")
    parser.add_argument("--output_json", default=None)
    return parser.parse_args(argv)


def user_histories(dataset_dir: str, num_users: int) -> tuple[list[str], list[list[str]]]:
    from allmrec_hf.data import PreparedDataset

    data = PreparedDataset.load(dataset_dir)
    _, items, offsets = data.sequences()
    count = min(num_users, data.num_users)
    histories = [[data.catalog.item_id(int(i)) for i in items[offsets[u] : offsets[u + 1]]] for u in range(count)]
    return list(data.user_ids[:count]), histories


def run_job(args, histories_path: str, output_dir: str, processes: int) -> dict:
    command = [sys.executable, SCRIPT] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
        str(29500 + os.getpid() % 1000), SCRIPT,
    ]  # fmt: skip
    command += ["--model_path", args.model_path, "--histories_path", histories_path, "--output_dir", output_dir]
    command += ["--k", str(args.k), "--batch_size", str(args.batch_size), "--lm_dtype", args.lm_dtype]
    command += ["--keep_seen", "false"]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    if processes > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or processes) // processes))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(output_dir, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def recommend_script():
    """examples/recommend.py as a module, loaded from its file: putting examples/ on sys.path would let
    examples/evaluate.py shadow the `evaluate` package for everything imported later in this process."""
    spec = importlib.util.spec_from_file_location("allmrec_examples_recommend", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def job_items(output_dir: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in recommend_script().read_recommendations(output_dir).to_pylist():
        out.setdefault(row["user"], []).append(row["item_id"])
    return out


@torch.no_grad()
def loop(args, users: list[str], histories: list[list[str]]) -> tuple[float, dict[str, list[str]]]:
    from allmrec_hf import ALLMRecForItemRanking, ALLMRecProcessor

    model = ALLMRecForItemRanking.from_pretrained(args.model_path, dtype=getattr(torch, args.lm_dtype)).eval()
    processor = ALLMRecProcessor.from_pretrained(args.model_path)
    indices = [processor.catalog.indices(h) for h in histories]
    model.recommend(processor, indices[:1], k=args.k)  # warm-up
    start = time.perf_counter()
    results = {user: [r["item_id"] for r in model.recommend(processor, [h], k=args.k)[0]]
               for user, h in zip(users, indices, strict=True)}  # fmt: skip
    return time.perf_counter() - start, results


def main(argv=None) -> dict:
    args = parse_args(argv)
    users, histories = user_histories(args.dataset_dir, args.num_users)
    with tempfile.TemporaryDirectory() as tmp:
        histories_path = os.path.join(tmp, "histories.jsonl")
        with open(histories_path, "w", encoding="utf-8") as handle:
            for user, history in zip(users, histories, strict=True):
                handle.write(json.dumps({"user": user, "history": history}) + "\n")
        seconds, expected = loop(args, users, histories)
        modes = {"recommend() user by user": {"users_per_second": round(len(users) / seconds, 2), "seconds": seconds}}
        agree = {}
        for processes in (1, args.processes):
            name = f"recommend.py, {processes} process{'es' if processes > 1 else ''}"
            output = os.path.join(tmp, f"out{processes}")
            manifest = run_job(args, histories_path, output, processes)
            modes[name] = dict(manifest["this_run"])
            got = job_items(output)
            agree[name] = round(sum(got.get(user) == items for user, items in expected.items()) / len(expected), 4)
    base = modes["recommend() user by user"]["users_per_second"]
    for figures in modes.values():
        figures["vs_loop"] = round(figures["users_per_second"] / base, 2)
    command = "python benchmarks/batch_recommend.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "users": len(users),
        "k": args.k,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "modes": modes,
        "share_of_users_with_the_loops_items": agree,
        "command": command,
    }
    print(f"{'mode':<28} {'users/s':>9} {'x loop':>7}")
    for name, figures in modes.items():
        print(f"{name:<28} {figures['users_per_second']:>9.2f} {figures['vs_loop']:>7.2f}")
    print(f"share of users given the same items as the loop (batching changes bf16 sums slightly): {agree}")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
