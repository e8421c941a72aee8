"""Configuration of the SASRec collaborative-filtering encoder."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig


class SASRecConfig(PreTrainedConfig):
    r"""
    Configuration of [`SASRecModel`], the self-attentive sequential recommender used as A-LLMRec's
    collaborative-filtering (CF) encoder. The defaults follow the A-LLMRec paper (hidden size 50, maximum
    sequence length 50, 2 blocks, 1 head, dropout 0.5).

    Args:
        num_items (`int`):
            Number of real items. Item ids run from 1 to `num_items`; id 0 is padding.
        hidden_size (`int`, defaults to 50): Size of item embeddings and hidden states.
        max_seq_length (`int`, defaults to 50): Longest history the encoder reads; longer ones keep their most
            recent items.
        num_hidden_layers (`int`, defaults to 2): Number of self-attention blocks.
        num_attention_heads (`int`, defaults to 1): Attention heads per block.
        hidden_dropout_prob (`float`, defaults to 0.5): Dropout on embeddings and feed-forward outputs.
        attention_dropout_prob (`float`, defaults to 0.5): Dropout on attention weights.
        layer_norm_eps (`float`, defaults to 1e-8): Epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02): Standard deviation of the weight initialisation.
        loss_type (`str`, defaults to `"bce"`): `"bce"` (binary cross-entropy against sampled negatives, the
            paper's) or `"ce"` (softmax cross-entropy over the whole catalog).

    Example:

    ```python
    >>> from allmrec_hf import SASRecConfig, SASRecModel
    >>> config = SASRecConfig(num_items=100, hidden_size=32)
    >>> model = SASRecModel(config)
    >>> model.config.max_seq_length
    50
    ```
    """

    model_type = "sasrec"

    num_items: int = 1
    hidden_size: int = 50
    max_seq_length: int = 50
    num_hidden_layers: int = 2
    num_attention_heads: int = 1
    hidden_dropout_prob: float = 0.5
    attention_dropout_prob: float = 0.5
    layer_norm_eps: float = 1e-8
    initializer_range: float = 0.02
    loss_type: Literal["bce", "ce"] = "bce"
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        _check_positive(self, "num_items", "hidden_size", "max_seq_length", "num_hidden_layers", "num_attention_heads")
        _check_probability(self, "hidden_dropout_prob", "attention_dropout_prob")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.loss_type not in ("bce", "ce"):
            raise ValueError(f"loss_type must be 'bce' or 'ce', got {self.loss_type!r}.")

    @property
    def vocab_size(self) -> int:
        """Rows of the item embedding table: the items plus the padding id 0."""
        return self.num_items + 1


def _check_positive(config: PreTrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}.")


def _check_probability(config: PreTrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1), got {value!r}.")


__all__ = ["SASRecConfig"]
