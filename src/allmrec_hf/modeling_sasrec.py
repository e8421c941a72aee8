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
from transformers.utils import ModelOutput

from .configuration_sasrec import SASRecConfig


@dataclass
class SASRecOutput(ModelOutput):
    """
    Output of [`SASRecModel`].

    Args:
        loss (`torch.FloatTensor`, *optional*): Training loss, when `labels` are given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, hidden_size)`): Encoder output at
            every position (zero at padded positions).
        user_representation (`torch.FloatTensor` of shape `(batch, hidden_size)`): Output at the last position.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    user_representation: torch.FloatTensor | None = None


def check_item_ids(item_ids: torch.Tensor, num_items: int, what: str = "item id") -> None:
    """Raise `ValueError` naming the first id outside `[0, num_items]` (0 is padding)."""
    bad = (item_ids < 0) | (item_ids > num_items)
    if bool(bad.any()):
        value = int(item_ids[bad][0])
        raise ValueError(
            f"{what} {value} is outside the CF model's vocabulary: ids must be in 1..{num_items} (0 is padding)."
        )


def left_align_histories(input_ids: torch.Tensor, max_length: int) -> torch.Tensor:
    """Keep the most recent `max_length` items of left-padded histories and reject right padding."""
    if input_ids.dim() != 2:
        raise ValueError(f"histories must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
    if input_ids.shape[1] > max_length:
        input_ids = input_ids[:, -max_length:]
    if input_ids.shape[1] > 0:
        has_items = (input_ids != 0).any(dim=1)
        ends_in_padding = input_ids[:, -1] == 0
        wrong = has_items & ends_in_padding
        if bool(wrong.any()):
            row = int(wrong.nonzero()[0, 0])
            raise ValueError(
                f"history in row {row} ends with padding: histories must be left-padded with 0 so that the "
                "most recent item is last."
            )
    return input_ids


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


class SASRecModel(SASRecPreTrainedModel):
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

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        # Position 0 is reserved for padding; real positions are 1..max_seq_length, right-aligned.
        self.position_embeddings = nn.Embedding(config.max_seq_length + 1, config.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.item_embeddings = value

    def get_item_embeddings(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The item embedding table (row 0 is padding), or the rows of `item_ids`."""
        if item_ids is None:
            return self.item_embeddings.weight
        check_item_ids(item_ids, self.config.num_items)
        return self.item_embeddings(item_ids)

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

    def get_user_representation(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The user representation x_u: the encoder output at the last position, `(batch, hidden)`."""
        return self.encode(input_ids)[:, -1]

    def score_items(self, input_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """Dot-product scores `(batch, num_candidates)` of `item_ids` for each user's history."""
        user = self.get_user_representation(input_ids)
        return torch.einsum("bd,bcd->bc", user, self.get_item_embeddings(item_ids))

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores `(batch, num_items + 1)` over the whole catalog; the padding column 0 is `-inf`."""
        scores = self.get_user_representation(input_ids) @ self.item_embeddings.weight.T
        scores[:, 0] = float("-inf")
        return scores

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SASRecOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): Left-padded histories.
            labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): The next item at every
                position (0 where there is none); gives a loss.
            negative_ids (`torch.LongTensor` of shape `(batch, seq_len)` or `(batch, seq_len, k)`, *optional*):
                Sampled negatives for the `"bce"` loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self.encode(input_ids)
        loss = None
        if labels is not None:
            labels = labels[:, -hidden.shape[1] :]
            loss = self.compute_loss(hidden, labels, negative_ids)
        output = SASRecOutput(loss=loss, last_hidden_state=hidden, user_representation=hidden[:, -1])
        return output if return_dict else output.to_tuple()

    def compute_loss(
        self, hidden: torch.Tensor, labels: torch.Tensor, negative_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-item loss at every position whose label is not 0 (`config.loss_type` picks BCE or CE)."""
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match histories {tuple(hidden.shape[:2])}.")
        check_item_ids(labels, self.config.num_items, what="label item id")
        valid = labels != 0
        if self.config.loss_type == "ce":
            logits = hidden @ self.item_embeddings.weight.T
            logits[..., 0] = float("-inf")
            return F.cross_entropy(logits[valid], labels[valid])
        if negative_ids is None:
            raise ValueError("loss_type='bce' needs negative_ids (sampled negatives, one or more per position).")
        if negative_ids.dim() == 2:
            negative_ids = negative_ids.unsqueeze(-1)
        negative_ids = negative_ids[:, -hidden.shape[1] :]
        check_item_ids(negative_ids, self.config.num_items, what="negative item id")
        positive_logits = (hidden * self.item_embeddings(labels)).sum(-1)
        negative_logits = torch.einsum("bld,blkd->blk", hidden, self.item_embeddings(negative_ids))
        positive_loss = F.binary_cross_entropy_with_logits(
            positive_logits[valid], torch.ones_like(positive_logits[valid])
        )
        negative_loss = F.binary_cross_entropy_with_logits(
            negative_logits[valid], torch.zeros_like(negative_logits[valid])
        )
        return positive_loss + negative_loss


__all__ = ["SASRecModel", "SASRecOutput", "SASRecPreTrainedModel"]
