"""Configuration of the NextItNet collaborative-filtering encoder."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedConfig

from .configuration_sasrec import _check_positive, _check_probability

# Residual block i has dilation DEFAULT_DILATIONS[i % 2]; its two convolutions use d and 2d, so consecutive
# blocks dilate by 1, 2, 4, 8, 1, 2, 4, 8, ...: the paper's doubling pattern, restarted every two blocks.
DEFAULT_DILATIONS = (1, 4)


class NextItNetConfig(PreTrainedConfig):
    r"""
    Configuration of [`NextItNetModel`], the convolutional sequential recommender (Yuan et al., 2019: stacked
    residual blocks of dilated causal 1-D convolutions) usable as A-LLMRec's collaborative-filtering (CF) encoder
    in place of SASRec (the paper's Table 11).

    Args:
        num_items (`int`):
            Number of real items. Item ids run from 1 to `num_items`; id 0 is padding.
        hidden_size (`int`, defaults to 50): Size of item embeddings, convolution channels and the user
            representation.
        max_seq_length (`int`, defaults to 50): Longest history the encoder reads; longer ones keep their most
            recent items.
        num_hidden_layers (`int`, *optional*): Residual blocks (default: as many as `dilations`, else 4). Each
            block is a causal convolution with dilation d, layer norm, ReLU, a causal convolution with dilation
            2d, layer norm, ReLU, plus the block's input.
        dilations (`list[int]`, *optional*): The dilation d of each block (`num_hidden_layers` values). Default:
            1, 4, 1, 4, ... so that the convolutions dilate by 1, 2, 4, 8, 1, 2, 4, 8, ... (4 blocks see 61 items).
        kernel_size (`int`, defaults to 3): Width of every convolution.
        hidden_dropout_prob (`float`, defaults to 0.0): Dropout on the item embeddings (the paper used none).
        layer_norm_eps (`float`, defaults to 1e-8): Epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02): Standard deviation of the weight initialisation.
        loss_type (`str`, defaults to `"bce"`): `"bce"` (binary cross-entropy against sampled negatives, as for
            SASRec) or `"ce"` (softmax cross-entropy over the whole catalog).

    Example:

    ```python
    >>> from allmrec_hf import NextItNetConfig, NextItNetModel
    >>> config = NextItNetConfig(num_items=100, hidden_size=32, num_hidden_layers=2)
    >>> config.dilations, config.receptive_field
    ([1, 4], 31)
    >>> model = NextItNetModel(config)
    ```
    """

    model_type = "nextitnet"

    num_items: int = 1
    hidden_size: int = 50
    max_seq_length: int = 50
    num_hidden_layers: int | None = None
    dilations: list[int] | None = None
    kernel_size: int = 3
    hidden_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-8
    initializer_range: float = 0.02
    loss_type: Literal["bce", "ce"] = "bce"
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.num_hidden_layers is None:
            self.num_hidden_layers = len(self.dilations) if self.dilations else 4
        _check_positive(self, "num_items", "hidden_size", "max_seq_length", "num_hidden_layers", "kernel_size")
        _check_probability(self, "hidden_dropout_prob")
        if self.dilations is None:
            self.dilations = [DEFAULT_DILATIONS[i % len(DEFAULT_DILATIONS)] for i in range(self.num_hidden_layers)]
        self.dilations = [int(d) for d in self.dilations]
        if len(self.dilations) != self.num_hidden_layers or any(d < 1 for d in self.dilations):
            raise ValueError(
                f"dilations must be {self.num_hidden_layers} positive integers (one per residual block, "
                f"num_hidden_layers={self.num_hidden_layers}), got {self.dilations!r}."
            )
        if self.loss_type not in ("bce", "ce"):
            raise ValueError(f"loss_type must be 'bce' or 'ce', got {self.loss_type!r}.")

    @property
    def vocab_size(self) -> int:
        """Rows of the item embedding table: the items plus the padding id 0."""
        return self.num_items + 1

    @property
    def receptive_field(self) -> int:
        """How many of the most recent items the last position's output can depend on."""
        return 1 + (self.kernel_size - 1) * sum(3 * d for d in self.dilations)


__all__ = ["NextItNetConfig"]
