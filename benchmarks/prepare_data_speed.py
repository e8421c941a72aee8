#!/usr/bin/env python
"""Benchmark: prepare a synthetic log of 10 million interactions (1 million users, 100,000 items).

Target (issue "Data"): read, filter, split and sample 19 negatives per test user in at most 120 s on 2 cores,
with peak memory under 6 GB. The log is written to a temporary Parquet file first (not timed); preparation then
runs in a fresh process so its peak resident memory is its own. Prints each phase's time and the ratios to the
targets, measured in this run.

    python benchmarks/prepare_data_speed.py                       # the full 10M-interaction run
    python benchmarks/prepare_data_speed.py --interactions 1000000 --users 100000 --items 10000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TIME_TARGET_S = 120.0
MEMORY_TARGET_GB = 6.0


def generate(path: str, item_path: str, interactions: int, users: int, items: int, seed: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, size=interactions)
    item = (items * rng.random(interactions) ** 2).astype(np.int64)  # skewed popularity, like real logs
    table = pa.table(
        {
            "user_id": pa.array(np.char.add("U", user.astype("U7"))),
            "item_id": pa.array(np.char.add("B", item.astype("U6"))),
            "rating": pa.array(rng.integers(1, 6, size=interactions).astype(np.float64)),
            "timestamp": pa.array(rng.integers(1_000_000_000, 1_700_000_000, size=interactions)),
        }
    )
    pq.write_table(table, path)
    ids = np.arange(items)
    pq.write_table(
        pa.table({"item_id": np.char.add("B", ids.astype("U6")), "title": np.char.add("Product ", ids.astype("U6"))}),
        item_path,
    )


def prepare(path: str, item_path: str, output_dir: str, min_interactions: int) -> dict:
    """Runs in the child process; returns phase timings and this process's peak memory."""
    import logging

    from allmrec_hf.data import prepare_dataset
    from allmrec_hf.data.readers import read_table

    logging.basicConfig(level=logging.WARNING)
    timings = {}
    start = time.perf_counter()
    log = read_table(path, item_path=item_path)
    timings["read"] = time.perf_counter() - start
    mark = time.perf_counter()
    data = prepare_dataset(log, min_interactions=min_interactions, kcore="iterative", num_negatives=19, seed=0)
    timings["filter_split_sample"] = time.perf_counter() - mark
    mark = time.perf_counter()
    data.save(output_dir)
    timings["save"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    peak_kb = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
    return {
        "timings_s": timings,
        "peak_rss_gb": peak_kb / 1024**2,
        "statistics": data.statistics(),
        "split_rows": data.metadata["split_rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--min_interactions", type=int, default=5, help="iterative k-core threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, item_path, output_dir, k = args.child
        print(json.dumps(prepare(path, item_path, output_dir, int(k))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path, item_path = os.path.join(tmp, "log.parquet"), os.path.join(tmp, "items.parquet")
        start = time.perf_counter()
        generate(path, item_path, args.interactions, args.users, args.items, args.seed)
        print(f"generated {args.interactions:,} interactions in {time.perf_counter() - start:.1f} s (not timed)")
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                path,
                item_path,
                os.path.join(tmp, "prepared"),
                str(args.min_interactions),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
    t, peak = result["timings_s"], result["peak_rss_gb"]
    print(f"log: {args.interactions:,} interactions, {args.users:,} users, {args.items:,} items; {os.cpu_count()} CPUs")
    print(f"after {args.min_interactions}-core: {result['statistics']}; split rows {result['split_rows']}")
    for phase, seconds in t.items():
        print(f"  {phase:<22} {seconds:7.1f} s")
    print(
        f"time:   {t['total']:.1f} s = {t['total'] / TIME_TARGET_S:.2f} x the {TIME_TARGET_S:.0f} s target "
        f"({'OK' if t['total'] <= TIME_TARGET_S else 'MISSED'})"
    )
    print(
        f"memory: {peak:.2f} GB peak RSS = {peak / MEMORY_TARGET_GB:.2f} x the {MEMORY_TARGET_GB:.0f} GB target "
        f"({'OK' if peak <= MEMORY_TARGET_GB else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
