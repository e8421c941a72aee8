"""Model cards: the `README.md` that every training script writes next to its checkpoint.

A card is a `huggingface_hub.ModelCard`: a YAML header built with `ModelCardData` (library, base model, tags,
metrics and, once the model is evaluated, a `model-index` whose metric arguments spell out the protocol: how many
candidates, how the negatives were sampled, generation or ranking) and a Markdown body rendered from the Jinja
template `model_cards/model_card_template.md` shipped inside this package (see `model_cards/README.md` at the root of
the repository): what the model is, its base LM and CF model, the training data and settings, its results, how to
load it, its limitations and the paper to cite.

    from allmrec_hf.model_card import build_model_card, update_model_cards, write_model_card

    write_model_card("recommender", "outputs/stage2", model=model, dataset=data,
                     arguments=(model_args, data_args, training_args), training_results=results)
    update_model_cards(evaluation_results, ["outputs/stage2"], dataset=data)   # after examples/evaluate.py

`write_model_card` and `update_model_cards` never raise (unless `strict=True`): a card is documentation, and a
problem rendering it must not cost a trained model, which the scripts save first. The evaluation section of the
body sits between two HTML comments, so an evaluation rewrites that section (and the `model-index`) and keeps any
hand edits elsewhere in the card.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evaluation.report import WHOLE_CATALOG_KINDS
from .version import __version__

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "model_cards"
CARD_TEMPLATE = TEMPLATE_DIR / "model_card_template.md"
EVALUATION_TEMPLATE = TEMPLATE_DIR / "evaluation_section.md"
CARD_FILE = "README.md"
# How each kind of method scores a candidate (the model-index entries' `scoring` argument).
SCORING = {
    "cf": "CF model score (dot product of user representation and item embedding)",
    "popularity": "training interaction count",
    "ranking": "ranking head score (dot product of the output token's user vector and the item head's vector)",
    "generative": "log-likelihood of the item title",
}
RESULTS_FILE = "all_results.json"

KINDS = ("cf", "aligner", "recommender")
METHODS = ("a-llmrec", "mlp_llm", "llm_only")
# The checkpoints are `transformers` checkpoints (config.json with `auto_map`, safetensors weights, the model code
# in the folder): they load with the Auto classes and `trust_remote_code=True`, which is what the Hub's
# transformers integration shows and counts. `allmrec-hf` itself goes into the tags.
LIBRARY_NAME = "transformers"
# The Hub's pipeline_tag is one of its fixed task ids (huggingface.js `PIPELINE_DATA`), which has no
# recommendation task; "next-item-recommendation" (this package's pipeline) would not be one. "other" is the
# Hub's id for models outside its task list (no widget, no inference snippet that could not work).
PIPELINE_TAG = "other"
TASK_TYPE = "sequential-recommendation"
TASK_NAME = "Sequential Recommendation"
METRICS = ["hit_rate", "ndcg", "mrr"]
EVALUATION_START = "<!-- allmrec-hf:evaluation:start -->"
EVALUATION_END = "<!-- allmrec-hf:evaluation:end -->"
PAPER_URL = "https://arxiv.org/abs/2404.11343"

METHOD_TITLES = {
    "a-llmrec": "A-LLMRec",
    "mlp_llm": "MLP-LLM",
    "llm_only": "LLM-only",
    "ranking": "A-LLMRec ranking head",
}
CF_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "nextitnet": "NextItNet"}
CF_CLASSES = {"sasrec": "SASRecModel", "gru4rec": "GRU4RecModel", "nextitnet": "NextItNetModel"}
KIND_OF_MODEL_TYPE = {
    "allmrec": "recommender",
    "allmrec_ranking": "recommender",  # the ranking head (method "ranking")
    "allmrec_aligner": "aligner",
    **{t: "cf" for t in CF_NAMES},
}
# How a card describes each CF backbone: (its sequence encoder, what its `num_hidden_layers` counts).
CF_ARCHITECTURES = {
    "sasrec": ("self-attention over the user's item history", "blocks"),
    "gru4rec": ("a GRU over the user's item history", "GRU layer(s)"),
    "nextitnet": ("dilated causal convolutions over the user's item history", "residual block(s)"),
}
CF_ARCHITECTURE_UNKNOWN = ("a sequence model over the user's item history", "layers")

# What each kind's settings table shows: (argument name, label). Arguments that are None, empty or absent are
# left out; the values come from the scripts' argument dataclasses (or a plain dict).
_COMMON_DATA_SETTINGS = [
    ("max_train_samples", "Training users (first N)"),
    ("few_shot_users", "Few-shot training users"),
]
_SETTINGS = {
    "cf": [
        ("num_train_epochs", "Epochs (maximum)"),
        ("learning_rate", "Learning rate"),
        ("optim", "Optimizer"),
        ("adam_beta2", "Adam beta2"),
        ("effective_batch_size", "Batch size"),
        ("lr_scheduler_type", "Learning-rate schedule"),
        ("early_stopping_patience", "Early stopping patience (evaluations)"),
        ("metric_for_best_model", "Best epoch chosen by (validation)"),
        ("dropout", "Dropout"),
        ("seed", "Seed"),
        *_COMMON_DATA_SETTINGS,
    ],
    "aligner": [
        ("text_encoder", "Sentence encoder"),
        ("latent_size", "Joint latent size"),
        ("alpha", "Item reconstruction weight (alpha)"),
        ("beta", "Text reconstruction weight (beta)"),
        ("latent_activation", "Latent encoders end in (paper: sigmoid)"),
        ("uniformity_weight", "Uniformity weight (paper: 0)"),
        ("all_positions", "Train on every position (paper: last item only)"),
        ("item_text_template", "Item text"),
        ("item_text_max_length", "Sentence-encoder tokens per item"),
        ("num_train_epochs", "Epochs"),
        ("learning_rate", "Learning rate"),
        ("effective_batch_size", "Batch size"),
        ("seed", "Seed"),
        *_COMMON_DATA_SETTINGS,
    ],
    "recommender": [
        ("llm", "Language model"),
        ("num_candidates", "Candidates per training prompt"),
        ("prompt_history_length", "History titles in the prompt"),
        ("max_history_length", "History items for the CF encoder"),
        ("prompt_words", "Prompt words (noun / verb / past tense)"),
        ("lm_dtype", "LM weights dtype"),
        ("lora", "LoRA on the LM"),
        ("num_train_epochs", "Epochs"),
        ("max_steps", "Steps (maximum)"),
        ("learning_rate", "Learning rate"),
        ("effective_batch_size", "Batch size"),
        ("bf16", "bf16 autocast"),
        ("seed", "Seed"),
        *_COMMON_DATA_SETTINGS,
    ],
    "ranking": [  # the ranking head's script (examples/train_ranking_head.py)
        ("llm", "Language model"),
        ("ranking_history_length", "History items in the prompt (each an output token)"),
        ("history_shown", "Each history item in the prompt"),
        ("max_history_length", "History items for the CF encoder"),
        ("cut_points", "Training cut points per user"),
        ("num_negatives", "Sampled negatives per output token (0: whole catalog)"),
        ("item_head_input", "Item head input"),
        ("ranking_hidden_size", "Scored vector size"),
        ("cf_skip", "CF skip into the user vector"),
        ("lm_num_layers", "LM decoder layers run (the first N; unset: all)"),
        ("cf_score_weight", "CF score added to the head's (weight; auto: chosen on validation)"),
        ("distillation_weight", "Distillation weight"),
        ("uniformity_weight", "Uniformity weight"),
        ("lm_dtype", "LM weights dtype"),
        ("lora", "LoRA on the LM"),
        ("num_train_epochs", "Epochs (maximum)"),
        ("early_stopping_patience", "Early stopping patience (epochs)"),
        ("learning_rate", "Learning rate"),
        ("lr_scheduler_type", "Learning-rate schedule"),
        ("effective_batch_size", "Batch size"),
        ("bf16", "bf16 autocast"),
        ("seed", "Seed"),
        *_COMMON_DATA_SETTINGS,
    ],
}
_TRAINING_RESULTS = [
    ("epoch", "Epochs trained"),
    ("train_loss", "Final training loss (mean)"),
    ("eval_loss", "Validation loss"),
    ("train_runtime", "Training time (s)"),
    ("train_samples_per_second", "Training samples / s"),
    # Stage 1: how far apart the items' joint latents lie after training (near 1 / near 0: collapsed).
    ("latent_mean_pairwise_cosine", "Joint latents: mean pairwise cosine over the catalog"),
    ("latent_centered_mean_pairwise_cosine", "Joint latents: mean pairwise cosine, mean latent removed"),
    ("latent_mean_dimension_std", "Joint latents: per-dimension standard deviation (mean)"),
]


# ================================================================================================ public API
def build_model_card(
    kind: str | None,
    output_dir: str | os.PathLike,
    config=None,
    *,
    model=None,
    dataset=None,
    arguments: Sequence[Any] | Mapping[str, Any] | None = None,
    training_results: Mapping[str, Any] | None = None,
    evaluation_results: Mapping[str, Any] | None = None,
    model_id: str | None = None,
    hub_dataset_id: str | None = None,
    template_path: str | os.PathLike | None = None,
    pipeline_tag: str = PIPELINE_TAG,
) -> ModelCard:
    """The model card of the checkpoint in `output_dir`.

    Args:
        kind: `"cf"` (a pretrained CF model), `"aligner"` (stage 1) or `"recommender"` (stage 2: A-LLMRec or the
            MLP-LLM / LLM-only baselines); None infers it from the config's `model_type`.
        output_dir: The checkpoint folder (its `config.json` and `all_results.json` are read when `config` /
            `training_results` are not given).
        config: The model's config (default: `model.config`, else loaded from `output_dir`).
        model: The trained model, for parameter counts.
        dataset: The `PreparedDataset` it was trained (or evaluated) on: name, statistics, candidate protocol.
        arguments: The script's argument dataclasses (model, data, training) or one dict: the settings table.
        training_results: The run's `all_results.json` content (default: read from `output_dir`).
        evaluation_results: `examples/evaluate.py`'s `results.json` content: the model-index and the evaluation
            section (only the methods whose checkpoint is `output_dir`, compared with the others of that run).
        model_id: The name the loading code and the model-index use (default: `output_dir` as given).
        hub_dataset_id: The training data's Hub dataset id, listed under `datasets` (default: the prepared
            dataset's metadata `hub_dataset_id`, if any; a dataset that is not on the Hub is only named in the body).
        template_path: Another Jinja template for the body (default: `model_cards/model_card_template.md`).
        pipeline_tag: The Hub task id (default `"other"`: the Hub has no recommendation task).
    """
    output_dir = os.fspath(output_dir)
    if config is None:
        config = model.config if model is not None else _load_config(output_dir)
    kind = kind or KIND_OF_MODEL_TYPE.get(getattr(config, "model_type", ""), None)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (or None to infer it), got {kind!r}.")
    if training_results is None:
        training_results = _read_json(os.path.join(output_dir, RESULTS_FILE)) or {}
    settings = _arguments_dict(arguments)
    method = _method(kind, config, training_results, settings)
    data = _dataset_context(dataset, hub_dataset_id)
    model_path = model_id or output_dir
    model_name = os.path.basename(os.path.normpath(model_id or output_dir)) or "model"

    eval_results = _training_eval_results(kind, config, training_results, data, settings)
    section = ""
    if evaluation_results:
        own = _own_methods(evaluation_results, output_dir, kind)
        eval_results = [r for r in eval_results if r.dataset_split != "test"]
        eval_results += evaluation_eval_results(evaluation_results, own, data)
        section = render_evaluation_section(evaluation_results, own, kind, data)
    base_model = _base_model(kind, config)
    card_data = ModelCardData(
        base_model=base_model,
        # A-LLMRec is to its LM what a PEFT adapter is (the checkpoint holds everything but the LM, which it names);
        # the aligner holds the fine-tuned sentence encoder.
        base_model_relation={"recommender": "adapter", "aligner": "finetune"}.get(kind) if base_model else None,
        datasets=[data["hub_id"]] if data.get("hub_id") else None,
        language="en" if kind != "cf" else None,
        library_name=LIBRARY_NAME,
        metrics=list(METRICS) if kind != "aligner" else None,
        pipeline_tag=pipeline_tag,
        tags=_tags(kind, method, config),
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )
    context = _card_context(kind, method, config, model, data, settings, training_results, model_path)
    context["evaluation_section"] = section or render_evaluation_section(
        None, [], "ranking" if method == "ranking" else kind
    )
    context["evaluation_start"], context["evaluation_end"] = EVALUATION_START, EVALUATION_END
    card = ModelCard.from_template(card_data, template_path=str(template_path or CARD_TEMPLATE), **context)
    card.text = _tidy(card.text)
    return card


def write_model_card(
    kind: str | None, output_dir: str | os.PathLike, config=None, *, strict: bool = False, **kwargs
) -> str | None:
    """Build the card (`build_model_card`, same arguments) and write it to `output_dir/README.md` atomically.
    Returns the path, or None when something went wrong and `strict` is False (the problem is logged: a card
    must never cost a trained model)."""
    try:
        card = build_model_card(kind, output_dir, config, **kwargs)
        path = os.path.join(os.fspath(output_dir), CARD_FILE)
        _write_atomic(path, str(card))
        logger.info("Model card written to %s", path)
        return path
    except Exception as error:  # noqa: BLE001 - documentation must not fail a training run
        if strict:
            raise
        logger.warning("Could not write the model card in %s: %s: %s", output_dir, type(error).__name__, error)
        return None


def update_model_card(
    output_dir: str | os.PathLike,
    evaluation_results: Mapping[str, Any],
    *,
    dataset=None,
    hub_dataset_id: str | None = None,
    strict: bool = False,
) -> str | None:
    """Put an evaluation (`examples/evaluate.py`'s results) into the card of the checkpoint in `output_dir`: the
    model-index gets this checkpoint's test results (older test entries replaced) and the evaluation section of
    the body is rewritten; the rest of the card, hand edits included, is kept (a card without an evaluation section,
    e.g. one written by hand, gets one at its end). A folder without a card gets a new one. Returns the path, or
    None on a (logged) problem."""
    output_dir = os.fspath(output_dir)
    path = os.path.join(output_dir, CARD_FILE)
    try:
        evaluation_results = finite_values(evaluation_results)
        card = ModelCard.load(path) if os.path.isfile(path) else None
        if card is None:
            return write_model_card(
                None,
                output_dir,
                dataset=dataset,
                evaluation_results=evaluation_results,
                hub_dataset_id=hub_dataset_id,
                strict=True,
            )
        if EVALUATION_START not in card.text or EVALUATION_END not in card.text.split(EVALUATION_START, 1)[1]:
            logger.info("%s has no evaluation section: adding one at its end.", path)
            card.text = card.text.rstrip("\n") + f"\n\n{EVALUATION_START}\n{EVALUATION_END}\n"
        config = _load_config(output_dir)
        kind = KIND_OF_MODEL_TYPE.get(getattr(config, "model_type", ""), "recommender")
        own = _own_methods(evaluation_results, output_dir, kind)
        data = _dataset_context(dataset, hub_dataset_id)
        if not data.get("name"):
            data["name"] = evaluation_results.get("dataset")
        kept = [r for r in (card.data.eval_results or []) if r.dataset_split != "test"]
        new = evaluation_eval_results(evaluation_results, own, data)
        card.data.eval_results = kept + new or None
        card.data.model_name = card.data.model_name or os.path.basename(os.path.normpath(output_dir))
        if not card.data.eval_results:
            card.data.model_name = None
        section = render_evaluation_section(evaluation_results, own, kind, data)
        start = card.text.index(EVALUATION_START) + len(EVALUATION_START)
        end = card.text.index(EVALUATION_END, start)
        card.text = card.text[:start] + "\n" + section.strip() + "\n" + card.text[end:]
        _write_atomic(path, str(card))
        logger.info("Evaluation results written into the model card %s", path)
        return path
    except Exception as error:  # noqa: BLE001
        if strict:
            raise
        logger.warning("Could not update the model card in %s: %s: %s", output_dir, type(error).__name__, error)
        return None


def update_model_cards(
    evaluation_results: Mapping[str, Any], folders: Iterable[str | os.PathLike | None], **kwargs
) -> list[str]:
    """`update_model_card` for each checkpoint folder (None entries skipped); returns the cards written."""
    written = []
    for folder in dict.fromkeys(os.fspath(f) for f in folders if f):
        path = update_model_card(folder, evaluation_results, **kwargs)
        if path:
            written.append(path)
    return written


# ====================================================================================== model-index entries
def evaluation_eval_results(
    evaluation_results: Mapping[str, Any], methods: Sequence[str], data: Mapping[str, Any] | None = None
) -> list[EvalResult]:
    """`EvalResult`s of `methods` on the `test` scenario of an evaluation (`examples/evaluate.py`): generation
    Hit@1 (substring and strict rules), ranking Hit@K / NDCG@K / MRR on the persisted candidate sets and, when
    computed, full-catalog retrieve-then-rerank. The protocol is in each metric's `args` and `config`."""
    results = finite_values(evaluation_results)
    data = dict(data or {})
    name = data.get("name") or results.get("dataset") or "dataset"
    dataset_type = data.get("hub_id") or name
    num_candidates = results.get("num_candidates")
    sampling = data.get("negative_sampling")
    scenario = results.get("scenarios", {}).get("test", {})
    candidates = _candidate_args(num_candidates, sampling, data.get("seed"))
    if _users_sampled(results):
        candidates["user_sample_seed"] = results.get("seed")
    ks = [int(k) for k in results.get("ks", [1, 5, 10])]
    out: list[EvalResult] = []

    def add(method, metric_type, key_label, value, config, args):
        if value is None:
            return
        out.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name=TASK_NAME,
                dataset_type=dataset_type,
                dataset_name=name,
                dataset_split="test",
                metric_type=metric_type,
                metric_value=round(float(value), 4),
                metric_name=f"{method} {key_label}",
                metric_config=config,
                metric_args={"method": method, **args},
            )
        )

    for method in methods:
        info = results.get("methods", {}).get(method, {})
        entry = results.get("results", {}).get("test", {}).get(method, {})
        extra = {"item_embeddings": info["item_embeddings"]} if info.get("item_embeddings") else {}
        generation = entry.get("generation") or {}
        for rule in ("substring", "strict"):
            args = {
                "k": 1,
                "mode": "generation",
                "rule": rule,
                **candidates,
                "users": scenario.get("num_generation_users", scenario.get("num_users")),
                "decoding": "greedy",
                **extra,
            }
            add(method, "hit_rate", f"Hit@1 (generation, {rule} rule)", generation.get(f"hit@1_{rule}"),
                f"sampled-candidates/generation-{rule}", args)  # fmt: skip
        ranking = entry.get("ranking") or {}
        scoring = SCORING.get(info.get("kind"), SCORING["generative"])
        base = {"mode": "ranking", **candidates, "users": scenario.get("num_users"), "scoring": scoring, **extra}
        for metric_type, key, label, k in _ranking_keys(ks):
            add(method, metric_type, f"{label} (ranking)", ranking.get(key), "sampled-candidates/ranking",
                {**({"k": k} if k else {}), **base})  # fmt: skip
        full = (results.get("full_catalog") or {}).get("results", {}).get(method)
        if full:
            catalog = results["full_catalog"]
            whole = info.get("kind") in WHOLE_CATALOG_KINDS  # ranks every item itself: no CF retrieval
            base = {
                "mode": "full-catalog ranking" if whole else "retrieve-then-rerank",
                "candidates": "full catalog (items in the history left out)",
                **({} if whole else {"retrieved_by_cf": catalog.get("num_retrieved")}),
                "users": catalog.get("num_users"),
                "scoring": scoring,
                **extra,
            }
            for metric_type, key, label, k in _ranking_keys(ks):
                add(method, metric_type, f"{label} (full catalog)", full.get(key), "full-catalog",
                    {**({"k": k} if k else {}), **base})  # fmt: skip
    return out


def render_evaluation_section(
    evaluation_results: Mapping[str, Any] | None,
    methods: Sequence[str],
    kind: str = "recommender",
    data: Mapping[str, Any] | None = None,
) -> str:
    """The body's evaluation section (the template `model_cards/evaluation_section.md`): `methods` (this
    checkpoint's) in bold among the others of the evaluation; `data` (`_dataset_context`) gives the candidate seed."""
    import jinja2

    context: dict[str, Any] = {"kind": kind, "evaluated": bool(evaluation_results)}
    if evaluation_results:
        results = finite_values(evaluation_results)
        ks = [int(k) for k in results.get("ks", [1, 5, 10])]
        rank_keys = [(key, label) for _, key, label, _ in _ranking_keys(ks)]
        test = results.get("results", {}).get("test", {})
        all_methods = list(results.get("methods", {}))
        scenarios = list(results.get("scenarios", {}))
        generated = any(  # generation columns only when some method generated answers
            entry.get("generation", {}).get("hit@1_substring") is not None
            for scenario in scenarios
            for entry in results.get("results", {}).get(scenario, {}).values()
        )
        rows = []
        for method in all_methods:
            entry = test.get(method, {})
            cells = []
            if generated:
                cells.append(_fmt(entry.get("generation", {}).get("hit@1_substring")))
                cells.append(_fmt(entry.get("generation", {}).get("hit@1_strict")))
            cells += [_fmt(entry.get("ranking", {}).get(key)) for key, _ in rank_keys]
            name = f"**{method}** (this model)" if method in methods else method
            rows.append([name, *cells])
        scenario_rows = []
        if len(scenarios) > 1:
            for method in all_methods:
                cells = []
                for scenario in scenarios:
                    entry = results["results"].get(scenario, {}).get(method, {})
                    cells.append(_fmt(entry.get("ranking", {}).get("hit@1")))
                    if generated:
                        cells.append(_fmt(entry.get("generation", {}).get("hit@1_substring")))
                name = f"**{method}**" if method in methods else method
                scenario_rows.append([name, *cells])
        full = results.get("full_catalog") or {}
        full_rows = [
            [f"**{m}**" if m in methods else m, *[_fmt(v.get(key)) for key, _ in rank_keys]]
            for m, v in (full.get("results") or {}).items()
        ]
        kinds = {m: (v or {}).get("kind") for m, v in results.get("methods", {}).items()}
        whole_catalog = [m for m in full.get("results") or {} if kinds.get(m) in WHOLE_CATALOG_KINDS]
        num_candidates = results.get("num_candidates")
        context.update(
            generated=generated,
            whole_catalog=whole_catalog,
            reranked=[m for m in full.get("results") or {} if m not in whole_catalog],
            dataset=results.get("dataset"),
            num_candidates=num_candidates,
            num_negatives=num_candidates - 1 if isinstance(num_candidates, int) else None,
            candidate_seed=(data or {}).get("seed"),
            user_seed=results.get("seed") if _users_sampled(results) else None,
            test=results.get("scenarios", {}).get("test", {}),
            methods=list(methods),
            rank_labels=[label for _, label in rank_keys],
            rows=rows,
            scenario_names=[_scenario_name(s, results["scenarios"][s]) for s in scenarios],
            scenario_rows=scenario_rows,
            full=full,
            full_rows=full_rows,
        )
    template = jinja2.Template(EVALUATION_TEMPLATE.read_text(encoding="utf-8"))
    return _tidy(template.render(**context)).strip() + "\n"


# ================================================================================================== helpers
_SCENARIO_NAMES = {
    "test": "All users",
    "cold_items": "Cold items",
    "warm_items": "Warm items",
    "cold_users": "Cold users",
    "cross_domain": "Cross-domain",
}


def _scenario_name(scenario: str, info: Mapping[str, Any]) -> str:
    name = _SCENARIO_NAMES.get(scenario, scenario)
    if info.get("dataset"):  # a scenario on another dataset (cross-domain)
        name += f", {info['dataset']}"
    return f"{name} (n={info.get('num_users')})"


def _users_sampled(results: Mapping[str, Any]) -> bool:
    """Whether the evaluation drew a sample of the users (`--max_users` / `--max_generation_users`)."""
    arguments = results.get("arguments") or {}
    return bool(arguments.get("max_users") or arguments.get("max_generation_users"))


def _ranking_keys(ks: Sequence[int]) -> list[tuple[str, str, str, int | None]]:
    """(metric type, results key, label, k) of the ranking metrics: Hit@K, NDCG@K (K > 1: NDCG@1 is Hit@1), MRR."""
    keys = [("hit_rate", f"hit@{k}", f"Hit@{k}", k) for k in ks]
    keys += [("ndcg", f"ndcg@{k}", f"NDCG@{k}", k) for k in ks if k > 1]
    return keys + [("mrr", "mrr", "MRR", None)]


def _candidate_args(num_candidates, sampling, seed) -> dict[str, Any]:
    """The candidate-set protocol: the target plus sampled negatives the user never interacted with, drawn once
    under the dataset's seed and persisted (identical for every method)."""
    args: dict[str, Any] = {"candidates": num_candidates}
    if isinstance(num_candidates, int):
        args["negatives"] = num_candidates - 1
    args["negative_sampling"] = f"{sampling or 'sampled'} over never-interacted items, persisted"
    if seed is not None:
        args["candidate_seed"] = seed
    return args


def _training_eval_results(kind, config, training_results, data, settings) -> list[EvalResult]:
    """A CF or ranking-head run's own validation and test metrics (`all_results.json`: `eval_*` and `test_*`)."""
    ranking_head = getattr(config, "model_type", None) == "allmrec_ranking"
    if not (kind == "cf" or ranking_head) or not data.get("name"):
        return []
    cf_name = METHOD_TITLES["ranking"] if ranking_head else CF_NAMES.get(config.model_type, config.model_type)
    out = []
    num_candidates = data.get("num_candidates")
    for prefix, split in (("eval", "validation"), ("test", "test")):
        users = data.get("split_rows", {}).get(split)
        limit = settings.get("max_eval_samples")
        if users is not None and limit is not None:
            users = min(users, int(limit))
        base = {
            "method": cf_name,
            "mode": "ranking",
            **_candidate_args(num_candidates, data.get("negative_sampling"), data.get("seed")),
            "users": users,
            "scoring": SCORING["ranking"] if ranking_head else SCORING["cf"],
            "evaluated_by": (
                f"examples/{'train_ranking_head' if ranking_head else 'pretrain_cf'}.py (best validation epoch)"
            ),
        }
        ks = sorted({int(m.group(1)) for key in training_results if (m := re.fullmatch(rf"{prefix}_hit@(\d+)", key))})
        for metric_type, key, label, k in _ranking_keys(ks):
            value = training_results.get(f"{prefix}_{key}")
            if not _is_number(value):
                continue
            out.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=data.get("hub_id") or data["name"],
                    dataset_name=data["name"],
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_value=round(float(value), 4),
                    metric_name=f"{split.title()} {label}",
                    metric_config="sampled-candidates/ranking",
                    metric_args={**({"k": k} if k else {}), **base},
                )
            )
    return out


def _card_context(kind, method, config, model, data, settings, training_results, model_path) -> dict[str, Any]:
    cf_config = config.cf_config if kind != "cf" else config
    context: dict[str, Any] = {
        "kind": kind,
        "method": method,
        "method_title": METHOD_TITLES.get(method, ""),
        "model_path": repr(str(model_path)),
        "paper_url": PAPER_URL,
        "package_version": __version__,
        "dataset": data,
        "cf": {
            "name": CF_NAMES.get(cf_config.model_type, cf_config.model_type),
            "class_name": CF_CLASSES.get(cf_config.model_type),
            "hidden_size": getattr(cf_config, "hidden_size", None),
            "num_items": getattr(cf_config, "num_items", None),
            "max_seq_length": getattr(cf_config, "max_seq_length", None),
            "num_hidden_layers": getattr(cf_config, "num_hidden_layers", None),
            "num_attention_heads": getattr(cf_config, "num_attention_heads", None),
            "architecture": CF_ARCHITECTURES.get(cf_config.model_type, CF_ARCHITECTURE_UNKNOWN)[0],
            "layer_name": CF_ARCHITECTURES.get(cf_config.model_type, CF_ARCHITECTURE_UNKNOWN)[1],
        },
        "settings": _settings_rows("ranking" if method == "ranking" else kind, settings),
        "training_rows": [
            [label, _fmt_value(training_results[key])]
            for key, label in _TRAINING_RESULTS
            if _is_number(training_results.get(key))
        ],
        "cf_results": _cf_results_table(training_results) if kind == "cf" or method == "ranking" else None,
        "parameters": _parameters(model, kind),
    }
    aligner_config = config if kind == "aligner" else getattr(config, "aligner_config", None)
    if kind != "cf" and aligner_config is not None:
        encoder = aligner_config.text_encoder_config
        name = aligner_config.text_encoder_name_or_path or settings.get("text_encoder")
        context["text_encoder"] = (
            {
                "name": _model_name(name),
                "display": _model_display(name),
                "type": encoder.model_type,
                "hidden_size": encoder.hidden_size,
                "num_hidden_layers": getattr(encoder, "num_hidden_layers", None),
            }
            if name and method in (None, "a-llmrec")  # the baselines do not use the sentence encoder
            else None
        )
        context["latent_size"] = aligner_config.latent_size
        context["alpha"], context["beta"] = aligner_config.alpha, aligner_config.beta
        context["latent_activation"] = aligner_config.latent_activation
    if kind == "recommender":
        lm = config.text_config
        context["lm"] = {
            "name": _model_name(config.base_model_name_or_path) or lm.model_type,
            "display": _model_display(config.base_model_name_or_path) or f"a {lm.model_type} LM",
            "type": lm.model_type,
            "hidden_size": getattr(lm, "hidden_size", None),
            "num_hidden_layers": getattr(lm, "num_hidden_layers", None),
            "vocab_size": getattr(lm, "vocab_size", None),
            "adapter": bool(config.lm_adapter_subfolder),
            "included": bool(config.language_model_included),
        }
        context["item_projector_input"] = config.item_projector_input
        if method == "ranking":
            context["ranking"] = {
                "hidden_size": config.ranking_hidden_size,
                "item_head_input": {
                    "cf": "CF item embedding",
                    "joint": "stage-1 joint latent",
                    "text": "stage-1 text latent",
                }[config.item_head_input],
                "cf_skip": config.cf_skip,
                "distillation": config.distillation_weight,
                "uniformity": config.uniformity_weight,
                "user_representation": config.use_user_representation,
                "cf_score_weight": float(f"{config.cf_score_weight:.4g}"),
                "lm_num_layers": config.lm_num_layers,
                # how the script showed each history item (a card written from Python without the script: unsaid)
                "history_shown": settings.get("history_shown"),
            }
    context["example"] = _example(kind, data, config, training_results)
    return context


def _example(kind, data, config, training_results) -> dict[str, Any]:
    """Item indices and titles of a small history for the loading code (titles that name one item only)."""
    catalog = data.get("catalog")
    num_items = getattr(config.cf_config if kind != "cf" else config, "num_items", None) or 3
    history_ids = [i for i in (1, 2, 3) if i <= num_items]
    titles = None
    if catalog is not None:
        unique = []
        for index in range(1, catalog.num_items + 1):
            if len(catalog.find_title(catalog.title(index))) == 1:  # the pipeline resolves the title to it
                unique.append(index)
                if len(unique) == 3:
                    break
        if unique:
            history_ids = unique
            titles = [catalog.title(i) for i in history_ids]
    retrieved = max(1, min(20, num_items - len(history_ids)))
    return {
        "history_ids": repr(history_ids),
        "history_titles": repr(titles) if titles else None,
        "k": min(5, retrieved),
        "num_retrieved": retrieved,
        "item_text_template": repr(training_results.get("item_text_template") or "{title}, {description}"),
    }


def _cf_results_table(training_results) -> dict[str, Any] | None:
    ks = sorted({int(m.group(1)) for k in training_results if (m := re.fullmatch(r"(?:eval|test)_hit@(\d+)", k))})
    keys = [(f"hit@{k}", f"Hit@{k}") for k in ks] + [(f"ndcg@{k}", f"NDCG@{k}") for k in ks if k > 1]
    keys.append(("mrr", "MRR"))
    rows = []
    for prefix, split in (("eval", "Validation"), ("test", "Test")):
        if any(f"{prefix}_{key}" in training_results for key, _ in keys):
            rows.append([split, *[_fmt(training_results.get(f"{prefix}_{key}")) for key, _ in keys]])
    return {"labels": [label for _, label in keys], "rows": rows} if rows else None


def _dataset_context(dataset, hub_dataset_id: str | None) -> dict[str, Any]:
    """What the card says of the data: from a `PreparedDataset`, or a dict with the same keys."""
    if dataset is None:
        return {"hub_id": hub_dataset_id} if hub_dataset_id else {}
    if isinstance(dataset, Mapping):
        data = dict(dataset)
        if hub_dataset_id:
            data["hub_id"] = hub_dataset_id
        return data
    metadata = dict(getattr(dataset, "metadata", {}) or {})
    config = metadata.get("config", {}) or {}
    source = str(metadata.get("source") or "")
    name = dataset.name
    movielens = source.startswith(("movielens", "ml-100k")) or name.lower().startswith(("ml-", "movielens"))
    statistics = dict(metadata.get("statistics") or {})
    hub_id = hub_dataset_id or metadata.get("hub_dataset_id")
    sampling = config.get("negative_sampling")
    return {
        "name": name,
        "hub_id": hub_id,
        "movielens": movielens,
        "source_format": source.split(":", 1)[0] if source else None,
        "statistics": statistics,
        "split_rows": dict(metadata.get("split_rows") or {}),
        "num_candidates": config.get("num_negatives", 0) + 1 if sampling and sampling != "none" else None,
        "negative_sampling": sampling,
        "seed": config.get("seed"),
        "candidates": (metadata.get("evaluation") or {}).get("candidates"),
        "catalog": getattr(dataset, "catalog", None),
    }


def _arguments_dict(arguments) -> dict[str, Any]:
    if not arguments:
        return {}
    if isinstance(arguments, Mapping):
        arguments = [arguments]
    merged: dict[str, Any] = {}
    for item in arguments:
        if item is None:
            continue
        if isinstance(item, Mapping):
            merged.update(item)
            continue
        if dataclasses.is_dataclass(item):
            merged.update({f.name: getattr(item, f.name) for f in dataclasses.fields(item)})
        if hasattr(item, "gradient_accumulation_steps") and hasattr(item, "per_device_train_batch_size"):
            try:
                processes = int(item.world_size)
            except Exception:  # noqa: BLE001 - the device setup is not needed for a card
                processes = 1
            size = item.per_device_train_batch_size * processes * item.gradient_accumulation_steps
            detail = [f"{item.per_device_train_batch_size} per device"]
            if processes > 1:
                detail.append(f"{processes} processes")
            if item.gradient_accumulation_steps > 1:
                detail.append(f"{item.gradient_accumulation_steps} accumulation steps")
            merged["effective_batch_size"] = f"{size} ({', '.join(detail)})" if len(detail) > 1 else size
    if "noun" in merged:
        merged["prompt_words"] = " / ".join(str(merged.get(k)) for k in ("noun", "verb", "past_verb"))
    if merged.get("lora_r"):
        merged["lora"] = (
            f"r={merged['lora_r']}, alpha={merged.get('lora_alpha')}, modules {merged.get('lora_target_modules')}"
        )
    for key in ("llm", "text_encoder"):
        if merged.get(key):
            merged[key] = _model_display(merged[key])
    if merged.get("item_text_template"):
        merged["item_text_template"] = f"`{merged['item_text_template']}`"
    if "history_titles" in merged:  # the ranking head's script
        shown = ["its item embedding"] if not merged.get("no_history_embeddings") else []
        if merged["history_titles"]:
            shown.insert(0, f"`{merged.get('ranking_item_text', '{title}')}`")
        merged["history_shown"] = ", ".join(shown) + " and an output token"
    if merged.get("max_steps") is not None and merged["max_steps"] <= 0:
        merged.pop("max_steps")
    return merged


def _settings_rows(kind: str, settings: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for key, label in _SETTINGS[kind]:
        value = settings.get(key)
        if value is None or value == "" or value == []:
            continue
        if kind == "cf" and key == "early_stopping_patience" and not settings.get("load_best_model_at_end", True):
            continue
        rows.append([label, _fmt_value(value)])
    return rows


def _method(kind, config, training_results, settings) -> str | None:
    if kind != "recommender":
        return None
    if getattr(config, "model_type", None) == "allmrec_ranking":
        return "ranking"
    method = training_results.get("baseline") or settings.get("baseline")
    if method in METHODS:
        return method
    return "mlp_llm" if getattr(config, "item_projector_input", "latent") == "cf_embedding" else "a-llmrec"


def _own_methods(evaluation_results, output_dir: str, kind: str) -> list[str]:
    """The methods of an evaluation that ran this checkpoint (the CF model alone for a CF card)."""
    here = os.path.realpath(output_dir)
    own = []
    for name, info in (evaluation_results.get("methods") or {}).items():
        checkpoint = info.get("checkpoint")
        if not checkpoint or os.path.realpath(checkpoint) != here or info.get("variant"):
            continue  # another checkpoint, or a variant of this one that it does not ship (the pure head)
        if (info.get("kind") == "cf") == (kind == "cf"):
            own.append(name)
    return own


def _tags(kind, method, config) -> list[str]:
    tags = ["recommendation", "sequential-recommendation", "a-llmrec", "allmrec-hf"]
    cf_config = config.cf_config if kind != "cf" else config
    cf_name = CF_NAMES.get(cf_config.model_type, cf_config.model_type).lower()
    if kind == "cf":
        tags += ["collaborative-filtering", cf_name]
    elif kind == "aligner":
        tags += ["collaborative-filtering", "sentence-embeddings"]
    else:
        tags += ["llm-recommender", "next-item-recommendation", cf_name]
        if method != "a-llmrec":
            tags.append("ranking-head" if method == "ranking" else method.replace("_", "-"))
        if config.lm_adapter_subfolder:
            tags.append("lora")
    return tags


def _base_model(kind, config) -> str | None:
    if kind == "recommender":
        name = config.base_model_name_or_path
    elif kind == "aligner":
        name = config.text_encoder_name_or_path
    else:
        return None
    return name if _is_hub_id(name) else None


def _is_hub_id(name) -> bool:
    """A Hub model id (`name` or `org/name`), not a local folder."""
    if not name or not isinstance(name, str) or os.path.exists(name) or ".." in name or len(name) > 96:
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name) is not None


def _model_name(name) -> str | None:
    """A Hub id as is; a local folder by its name only."""
    if not name:
        return None
    return str(name) if _is_hub_id(str(name)) else os.path.basename(os.path.normpath(str(name)))


def _model_display(name) -> str | None:
    """A Hub id as a link; a local folder by its name only (no local paths in a card)."""
    if not name:
        return None
    name = str(name)
    if _is_hub_id(name):
        return f"[{name}](https://huggingface.co/{name})"
    return f"`{os.path.basename(os.path.normpath(name))}` (a local folder)"


def _parameters(model, kind) -> dict[str, str] | None:
    if model is None:
        return None
    try:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        out = {"total": f"{total:,d}", "trainable": f"{trainable:,d}"}
        lm = getattr(model, "language_model", None) if kind == "recommender" else None
        if lm is not None:
            lm_total = sum(p.numel() for p in lm.parameters())
            out["language_model"] = f"{lm_total:,d}"
            out["saved"] = f"{total - lm_total:,d}"
        return out
    except Exception:  # noqa: BLE001
        return None


def _load_config(output_dir: str):
    from .training.builders import checkpoint_model_type

    model_type = checkpoint_model_type(output_dir)
    if model_type == "allmrec":
        from .configuration_allmrec import ALLMRecConfig as config_class
    elif model_type == "allmrec_aligner":
        from .configuration_allmrec import ALLMRecAlignerConfig as config_class
    else:
        from transformers import AutoConfig

        from . import SASRecConfig  # noqa: F401 - registers the CF configs with AutoConfig

        return AutoConfig.from_pretrained(output_dir)
    return config_class.from_pretrained(output_dir)


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _is_number(value) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def finite_values(value):
    """A copy with NaN / infinity as None and numpy scalars as Python numbers (for YAML and templates)."""
    if isinstance(value, Mapping):
        return {k: finite_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_values(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value) -> str:
    return f"{float(value):.4f}" if _is_number(value) else "–"


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(getattr(value, "value", value))  # enums (optimizer, scheduler) by their value


def _tidy(text: str) -> str:
    """At most one blank line in a row (the template's control lines leave some)."""
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text)


__all__ = [
    "CARD_TEMPLATE",
    "EVALUATION_TEMPLATE",
    "LIBRARY_NAME",
    "PIPELINE_TAG",
    "build_model_card",
    "evaluation_eval_results",
    "render_evaluation_section",
    "update_model_card",
    "update_model_cards",
    "write_model_card",
]
