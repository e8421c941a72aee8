"""Configurations of the A-LLMRec aligner (stage 1) and of the full model around a causal LM (stage 2)."""

from __future__ import annotations

import copy
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_gru4rec import GRU4RecConfig
from .configuration_nextitnet import NextItNetConfig
from .configuration_sasrec import SASRecConfig, _check_positive

# CF encoders shipped with this package, by `model_type`. Resolved here (not through `AutoConfig`) so that a
# checkpoint loads with `trust_remote_code=True` in a process that never imported `allmrec_hf`. Any other
# `model_type` is resolved through `AutoConfig` (see `allmrec_hf.register_cf_model`).
CF_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    "sasrec": SASRecConfig,
    "gru4rec": GRU4RecConfig,
    "nextitnet": NextItNetConfig,
}

# all-MiniLM-L6-v2's shape: the default sentence encoder.
MINILM_L6_KWARGS = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}


def _sub_config_attention(config: PreTrainedConfig) -> dict[str, str]:
    """The attention implementation already chosen on each sub-config (e.g. an LM loaded with `sdpa`)."""
    chosen = {}
    for key in config.sub_configs:
        sub = getattr(config, key, None)
        implementation = getattr(sub, "_attn_implementation_internal", None)
        if isinstance(sub, PreTrainedConfig) and implementation is not None:
            chosen[key] = implementation
    return chosen


def _restore_sub_config_attention(config: PreTrainedConfig, chosen: dict[str, str], kwargs: dict) -> None:
    # `PreTrainedConfig.__post_init__` pushes the composite's (unset) implementation down to every sub-config;
    # a sub-config that came from a loaded model must keep the implementation that model runs with.
    if kwargs.get("attn_implementation") is None:
        for key, implementation in chosen.items():
            getattr(config, key)._attn_implementation = implementation


def _resolve_cf_config(cf_config: dict | PreTrainedConfig | None) -> PreTrainedConfig:
    if isinstance(cf_config, PreTrainedConfig):
        return cf_config
    cf_config = dict(cf_config or {})
    model_type = cf_config.pop("model_type", "sasrec")
    if model_type in CF_CONFIG_CLASSES:
        return CF_CONFIG_CLASSES[model_type](**cf_config)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"Unknown CF model_type {model_type!r}: the CF backbones shipped are {', '.join(CF_CONFIG_CLASSES)}; "
            "register a custom one first (allmrec_hf.register_cf_model)."
        )
    return AutoConfig.for_model(model_type, **cf_config)


# How stage 1's item and text encoders end: the paper's sigmoid, or an L2 normalisation onto the unit sphere.
LATENT_ACTIVATIONS = ("sigmoid", "normalize")


class ALLMRecAlignerConfig(PreTrainedConfig):
    r"""
    Configuration of [`ALLMRecAlignerModel`]: the frozen CF encoder plus stage 1's collaborative-text alignment
    (an item autoencoder, a text autoencoder and a trainable sentence encoder).

    Args:
        cf_config (`dict` or `PreTrainedConfig`): The CF encoder's configuration (default: [`SASRecConfig`]).
        text_encoder_config (`dict` or `PreTrainedConfig`): The sentence encoder's configuration, any `AutoModel`
            encoder (default: BERT shaped like all-MiniLM-L6-v2).
        text_encoder_name_or_path (`str`): Where the sentence encoder's pretrained weights come from when the
            aligner is first built (Hub id or local folder).
        latent_size (`int`, defaults to 128): Size of the joint item latent e_i and of the text latent q_i.
        alpha (`float`, defaults to 0.5): Weight of the item reconstruction loss.
        beta (`float`, defaults to 0.5): Weight of the text reconstruction loss (the paper used 0.2 on Beauty/Toys).
        latent_activation (`str`, defaults to `"sigmoid"`): How the item and text encoders end. `"sigmoid"` is the
            paper's (latents in (0, 1)); under the MSE matching loss it tends to settle at its midpoint, where items
            barely differ. `"normalize"` ends in an L2 normalisation (latents on the unit sphere), which with
            `uniformity_weight` keeps items apart.
        uniformity_weight (`float`, defaults to 0.0): Weight of a uniformity term (Wang & Isola, 2020: the log of
            the mean Gaussian potential between the batch's item latents, and likewise its text latents) that pushes
            latents apart. 0 (the paper) leaves it out.

    Example:

    ```python
    >>> from allmrec_hf import ALLMRecAlignerConfig, SASRecConfig
    >>> config = ALLMRecAlignerConfig(cf_config=SASRecConfig(num_items=50, hidden_size=32), latent_size=16)
    >>> config.cf_config.hidden_size, config.text_encoder_config.hidden_size
    (32, 384)
    ```
    """

    model_type = "allmrec_aligner"
    sub_configs_defaults = {
        "text_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", init_kwargs=MINILM_L6_KWARGS),
    }

    cf_config: dict | PreTrainedConfig | None = None
    text_encoder_config: dict | PreTrainedConfig | None = None
    text_encoder_name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2"
    latent_size: int = 128
    alpha: float = 0.5
    beta: float = 0.5
    latent_activation: str = "sigmoid"
    uniformity_weight: float = 0.0
    cf_score_weight: float = 0.0

    def __post_init__(self, **kwargs):
        self.cf_config = _resolve_cf_config(self.cf_config)
        chosen = _sub_config_attention(self)
        super().__post_init__(**kwargs)
        _restore_sub_config_attention(self, chosen, kwargs)
        _check_positive(self, "latent_size")
        for name in ("alpha", "beta", "uniformity_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"ALLMRecAlignerConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.latent_activation not in LATENT_ACTIVATIONS:
            raise ValueError(
                f"ALLMRecAlignerConfig.latent_activation must be one of {', '.join(LATENT_ACTIVATIONS)}, "
                f"got {self.latent_activation!r}."
            )

    @property
    def sub_configs(self):  # cf_config is a sub-config too (serialised and given the attention settings)
        return {"cf_config": type(self.cf_config), "text_encoder_config": AutoConfig}


class ALLMRecConfig(PreTrainedConfig):
    r"""
    Configuration of [`ALLMRecForConditionalGeneration`]: the aligner, two projectors and a frozen causal LM.

    Args:
        aligner_config (`dict` or [`ALLMRecAlignerConfig`]): Stage 1's configuration (holds the CF config).
        text_config (`dict` or `PreTrainedConfig`): The causal LM's configuration (any `AutoModelForCausalLM`).
        base_model_name_or_path (`str`, *optional*): Where the frozen LM's weights come from (Hub id or local
            folder). Checkpoints do not copy the LM; `from_pretrained` loads it from here.
        base_model_revision (`str`, *optional*): The LM's revision on the Hub.
        base_model_fingerprint (`str`, *optional*): A hash of the weights of the LM the model was built on
            (`language_model_fingerprint`), recorded when it is built; loading it on an LM whose weights differ
            (e.g. a dequantised copy instead of the Hub's) logs a warning.
        user_token_id, history_token_id, candidate_token_id (`int`, *optional*): Ids of the placeholder tokens
            `[UserRep]`, `[HistoryEmb]` and `[CandidateEmb]` in the processor's tokenizer.
        user_projector_hidden_act (`str`, defaults to `"leaky_relu"`): Activation of the user projector F_U.
        item_projector_hidden_act (`str`, defaults to `"gelu"`): Activation of the item projector F_I.
        item_embedding_source (`str`, defaults to `"cf"`): Which item latent feeds F_I: `"cf"` (e_i, from the CF
            embedding) or `"text"` (q_i, from the item text: the paper's "SBERT" variant for cold items).
        item_projector_input (`str`, defaults to `"latent"`): What F_I takes: the stage-1 joint latent
            (`"latent"`, A-LLMRec) or the raw CF item embedding (`"cf_embedding"`: the paper's MLP-LLM baseline,
            which skips stage 1 and has no text path).
        lm_adapter_subfolder (`str`, *optional*): Set by `save_pretrained` when the LM carries a LoRA adapter
            (trained with `--lora_r`): the subfolder holding it, loaded back onto the base LM by `from_pretrained`.
        language_model_included (`bool`, defaults to `False`): Set by `save_pretrained(include_language_model=True)`
            when a checkpoint holds the LM's weights itself.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from allmrec_hf import ALLMRecAlignerConfig, ALLMRecConfig, SASRecConfig
    >>> aligner = ALLMRecAlignerConfig(cf_config=SASRecConfig(num_items=50, hidden_size=32))
    >>> config = ALLMRecConfig(aligner_config=aligner, text_config=LlamaConfig(hidden_size=64,
    ...     intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=300))
    >>> config.text_config.hidden_size, config.cf_config.hidden_size
    (64, 32)
    ```
    """

    model_type = "allmrec"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "aligner_config": ALLMRecAlignerConfig,
    }

    aligner_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_fingerprint: str | None = None
    user_token_id: int | None = None
    history_token_id: int | None = None
    candidate_token_id: int | None = None
    user_projector_hidden_act: str = "leaky_relu"
    item_projector_hidden_act: str = "gelu"
    item_embedding_source: Literal["cf", "text"] = "cf"
    item_projector_input: Literal["latent", "cf_embedding"] = "latent"
    lm_adapter_subfolder: str | None = None
    language_model_included: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        chosen = _sub_config_attention(self)
        super().__post_init__(**kwargs)
        _restore_sub_config_attention(self, chosen, kwargs)
        if self.item_embedding_source not in ("cf", "text"):
            raise ValueError(f"item_embedding_source must be 'cf' or 'text', got {self.item_embedding_source!r}.")
        if self.item_projector_input not in ("latent", "cf_embedding"):
            raise ValueError(
                f"item_projector_input must be 'latent' or 'cf_embedding', got {self.item_projector_input!r}."
            )
        if self.item_projector_input == "cf_embedding" and self.item_embedding_source == "text":
            raise ValueError("item_projector_input='cf_embedding' (MLP-LLM) has no text path: use 'cf' items.")
        for name in ("user_token_id", "history_token_id", "candidate_token_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"ALLMRecConfig.{name} must be a non-negative integer or None, got {value!r}.")

    @property
    def cf_config(self) -> PreTrainedConfig:
        """The CF encoder's configuration (held by `aligner_config`)."""
        return self.aligner_config.cf_config

    @property
    def placeholder_token_ids(self) -> dict[str, int | None]:
        return {
            "user": self.user_token_id,
            "history": self.history_token_id,
            "candidate": self.candidate_token_id,
        }


def cut_language_model_config(lm_config, num_layers: int | None, name: str = "the language model"):
    """`lm_config` with only its first `num_layers` decoder layers (`num_hidden_layers` and, where the config has
    one, its per-layer `layer_types` cut to match); unchanged for `None`. Raises `ValueError` when the LM has fewer.

    >>> from transformers import Qwen2Config
    >>> cut = cut_language_model_config(Qwen2Config(num_hidden_layers=4), 2)
    >>> cut.num_hidden_layers, cut.layer_types
    (2, ['full_attention', 'full_attention'])
    """
    if num_layers is None:
        return lm_config
    available = lm_config.num_hidden_layers
    if num_layers > available:
        raise ValueError(f"lm_num_layers is {num_layers} but {name} has only {available} decoder layers.")
    lm_config.num_hidden_layers = num_layers
    if isinstance(getattr(lm_config, "layer_types", None), list):
        lm_config.layer_types = lm_config.layer_types[:num_layers]
    return lm_config


class ALLMRecRankingConfig(ALLMRecConfig):
    r"""
    Configuration of [`ALLMRecForItemRanking`]: the same base as [`ALLMRecConfig`] (aligner, projectors, frozen
    LM) with a ranking head instead of title generation. The prompt shows the history with each item's embedding
    followed by an output token `[RecOutput]`, whose input embedding is a learned vector plus the projected CF
    user state after that item; the output token's last-layer hidden state goes through a user head, every item
    through an item head, and an item's score is their dot product (divided by `temperature`, plus a learned
    per-item bias when `item_bias=True`).

    Args:
        output_token_id (`int`, *optional*): Id of `[RecOutput]` in the processor's tokenizer.
        ranking_hidden_size (`int`, defaults to 128): Size of the user and item vectors that are scored.
        item_head_input (`str`, defaults to `"cf"`): What the item head reads: `"cf"` (the CF item embedding),
            `"joint"` (stage 1's joint latent e_i) or `"text"` (stage 1's text latent q_i, for cold items; needs
            `compute_text_item_latents`).
        use_user_representation (`bool`, defaults to `True`): Add the projected CF user state to every output
            token (off: the output token is the learned vector alone, an ablation).
        item_bias (`bool`, defaults to `True`): A learned per-item score offset.
        cf_skip (`bool`, defaults to `False`): The user vector also adds a learned linear map of the CF user state
            after that item (a skip connection around the LM): the head starts from what the CF model knows and the
            LM's hidden state learns what it adds. Off, the LM's hidden state is the only path.
        temperature (`float`, defaults to 1.0): Scores are divided by it.
        distillation_weight (`float`, defaults to 0.0): Weight of the distillation of the CF user representation
            into the user vector (MSE of both L2-normalised, after a learned map of the CF side; LLM-SRec's term).
        uniformity_weight (`float`, defaults to 0.0): Weight of the uniformity term on both normalised vectors.
        cf_score_weight (`float`, defaults to 0.0): Scores add this weight times the CF model's own score of each
            item (its user representation dot the item's CF embedding), a late fusion; 0 is the pure head. The
            head trains without it (the loss never sees this term); `train_ranking_head.py` chooses it on
            validation afterwards (`--cf_score_weight auto`).
        lm_num_layers (`int`, *optional*): Run only the LM's first `lm_num_layers` decoder layers and read the
            output token's hidden state there (the later layers are neither loaded nor run: a forward costs about
            `lm_num_layers / num_hidden_layers` of the whole LM's). `None` runs every layer. `from_pretrained`
            loads the base LM cut to this depth; `text_config.num_hidden_layers` records it.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from allmrec_hf import ALLMRecAlignerConfig, ALLMRecRankingConfig, SASRecConfig
    >>> config = ALLMRecRankingConfig(
    ...     aligner_config=ALLMRecAlignerConfig(cf_config=SASRecConfig(num_items=50, hidden_size=32)),
    ...     text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                             num_attention_heads=4, vocab_size=300),
    ...     item_projector_input="cf_embedding")
    >>> config.model_type, config.ranking_hidden_size, config.item_head_input
    ('allmrec_ranking', 128, 'cf')
    ```
    """

    model_type = "allmrec_ranking"

    output_token_id: int | None = None
    ranking_hidden_size: int = 128
    item_head_input: Literal["cf", "joint", "text"] = "cf"
    use_user_representation: bool = True
    item_bias: bool = True
    cf_skip: bool = False
    temperature: float = 1.0
    distillation_weight: float = 0.0
    uniformity_weight: float = 0.0
    cf_score_weight: float = 0.0
    lm_num_layers: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        layers = self.lm_num_layers
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise ValueError(f"lm_num_layers must be a positive integer or None, got {layers!r}.")
        if layers is not None and self.text_config is not None and self.text_config.num_hidden_layers != layers:
            self.text_config = cut_language_model_config(copy.deepcopy(self.text_config), layers, "text_config")
        if self.item_head_input not in ("cf", "joint", "text"):
            raise ValueError(f"item_head_input must be 'cf', 'joint' or 'text', got {self.item_head_input!r}.")
        if not isinstance(self.ranking_hidden_size, int) or self.ranking_hidden_size < 1:
            raise ValueError(f"ranking_hidden_size must be a positive integer, got {self.ranking_hidden_size!r}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}.")
        for name in ("distillation_weight", "uniformity_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        weight = self.cf_score_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
            raise ValueError(f"cf_score_weight must be a finite number >= 0, got {self.cf_score_weight!r}.")
        if self.output_token_id is not None and (not isinstance(self.output_token_id, int) or self.output_token_id < 0):
            raise ValueError(f"output_token_id must be a non-negative integer or None, got {self.output_token_id!r}.")


__all__ = ["ALLMRecAlignerConfig", "ALLMRecConfig", "ALLMRecRankingConfig", "cut_language_model_config"]
