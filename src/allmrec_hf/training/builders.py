"""Assemble each stage's model from the previous stage's checkpoint, checking at start-up (before any training)
that the pieces fit: the checkpoint is of the right kind, the dataset's items are the checkpoint's, and the CF
embedding size matches the aligner."""

from __future__ import annotations

import inspect
import json
import logging
import os

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PreTrainedModel

from ..catalog import CATALOG_FILE_NAME, ItemCatalog
from ..configuration_allmrec import ALLMRecAlignerConfig, ALLMRecConfig, ALLMRecRankingConfig
from ..configuration_gru4rec import GRU4RecConfig
from ..configuration_nextitnet import NextItNetConfig
from ..configuration_sasrec import SASRecConfig
from ..modeling_allmrec import ALLMRecAlignerModel, ALLMRecForConditionalGeneration, load_language_model
from ..modeling_allmrec_ranking import ALLMRecForItemRanking
from ..modeling_gru4rec import GRU4RecModel
from ..modeling_nextitnet import NextItNetModel
from ..modeling_sasrec import SASRecModel
from ..offline_models import resolve_model_path
from ..processing_allmrec import ALLMRecProcessor, PromptTemplate

logger = logging.getLogger(__name__)

# The CF backbones `--cf_model` accepts, by name; `allmrec_hf.register_cf_model` adds custom ones.
CF_MODEL_TYPES = {
    "sasrec": (SASRecConfig, SASRecModel),
    "gru4rec": (GRU4RecConfig, GRU4RecModel),
    "nextitnet": (NextItNetConfig, NextItNetModel),
}
STAGE_OF_MODEL_TYPE = {
    **{name: "a CF checkpoint (examples/pretrain_cf.py)" for name in CF_MODEL_TYPES},
    "allmrec_aligner": "a stage-1 aligner checkpoint (examples/train_stage1.py)",
    "allmrec": "a stage-2 A-LLMRec checkpoint (examples/train_stage2.py)",
    "allmrec_ranking": "an A-LLMRec ranking-head checkpoint (examples/train_ranking_head.py)",
}


class CheckpointMismatchError(ValueError):
    """A checkpoint of the wrong kind, or one that does not fit the dataset or the other parts."""


def checkpoint_model_type(path: str | os.PathLike) -> str:
    """The `model_type` in a checkpoint folder's `config.json` (with a clear error when there is none)."""
    config_file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointMismatchError(f"{path} is not a model checkpoint: it has no config.json.")
    with open(config_file, encoding="utf-8") as fh:
        return json.load(fh).get("model_type", "")


def _expect_kind(path: str | os.PathLike, wanted: str, what: str) -> None:
    kind = checkpoint_model_type(path)
    if kind != wanted:
        found = STAGE_OF_MODEL_TYPE.get(kind, f"a {kind or 'unknown'} checkpoint")
        raise CheckpointMismatchError(
            f"{what} needs {STAGE_OF_MODEL_TYPE[wanted]}, but {path} is {found} (model_type={kind!r})."
        )


def check_catalog(checkpoint: str | os.PathLike, catalog: ItemCatalog, dataset_name: str = "the dataset") -> None:
    """Refuse a dataset whose items are not the ones the checkpoint was trained on (compared by external id)."""
    path = os.path.join(os.fspath(checkpoint), CATALOG_FILE_NAME)
    if not os.path.isfile(path):
        logger.warning("%s has no %s; the dataset's items cannot be checked against it.", checkpoint, CATALOG_FILE_NAME)
        return
    trained = ItemCatalog.load(path)
    if trained.num_items != catalog.num_items:
        raise CheckpointMismatchError(
            f"{dataset_name} has {catalog.num_items} items but {checkpoint} was trained on {trained.num_items}: "
            "use the prepared dataset the checkpoint was trained on."
        )
    for index in range(1, catalog.num_items + 1):
        if trained.item_id(index) != catalog.item_id(index):
            raise CheckpointMismatchError(
                f"{dataset_name}'s item {index} is {catalog.item_id(index)!r} but in {checkpoint} it is "
                f"{trained.item_id(index)!r}: the dataset's items are not the checkpoint's."
            )


def _config_fields(config_class: type) -> set[str]:
    """The keyword arguments a config class names (its fields), without `**kwargs`."""
    parameters = inspect.signature(config_class.__init__).parameters.values()
    return {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}


def build_cf_model(
    model_type: str, num_items: int, config_kwargs: dict | None = None, **hyperparameters
) -> PreTrainedModel:
    """A fresh CF model of the backbone `model_type` (`sasrec`, `gru4rec`, `nextitnet` or a registered one) for
    `num_items` items.

    `hyperparameters` are the settings the scripts share across backbones (`hidden_size`, `max_seq_length`,
    `num_hidden_layers`, ...): `None` keeps the backbone's default, and one the backbone does not have is left out
    (and logged). `config_kwargs` are further fields of the backbone's config, passed as given (an unknown one is
    an error)."""
    if model_type not in CF_MODEL_TYPES:
        raise ValueError(
            f"Unknown CF model {model_type!r}; choose one of {', '.join(CF_MODEL_TYPES)} (or register a custom "
            "backbone with allmrec_hf.register_cf_model)."
        )
    config_class, model_class = CF_MODEL_TYPES[model_type]
    fields = _config_fields(config_class)
    unknown = sorted(set(config_kwargs or {}) - fields)
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field(s) {', '.join(unknown)}.")
    kwargs = {k: v for k, v in hyperparameters.items() if v is not None and k in fields}
    ignored = sorted(k for k, v in hyperparameters.items() if v is not None and k not in fields)
    if ignored:
        logger.info("%s has no %s: ignored.", config_class.__name__, ", ".join(ignored))
    return model_class(config_class(num_items=num_items, **{**kwargs, **(config_kwargs or {})}))


def load_cf_model(path: str | os.PathLike, catalog: ItemCatalog | None = None) -> PreTrainedModel:
    """A pretrained CF checkpoint (frozen by the caller), checked to be one and to match the catalog."""
    kind = checkpoint_model_type(path)
    if kind not in CF_MODEL_TYPES:
        found = STAGE_OF_MODEL_TYPE.get(kind, f"a {kind or 'unknown'} checkpoint")
        raise CheckpointMismatchError(
            f"Stage 1 needs a CF checkpoint (examples/pretrain_cf.py), but {path} is {found}; the CF backbones "
            f"known here are {', '.join(CF_MODEL_TYPES)} (register a custom one with allmrec_hf.register_cf_model)."
        )
    if catalog is not None:
        check_catalog(path, catalog)
    return CF_MODEL_TYPES[kind][1].from_pretrained(path)


def build_aligner(
    cf_model: PreTrainedModel,
    text_encoder_name_or_path: str,
    latent_size: int = 128,
    alpha: float = 0.5,
    beta: float = 0.5,
    latent_activation: str = "sigmoid",
    uniformity_weight: float = 0.0,
):
    """The stage-1 model: the (frozen) CF model, the pretrained sentence encoder (fine-tuned in stage 1) and
    freshly initialised autoencoders. Returns `(aligner, text_encoder_tokenizer)`."""
    local = resolve_model_path(text_encoder_name_or_path)
    text_config = AutoConfig.from_pretrained(local)
    config = ALLMRecAlignerConfig(
        cf_config=cf_model.config,
        text_encoder_config=text_config,
        text_encoder_name_or_path=str(text_encoder_name_or_path),
        latent_size=latent_size,
        alpha=alpha,
        beta=beta,
        latent_activation=latent_activation,
        uniformity_weight=uniformity_weight,
    )
    aligner = ALLMRecAlignerModel(config)
    aligner.text_encoder = AutoModel.from_pretrained(local)
    aligner.set_cf_model(cf_model)
    tokenizer = AutoTokenizer.from_pretrained(local)
    return aligner, tokenizer


def load_aligner(path: str | os.PathLike, catalog: ItemCatalog | None = None) -> ALLMRecAlignerModel:
    """A stage-1 checkpoint, checked to be one and to match the catalog."""
    _expect_kind(path, "allmrec_aligner", "Stage 2")
    if catalog is not None:
        check_catalog(path, catalog)
    return ALLMRecAlignerModel.from_pretrained(path)


def placeholder_aligner_config(cf_config) -> ALLMRecAlignerConfig:
    """An aligner config around `cf_config` for models that never use stage 1's text side (MLP-LLM, a ranking head
    on raw CF embeddings): a minimal placeholder sentence encoder keeps the checkpoint small."""
    return ALLMRecAlignerConfig(
        cf_config=cf_config,
        text_encoder_config=BertConfig(
            vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
        ),
        text_encoder_name_or_path="",
    )


def build_stage2_model(
    aligner: ALLMRecAlignerModel | None,
    language_model_name_or_path: str,
    text_encoder_tokenizer,
    catalog: ItemCatalog,
    prompt_template: PromptTemplate | None = None,
    max_history_length: int = 50,
    item_text_template: str = "{title}, {description}",
    lm_kwargs: dict | None = None,
    cf_model: PreTrainedModel | None = None,
    ranking_kwargs: dict | None = None,
):
    """The stage-2 model around a frozen LM (loaded from `language_model_name_or_path`, a Hub id resolved to its
    offline copy when there is one) and its processor. Returns `(model, processor)`.

    `aligner=None` with `cf_model` builds the MLP-LLM baseline (projectors on the raw CF embeddings, no stage 1).
    `ranking_kwargs` (a dict, possibly empty) builds the ranking head (`ALLMRecForItemRanking`) instead of the
    generation model, with these `ALLMRecRankingConfig` fields.
    """
    local = resolve_model_path(language_model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(local)
    processor = ALLMRecProcessor(
        tokenizer,
        text_encoder_tokenizer if text_encoder_tokenizer is not None else tokenizer,
        catalog,
        prompt_template=prompt_template,
        max_history_length=max_history_length,
        item_text_template=item_text_template,
    )
    lm_num_layers = (ranking_kwargs or {}).get("lm_num_layers")
    language_model = load_language_model(local, lm_num_layers, **(lm_kwargs or {}))
    if lm_num_layers is not None:
        logger.info("The ranking head reads the LM's layer %d (the later layers are not loaded).", lm_num_layers)
    if aligner is not None:
        aligner_config = aligner.config
    else:
        if cf_model is None:
            raise ValueError("build_stage2_model needs a stage-1 aligner, or a CF model for the MLP-LLM baseline.")
        aligner_config = placeholder_aligner_config(cf_model.config)
    config_class, model_class, head_fields = ALLMRecConfig, ALLMRecForConditionalGeneration, {}
    if ranking_kwargs is not None:
        config_class, model_class = ALLMRecRankingConfig, ALLMRecForItemRanking
        head_fields = {**ranking_kwargs, "output_token_id": processor.output_token_id}
    config = config_class(
        aligner_config=aligner_config,
        text_config=language_model.config,
        base_model_name_or_path=str(language_model_name_or_path),
        item_projector_input="cf_embedding" if aligner is None else "latent",
        **processor.placeholder_token_ids,
        **head_fields,
    )
    model = model_class.from_language_model(config, language_model)
    if aligner is not None:
        model.recommender.load_state_dict(aligner.state_dict())
    else:
        model.recommender.cf_model.load_state_dict(cf_model.state_dict())
    model.recommender.requires_grad_(False)
    model.language_model.requires_grad_(False)
    model.check_processor(processor)
    return model, processor


def compile_language_model(model: ALLMRecForConditionalGeneration, backend: str = "inductor", dynamic=None):
    """`torch.compile` the frozen LM's decoder stack (not the lm head or the injection code around it), which fuses
    its elementwise work (norms, rotary embeddings, activations, casts) after a one-off compilation of a few
    minutes; `benchmarks/stage2_training_speed.py` measures what it gains on a given machine."""
    decoder = model.language_model.get_decoder()
    decoder.forward = torch.compile(decoder.forward, backend=backend, dynamic=dynamic)
    logger.info("Compiled %s.forward with torch.compile(backend=%r).", type(decoder).__name__, backend)
    return model
