#!/usr/bin/env python
"""Benchmark: A-LLMRec on other CF backbones (the paper's Table 11), on MovieLens-100k by default.

For each backbone (`--backbones`, default SASRec, GRU4Rec and NextItNet) it runs the quickstart's chain of
example scripts through their `main()`: `pretrain_cf.py --cf_model <backbone>` -> `train_stage1.py` ->
`train_stage2.py`, each with the quickstart's settings for `--size` (`cpu`, `paper`, or `smoke` for the test
suite's tiny models), then `evaluate.py` on the backbone alone and on A-LLMRec built on it. Every evaluation reads
the same prepared dataset with the same seed and user limits, so all methods are scored on the same users and
the same persisted candidate sets (the target plus 19 sampled items); the JSON records a fingerprint of those
rows. Every backbone uses its own default hyper-parameters (SASRec's are the paper's).

    python benchmarks/cf_backbones.py                                   # ML-100k, --size cpu, three backbones
    python benchmarks/cf_backbones.py --size paper --output_dir outputs/cf_backbones_paper
    python benchmarks/cf_backbones.py --backbones gru4rec --dataset_dir outputs/data/ml-100k

Writes `<output_dir>/<backbone>/{cf,stage1,a-llmrec,evaluation}` (rerun the same command to resume: finished
stages are skipped), and `cf_backbones.json` and `cf_backbones.md` (the table and the command that produced it)
in `--output_dir`; prints the table. Hit@1 (generation) is the paper's metric (greedy answer, substring rule);
the ranking columns score every candidate (the CF model by its dot product, A-LLMRec by title likelihood).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
logger = logging.getLogger("cf_backbones")

BACKBONES = ("sasrec", "gru4rec", "nextitnet")
STAGES = ("pretrain_cf", "train_stage1", "train_stage2")
CF_METRICS = ("hit@1", "hit@5", "ndcg@5", "ndcg@10", "mrr")


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="outputs/cf_backbones", metadata={"help": "Where every run's folder goes."})
    backbones: str = field(default=",".join(BACKBONES), metadata={"help": "Comma-separated CF backbones."})
    size: str = field(default="cpu", metadata={"help": "The quickstart's sizes: cpu, paper or smoke."})
    dataset_dir: str | None = field(
        default=None, metadata={"help": "A prepared dataset (default: MovieLens-100k, prepared into output_dir)."}
    )
    llm: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "The frozen causal LM."})
    text_encoder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "The stage-1 sentence encoder."}
    )
    lm_dtype: str = field(default="bfloat16", metadata={"help": "Stage-2 and evaluation LM weights dtype."})
    attn_implementation: str = field(default="eager", metadata={"help": "The LM's attention."})
    stage2_learning_rate: float = field(default=1e-3, metadata={"help": "Stage-2 learning rate (the quickstart's)."})
    modes: str = field(default="generation,ranking", metadata={"help": "evaluate.py --modes."})
    seed: int = field(default=0, metadata={"help": "One seed for every stage and the user sample."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})


def example(name: str):
    """`examples/<name>.py` as a module, through the quickstart's own loader (one copy of each per process)."""
    quickstart = sys.modules.get("allmrec_example_quickstart")
    if quickstart is None:
        spec = importlib.util.spec_from_file_location("allmrec_example_quickstart", EXAMPLES / "quickstart.py")
        quickstart = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = quickstart
        spec.loader.exec_module(quickstart)
    return quickstart.example(name)


def parse_args(argv: list[str] | None = None) -> BenchmarkArguments:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else list(argv)
    )
    sizes = example("quickstart").SIZES
    if args.size not in sizes:
        raise SystemExit(f"--size must be one of {', '.join(sizes)}, got {args.size!r}.")
    from allmrec_hf.training.builders import CF_MODEL_TYPES

    unknown = [b for b in backbones(args) if b not in CF_MODEL_TYPES]
    if unknown or not backbones(args):
        raise SystemExit(f"--backbones must name some of {', '.join(CF_MODEL_TYPES)}, got {args.backbones!r}.")
    return args


def backbones(args: BenchmarkArguments) -> list[str]:
    return list(dict.fromkeys(b.strip() for b in args.backbones.split(",") if b.strip()))


def backbone_commands(args: BenchmarkArguments, backbone: str, dataset_dir: str) -> dict[str, list[str]]:
    """The argument lists of one backbone's runs: the quickstart's stage commands (for this backbone, in
    `<output_dir>/<backbone>`) and an evaluation of the backbone alone and of A-LLMRec on it."""
    quickstart = example("quickstart")
    out = Path(args.output_dir) / backbone
    quick_args = quickstart.QuickstartArguments(
        output_dir=str(out), size=args.size, llm=args.llm, text_encoder=args.text_encoder, dataset_dir=dataset_dir,
        lm_dtype=args.lm_dtype, attn_implementation=args.attn_implementation,
        stage2_learning_rate=args.stage2_learning_rate, cf_model=backbone, seed=args.seed,
        disable_tqdm=args.disable_tqdm,
    )  # fmt: skip
    stages = quickstart.stage_commands(quick_args)
    commands = {stage: stages[stage] for stage in STAGES}
    size = quickstart.SIZES[args.size]
    evaluate = ["--dataset_dir", dataset_dir, "--output_dir", str(out / "evaluation"), "--seed", str(args.seed)]
    evaluate += ["--cf_model_path", str(out / "cf"), "--allmrec_model_path", str(out / "a-llmrec")]
    evaluate += ["--llm", args.llm, "--lm_dtype", args.lm_dtype, "--attn_implementation", args.attn_implementation]
    evaluate += ["--item_embedding_sources", "cf", "--scenarios", "test", "--modes", args.modes]
    evaluate += ["--full_catalog", "false", "--plots", "false", "--disable_tqdm", str(args.disable_tqdm).lower()]
    if size["eval_users"]:
        evaluate += ["--max_users", str(size["eval_users"])]
    if size["generation_users"]:
        evaluate += ["--max_generation_users", str(size["generation_users"])]
    commands["evaluate"] = evaluate
    return commands


def rows_fingerprint(dataset_dir: str, max_users: int | None, seed: int) -> dict:
    """The test users every evaluation scores and a hash of their histories, targets and candidate sets."""
    from allmrec_hf.data import PreparedDataset
    from allmrec_hf.evaluation.evaluator import select_rows

    rows = select_rows(PreparedDataset.load(dataset_dir), ["test"], max_users, seed)
    payload = json.dumps([rows.users, rows.histories, rows.targets, rows.candidates], default=int)
    return {"num_users": len(rows.users), "rows_sha256": hashlib.sha256(payload.encode()).hexdigest()}


def _evaluate(backbone: str, argv: list[str], timings: dict) -> dict:
    """Run `evaluate.py` unless its results for exactly these arguments are there already."""
    output = Path(argv[argv.index("--output_dir") + 1])
    results_file, settings_file = output / "results.json", output / "benchmark_settings.json"
    if results_file.is_file() and settings_file.is_file() and json.loads(settings_file.read_text()) == argv:
        logger.info("=== %s: evaluate: %s is up to date", backbone, results_file)
        return json.loads(results_file.read_text())
    results = _timed(backbone, "evaluate", lambda: example("evaluate").main(argv), timings)
    settings_file.write_text(json.dumps(argv, indent=2) + "\n")
    return results


def _timed(backbone: str, stage: str, function, timings: dict):
    """Run one stage, logging it and recording its wall time in seconds (a finished stage skips: ~0 s)."""
    start = time.perf_counter()
    logger.info("=== %s: %s", backbone, stage)
    result = function()
    timings[stage] = round(time.perf_counter() - start, 1)
    return result


def summarise(backbone: str, results: dict) -> dict:
    """The backbone's and A-LLMRec's test metrics from one `evaluate.py` results dict."""
    test = results["results"]["test"]
    cf_name = next(name for name, method in results["methods"].items() if method.get("kind") == "cf")
    allmrec = test.get("A-LLMRec", {})
    entry = {
        "name": cf_name,
        "cf": {k: test[cf_name]["ranking"].get(k) for k in CF_METRICS},
        "a-llmrec": {
            "generation": {k: allmrec.get("generation", {}).get(k) for k in ("hit@1_substring", "hit@1_strict")},
            "ranking": {k: allmrec.get("ranking", {}).get(k) for k in CF_METRICS},
        },
    }
    cf_hit, ranked_hit = entry["cf"]["hit@1"], entry["a-llmrec"]["ranking"]["hit@1"]
    known = cf_hit is not None and ranked_hit is not None and math.isfinite(cf_hit) and math.isfinite(ranked_hit)
    entry["hit@1_gain_ranking"] = ranked_hit - cf_hit if known else None
    return entry


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def markdown_table(summary: dict) -> str:
    users = summary["users"]
    lines = [
        f"Test users: {users['num_users']} ({users['num_generation_users']} in generation mode), "
        f"{summary['num_candidates']} candidates each, the same for every row (rows sha256 "
        f"{users['rows_sha256'][:12]}). Size `{summary['size']}`, LM `{summary['llm']}`.",
        "",
        "| Backbone | alone: Hit@1 | alone: Hit@5 | alone: MRR | A-LLMRec: Hit@1 (generation) "
        "| A-LLMRec: Hit@1 (ranking) | A-LLMRec: Hit@5 (ranking) | A-LLMRec: MRR (ranking) | Hit@1 gain (ranking) |",
        "|---|" + "---:|" * 8,
    ]
    for entry in summary["backbones"].values():
        cf, generation, ranking = entry["cf"], entry["a-llmrec"]["generation"], entry["a-llmrec"]["ranking"]
        gain = entry["hit@1_gain_ranking"]
        cells = [cf["hit@1"], cf["hit@5"], cf["mrr"], generation["hit@1_substring"]]
        cells += [ranking["hit@1"], ranking["hit@5"], ranking["mrr"]]
        cells = [_cell(c) for c in cells] + ["–" if gain is None else f"{gain:+.4f}"]
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Command:", "", "```bash", summary["command"], "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/cf_backbones.py", *(sys.argv[1:] if argv is None else argv)])
    timings: dict[str, dict[str, float]] = {}

    dataset_dir = args.dataset_dir
    if dataset_dir is None:
        dataset_dir = str(out / "data")
        if not (out / "data" / "prepared_dataset.json").is_file():
            prepare = ["--output_dir", dataset_dir, "--overwrite_output_dir", "true"]
            _timed(
                "data", "prepare_data", lambda: example("prepare_data").main(prepare), timings.setdefault("data", {})
            )

    summary: dict = {"command": command, "size": args.size, "llm": args.llm, "arguments": asdict(args)}
    per_backbone = {}
    for backbone in backbones(args):
        commands = backbone_commands(args, backbone, dataset_dir)
        spent = timings.setdefault(backbone, {})
        for stage in STAGES:
            _timed(backbone, stage, lambda s=stage, a=commands[stage]: example(s).main(a), spent)
        results = _evaluate(backbone, commands["evaluate"], spent)
        per_backbone[backbone] = (results, summarise(backbone, results))

    first = next(iter(per_backbone.values()))[0]
    max_users = example("quickstart").SIZES[args.size]["eval_users"]
    summary["users"] = {
        **rows_fingerprint(dataset_dir, max_users, args.seed),
        "num_generation_users": first["scenarios"]["test"]["num_generation_users"],
    }
    for backbone, (results, _) in per_backbone.items():  # the same users and candidate sets everywhere
        if results["scenarios"]["test"] != first["scenarios"]["test"] or results["seed"] != first["seed"]:
            raise RuntimeError(f"{backbone} was evaluated on other users than {next(iter(per_backbone))}.")
    summary["dataset"] = first["dataset"]
    summary["num_candidates"] = first["num_candidates"]
    summary["backbones"] = {backbone: entry for backbone, (_, entry) in per_backbone.items()}
    summary["timing_seconds"] = timings
    from allmrec_hf.model_card import finite_values

    summary = finite_values(summary)
    table = markdown_table(summary)
    (out / "cf_backbones.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    (out / "cf_backbones.md").write_text(table + "\n")
    print("\n" + table)
    return summary


if __name__ == "__main__":
    main()
