"""What the sequential CF encoders shipped with this package share beyond their sequence encoder: the item
embedding table, scoring users against it, and the next-item training loss.

A model mixes in [`SequentialCFMixin`] before `PreTrainedModel`, owns `self.item_embeddings` (an `nn.Embedding`
whose row 0 is padding) and implements `encode(input_ids) -> (batch, seq_len, hidden_size)` over **left-padded**
histories; the mixin gives it the rest of the interface A-LLMRec uses (the same as [`SASRecModel`]'s): item
embeddings, the user representation (the encoder output at the last position), dot-product scores, and `forward`
with the loss of `config.loss_type` (`"bce"`: binary cross-entropy against sampled negatives, the paper's; `"ce"`:
softmax cross-entropy over the whole catalog), so `CFTrainer` and `CFCollator` train it unchanged.

This module is shipped with checkpoints (`trust_remote_code`): it imports only torch, transformers and its
sibling modules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput


def check_item_ids(item_ids: torch.Tensor, num_items: int, what: str = "item id") -> None:
    """Raise `ValueError` when ids are not integers, or naming the first id outside `[0, num_items]` (0 is
    padding)."""
    if item_ids.dtype.is_floating_point or item_ids.dtype.is_complex or item_ids.dtype == torch.bool:
        raise ValueError(f"{what}s must be integer item indices (torch.long), got a {item_ids.dtype} tensor.")
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


@dataclass
class SequentialCFOutput(ModelOutput):
    """
    Output of the sequential CF encoders ([`SASRecModel`], [`GRU4RecModel`], [`NextItNetModel`]).

    Args:
        loss (`torch.FloatTensor`, *optional*): Training loss, when `labels` are given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, hidden_size)`): Encoder output at
            every position (zero at padded positions).
        user_representation (`torch.FloatTensor` of shape `(batch, hidden_size)`): Output at the last position.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    user_representation: torch.FloatTensor | None = None


def first_item_positions(is_item: torch.Tensor) -> torch.Tensor:
    """The index of each row's first real item in left-padded histories `(batch, seq_len)`; `seq_len - 1` for a
    row without items, so that an empty history still has one (padding) position to read the user from."""
    length = is_item.shape[1]
    first = is_item.int().argmax(dim=1)  # the first maximal value: the first item
    return torch.where(is_item.any(dim=1), first, torch.full_like(first, length - 1))


def defining_model_class(cls: type) -> type:
    """`cls`, or the model class it stands for when a wrapper generated a subclass of it on the fly: FSDP2's
    `fully_shard` turns a `SASRecModel` into an `FSDPSASRecModel` defined in torch's own modules."""
    return next((klass for klass in cls.__mro__ if not klass.__module__.startswith("torch.")), cls)


def sharded_parameter_names(model: nn.Module) -> list[str]:
    """Names of `model`'s parameters that hold only this process's shard: FSDP2's DTensors and DeepSpeed ZeRO-3's
    partitioned parameters (which carry a `ds_id`)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        DTensor = ()
    return [name for name, p in model.named_parameters() if isinstance(p, DTensor) or hasattr(p, "ds_id")]


def save_as_defining_class(save_pretrained):
    """Decorates a `save_pretrained` so that it runs with the model's own class (`defining_model_class`).

    transformers copies the code of `type(model).__module__` next to the weights and writes the class into the
    config's `auto_map` (for `trust_remote_code`); under FSDP2 that would be torch's FSDP modules and a class that
    exists nowhere else, so the checkpoint could not be loaded."""

    @functools.wraps(save_pretrained)
    def wrapper(self, *args, **kwargs):
        wrapped, own = type(self), defining_model_class(type(self))
        if kwargs.get("state_dict") is None:
            sharded = sharded_parameter_names(self)
            if sharded:
                raise ValueError(
                    f"{own.__name__}.save_pretrained: {len(sharded)} parameters (e.g. {sharded[0]}) are sharded across "
                    "processes (FSDP / DeepSpeed ZeRO-3), so this would write one process's shards. Gather the full "
                    "state dict on every process and pass it as state_dict= from the main process: "
                    "allmrec_hf.training.runs.save_trained_model(trainer, model, output_dir) does both."
                )
        if own is wrapped:
            return save_pretrained(self, *args, **kwargs)
        self.__class__ = own
        try:
            return save_pretrained(self, *args, **kwargs)
        finally:
            self.__class__ = wrapped

    return wrapper


class SequentialCFMixin:
    """The backbone-independent half of a sequential CF encoder (see the module docstring)."""

    item_embeddings: nn.Embedding
    output_class: type[SequentialCFOutput] = SequentialCFOutput  # what `forward` returns
    # No transformers attention here: whatever implementation a composite model asks of its sub-models is accepted.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    @save_as_defining_class
    def save_pretrained(self, *args, **kwargs):
        return super().save_pretrained(*args, **kwargs)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - implemented by the model
        raise NotImplementedError

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
    ) -> SequentialCFOutput | tuple:
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
        output = self.output_class(loss=loss, last_hidden_state=hidden, user_representation=hidden[:, -1])
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
        positive_logits = (hidden * self.item_embeddings(labels)).sum(-1)[valid]
        negative_logits = torch.einsum("bld,blkd->blk", hidden, self.item_embeddings(negative_ids))[valid]
        positive_loss = F.binary_cross_entropy_with_logits(positive_logits, torch.ones_like(positive_logits))
        negative_loss = F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits))
        return positive_loss + negative_loss


__all__ = ["SequentialCFMixin", "SequentialCFOutput", "check_item_ids", "first_item_positions", "left_align_histories"]
