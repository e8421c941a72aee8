#!/usr/bin/env python
"""Benchmark: ranking candidates by likelihood vs generating an answer (the paper's inference), on this machine.

Measured in one run, on the same (seeded) test users and their persisted candidate sets (20 for the prepared
real datasets), with one extra warm-up user run through every mode first and excluded from the figures:

- `generation`: the paper's inference: greedy `model.generate` (at most `--max_new_tokens`, by default the
  longest candidate answer of these users: ` "title"` and end-of-sequence), answer mapped to a candidate;
- `ranking, no prefix cache`: every candidate scored by its own full forward pass of prompt + answer (the naive
  scorer, implemented here), one candidate per user per forward;
- `ranking, prefix cache, 1 candidate/forward`: `score_candidates(candidate_batch_size=1, candidate_packing=False)`:
  the prompt runs once, its key/value cache is reused for each candidate;
- `ranking, prefix cache, all candidates batched (padded rows)`: `score_candidates(candidate_packing=False)`: the
  cache repeated for the candidates, all of them in one forward as right-padded rows;
- `ranking, prefix cache, all candidates in one token tree`: `score_candidates()` (the library's default): each
  user's answers packed into one prefix tree (shared answer prefixes run once, no padding, no cache copies);
- `prompt forward only` (diagnostic, no answer at all): embedding the prompt and one LM forward over it, which
  both modes must do; the floor under either mode's latency.

With `--ranking_model_path` (a checkpoint of `examples/train_ranking_head.py`, on the same dataset), two more modes:

- `ranking head, the candidates`: `model.score_candidates(**processor.ranking_inputs(histories),
  candidate_ids=...)` (what `model.rank_candidates` sorts): one LM forward per user over the head's own prompt
  (history items with output tokens, no candidate list), each candidate scored by a dot product;
- `ranking head, top 10 of the whole catalog`: `model.recommend(processor, histories, k=10)` from the same one
  forward (the history left out); its quality is the candidates' (the same scores), its speed its own.

Each mode is timed end to end (processor, model, mapping the output to candidates), per user (one user at a time:
latency percentiles) and in batches of `--batch_size` users (throughput, users/s). Modes are interleaved user by
user (and batch by batch) so a change in the machine's load hits all of them alike. Quality: Hit@1 (for generation
the paper's substring rule, the strict rule and the valid-answer rate; for ranking also Hit@5, NDCG@10 and MRR).
The naive scorer's log-likelihoods are compared with `score_candidates`'s (max absolute difference).

Targets: likelihood ranking at least 5 times faster than generation (users/s) at equal or better Hit@1; the
ranking head at least 20 times faster than generation (issue 19), at equal or better Hit@1.

    python benchmarks/ranking_vs_generation.py --model_path outputs/stage2 --dataset_dir outputs/data/ml-100k
    python benchmarks/ranking_vs_generation.py --model_path /tmp/s2 --dataset_dir /tmp/mlout --num_users 30 \
        --output_json ranking_vs_generation.json --profile
    python benchmarks/ranking_vs_generation.py --model_path outputs/stage2 --dataset_dir outputs/data/ml-100k \
        --ranking_model_path outputs/ranking_head
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np
import torch

TARGET_SPEEDUP = 5.0
TARGET_HEAD_SPEEDUP = 20.0
GENERATION = "generation"
NAIVE = "ranking, no prefix cache"
CACHED_ONE = "ranking, prefix cache, 1 candidate/forward"
CACHED_PADDED = "ranking, prefix cache, all candidates batched (padded rows)"
CACHED_ALL = "ranking, prefix cache, all candidates in one token tree"
PROMPT_ONLY = "prompt forward only (floor)"
RANKING_MODES = (NAIVE, CACHED_ONE, CACHED_PADDED, CACHED_ALL)
MODES = (GENERATION, *RANKING_MODES, PROMPT_ONLY)
HEAD = "ranking head, the candidates"
HEAD_CATALOG = "ranking head, top 10 of the whole catalog"
HEAD_MODES = (HEAD, HEAD_CATALOG)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="a stage-2 checkpoint (examples/train_stage2.py)")
    parser.add_argument("--dataset_dir", required=True, help="its prepared dataset (examples/prepare_data.py)")
    parser.add_argument("--llm", default=None, help="where the LM is (default: the checkpoint's base model)")
    parser.add_argument(
        "--ranking_model_path", default=None, help="also time a ranking head (examples/train_ranking_head.py)"
    )
    parser.add_argument("--scenario", default="test")
    parser.add_argument("--num_users", type=int, default=50, help="measured users (plus one warm-up user)")
    parser.add_argument("--seed", type=int, default=0, help="which users (a seeded sample)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--attn_implementation", default="eager", help="the LM's attention (eager, sdpa, ...)")
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=None,
        help="generation length limit (default: the longest candidate answer of the chosen users, end token incl.)",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="users per call in the throughput pass")
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--profile", action="store_true", help="also profile one user of each ranking mode")
    parser.add_argument(
        "--skip_naive_batches",
        action="store_true",
        help="leave the naive scorer out of the batched pass (the slowest mode; batching users saves it nothing, "
        "each forward still holds one candidate per user); its users/s then come from the one-at-a-time pass",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own choice, left alone); 1 is far faster when other jobs share the cores",
    )
    parser.add_argument("--disable_tqdm", action="store_true")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ loading
def load(args):
    from allmrec_hf import ALLMRecConfig, ALLMRecForConditionalGeneration
    from allmrec_hf.data import PreparedDataset
    from allmrec_hf.offline_models import resolve_model_path

    config = ALLMRecConfig.from_pretrained(args.model_path)
    llm = resolve_model_path(args.llm or config.base_model_name_or_path)
    model, processor = load_checkpoint(ALLMRecForConditionalGeneration, args.model_path, llm, args)
    data = PreparedDataset.load(args.dataset_dir)
    return model, processor, data, llm


def load_checkpoint(model_class, path: str, llm: str, args):
    """A checkpoint of `model_class` and its processor, on the LM weights `llm` with the benchmark's dtype and
    attention (the generation model and the ranking head run on the same ones)."""
    from allmrec_hf import ALLMRecProcessor

    model = model_class.from_pretrained(
        path,
        base_model_name_or_path=llm,
        dtype=getattr(torch, args.dtype),
        attn_implementation=args.attn_implementation,
    ).eval()
    processor = ALLMRecProcessor.from_pretrained(path)
    model.check_processor(processor)
    return model, processor


def select_users(data, scenario: str, num_users: int, seed: int) -> list[dict]:
    """A seeded sample of `num_users + 1` rows (the first one is the warm-up user), in sample order."""
    rows = data.scenario(scenario)
    if "candidates" not in rows.column_names:
        raise ValueError(f"{scenario!r} has no persisted candidate sets: prepare the data with --num_negatives.")
    if num_users + 1 > rows.num_rows:
        raise ValueError(f"{num_users} users and a warm-up user asked for, but {scenario!r} has {rows.num_rows}.")
    chosen = random.Random(seed).sample(range(rows.num_rows), num_users + 1)
    return [
        {
            "user": int(r["user"]),
            "history": [int(i) for i in r["history"]],
            "target": int(r["target"]),
            "candidates": [int(i) for i in r["candidates"]],
        }
        for r in (rows[i] for i in chosen)
    ]


# ------------------------------------------------------------------------------------------------ the modes
def batch_for(processor, rows):
    return processor(histories=[r["history"] for r in rows], candidates=[r["candidates"] for r in rows])


@torch.no_grad()
def naive_scores(model, batch, candidates_per_forward: int = 1) -> torch.Tensor:
    """Log-likelihood of every candidate's answer by a full forward pass of prompt + answer (no cache reused):
    for each candidate slot, one forward over `users x candidates_per_forward` rows. Same scores as
    `model.score_candidates(**batch, reduction="sum")` up to rounding; padded candidate slots get -inf."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    answers, answer_masks = batch["candidate_input_ids"], batch["candidate_attention_mask"]
    users, num_candidates, answer_len = answers.shape
    scores = torch.empty(users, num_candidates)
    for start in range(0, num_candidates, candidates_per_forward):
        stop = min(start + candidates_per_forward, num_candidates)
        k = stop - start
        tokens = answers[:, start:stop].reshape(users * k, answer_len)
        mask = answer_masks[:, start:stop].reshape(users * k, answer_len)
        out = model(  # prompt (left-padded) then answer (right-padded): positions follow the attention mask
            input_ids=torch.cat([input_ids.repeat_interleave(k, 0), tokens], 1),
            attention_mask=torch.cat([attention_mask.repeat_interleave(k, 0), mask], 1),
            cf_input_ids=batch["cf_input_ids"].repeat_interleave(k, 0),
            item_ids=batch["item_ids"].repeat_interleave(k, 0),
            use_cache=False,
            logits_to_keep=answer_len + 1,  # the last prompt position predicts the first answer token
        )
        log_probs = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(2, tokens.unsqueeze(-1)).squeeze(-1)
        totals = (log_probs * mask).sum(-1).masked_fill(mask.sum(-1) == 0, float("-inf"))
        scores[:, start:stop] = totals.view(users, k)
    return scores


def head_runners(model, processor) -> dict:
    """The ranking head's modes, each end to end (processor, one LM forward per user, ranking)."""

    def candidates(rows):  # the scores `rank_candidates` sorts, kept in candidate order for the metrics
        batch = processor.ranking_inputs([r["history"] for r in rows])
        scores = model.score_candidates(**batch, candidate_ids=torch.tensor([r["candidates"] for r in rows]))
        return {"scores": scores.float().cpu(), "best": scores.argmax(1).tolist()}

    def whole_catalog(rows):
        top = model.recommend(processor, [r["history"] for r in rows], k=10)
        return {"top": [[entry["item"] for entry in entries] for entries in top]}

    return {HEAD: candidates, HEAD_CATALOG: whole_catalog}


def make_runners(model, processor, max_new_tokens: int) -> dict:
    """`mode -> fn(rows) -> output`: each is timed end to end (processor, model, mapping output to candidates)."""

    def generation(rows):
        batch = batch_for(processor, rows)
        new_tokens = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            cf_input_ids=batch["cf_input_ids"],
            item_ids=batch["item_ids"],
            max_new_tokens=max_new_tokens,
        )
        texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
        matches = processor.match_candidates(texts, batch["candidate_ids"])
        eos = model.language_model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        pad = processor.tokenizer.pad_token_id
        lengths = [  # tokens generated per user, up to and including its end token
            next((j + 1 for j, t in enumerate(row) if t in eos), sum(t != pad for t in row))
            for row in new_tokens.tolist()
        ]
        return {"texts": texts, "items": [m.item_id for m in matches], "new_tokens": lengths}

    def ranking(candidate_batch_size, naive=False, packing=None):
        def run(rows):
            batch = batch_for(processor, rows)
            if naive:
                scores = naive_scores(model, batch)
            else:
                scores = model.score_candidates(
                    **batch, candidate_batch_size=candidate_batch_size, candidate_packing=packing
                )
            return {"scores": scores.float().cpu(), "best": scores.argmax(1).tolist()}

        return run

    @torch.no_grad()
    def prompt_only(rows):
        batch = batch_for(processor, rows)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            cf_input_ids=batch["cf_input_ids"],
            item_ids=batch["item_ids"],
            use_cache=True,
            logits_to_keep=1,
        )
        return {"next_token": out.logits[:, -1].argmax(-1).tolist()}

    return {
        GENERATION: generation,
        NAIVE: ranking(None, naive=True),
        CACHED_ONE: ranking(1, packing=False),
        CACHED_PADDED: ranking(None, packing=False),
        CACHED_ALL: ranking(None),
        PROMPT_ONLY: prompt_only,
    }


def merge(outputs: list[dict]) -> dict:
    """Outputs of several calls, concatenated in call order."""
    merged: dict = {}
    for out in outputs:
        for key, value in out.items():
            if torch.is_tensor(value):
                merged[key] = torch.cat([merged[key], value]) if key in merged else value
            else:
                merged.setdefault(key, []).extend(value)
    return merged


def timed(fn, rows):
    start = time.perf_counter()
    out = fn(rows)
    return time.perf_counter() - start, out


# ------------------------------------------------------------------------------------------------ metrics
def ranking_quality(scores: torch.Tensor, rows: list[dict]) -> dict:
    from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks

    scores = scores.numpy()
    positions = np.array([r["candidates"].index(r["target"]) for r in rows])
    valid = np.isfinite(scores)
    ranks = target_ranks(np.where(valid, scores, -np.inf), positions, valid)
    metrics = ranking_metrics(ranks, ks=(1, 5, 10))
    return {k: metrics[k] for k in ("hit@1", "hit@5", "ndcg@10", "mrr")}


def generation_quality(out: dict, rows: list[dict], catalog) -> dict:
    from allmrec_hf.evaluation.metrics import generation_metrics

    metrics = generation_metrics(
        out["texts"],
        [catalog.title(r["target"]) for r in rows],
        [[catalog.title(i) for i in r["candidates"]] for r in rows],
    )
    metrics["hit@1_matched"] = float(np.mean([item == r["target"] for item, r in zip(out["items"], rows, strict=True)]))
    metrics["mean_new_tokens"] = float(np.mean(out["new_tokens"]))
    return metrics


def latency_summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


def profile_one(fn, rows, row_limit: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(rows)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tqdm.auto import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, processor, data, llm = load(args)
    rows = select_users(data, args.scenario, args.num_users, args.seed)
    warmup, users = rows[0], rows[1:]
    answer_lengths = [len(processor.answer_ids(i)) for r in users for i in r["candidates"]]
    max_new_tokens = args.max_new_tokens or max(answer_lengths)
    num_candidates = sorted({len(r["candidates"]) for r in users})
    runners = make_runners(model, processor, max_new_tokens)
    modes = MODES
    if args.ranking_model_path:
        from allmrec_hf import ALLMRecForItemRanking

        head, head_processor = load_checkpoint(ALLMRecForItemRanking, args.ranking_model_path, llm, args)
        if head.recommender.num_items != data.num_items:
            raise ValueError(
                f"--ranking_model_path {args.ranking_model_path} scores {head.recommender.num_items} items but "
                f"{args.dataset_dir} has {data.num_items}: give the head trained on this dataset."
            )
        runners.update(head_runners(head, head_processor))
        modes = (*MODES, *HEAD_MODES)
    print(
        f"{len(users)} users of {data.name!r} ({args.scenario}), {'/'.join(map(str, num_candidates))} candidates each; "
        f"LM {llm} ({args.dtype}, {args.attn_implementation} attention), {torch.get_num_threads()} threads; "
        f"answers {min(answer_lengths)}-{max(answer_lengths)} tokens (mean {np.mean(answer_lengths):.1f}), "
        f"generation stops at the end token or {max_new_tokens} tokens; warm-up user {warmup['user']}"
    )

    for fn in runners.values():  # warm-up: allocations, lazy initialisation, kernel selection
        fn([warmup])

    # One user at a time (latency), modes interleaved and rotated so none always runs first.
    latency = {mode: [] for mode in modes}
    single = {mode: [] for mode in modes}
    for index, row in enumerate(tqdm(users, desc="one user at a time", disable=args.disable_tqdm)):
        for j in range(len(modes)):
            mode = modes[(index + j) % len(modes)]
            seconds, out = timed(runners[mode], [row])
            latency[mode].append(seconds)
            single[mode].append(out)
    single = {mode: merge(outs) for mode, outs in single.items()}

    # Batches of users (throughput), modes interleaved batch by batch.
    batches = [users[i : i + args.batch_size] for i in range(0, len(users), args.batch_size)]
    batch_seconds = {mode: 0.0 for mode in modes}
    batched = {mode: [] for mode in modes}
    in_batches = [m for m in modes if not (args.skip_naive_batches and m == NAIVE)] if args.batch_size > 1 else []
    for index, chunk in enumerate(
        tqdm(batches if in_batches else [], desc=f"batches of {args.batch_size}", disable=args.disable_tqdm)
    ):
        for j in range(len(in_batches)):
            mode = in_batches[(index + j) % len(in_batches)]
            seconds, out = timed(runners[mode], chunk)
            batch_seconds[mode] += seconds
            batched[mode].append(out)
    for mode in modes:
        if mode in in_batches:
            batched[mode] = merge(batched[mode])
        else:  # throughput from the one-at-a-time pass
            batch_seconds[mode], batched[mode] = sum(latency[mode]), single[mode]

    results: dict = {
        "config": {**vars(args), "max_new_tokens": max_new_tokens, "llm": llm, "threads": torch.get_num_threads()},
        "dataset": data.name,
        "users": [r["user"] for r in users],
        "warmup_user": warmup["user"],
        "num_candidates": num_candidates,
        "answer_tokens": {
            "min": min(answer_lengths),
            "max": max(answer_lengths),
            "mean": float(np.mean(answer_lengths)),
        },
        "modes": {},
    }
    for mode in modes:
        entry = {
            "users_per_s": len(users) / batch_seconds[mode],
            "users_per_s_measured_in": f"batches of {args.batch_size}" if mode in in_batches else "one at a time",
            "users_per_s_one_at_a_time": len(users) / sum(latency[mode]),
            "latency_ms": latency_summary(latency[mode]),
            "users": len(latency[mode]),
        }
        if mode == GENERATION:
            entry["metrics"] = generation_quality(single[mode], users, data.catalog)
            entry["metrics_batched"] = generation_quality(batched[mode], users, data.catalog)
            entry["answers"] = single[mode]["texts"]
            entry["batched_answers_equal_single"] = float(
                np.mean([a == b for a, b in zip(single[mode]["texts"], batched[mode]["texts"], strict=True)])
            )
        elif mode in RANKING_MODES or mode == HEAD:
            entry["metrics"] = ranking_quality(single[mode]["scores"], users)
            entry["metrics_batched"] = ranking_quality(batched[mode]["scores"], users)
        results["modes"][mode] = entry

    def max_abs_diff(outputs, a, b):
        x, y = outputs[a]["scores"], outputs[b]["scores"]
        finite = torch.isfinite(x) & torch.isfinite(y)
        same_padding = bool(torch.equal(torch.isfinite(x), torch.isfinite(y)))
        return float((x[finite] - y[finite]).abs().max()) if same_padding else float("inf")

    results["score_agreement"] = {
        "naive_vs_cached_all_max_abs_diff": max_abs_diff(single, NAIVE, CACHED_ALL),
        "naive_vs_cached_one_max_abs_diff": max_abs_diff(single, NAIVE, CACHED_ONE),
        "cached_one_vs_cached_all_max_abs_diff": max_abs_diff(single, CACHED_ONE, CACHED_ALL),
        "padded_vs_tree_max_abs_diff": max_abs_diff(single, CACHED_PADDED, CACHED_ALL),
        "batched_vs_single_cached_all_max_abs_diff": max_abs_diff(
            {"a": single[CACHED_ALL], "b": batched[CACHED_ALL]}, "a", "b"
        ),
        "naive_vs_cached_all_same_top1": float(
            np.mean([a == b for a, b in zip(single[NAIVE]["best"], single[CACHED_ALL]["best"], strict=True)])
        ),
        "mean_abs_score": float(
            single[CACHED_ALL]["scores"][torch.isfinite(single[CACHED_ALL]["scores"])].abs().mean()
        ),
    }

    generation = results["modes"][GENERATION]
    results["speedup_vs_generation"] = {
        mode: {
            "throughput": results["modes"][mode]["users_per_s"] / generation["users_per_s"],
            "one_at_a_time": results["modes"][mode]["users_per_s_one_at_a_time"]
            / generation["users_per_s_one_at_a_time"],
            "p50_latency": generation["latency_ms"]["p50"] / results["modes"][mode]["latency_ms"]["p50"],
        }
        for mode in (*RANKING_MODES, PROMPT_ONLY, *(HEAD_MODES if args.ranking_model_path else ()))
    }
    best = max(RANKING_MODES, key=lambda m: results["modes"][m]["users_per_s"])
    speedup = results["speedup_vs_generation"][best]["throughput"]
    ranking_hit = results["modes"][best]["metrics"]["hit@1"]
    generation_hit = generation["metrics"]["hit@1_substring"]
    results["target"] = {
        "best_ranking_mode": best,
        "speedup": speedup,
        "speedup_one_at_a_time": results["speedup_vs_generation"][best]["one_at_a_time"],
        "required_speedup": TARGET_SPEEDUP,
        "ranking_hit@1": ranking_hit,
        "generation_hit@1_substring": generation_hit,
        "generation_hit@1_strict": generation["metrics"]["hit@1_strict"],
        "faster": speedup >= TARGET_SPEEDUP,
        "as_good": ranking_hit >= generation_hit,
        "met": speedup >= TARGET_SPEEDUP and ranking_hit >= generation_hit,
        # Either mode runs the prompt through the LM: generation / prompt-forward bounds any ranking speed-up.
        "speedup_bound_from_prompt_forward": results["speedup_vs_generation"][PROMPT_ONLY]["throughput"],
    }
    if args.ranking_model_path:
        head_speedup = results["speedup_vs_generation"][HEAD]["throughput"]
        head_hit = results["modes"][HEAD]["metrics"]["hit@1"]
        results["head_target"] = {
            "speedup": head_speedup,
            "speedup_whole_catalog": results["speedup_vs_generation"][HEAD_CATALOG]["throughput"],
            "required_speedup": TARGET_HEAD_SPEEDUP,
            "head_hit@1": head_hit,
            "generation_hit@1_substring": generation_hit,
            "faster": head_speedup >= TARGET_HEAD_SPEEDUP,
            "as_good": head_hit >= generation_hit,
            "met": head_speedup >= TARGET_HEAD_SPEEDUP and head_hit >= generation_hit,
        }
    print_report(results, args.batch_size)

    if args.profile:
        results["profiles"] = {}
        for mode in (GENERATION, CACHED_PADDED, CACHED_ALL):
            table = profile_one(runners[mode], [users[0]])
            results["profiles"][mode] = table
            print(f"\nwhere one user's time goes, {mode} (by operator, self CPU time):\n{table}")

    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"wrote {args.output_json}")
    return results


def print_report(results: dict, batch_size: int) -> None:
    modes = results["modes"]
    print(
        f"\n| mode | users/s (batches of {batch_size}) | users/s (one at a time) | p50 ms | p90 ms | p99 ms "
        "| Hit@1 | Hit@5 | NDCG@10 | MRR |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, entry in modes.items():
        lat, m = entry["latency_ms"], entry.get("metrics", {})
        if mode == GENERATION:
            quality = (
                f"{m['hit@1_substring']:.3f} (strict {m['hit@1_strict']:.3f}, valid {m['valid_answer_rate']:.2f}) "
                "| | | "
            )
        elif m:
            quality = f"{m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['ndcg@10']:.3f} | {m['mrr']:.3f} "
        else:
            quality = "| | | "
        mark = "" if entry["users_per_s_measured_in"].startswith("batches") else "*"
        print(
            f"| {mode} | {entry['users_per_s']:.2f}{mark} "
            f"| {entry['users_per_s_one_at_a_time']:.2f} | {lat['p50']:.0f} "
            f"| {lat['p90']:.0f} | {lat['p99']:.0f} | {quality}|"
        )
    if any(not e["users_per_s_measured_in"].startswith("batches") for e in modes.values()):
        print("* not run in batches (--skip_naive_batches or --batch_size 1): users/s of the one-at-a-time pass")
    gen = modes[GENERATION]["metrics"]
    print(
        f"\ngeneration: {gen['mean_new_tokens']:.1f} new tokens per user on average; batched answers equal the "
        f"one-at-a-time ones for {modes[GENERATION]['batched_answers_equal_single']:.0%} of users"
    )
    agreement = results["score_agreement"]
    print(
        "scores: naive vs token tree max |diff| "
        f"{agreement['naive_vs_cached_all_max_abs_diff']:.2e}, padded rows vs token tree "
        f"{agreement['padded_vs_tree_max_abs_diff']:.2e}, naive vs prefix cache (1/forward) "
        f"{agreement['naive_vs_cached_one_max_abs_diff']:.2e} (mean |score| {agreement['mean_abs_score']:.1f}); "
        f"same top candidate for {agreement['naive_vs_cached_all_same_top1']:.0%} of users; batched vs one at a time "
        f"{agreement['batched_vs_single_cached_all_max_abs_diff']:.2e}"
    )
    print("\nspeed vs generation (users/s ratio; batches | one at a time | p50 latency):")
    for mode, ratio in results["speedup_vs_generation"].items():
        print(f"  {mode}: {ratio['throughput']:.2f} x | {ratio['one_at_a_time']:.2f} x | {ratio['p50_latency']:.2f} x")
    t = results["target"]
    verdict = "met" if t["met"] else "not met"
    print(
        f"\ntarget: ranking >= {t['required_speedup']:.0f}x faster than generation at equal or better Hit@1: "
        f"{t['best_ranking_mode']}: {t['speedup']:.2f}x ({t['speedup'] / t['required_speedup']:.2f} of the target; "
        f"{t['speedup_one_at_a_time']:.2f}x one user at a time), Hit@1 {t['ranking_hit@1']:.3f} vs "
        f"{t['generation_hit@1_substring']:.3f} (generation, substring rule): {verdict}"
    )
    print(
        f"bound: the prompt forward alone is {t['speedup_bound_from_prompt_forward']:.2f}x faster than generation; "
        "no ranking that runs the prompt through the LM can beat that ratio"
    )
    if "head_target" in results:
        h = results["head_target"]
        print(
            f"target: the ranking head >= {h['required_speedup']:.0f}x faster than generation at equal or better "
            f"Hit@1: {h['speedup']:.2f}x on the candidates ({h['speedup_whole_catalog']:.2f}x for the top 10 of the "
            f"whole catalog), Hit@1 {h['head_hit@1']:.3f} vs {h['generation_hit@1_substring']:.3f} (generation): "
            f"{'met' if h['met'] else 'not met'}"
        )


if __name__ == "__main__":
    main()
