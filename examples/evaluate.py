#!/usr/bin/env python
"""Evaluate recommenders on the identical persisted candidate sets of a prepared dataset, the paper's way.

Methods (each one optional; give at least one checkpoint):
- the CF model alone (`--cf_model_path`, else the CF model inside the first LM checkpoint given),
- LLM-only (`--llm_only_model_path`), MLP-LLM (`--mlp_llm_model_path`),
- A-LLMRec (`--allmrec_model_path`) with CF item embeddings and with text-side item embeddings (the paper's
  "A-LLMRec (SBERT)"),
- the ranking head (`--ranking_model_path`, `examples/train_ranking_head.py`): one LM forward per user scores the
  candidates and the whole catalog (ranking mode and full-catalog rows, no generation),
- the popularity ranking (training interaction counts; `--popularity false` leaves it out),
each LM method in generation mode (the paper's: greedy answer, Hit@1 by the substring rule and by a strict rule)
and in ranking mode (every candidate scored by the likelihood of its title: Hit@K, NDCG@K, MRR). Scenarios: all
test users, cold items, warm items and cold users (when the dataset has them). With `--full_catalog` the CF model
retrieves the top `--num_retrieved` unseen items of the whole catalog and each LM method reranks them.

    python examples/evaluate.py --dataset_dir outputs/data/ml-100k --output_dir outputs/eval \\
        --allmrec_model_path outputs/stage2 --mlp_llm_model_path outputs/mlp_llm \\
        --llm_only_model_path outputs/llm_only --cf_model_path outputs/cf --max_users 200
    python examples/evaluate.py --dataset_dir outputs/data/ml-100k --output_dir outputs/eval_ranking \
        --ranking_model_path outputs/ranking_head --cf_model_path outputs/cf

Writes `results.json`, `results.md` (tables in the paper's layout) and `hit_at_k.png` / `scenarios.png` to
`--output_dir`. Deterministic under `--seed` (user sampling; decoding is greedy).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser, set_seed

from allmrec_hf import (
    ALLMRecConfig,
    ALLMRecForConditionalGeneration,
    ALLMRecForItemRanking,
    ALLMRecProcessor,
    ALLMRecRankingConfig,
)
from allmrec_hf.data import PreparedDataset
from allmrec_hf.evaluation.evaluator import (
    MODES,
    cf_candidate_scores,
    cf_full_catalog_ranks,
    cf_mapped_candidate_scores,
    full_catalog_metrics,
    full_catalog_ranks,
    lm_candidate_outputs,
    lm_full_catalog_ranks,
    map_items,
    processor_for_catalog,
    ranking_head_variants,
    scenario_metrics,
    select_rows,
    text_item_latents,
    training_item_counts,
)
from allmrec_hf.evaluation.report import markdown_report, plot_results
from allmrec_hf.model_card import CF_NAMES, METHOD_TITLES, finite_values, update_model_cards
from allmrec_hf.offline_models import resolve_model_path
from allmrec_hf.training.builders import CF_MODEL_TYPES, check_catalog, checkpoint_model_type, load_cf_model
from allmrec_hf.training.dtypes import dtype_name, resolve_lm_dtype
from allmrec_hf.training.runs import run_script

logger = logging.getLogger("evaluate")
RANKING_HEAD = METHOD_TITLES["ranking"]


@dataclass
class EvaluationArguments:
    dataset_dir: str = field(metadata={"help": "A prepared dataset (examples/prepare_data.py) with candidates."})
    output_dir: str = field(metadata={"help": "Where results.json, results.md and the plots go."})
    allmrec_model_path: str | None = field(default=None, metadata={"help": "An A-LLMRec stage-2 checkpoint."})
    mlp_llm_model_path: str | None = field(default=None, metadata={"help": "An MLP-LLM stage-2 checkpoint."})
    llm_only_model_path: str | None = field(default=None, metadata={"help": "An LLM-only checkpoint."})
    ranking_model_path: str | None = field(
        default=None, metadata={"help": "A ranking-head checkpoint (examples/train_ranking_head.py)."}
    )
    popularity: bool = field(default=True, metadata={"help": "Also evaluate the popularity ranking."})
    cf_model_path: str | None = field(
        default=None,
        metadata={"help": "A CF checkpoint evaluated alone (default: the CF model inside the first LM checkpoint)."},
    )
    llm: str | None = field(
        default=None,
        metadata={"help": "Load the LM from here instead of the checkpoints' base_model_name_or_path (id or folder)."},
    )
    lm_dtype: str | None = field(
        default=None, metadata={"help": "LM weights dtype: auto (bfloat16 where it runs natively), bfloat16, float32."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "The LM's attention (eager, sdpa, causal_blocks, ...; default: the LM's own); on CPU, "
            "causal_blocks (allmrec_hf's) scores and generates fastest (see benchmarks/)."
        },
    )
    modes: str = field(default="generation,ranking", metadata={"help": "Comma-separated: generation, ranking."})
    scenarios: str | None = field(
        default=None,
        metadata={"help": "Comma-separated: test, cold_items, warm_items, cold_users (default: all available)."},
    )
    item_embedding_sources: str = field(
        default="cf,text",
        metadata={"help": "A-LLMRec item embeddings to evaluate: cf (e_i), text (q_i, 'A-LLMRec (SBERT)')."},
    )
    max_users: int | None = field(
        default=None, metadata={"help": "At most this many users per scenario, drawn under --seed (default: all)."}
    )
    max_generation_users: int | None = field(
        default=None,
        metadata={"help": "Generation mode (the slow one) on at most this many of those users (default: all)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Users per forward pass."})
    candidate_batch_size: int | None = field(
        default=None, metadata={"help": "Candidates scored per forward in ranking mode (default: all at once)."}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Generation length (default: the longest candidate answer + 8 tokens)."}
    )
    cross_domain_dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": "A prepared dataset of another domain: evaluate A-LLMRec (SBERT), LLM-only and the CF model on "
            "its test users (items matched to the checkpoint's catalog by external id where shared)."
        },
    )
    cross_domain_noun: str | None = field(default=None, metadata={"help": "Prompt noun there, e.g. game."})
    cross_domain_verb: str | None = field(default=None, metadata={"help": "Prompt verb there, e.g. play."})
    cross_domain_past_verb: str | None = field(default=None, metadata={"help": "Past tense, e.g. played."})
    ks: str = field(default="1,5,10", metadata={"help": "Comma-separated K of Hit@K and NDCG@K."})
    full_catalog: bool = field(
        default=True, metadata={"help": "Also evaluate retrieve-then-rerank over the whole catalog (test users)."}
    )
    num_retrieved: int = field(default=20, metadata={"help": "Items the CF model retrieves for reranking."})
    plots: bool = field(default=True, metadata={"help": "Write the PNG plots (needs matplotlib)."})
    update_model_card: bool = field(
        default=False,
        metadata={
            "help": "Write the results into the model card (README.md: model-index and evaluation section) of "
            "each checkpoint folder given with a --*_model_path."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the user sampling."})
    device: str | None = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _check_arguments(args: EvaluationArguments) -> dict[str, str]:
    """Everything that can be wrong with the arguments, found before any model is loaded."""
    checkpoints = {
        name: path
        for name, path in [
            ("llm_only", args.llm_only_model_path),
            ("mlp_llm", args.mlp_llm_model_path),
            ("a-llmrec", args.allmrec_model_path),
        ]
        if path
    }
    if not checkpoints and not args.cf_model_path and not args.ranking_model_path:
        raise ValueError(
            "nothing to evaluate: give --allmrec_model_path, --mlp_llm_model_path, "
            "--llm_only_model_path, --ranking_model_path and/or --cf_model_path."
        )
    for name, path in [*checkpoints.items(), ("cf", args.cf_model_path), ("ranking", args.ranking_model_path)]:
        if path and not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"--{name.replace('-', '')}_model_path {path} has no config.json.")
    for name, path in checkpoints.items():
        kind = checkpoint_model_type(path)
        if kind != "allmrec":
            hint = " (give a ranking head with --ranking_model_path)" if kind == "allmrec_ranking" else ""
            raise ValueError(f"{path} (given for {name}) is a {kind!r} checkpoint, not a stage-2 (allmrec) one{hint}.")
    if args.ranking_model_path and checkpoint_model_type(args.ranking_model_path) != "allmrec_ranking":
        raise ValueError(
            f"--ranking_model_path {args.ranking_model_path} is a "
            f"{checkpoint_model_type(args.ranking_model_path)!r} checkpoint, not a ranking head (allmrec_ranking)."
        )
    if args.cf_model_path and checkpoint_model_type(args.cf_model_path) not in CF_MODEL_TYPES:
        raise ValueError(
            f"--cf_model_path {args.cf_model_path} is not a CF checkpoint of a known backbone "
            f"({', '.join(CF_MODEL_TYPES)})."
        )
    unknown = set(_split(args.modes)) - set(MODES)
    if unknown or not _split(args.modes):
        raise ValueError(f"--modes must name some of {MODES}, got {args.modes!r}.")
    unknown = set(_split(args.item_embedding_sources)) - {"cf", "text"}
    if unknown:
        raise ValueError(f"--item_embedding_sources must be cf and/or text, got {args.item_embedding_sources!r}.")
    args.lm_dtype = dtype_name(resolve_lm_dtype(args.lm_dtype))  # auto: bfloat16 only where it runs natively
    if args.batch_size < 1 or any(n is not None and n < 1 for n in (args.max_users, args.max_generation_users)):
        raise ValueError("--batch_size, --max_users and --max_generation_users must be positive.")
    return checkpoints


class _LanguageModels:
    """Loads each checkpoint's LM once and shares it between checkpoints on the same LM (no adapter)."""

    def __init__(self, args: EvaluationArguments, device: torch.device):
        self.args, self.device, self.cache = args, device, {}

    def load(self, path: str) -> ALLMRecForConditionalGeneration:
        config = ALLMRecConfig.from_pretrained(path)
        base = self.args.llm or config.base_model_name_or_path
        kwargs = {}
        if self.args.lm_dtype:
            kwargs["dtype"] = getattr(torch, self.args.lm_dtype)
        if self.args.attn_implementation:
            kwargs["attn_implementation"] = self.args.attn_implementation
        if config.language_model_included and not self.args.llm:
            model = ALLMRecForConditionalGeneration.from_pretrained(path, **kwargs)
        elif config.lm_adapter_subfolder:  # the adapter changes the LM: never shared
            model = ALLMRecForConditionalGeneration.from_pretrained(
                path, base_model_name_or_path=resolve_model_path(base), **kwargs
            )
        else:
            if base not in self.cache:
                from transformers import AutoModelForCausalLM

                self.cache[base] = AutoModelForCausalLM.from_pretrained(resolve_model_path(base), **kwargs).to(
                    self.device
                )
            model = ALLMRecForConditionalGeneration.from_pretrained(path, language_model=self.cache[base])
        return model.to(self.device).eval()


def _load_ranking_head(args: EvaluationArguments, path: str, device: torch.device):
    """The ranking head and its processor, the LM loaded as for the other methods (`--llm`, dtype, attention)."""
    config = ALLMRecRankingConfig.from_pretrained(path)
    kwargs = {}
    if args.lm_dtype:
        kwargs["dtype"] = getattr(torch, args.lm_dtype)
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    if args.llm or not config.language_model_included:
        kwargs["base_model_name_or_path"] = resolve_model_path(args.llm or config.base_model_name_or_path)
    model = ALLMRecForItemRanking.from_pretrained(path, **kwargs).to(device).eval()
    processor = ALLMRecProcessor.from_pretrained(path)
    if config.item_head_input == "text" and model.text_item_latents is None:
        model.compute_text_item_latents(processor)
    return model, processor


def _methods_to_run(args, checkpoints: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(display name, checkpoint kind, item embedding source) of each LM method, in the paper's order."""
    methods = []
    if "llm_only" in checkpoints:
        methods.append(("LLM-only", "llm_only", None))
    if "mlp_llm" in checkpoints:
        methods.append(("MLP-LLM", "mlp_llm", "cf"))
    if "a-llmrec" in checkpoints:
        for source in _split(args.item_embedding_sources):
            methods.append(("A-LLMRec" if source == "cf" else "A-LLMRec (SBERT)", "a-llmrec", source))
    return methods


def _evaluate_cross_domain(args, target, data, cf_model, cf_name, loaded, checkpoints, modes, ks, results) -> None:
    """The paper's cross-domain experiment: the models trained on `data` recommend among `target`'s items. Only
    methods that can represent items they were not trained on take part: A-LLMRec (SBERT) (text-side item
    embeddings; the user representation from the history items the two catalogs share), LLM-only (titles), and
    the CF model on shared items (unknown candidates rank last)."""
    rows = select_rows(target, ["test"], args.max_users, args.seed)
    rows.scenarios = {"cross_domain": rows.scenarios["test"]}
    generation_rows = rows.subset(args.max_generation_users, args.seed)
    histories, candidates, counts = map_items(rows, target.catalog, data.catalog)
    generation_histories, _, _ = map_items(generation_rows, target.catalog, data.catalog)
    logger.info("Cross-domain %s -> %s: %s", data.name, target.name, counts)
    results["scenarios"]["cross_domain"] = {
        "num_users": len(rows),
        "num_generation_users": len(generation_rows),
        "dataset": target.name,
        "dataset_dir": os.path.abspath(args.cross_domain_dataset_dir),
        **counts,
    }
    entry = results["results"]["cross_domain"] = {}
    if counts["candidates_shared"]:
        scores = cf_mapped_candidate_scores(cf_model, histories, candidates)
        entry[cf_name] = scenario_metrics(rows, target.catalog, scores=scores, ks=ks)["cross_domain"]
    else:
        logger.info("%s shares no items with %s: %s is not evaluated there.", target.name, data.name, cf_name)
    words = {"noun": args.cross_domain_noun, "verb": args.cross_domain_verb, "past_verb": args.cross_domain_past_verb}
    for name, kind, source in [("LLM-only", "llm_only", None), ("A-LLMRec (SBERT)", "a-llmrec", "text")]:
        if kind not in loaded:
            continue
        model = loaded[kind]
        processor = processor_for_catalog(ALLMRecProcessor.from_pretrained(checkpoints[kind]), target.catalog, **words)
        latents = model.compute_text_item_latents(processor, store=False) if source == "text" else None
        method: dict = {}
        for mode in modes:
            mode_rows, cf_histories = (
                (generation_rows, generation_histories) if mode == "generation" else (rows, histories)
            )
            with text_item_latents(model, latents) if latents is not None else nullcontext():
                outputs = lm_candidate_outputs(
                    model, processor, mode_rows, [mode], args.batch_size, args.max_new_tokens,
                    item_embedding_source=source, candidate_batch_size=args.candidate_batch_size,
                    desc=f"{name} cross-domain", disable_tqdm=args.disable_tqdm, cf_histories=cf_histories,
                )  # fmt: skip
            method.update(
                scenario_metrics(mode_rows, target.catalog, outputs.get("answers"), outputs.get("scores"), ks)[
                    "cross_domain"
                ]
            )
        entry[name] = method


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(EvaluationArguments)
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(args=list(argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    checkpoints = _check_arguments(args)
    modes = _split(args.modes)
    ks = sorted({int(k) for k in _split(args.ks)})

    data = PreparedDataset.load(args.dataset_dir)
    for path in [*checkpoints.values(), args.cf_model_path, args.ranking_model_path]:
        if path:
            check_catalog(path, data.catalog, f"the dataset {args.dataset_dir}")
    rows = select_rows(data, _split(args.scenarios), args.max_users, args.seed)
    cross_domain = PreparedDataset.load(args.cross_domain_dataset_dir) if args.cross_domain_dataset_dir else None
    generation_rows = rows.subset(args.max_generation_users, args.seed)
    num_candidates = max(len(c) for c in rows.candidates)
    ks = [k for k in ks if k <= num_candidates]
    os.makedirs(args.output_dir, exist_ok=True)
    set_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    results: dict = {
        "dataset": data.name,
        "dataset_dir": os.path.abspath(args.dataset_dir),
        "seed": args.seed,
        "num_candidates": num_candidates,
        "ks": ks,
        "scenarios": {
            name: {"num_users": len(index), "num_generation_users": len(generation_rows.scenarios[name])}
            for name, index in rows.scenarios.items()
        },
        "methods": {},
        "results": {name: {} for name in rows.scenarios},
        "timing_seconds": {},
        "arguments": asdict(args),
    }
    test_rows = None
    if args.full_catalog and "test" in rows.scenarios:
        test_rows = select_rows(data, ["test"], args.max_users, args.seed)
        results["full_catalog"] = {"num_users": len(test_rows), "num_retrieved": args.num_retrieved, "results": {}}

    def record(method: str, metrics: dict[str, dict]) -> None:
        for scenario, entry in metrics.items():
            results["results"][scenario].setdefault(method, {}).update(entry)

    # ------------------------------------------------------------------ the CF model alone
    lms = _LanguageModels(args, device)
    loaded: dict[str, ALLMRecForConditionalGeneration] = {}
    ranking_head = None
    if args.ranking_model_path:
        logger.info("Loading the ranking head from %s", args.ranking_model_path)
        ranking_head = _load_ranking_head(args, args.ranking_model_path, device)
    if args.cf_model_path:
        cf_model, cf_source = load_cf_model(args.cf_model_path, data.catalog), args.cf_model_path
    elif not checkpoints:  # the CF model inside the ranking head
        cf_model, cf_source = ranking_head[0].recommender.cf_model, args.ranking_model_path
    else:
        first = next(iter(checkpoints))
        loaded[first] = lms.load(checkpoints[first])
        cf_model, cf_source = loaded[first].recommender.cf_model, checkpoints[first]
    cf_model = cf_model.to(device).eval()
    cf_name = CF_NAMES.get(cf_model.config.model_type, cf_model.config.model_type)
    results["methods"][cf_name] = {"kind": "cf", "checkpoint": os.path.abspath(cf_source)}
    start = time.perf_counter()
    record(
        cf_name,
        scenario_metrics(rows, data.catalog, scores=cf_candidate_scores(cf_model, rows, 256, args.disable_tqdm), ks=ks),
    )
    if test_rows is not None:
        ranks = cf_full_catalog_ranks(cf_model, test_rows, 256, args.disable_tqdm)
        results["full_catalog"]["results"][cf_name] = full_catalog_metrics(ranks, ks)
    results["timing_seconds"][cf_name] = round(time.perf_counter() - start, 2)

    # ------------------------------------------------------------------ the popularity ranking
    if args.popularity:
        counts = training_item_counts(data)
        results["methods"]["Popularity"] = {"kind": "popularity", "scores": "training interaction counts"}
        scores = np.stack([counts[np.asarray(c)] for c in rows.candidates])
        record("Popularity", scenario_metrics(rows, data.catalog, scores=scores, ks=ks))
        if test_rows is not None:
            ranks = np.concatenate([
                full_catalog_ranks(np.tile(counts, (len(h), 1)), h, t)
                for h, t in ((test_rows.histories[i : i + 256], test_rows.targets[i : i + 256])
                             for i in range(0, len(test_rows), 256))
            ])  # fmt: skip
            results["full_catalog"]["results"]["Popularity"] = full_catalog_metrics(ranks, ks)

    # ------------------------------------------------------------------ the LM methods
    for name, kind, source in _methods_to_run(args, checkpoints):
        path = checkpoints[kind]
        if kind not in loaded:
            logger.info("Loading %s from %s", name, path)
            loaded[kind] = lms.load(path)
        model = loaded[kind]
        processor = ALLMRecProcessor.from_pretrained(path)
        if source == "text" and model.text_item_latents is None:
            model.compute_text_item_latents(processor)
        results["methods"][name] = {"kind": kind, "checkpoint": os.path.abspath(path), "item_embeddings": source}
        timing = results["timing_seconds"][name] = {}
        for mode in modes:
            start = time.perf_counter()
            mode_rows = generation_rows if mode == "generation" else rows
            outputs = lm_candidate_outputs(
                model,
                processor,
                mode_rows,
                [mode],
                args.batch_size,
                args.max_new_tokens,
                item_embedding_source=source,
                candidate_batch_size=args.candidate_batch_size,
                desc=name,
                disable_tqdm=args.disable_tqdm,
            )
            record(name, scenario_metrics(mode_rows, data.catalog, outputs.get("answers"), outputs.get("scores"), ks))
            timing[mode] = round(time.perf_counter() - start, 2)
            if mode == "generation":
                results["methods"][name]["example_answers"] = outputs["answers"][:3]
        if test_rows is not None and "ranking" in modes:
            start = time.perf_counter()
            ranks = lm_full_catalog_ranks(
                model, processor, test_rows, args.num_retrieved, args.batch_size, source, name, args.disable_tqdm
            )
            results["full_catalog"]["results"][name] = full_catalog_metrics(ranks, ks)
            timing["full_catalog"] = round(time.perf_counter() - start, 2)
        logger.info("%s done: %s", name, timing)

    # ------------------------------------------------------------------ the ranking head
    if ranking_head is not None:
        model, processor = ranking_head
        weight = float(model.config.cf_score_weight)
        head_cf = CF_NAMES.get(model.cf_model.config.model_type, model.cf_model.config.model_type)
        # The shipped scores, and the pure head beside them when the checkpoint adds the CF model's own score.
        variants = {RANKING_HEAD: weight} if not weight else {f"{RANKING_HEAD} + {head_cf} score": weight,
                                                              f"{RANKING_HEAD} (no {head_cf} term)": 0.0}  # fmt: skip
        start = time.perf_counter()
        # One forward per user over the whole catalog gives the candidate scores and the full-catalog rank of each.
        outputs = ranking_head_variants(
            model, processor, rows, list(variants.values()), args.batch_size, args.disable_tqdm, RANKING_HEAD
        )
        index = {(user, target): i for i, (user, target) in enumerate(zip(rows.users, rows.targets, strict=True))}
        picked = [index.get(key) for key in zip(test_rows.users, test_rows.targets, strict=True)] if test_rows else []
        if test_rows is not None and None in picked:  # not the same rows (not expected): score them on their own
            test_outputs = ranking_head_variants(
                model, processor, test_rows, list(variants.values()), args.batch_size, args.disable_tqdm
            )
        for name, variant_weight in variants.items():
            results["methods"][name] = {
                "kind": "ranking",
                "checkpoint": os.path.abspath(args.ranking_model_path),
                "cf_score_weight": variant_weight,
                **({"variant": f"the head without the {head_cf} score"} if variant_weight != weight else {}),
            }
            scores, ranks = outputs[variant_weight]
            record(name, scenario_metrics(rows, data.catalog, scores=scores, ks=ks))
            if test_rows is not None:
                test_ranks = test_outputs[variant_weight][1] if None in picked else ranks[picked]
                results["full_catalog"]["results"][name] = full_catalog_metrics(test_ranks, ks)
        results["timing_seconds"][RANKING_HEAD] = {"ranking": round(time.perf_counter() - start, 2)}
        logger.info("%s done: %s", RANKING_HEAD, results["timing_seconds"][RANKING_HEAD])

    if cross_domain is not None:
        _evaluate_cross_domain(args, cross_domain, data, cf_model, cf_name, loaded, checkpoints, modes, ks, results)

    # ------------------------------------------------------------------ outputs
    report = markdown_report(results)
    _write_atomic(os.path.join(args.output_dir, "results.json"), json.dumps(finite_values(results), indent=2) + "\n")
    _write_atomic(os.path.join(args.output_dir, "results.md"), report + "\n")
    written = ["results.json", "results.md"]
    if args.plots:
        written += [os.path.basename(p) for p in plot_results(results, args.output_dir)]
    logger.info("Wrote %s to %s", ", ".join(written), os.path.abspath(args.output_dir))
    if args.update_model_card:
        update_model_cards(
            finite_values(results), [*checkpoints.values(), args.cf_model_path, args.ranking_model_path], dataset=data
        )
    print(report)
    return results


if __name__ == "__main__":
    run_script(main)
