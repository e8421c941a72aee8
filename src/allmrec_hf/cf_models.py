"""Collaborative-filtering (CF) backbones: what A-LLMRec needs from one, and how to plug in your own.

A-LLMRec is backbone-agnostic (the paper's Table 11): stage 1 and stage 2 only read a CF model's item embedding
table, its per-position encoder output and its user representation. Three backbones are shipped
([`SASRecModel`], [`GRU4RecModel`], [`NextItNetModel`], selected by the CF config's `model_type`: `"sasrec"`,
`"gru4rec"`, `"nextitnet"`; `examples/pretrain_cf.py --cf_model ...`). Any other model plugs in when it

1. satisfies [`CFModel`] (its config satisfies [`CFConfig`]) and is a `transformers.PreTrainedModel` with a
   `PreTrainedConfig` whose `model_type` is a new name — the quickest way is to mix in
   [`SequentialCFMixin`] and write only `__init__` (with an `item_embeddings` table) and `encode`; and
2. is registered with [`register_cf_model`], in every process that builds or loads a model holding it (the
   saved A-LLMRec checkpoint then names it by `model_type`, like any `AutoModel`).

Registration makes `ALLMRecAlignerConfig(cf_config=...)`, `from_pretrained` of checkpoints holding it, the
training builders (`build_cf_model`, `load_cf_model`: `examples/pretrain_cf.py --cf_model NAME` and the stage
scripts, run through their `main()` in the registering process) and the model cards know the backbone.
Checkpoints that hold a custom backbone load with this package and your module imported; the
`trust_remote_code` copy of the model code that checkpoints carry covers the shipped backbones only.

Example (a mean-of-item-embeddings "backbone"; see `tests/scripts/test_cf_backbones.py` for it run through both stages):

```python
>>> import torch
>>> from torch import nn
>>> from transformers import PreTrainedConfig, PreTrainedModel
>>> from allmrec_hf import CFModel, SequentialCFMixin, register_cf_model
>>> class MeanCFConfig(PreTrainedConfig):
...     model_type = "doc_mean_cf"
...     def __init__(self, num_items=1, hidden_size=8, max_seq_length=50, loss_type="bce", **kwargs):
...         self.num_items, self.hidden_size, self.max_seq_length = num_items, hidden_size, max_seq_length
...         self.loss_type = loss_type
...         super().__init__(**kwargs)
>>> class MeanCFModel(SequentialCFMixin, PreTrainedModel):
...     config_class = MeanCFConfig
...     def __init__(self, config):
...         super().__init__(config)
...         self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
...         self.post_init()
...     def encode(self, input_ids):  # the running mean of the items so far: causal, padding ignored
...         items = self.item_embeddings(input_ids[:, -self.config.max_seq_length :])
...         counts = (input_ids[:, -self.config.max_seq_length :] != 0).cumsum(1).clamp(min=1)
...         return items.cumsum(1) / counts.unsqueeze(-1)
>>> register_cf_model(MeanCFConfig, MeanCFModel, display_name="Mean")
>>> model = MeanCFModel(MeanCFConfig(num_items=10))
>>> isinstance(model, CFModel), model.score_items(torch.tensor([[0, 1, 2]]), torch.tensor([[3, 4]])).shape
(True, torch.Size([1, 2]))
```
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import torch
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel

from .configuration_allmrec import CF_CONFIG_CLASSES

logger = logging.getLogger(__name__)

# What stage 1, stage 2, evaluation and CF pretraining call on a CF model (the `CFModel` protocol's methods).
CF_MODEL_METHODS = ("encode", "get_user_representation", "get_item_embeddings", "score_items", "score_all_items")
# What they read from its config (the `CFConfig` protocol's attributes).
CF_CONFIG_ATTRIBUTES = ("model_type", "num_items", "hidden_size", "max_seq_length")
# `PreTrainedModel` flags saying which attention implementations a model accepts.
ATTENTION_FLAGS = ("_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn")


@runtime_checkable
class CFConfig(Protocol):
    """What A-LLMRec reads from a CF model's configuration (a `transformers.PreTrainedConfig`).

    Attributes:
        model_type: The backbone's registered name (e.g. `"sasrec"`).
        num_items: Number of real items; ids run from 1 to `num_items`, 0 is padding.
        hidden_size: Size of the item embeddings and of the user representation.
        max_seq_length: Longest history the model reads (the collators and evaluators cut histories to it).
    """

    model_type: str
    num_items: int
    hidden_size: int
    max_seq_length: int


@runtime_checkable
class CFModel(Protocol):
    """What a collaborative-filtering model provides to A-LLMRec. All three shipped backbones satisfy it.

    Histories are `(batch, seq_len)` item-id tensors, **left-padded** with 0 (the most recent item last; a row of
    only padding is a cold user and must still give a representation). Item ids index a table with `num_items + 1`
    rows whose row 0 is padding.

    - `encode(input_ids)` -> `(batch, L, hidden_size)`: the user representation after each position (causal: the
      output at a position depends only on the items up to it). Stage 1 reads the last positions. `L` may be
      shorter than `seq_len` when histories are longer than `config.max_seq_length`.
    - `get_user_representation(input_ids)` -> `(batch, hidden_size)`: x_u, usually `encode(input_ids)[:, -1]`.
    - `get_item_embeddings(item_ids=None)` -> the whole `(num_items + 1, hidden_size)` table, or the rows of
      `item_ids` (any shape, `item_ids.shape + (hidden_size,)`).
    - `score_items(input_ids, item_ids)` -> `(batch, num_candidates)`: the CF model's scores of each user's
      candidates (`item_ids` of shape `(batch, num_candidates)`), higher is better.
    - `score_all_items(input_ids)` -> `(batch, num_items + 1)` with column 0 (padding) at `-inf`.

    To be pretrained by `examples/pretrain_cf.py` (`CFTrainer` with `CFCollator`) the model must also take
    `forward(input_ids, labels=None, negative_ids=None)` (labels and one sampled negative per position, 0 where
    there is none) and return an output with `.loss`; [`SequentialCFMixin`] implements it (BCE with sampled
    negatives, SASRec's loss). A CF model trained elsewhere can skip that: copy its weights into a fresh model and
    `save_pretrained` it with the item catalog (`ItemCatalog.save`) to get a CF checkpoint for stage 1.
    """

    config: CFConfig

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def get_user_representation(self, input_ids: torch.Tensor) -> torch.Tensor: ...

    def get_item_embeddings(self, item_ids: torch.Tensor | None = None) -> torch.Tensor: ...

    def score_items(self, input_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor: ...

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor: ...


def shipped_cf_model_types() -> list[str]:
    """The `model_type`s of the CF backbones this package ships."""
    return list(CF_CONFIG_CLASSES)


def known_cf_model_types() -> list[str]:
    """Every CF backbone name the training scripts accept now: the shipped ones and those registered."""
    from .training.builders import CF_MODEL_TYPES

    return list(CF_MODEL_TYPES)


def check_cf_model(model_or_class: CFModel | type, config: PreTrainedConfig | type | None = None) -> None:
    """Raise `TypeError` naming what a CF model (instance or class) or its config lacks of [`CFModel`] /
    [`CFConfig`]."""
    name = getattr(model_or_class, "__name__", type(model_or_class).__name__)
    missing = [m for m in CF_MODEL_METHODS if not callable(getattr(model_or_class, m, None))]
    if missing:
        raise TypeError(f"{name} is not a CF model: it has no {', '.join(missing)} (see allmrec_hf.CFModel).")
    if config is None and not isinstance(model_or_class, type):
        config = model_or_class.config
    if isinstance(config, type):  # a config class: its fields are only known once it is built
        if not getattr(config, "model_type", ""):
            raise TypeError(f"{config.__name__} needs a class attribute model_type (the backbone's name).")
    elif config is not None:
        missing = [a for a in CF_CONFIG_ATTRIBUTES if getattr(config, a, None) is None]
        if missing:
            raise TypeError(
                f"{type(config).__name__} is not a CF config: it has no {', '.join(missing)} (see allmrec_hf.CFConfig)."
            )


def register_cf_model(
    config_class: type[PreTrainedConfig], model_class: type[PreTrainedModel], display_name: str | None = None
) -> None:
    """Make a custom CF backbone usable everywhere a shipped one is, under `config_class.model_type`.

    Registers the pair with `AutoConfig` / `AutoModel` (so A-LLMRec configs and checkpoints naming the
    `model_type` build it), with the training builders (`build_cf_model`, `load_cf_model`, hence the
    `--cf_model` option of `examples/pretrain_cf.py` and the stage scripts' checks) and with the model cards
    (`display_name`, default: the model class name without a trailing "Model"). Registering the same pair again
    does nothing. See the module docstring for an example.

    A-LLMRec passes the LM's attention implementation (`sdpa`, `flash_attention_2`, ...) down to every sub-model's
    config, and transformers refuses one a model does not declare: the model class's `_supports_sdpa`,
    `_supports_flash_attn` and `_supports_flex_attn` are set to True here (the shipped CF models declare them too:
    they run no transformers attention, so any implementation is accepted and has no effect). A custom backbone
    that dispatches on `config._attn_implementation` must handle them itself.

    Raises:
        TypeError: when the classes are not a `PreTrainedConfig` / `PreTrainedModel` pair satisfying the
            protocols.
        ValueError: when `model_type` is a shipped backbone's name.
    """
    from . import model_card
    from .training import builders

    if not (isinstance(config_class, type) and issubclass(config_class, PreTrainedConfig)):
        raise TypeError(f"config_class must be a PreTrainedConfig subclass, got {config_class!r}.")
    if not (isinstance(model_class, type) and issubclass(model_class, PreTrainedModel)):
        raise TypeError(f"model_class must be a PreTrainedModel subclass, got {model_class!r}.")
    check_cf_model(model_class, config_class)
    model_type = config_class.model_type
    if model_type in CF_CONFIG_CLASSES:
        raise ValueError(
            f"{model_type!r} is a shipped CF backbone ({', '.join(CF_CONFIG_CLASSES)}): give your config class "
            "another model_type."
        )
    if getattr(model_class, "config_class", None) not in (None, config_class):
        raise TypeError(f"{model_class.__name__}.config_class is {model_class.config_class.__name__}, not "
                        f"{config_class.__name__}.")  # fmt: skip
    # A-LLMRec hands the LM's attention implementation down to its sub-models' configs; a CF model that runs no
    # transformers attention accepts any (as the shipped ones do) instead of failing transformers' check.
    for flag in ATTENTION_FLAGS:
        if not getattr(model_class, flag, False):
            setattr(model_class, flag, True)
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    builders.CF_MODEL_TYPES[model_type] = (config_class, model_class)
    builders.STAGE_OF_MODEL_TYPE[model_type] = builders.STAGE_OF_MODEL_TYPE["sasrec"]
    name = display_name or model_class.__name__.removesuffix("Model") or model_type
    model_card.CF_NAMES[model_type] = name
    model_card.CF_CLASSES[model_type] = model_class.__name__
    model_card.KIND_OF_MODEL_TYPE[model_type] = "cf"
    logger.info("Registered the CF backbone %r (%s, %s).", model_type, config_class.__name__, model_class.__name__)


__all__ = [
    "CFConfig",
    "CFModel",
    "check_cf_model",
    "known_cf_model_types",
    "register_cf_model",
    "shipped_cf_model_types",
]
