"""NextItNet, the convolutional sequential recommender, as a `PreTrainedModel` with SASRec's interface.

Histories are **left-padded** with the padding id 0, as for [`SASRecModel`]. Every convolution is causal (it is
padded on the left only, so position t sees positions <= t), and padded positions are set to zero after every
layer: padding then looks exactly like the zeros a convolution pads with, so the outputs do not depend on how
much padding there is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_nextitnet import NextItNetConfig
from .modeling_cf_common import (
    SequentialCFMixin,
    SequentialCFOutput,
    check_item_ids,
    first_item_positions,
    left_align_histories,
)


class CausalConv1d(nn.Module):
    """A dilated 1-D convolution over `(batch, seq_len, channels)` that only looks back in time."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.left_padding = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = F.pad(hidden.transpose(1, 2), (self.left_padding, 0))
        return self.conv(hidden).transpose(1, 2)


class NextItNetBlock(nn.Module):
    """The paper's residual block: causal conv (dilation d) -> layer norm -> ReLU -> causal conv (dilation 2d) ->
    layer norm -> ReLU, added to the block's input; padded positions zeroed after each half."""

    def __init__(self, config: NextItNetConfig, dilation: int):
        super().__init__()
        size, width = config.hidden_size, config.kernel_size
        self.conv_1 = CausalConv1d(size, width, dilation)
        self.layer_norm_1 = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.conv_2 = CausalConv1d(size, width, 2 * dilation)
        self.layer_norm_2 = nn.LayerNorm(size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.layer_norm_1(self.conv_1(hidden))) * keep
        out = F.relu(self.layer_norm_2(self.conv_2(out))) * keep
        return hidden + out


class NextItNetPreTrainedModel(PreTrainedModel):
    config_class = NextItNetConfig
    base_model_prefix = "nextitnet"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    accepts_loss_kwargs = False
    # No attention at all: whatever implementation a composite model asks of its sub-models is accepted.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Conv1d):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class NextItNetModel(SequentialCFMixin, NextItNetPreTrainedModel):
    r"""
    NextItNet as A-LLMRec's collaborative-filtering encoder: item embeddings through stacked residual blocks of
    dilated causal convolutions ([`NextItNetConfig`] sets their number and dilations). The user representation is
    the output at the last position. Same interface and training loss as [`SASRecModel`].

    Inputs are left-padded item-id histories of shape `(batch, seq_len)`; the most recent
    `config.max_seq_length` items are read. An empty history (all padding) is a cold user: its representation is
    one learned constant (what the blocks make of the zero padding embedding), the same for every cold user.

    Example:

    ```python
    >>> import torch
    >>> from allmrec_hf import NextItNetConfig, NextItNetModel
    >>> model = NextItNetModel(NextItNetConfig(num_items=20, hidden_size=32, num_hidden_layers=2)).eval()
    >>> histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    >>> model.get_user_representation(histories).shape
    torch.Size([2, 32])
    >>> model.score_all_items(histories).shape
    torch.Size([2, 21])
    ```
    """

    def __init__(self, config: NextItNetConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.blocks = nn.ModuleList(NextItNetBlock(config, dilation) for dilation in config.dilations)
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder output of shape `(batch, seq_len, hidden)` for left-padded histories (zero before the first
        item; an empty history keeps its last position, the cold-user constant)."""
        input_ids = left_align_histories(input_ids, self.config.max_seq_length)
        check_item_ids(input_ids, self.config.num_items, what="history item id")
        if input_ids.shape[1] == 0:
            input_ids = input_ids.new_zeros((input_ids.shape[0], 1))
        first = first_item_positions(input_ids != 0)
        keep = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] >= first[:, None]
        hidden = self.embedding_dropout(self.item_embeddings(input_ids))
        keep = keep.unsqueeze(-1).to(hidden.dtype)
        hidden = hidden * keep
        for block in self.blocks:
            hidden = block(hidden, keep)
        return hidden


__all__ = ["NextItNetModel", "NextItNetPreTrainedModel", "SequentialCFOutput"]
