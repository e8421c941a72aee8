"""Configuration of the GRU4Rec collaborative-filtering encoder."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig

from .configuration_sasrec import _check_positive, _check_probability


class GRU4RecConfig(PreTrainedConfig):
    r"""
    Configuration of [`GRU4RecModel`], the recurrent sequential recommender (Hidasi et al., 2016, in its
    next-item form) usable as A-LLMRec's collaborative-filtering (CF) encoder in place of SASRec (the paper's
    Table 11).

    Args:
        num_items (`int`):
            Number of real items. Item ids run from 1 to `num_items`; id 0 is padding.
        hidden_size (`int`, defaults to 50): Size of the item embeddings and of the user representation (what
            A-LLMRec's stage 1 and stage 2 read).
        gru_hidden_size (`int`, *optional*): Size of the GRU's hidden state (default: `hidden_size`). When it
            differs, a linear layer projects the GRU output to `hidden_size`.
        max_seq_length (`int`, defaults to 50): Longest history the encoder reads; longer ones keep their most
            recent items.
        num_hidden_layers (`int`, defaults to 1): Stacked GRU layers.
        hidden_dropout_prob (`float`, defaults to 0.3): Dropout on the item embeddings (and between GRU layers).
        initializer_range (`float`, defaults to 0.02): Standard deviation of the embedding initialisation.
        loss_type (`str`, defaults to `"bce"`): `"bce"` (binary cross-entropy against sampled negatives, as for
            SASRec) or `"ce"` (softmax cross-entropy over the whole catalog).

    Example:

    ```python
    >>> from allmrec_hf import GRU4RecConfig, GRU4RecModel
    >>> config = GRU4RecConfig(num_items=100, hidden_size=32, gru_hidden_size=64)
    >>> model = GRU4RecModel(config)
    >>> model.config.model_type, model.config.max_seq_length
    ('gru4rec', 50)
    ```
    """

    model_type = "gru4rec"

    num_items: int = 1
    hidden_size: int = 50
    gru_hidden_size: int | None = None
    max_seq_length: int = 50
    num_hidden_layers: int = 1
    hidden_dropout_prob: float = 0.3
    initializer_range: float = 0.02
    loss_type: Literal["bce", "ce"] = "bce"
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.gru_hidden_size is None:
            self.gru_hidden_size = self.hidden_size
        _check_positive(self, "num_items", "hidden_size", "gru_hidden_size", "max_seq_length", "num_hidden_layers")
        _check_probability(self, "hidden_dropout_prob")
        if self.loss_type not in ("bce", "ce"):
            raise ValueError(f"loss_type must be 'bce' or 'ce', got {self.loss_type!r}.")

    @property
    def vocab_size(self) -> int:
        """Rows of the item embedding table: the items plus the padding id 0."""
        return self.num_items + 1


__all__ = ["GRU4RecConfig"]
