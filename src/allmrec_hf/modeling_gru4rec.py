"""GRU4Rec, the recurrent sequential recommender, as a `PreTrainedModel` with SASRec's interface.

Histories are **left-padded** with the padding id 0, as for [`SASRecModel`]. The GRU must not read the padding
(a GRU step changes its state even on a zero input), so each row's items are moved to the front before the GRU
runs and moved back after it: trailing padding cannot reach earlier outputs of a causal recurrence, so the
outputs do not depend on how much padding there is.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_gru4rec import GRU4RecConfig
from .modeling_cf_common import (
    SequentialCFMixin,
    SequentialCFOutput,
    check_item_ids,
    first_item_positions,
    left_align_histories,
)


def _shift_rows(values: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate each row of `values` `(batch, seq_len, ...)` left by `shifts[row]` positions."""
    length = values.shape[1]
    index = (torch.arange(length, device=values.device)[None, :] + shifts[:, None]) % length
    index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index)


class GRU4RecPreTrainedModel(PreTrainedModel):
    config_class = GRU4RecConfig
    base_model_prefix = "gru4rec"
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
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                else:
                    init.zeros_(param)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class GRU4RecModel(SequentialCFMixin, GRU4RecPreTrainedModel):
    r"""
    GRU4Rec as A-LLMRec's collaborative-filtering encoder: item embeddings, dropout, a (stacked) GRU, and a linear
    projection to `hidden_size` when the GRU's state is of another size. The user representation is the output at
    the last position (the most recent item's). Same interface and training loss as [`SASRecModel`].

    Inputs are left-padded item-id histories of shape `(batch, seq_len)`; the most recent
    `config.max_seq_length` items are read. An empty history (all padding) is a cold user: its representation is
    one learned constant (the GRU's output for the zero padding embedding), the same for every cold user.

    Example:

    ```python
    >>> import torch
    >>> from allmrec_hf import GRU4RecConfig, GRU4RecModel
    >>> model = GRU4RecModel(GRU4RecConfig(num_items=20, hidden_size=32)).eval()
    >>> histories = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    >>> model.get_user_representation(histories).shape
    torch.Size([2, 32])
    >>> model.score_items(histories, torch.tensor([[8, 9], [6, 7]])).shape
    torch.Size([2, 2])
    >>> out = model(histories, labels=torch.tensor([[0, 0, 5, 7, 9], [2, 3, 4, 5, 6]]),
    ...             negative_ids=torch.tensor([[1, 1, 1, 1, 1], [9, 9, 9, 9, 9]]))
    >>> out.loss.shape, out.last_hidden_state.shape
    (torch.Size([]), torch.Size([2, 5, 32]))
    ```
    """

    def __init__(self, config: GRU4RecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.gru = nn.GRU(
            config.hidden_size,
            config.gru_hidden_size,
            num_layers=config.num_hidden_layers,
            batch_first=True,
            dropout=config.hidden_dropout_prob if config.num_hidden_layers > 1 else 0.0,
        )
        self.output_projection = (
            nn.Linear(config.gru_hidden_size, config.hidden_size)
            if config.gru_hidden_size != config.hidden_size
            else nn.Identity()
        )
        self.post_init()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder output of shape `(batch, seq_len, hidden)` for left-padded histories (zero before the first
        item; an empty history keeps its last position, the cold-user constant)."""
        input_ids = left_align_histories(input_ids, self.config.max_seq_length)
        check_item_ids(input_ids, self.config.num_items, what="history item id")
        if input_ids.shape[1] == 0:
            input_ids = input_ids.new_zeros((input_ids.shape[0], 1))
        length = input_ids.shape[1]
        first = first_item_positions(input_ids != 0)
        # Items first, padding last: the GRU reads each history from its first item.
        hidden = self.embedding_dropout(self.item_embeddings(_shift_rows(input_ids, first)))
        hidden, _ = self.gru(hidden)
        hidden = _shift_rows(self.output_projection(hidden), (length - first) % length)
        keep = torch.arange(length, device=input_ids.device)[None, :] >= first[:, None]
        return hidden * keep.unsqueeze(-1).to(hidden.dtype)


__all__ = ["GRU4RecModel", "GRU4RecPreTrainedModel", "SequentialCFOutput"]
