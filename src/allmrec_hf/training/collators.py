"""Data collators for the three training stages: dynamic padding, and negatives / candidate sets sampled per
example from a generator seeded by (seed, epoch, user), so a run is reproducible, resumes exactly, and gives every
process of a distributed run the same draws for the same example."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from ..modeling_sasrec import SASRecConfig


def example_rng(seed: int, epoch: int, user: int, stream: int = 0) -> np.random.Generator:
    """The generator for one example in one epoch (`stream` separates independent uses)."""
    return np.random.default_rng([seed, stream, epoch, user])


def sample_unseen(
    rng: np.random.Generator, num_items: int, seen: set[int], count: int, distinct: bool = True
) -> list[int]:
    """`count` items in 1..num_items outside `seen` (distinct unless `distinct=False`).

    >>> items = sample_unseen(np.random.default_rng(0), 10, {1, 2, 3}, 4)
    >>> len(set(items)), set(items) & {1, 2, 3}
    (4, set())
    """
    available = num_items - len(seen)
    if available < (count if distinct else 1):
        raise ValueError(
            f"cannot sample {count} items outside the {len(seen)} seen ones from a catalog of {num_items} items."
        )
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < count:
        for item in rng.integers(1, num_items + 1, size=2 * (count - len(out)) + 4).tolist():
            if item in seen or (distinct and item in chosen):
                continue
            out.append(item)
            chosen.add(item)
            if len(out) == count:
                break
    return out


def left_pad(rows: Sequence[Sequence[int]], width: int | None = None, value: int = 0) -> torch.Tensor:
    """Left-pad integer rows to a common width (the longest row's, at least 1).

    >>> left_pad([[1, 2], [3]]).tolist()
    [[1, 2], [0, 3]]
    """
    width = max([len(r) for r in rows] + [1]) if width is None else width
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
    return out


class _EpochAware:
    epoch: int = 0
    seed: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class CFCollator(_EpochAware):
    """SASRec training batches from train rows (`user`, `history`, `target`): the sequence `history + [target]`
    gives inputs `seq[:-1]` and next-item labels `seq[1:]` (the last `max_length`), left-padded, with one
    negative per position drawn from items outside the user's sequence.

    >>> collator = CFCollator(num_items=10, max_length=3, seed=0)
    >>> batch = collator([{"user": 1, "history": [1, 2, 3, 4], "target": 5}, {"user": 2, "history": [6], "target": 7}])
    >>> batch["input_ids"].tolist(), batch["labels"].tolist()
    ([[2, 3, 4], [0, 0, 6]], [[3, 4, 5], [0, 0, 7]])
    """

    def __init__(self, num_items: int, max_length: int, seed: int = 0):
        self.num_items, self.max_length, self.seed = num_items, max_length, seed

    @classmethod
    def for_config(cls, config: SASRecConfig, seed: int = 0) -> CFCollator:
        return cls(config.num_items, config.max_seq_length, seed)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs, labels, negatives = [], [], []
        for row in rows:
            sequence = list(row["history"]) + [int(row["target"])]
            seen = set(sequence)
            rng = example_rng(self.seed, self.epoch, int(row["user"]))
            label = sequence[1:][-self.max_length :]
            inputs.append(sequence[:-1][-self.max_length :])
            labels.append(label)
            negatives.append(sample_unseen(rng, self.num_items, seen, len(label), distinct=False))
        width = max(len(r) for r in labels)
        return {
            "input_ids": left_pad(inputs, width),
            "labels": left_pad(labels, width),
            "negative_ids": left_pad(negatives, width),
        }


class Stage1Collator(_EpochAware):
    """Stage-1 batches: the CF history, the positive (next) item(s), one sampled negative each, and both items'
    tokenised text (sentence-encoder tokenizer, through the processor's catalog and item-text template).

    `all_positions=False` (the paper's default) trains on the last training item only: history -> target.
    `all_positions=True` uses every position of the sequence, as SASRec does.
    """

    def __init__(self, processor, num_items: int, max_length: int, seed: int = 0, all_positions: bool = False):
        self.processor, self.num_items, self.max_length = processor, num_items, max_length
        self.seed, self.all_positions = seed, all_positions

    def _texts(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenised text for every id in `ids` (any shape; 0 gets an all-padding row)."""
        unique = sorted({int(i) for i in ids.flatten().tolist()} - {0})
        encoded = self.processor.tokenize_item_texts(unique, return_tensors="pt")
        table_ids = torch.cat([torch.zeros(1, encoded["input_ids"].shape[1], dtype=torch.long), encoded["input_ids"]])
        table_mask = torch.cat([torch.zeros_like(table_ids[:1]), encoded["attention_mask"].long()])
        lookup = torch.zeros(self.num_items + 1, dtype=torch.long)
        lookup[torch.tensor(unique, dtype=torch.long)] = torch.arange(1, len(unique) + 1)
        rows = lookup[ids]
        return table_ids[rows], table_mask[rows]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        histories, positives, negatives = [], [], []
        for row in rows:
            sequence = list(row["history"]) + [int(row["target"])]
            rng = example_rng(self.seed, self.epoch, int(row["user"]), stream=1)
            if self.all_positions:
                histories.append(sequence[:-1][-self.max_length :])
                positives.append(sequence[1:][-self.max_length :])
            else:
                histories.append(list(row["history"])[-self.max_length :])
                positives.append([int(row["target"])])
            negatives.append(sample_unseen(rng, self.num_items, set(sequence), len(positives[-1]), distinct=False))
        width = max(len(p) for p in positives)
        positive_ids, negative_ids = left_pad(positives, width), left_pad(negatives, width)
        cf_width = max(width, max(len(h) for h in histories), 1)
        positive_text, positive_mask = self._texts(positive_ids)
        negative_text, negative_mask = self._texts(negative_ids)
        return {
            "cf_input_ids": left_pad(histories, cf_width),
            "positive_ids": positive_ids,
            "negative_ids": negative_ids,
            "positive_text_input_ids": positive_text,
            "positive_text_attention_mask": positive_mask,
            "negative_text_input_ids": negative_text,
            "negative_text_attention_mask": negative_mask,
        }


class Stage2Collator(_EpochAware):
    """Stage-2 batches: for each train row a fresh candidate set (the target plus `num_candidates - 1` distinct
    items outside the user's sequence, shuffled; seeded per example and epoch, as the paper samples one per
    training example) and the prompt with the target's title as the answer (`labels` on the answer only)."""

    def __init__(self, processor, num_items: int, num_candidates: int = 20, seed: int = 0):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.processor, self.num_items, self.num_candidates, self.seed = processor, num_items, num_candidates, seed

    def candidates_for(self, row: dict[str, Any]) -> list[int]:
        """The row's persisted candidates when it carries them (validation rows: comparable across epochs),
        else a fresh seeded set."""
        if row.get("candidates"):
            return [int(i) for i in row["candidates"]]
        sequence = list(row["history"]) + [int(row["target"])]
        rng = example_rng(self.seed, self.epoch, int(row["user"]), stream=2)
        candidates = [int(row["target"])] + sample_unseen(rng, self.num_items, set(sequence), self.num_candidates - 1)
        return [candidates[i] for i in rng.permutation(len(candidates))]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        candidates = [self.candidates_for(row) for row in rows]
        batch = self.processor(
            histories=[list(row["history"]) for row in rows],
            candidates=candidates,
            targets=[int(row["target"]) for row in rows],
            return_candidate_tokens=False,  # the loss reads the prompt and its answer only
        )
        keep = ("input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels")
        return {key: batch[key] for key in keep}


class RankingCollator(_EpochAware):
    """Batches for the ranking head (`ALLMRecForItemRanking`) from train rows (`user`, `history`, `target`): the
    processor's ranking prompt (`processor.ranking_inputs`), whose every output token is labelled with the item
    that followed it (the last one with `target`). With `num_negatives`, also `negative_ids`
    `(batch, num_output_tokens, num_negatives)`: items outside the user's sequence, seeded per (seed, epoch, user,
    cut), for a sampled softmax instead of the whole catalog. `tests/scripts/test_training_ranking.py` shows a batch.
    """

    def __init__(self, processor, num_items: int, num_negatives: int = 0, seed: int = 0):
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        self.processor, self.num_items, self.num_negatives, self.seed = processor, num_items, num_negatives, seed

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        histories = [list(row["history"]) for row in rows]
        batch = dict(self.processor.ranking_inputs(histories, [int(row["target"]) for row in rows]))
        if self.num_negatives:
            labels = batch["labels"]
            negatives = torch.zeros(*labels.shape, self.num_negatives, dtype=torch.long)
            for i, row in enumerate(rows):
                seen = set(histories[i]) | {int(row["target"])}
                rng = example_rng(self.seed, self.epoch, int(row["user"]), stream=3 + int(row.get("cut", 0)))
                steps = int((labels[i] != 0).sum())
                drawn = sample_unseen(rng, self.num_items, seen, steps * self.num_negatives, distinct=False)
                negatives[i, :steps] = torch.tensor(drawn, dtype=torch.long).view(steps, self.num_negatives)
            batch["negative_ids"] = negatives
        return batch


class SetEpochCallback(TrainerCallback):
    """Tells an epoch-aware collator which epoch is starting (also right after resuming mid-epoch)."""

    def __init__(self, collator: _EpochAware):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(math.floor(state.epoch + 1e-6) if state.epoch else 0)
