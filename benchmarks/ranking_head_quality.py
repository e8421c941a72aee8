#!/usr/bin/env python
"""Quality of the ranking head (`ALLMRecForItemRanking`) against SASRec and the popularity ranking, on every test
user of a prepared dataset and its persisted 1 + 19 candidate sets, all methods in one run.

    python benchmarks/ranking_head_quality.py --dataset_dir outputs/data/ml-100k --cf_model_path outputs/cf \\
        --output_dir outputs/ranking_head

The frozen LM (SmolLM2-135M-Instruct in bf16 by default) reads each training user's last `--shown` items, each as
its item embedding and an output token carrying SASRec's state after it (`PromptTemplate`'s default ranking prompt:
no titles); every output token is trained to score the next item (cross-entropy over the whole catalog). This first
version trains with a plain loop over `--epochs` passes (the Trainer subclass and `examples/` script are the next
step), stopping after `--patience` epochs without a validation NDCG@10 gain; it keeps the best epoch, saves it
(`model/`) with every test user's candidate scores (`test_scores.npz`), and reports its test figures. A separate,
labelled row adds SASRec's candidate log-probabilities to the head's with a weight chosen on validation NDCG@10
(never on test): it is a sum with SASRec's own score, not the pure head. """

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from allmrec_hf import ALLMRecForItemRanking, ALLMRecProcessor, ALLMRecRankingConfig, PromptTemplate
from allmrec_hf.data import PreparedDataset
from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks
from allmrec_hf.offline_models import resolve_model_path
from allmrec_hf.training.builders import load_cf_model, placeholder_aligner_config

logger = logging.getLogger("ranking_head_quality")
KS = (1, 5, 10)


def build(args, data):
    cf_model = load_cf_model(args.cf_model_path, data.catalog)
    local = resolve_model_path(args.llm)
    tokenizer = AutoTokenizer.from_pretrained(local)
    template = PromptTemplate(ranking_history_length=args.shown)
    if args.no_history_embeddings:
        template = PromptTemplate.without_embeddings(ranking_history_length=args.shown)
    processor = ALLMRecProcessor(tokenizer, tokenizer, data.catalog, prompt_template=template)
    lm = AutoModelForCausalLM.from_pretrained(local, dtype=getattr(torch, args.lm_dtype))
    config = ALLMRecRankingConfig(
        aligner_config=placeholder_aligner_config(cf_model.config),
        text_config=lm.config,
        base_model_name_or_path=args.llm,
        item_projector_input="cf_embedding",
        output_token_id=processor.output_token_id,
        use_user_representation=not args.no_user_representation,
        distillation_weight=args.distillation_weight,
        uniformity_weight=args.uniformity_weight,
        cf_skip=args.cf_skip,
        **processor.placeholder_token_ids,
    )
    model = ALLMRecForItemRanking.from_language_model(config, lm)
    model.recommender.cf_model.load_state_dict(cf_model.state_dict())
    model.recommender.requires_grad_(False)
    return model, processor, cf_model


def pad_left(rows):
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([[0] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)


def target_positions(rows) -> np.ndarray:
    candidates = np.asarray(rows["candidates"])
    return (candidates == np.asarray(rows["target"])[:, None]).argmax(1)


@torch.no_grad()
def head_scores(model, processor, rows, batch_size: int) -> tuple[np.ndarray, float]:
    """`(users, candidates)` head scores and the users/s it ran at."""
    model.eval()
    scores, start = [], time.perf_counter()
    for begin in tqdm(range(0, len(rows), batch_size), desc="ranking head", leave=False):
        chunk = rows[begin : begin + batch_size]
        batch = processor.ranking_inputs(chunk["history"])
        candidates = torch.tensor(chunk["candidates"])
        scores.append(model.score_candidates(**batch, candidate_ids=candidates).float().numpy())
    return np.concatenate(scores), len(rows) / (time.perf_counter() - start)


@torch.no_grad()
def cf_scores(cf_model, rows) -> np.ndarray:
    cf_model.eval()
    candidates = torch.tensor(rows["candidates"])
    return cf_model.score_items(pad_left([h[-50:] for h in rows["history"]]), candidates).float().numpy()


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)


def fused(head: np.ndarray, cf: np.ndarray, weight: float) -> np.ndarray:
    """The head's candidate log-probabilities plus `weight` times SASRec's (a labelled sum, never the pure head)."""
    return log_softmax(head) + weight * log_softmax(cf)


def popularity_ranks(data, rows) -> np.ndarray:
    counts = np.zeros(data.num_items + 1)
    for row in data.splits["train"]:
        for item in list(row["history"]) + [row["target"]]:
            counts[item] += 1
    return target_ranks(counts[np.asarray(rows["candidates"])], target_positions(rows))


def training_rows(data, windows: int, shown: int):
    """(history, next item) cut points: the training target, then `windows - 1` earlier cuts `shown` items apart."""
    rows = []
    for row in data.splits["train"]:
        sequence = list(row["history"]) + [row["target"]]
        for w in range(windows):
            end = len(sequence) - w * shown
            if end < 2:
                break
            rows.append((sequence[: end - 1], sequence[end - 1]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--cf_model_path", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--llm", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--lm_dtype", default="bfloat16")
    parser.add_argument("--shown", type=int, default=20, help="history items in the prompt (each trains a step)")
    parser.add_argument("--windows", type=int, default=1, help="cut points per training user")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--eval_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--distillation_weight", type=float, default=0.0)
    parser.add_argument("--uniformity_weight", type=float, default=0.0)
    parser.add_argument("--no_user_representation", action="store_true")
    parser.add_argument("--cf_skip", action="store_true", help="add a linear map of the CF state to the user vector")
    parser.add_argument("--no_history_embeddings", action="store_true")
    parser.add_argument("--patience", type=int, default=2, help="epochs without a validation NDCG@10 gain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--time_budget_minutes",
        type=float,
        default=None,
        help="start no epoch that would end past this (the best epoch so far is kept and tested)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    data = PreparedDataset.load(args.dataset_dir)
    model, processor, cf_model = build(args, data)
    test, validation = data.splits["test"], data.splits["validation"]
    test_targets, validation_targets = target_positions(test), target_positions(validation)
    cf_test, cf_validation = cf_scores(cf_model, test), cf_scores(cf_model, validation)
    results = {
        "SASRec": ranking_metrics(target_ranks(cf_test, test_targets), KS),
        "Popularity": ranking_metrics(popularity_ranks(data, test), KS),
    }
    sasrec_validation = ranking_metrics(target_ranks(cf_validation, validation_targets), KS)
    logger.info("SASRec validation %s", sasrec_validation)
    logger.info("SASRec test %s", results["SASRec"])

    rows = training_rows(data, args.windows, args.shown)
    params = [p for p in model.parameters() if p.requires_grad]
    logger.info("%d training rows; %d trainable parameters", len(rows), sum(p.numel() for p in params))
    optimizer = torch.optim.Adam(params, lr=args.learning_rate)
    rng = np.random.default_rng(args.seed)
    best, history, stale, run_start = None, [], 0, time.perf_counter()
    for epoch in range(args.epochs):
        if history and args.time_budget_minutes is not None:
            per_epoch = (time.perf_counter() - run_start) / len(history)
            if time.perf_counter() - run_start + per_epoch > 60 * args.time_budget_minutes:
                logger.info("another epoch would pass --time_budget_minutes %g: stopping", args.time_budget_minutes)
                break
        model.train()
        order = rng.permutation(len(rows))
        start, losses = time.perf_counter(), []
        for begin in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}"):
            chunk = [rows[i] for i in order[begin : begin + args.batch_size]]
            batch = processor.ranking_inputs([h for h, _ in chunk], [t for _, t in chunk])
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        train_time = time.perf_counter() - start
        valid_scores = head_scores(model, processor, validation, args.eval_batch_size)[0]
        valid = ranking_metrics(target_ranks(valid_scores, validation_targets), KS)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "train_s": train_time, **valid})
        logger.info("epoch %d: loss %.4f, %.0f s, validation %s", epoch, np.mean(losses), train_time, valid)
        if best is None or valid["ndcg@10"] > best[0]:
            state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            best, stale = (valid["ndcg@10"], state, valid_scores), 0
        else:
            stale += 1
            if stale >= args.patience:
                logger.info("no validation NDCG@10 gain for %d epochs: stopping", stale)
                break
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, value in best[1].items():
            parameters[name].copy_(value)
    model.save_pretrained(os.path.join(args.output_dir, "model"))
    head_test, users_per_s = head_scores(model, processor, test, args.eval_batch_size)
    results["A-LLMRec ranking head"] = ranking_metrics(target_ranks(head_test, test_targets), KS)
    # The labelled sum: the weight on SASRec's log-probabilities is chosen on validation NDCG@10, never on test.
    weight = max(FUSION_WEIGHTS, key=lambda w: ranking_metrics(
        target_ranks(fused(best[2], cf_validation, w), validation_targets), KS)["ndcg@10"])  # fmt: skip
    results[f"ranking head + {weight:g} x SASRec score (weight chosen on validation)"] = ranking_metrics(
        target_ranks(fused(head_test, cf_test, weight), test_targets), KS)  # fmt: skip
    np.savez(os.path.join(args.output_dir, "test_scores.npz"), head=head_test, sasrec=cf_test,
             candidates=np.asarray(test["candidates"]), target=np.asarray(test["target"]))  # fmt: skip
    report = {"args": vars(args), "test_users": len(test), "users_per_s": users_per_s, "epochs": history,
              "sasrec_validation": sasrec_validation, "fusion_weight": weight, "results": results}  # fmt: skip
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    lines = [f"{len(test)} test users, 1 + 19 persisted candidates; head at {users_per_s:.1f} users/s", "",
             "| Method | Hit@1 | Hit@5 | Hit@10 | NDCG@10 | MRR |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in results.items():
        lines.append(f"| {name} | {m['hit@1']:.4f} | {m['hit@5']:.4f} | {m['hit@10']:.4f} | {m['ndcg@10']:.4f} "
                     f"| {m['mrr']:.4f} |")  # fmt: skip
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
