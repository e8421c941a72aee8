"""Data: readers for common formats, filtering and presets, leave-one-out splits, persisted candidate sets and
the paper's scenarios. Library-only (not shipped with Hub checkpoints)."""

from .candidates import SeenItems, candidate_sets, item_popularity_groups, sample_negatives
from .log import DataFormatError, DataPreparationError, InteractionLog, clean_text
from .prepared import PreparationConfig, PreparedDataset, prepare_dataset
from .preprocess import PRESETS, PreparationPreset, encode_log, format_statistics_table, get_preset

__all__ = [
    "PRESETS",
    "DataFormatError",
    "DataPreparationError",
    "InteractionLog",
    "PreparationConfig",
    "PreparationPreset",
    "PreparedDataset",
    "SeenItems",
    "candidate_sets",
    "clean_text",
    "encode_log",
    "format_statistics_table",
    "get_preset",
    "item_popularity_groups",
    "prepare_dataset",
    "sample_negatives",
]
