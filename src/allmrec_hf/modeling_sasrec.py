"""SASRec, the self-attentive sequential recommender, as a `PreTrainedModel`.

Histories are **left-padded** with the padding id 0 so that the most recent item is always in the last
position; the user representation is the encoder output at that position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .configuration_sasrec import SASRecConfig
from .modeling_cf_common import SequentialCFMixin, SequentialCFOutput, check_item_ids, left_align_histories


@dataclass
class SASRecOutput(SequentialCFOutput):
    """
    Output of [`SASRecModel`] (the fields of [`SequentialCFOutput`]).

    Args:
        loss (`torch.FloatTensor`, *optional*): Training loss, when `labels` are given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, hidden_size)`): Encoder output at
            every position (zero at padded positions).
        user_representation (`torch.FloatTensor` of shape `(batch, hidden_size)`): Output at the last position.
    """


class SASRecBlock(nn.Module):
    """Pre-norm causal self-attention followed by a point-wise feed-forward network."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_dropout_prob
        self.attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.ffn_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.hidden_size)
        self.ffn_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length, size = hidden.shape
        query_input = self.attention_layernorm(hidden)
        q, _, _ = self.qkv(query_input).split(size, dim=-1)
        _, k, v = self.qkv(hidden).split(size, dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(q),
            heads(k),
            heads(v),
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(batch, length, size)
        hidden = query_input + self.dropout(self.out_proj(attended))
        normed = self.ffn_layernorm(hidden)
        ffn = self.dropout(self.ffn_out(self.dropout(F.relu(self.ffn_in(normed)))))
        return normed + ffn


class SASRecPreTrainedModel(PreTrainedModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    accepts_loss_kwargs = False
    # SASRec always runs its own small `scaled_dot_product_attention`; whatever implementation a composite model
    # asks of its sub-models is accepted and has no effect here.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class SASRecModel(SequentialCFMixin, SASRecPreTrainedModel):
    r"""
    SASRec (Kang & McAuley, 2018) as A-LLMRec's collaborative-filtering encoder.

    Inputs are left-padded item-id histories of shape `(batch, seq_len)`; `seq_len` may be anything, the
    most recent `config.max_seq_length` items are read. An empty history (all padding) is a cold user: its
    representation is a learned constant, the same for every cold user, since no item reaches the encoder.

    Example:

    ```python
    >>> import torch
    >>> from allmrec_hf import SASRecConfig, SASRecModel
    >>> model = SASRecModel(SASRecConfig(num_items=20, hidden_size=32)).eval()
    >>> histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    >>> model.get_user_representation(histories).shape
    torch.Size([2, 32])
    >>> model.score_items(histories, torch.tensor([[8, 9], [6, 7]])).shape
    torch.Size([2, 2])
    ```
    """

    output_class = SASRecOutput

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        # Position 0 is reserved for padding; real positions are 1..max_seq_length, right-aligned.
        self.position_embeddings = nn.Embedding(config.max_seq_length + 1, config.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder output of shape `(batch, seq_len, hidden)` for left-padded histories."""
        input_ids = left_align_histories(input_ids, self.config.max_seq_length)
        check_item_ids(input_ids, self.config.num_items, what="history item id")
        length = input_ids.shape[1]
        if length == 0:
            input_ids = input_ids.new_zeros((input_ids.shape[0], 1))
            length = 1
        is_item = input_ids != 0
        start = self.config.max_seq_length - length + 1
        positions = torch.arange(start, start + length, device=input_ids.device).expand_as(input_ids)
        positions = positions * is_item
        hidden = self.item_embeddings(input_ids) * math.sqrt(self.config.hidden_size)
        hidden = self.embedding_dropout(hidden + self.position_embeddings(positions))
        keep = is_item.unsqueeze(-1).to(hidden.dtype)
        hidden = hidden * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=input_ids.device)
        # Attend to earlier real items, and always to oneself so that no row is fully masked.
        attention_mask = (causal & is_item[:, None, None, :]) | eye
        for block in self.blocks:
            hidden = block(hidden, attention_mask) * keep
        return self.final_layernorm(hidden)


__all__ = ["SASRecModel", "SASRecOutput", "SASRecPreTrainedModel"]
