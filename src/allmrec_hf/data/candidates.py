"""Evaluation candidate sets (the positive plus sampled negatives) and the paper's scenario subsets.

Sampling is vectorised and seeded: each purpose (validation, test, cold users, few-shot) draws from its own
generator derived from the seed, so the validation sets, the test sets and the few-shot selections never affect one
another. (Holding cold users out changes which rows the test sets are drawn for, and so the test candidates.)
"""

from __future__ import annotations

import logging

import numpy as np

from .log import DataPreparationError

logger = logging.getLogger(__name__)

NEGATIVE_SAMPLING = ("uniform", "popularity", "none")
_CHUNK = 1 << 17
_REJECTION_ROUNDS = 4

# Stream ids for `rng_for`; fixed forever so persisted candidates stay reproducible.
STREAMS = {"validation": 1, "test": 2, "cold_users": 3, "few_shot": 4}


def rng_for(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """An independent generator for one purpose (`"validation"`, `"test"`, `"cold_users"`, `"few_shot"`).

    >>> rng_for(0, "test").integers(100, size=3).tolist() == rng_for(0, "test").integers(100, size=3).tolist()
    True
    """
    return np.random.default_rng([seed, STREAMS[purpose], *extra])


class SeenItems:
    """Every item each user interacted with (all splits, not only the last 50), for exclusion tests.

    Args:
        users: 0-based user codes, one per interaction.
        items: 1-based item indices, one per interaction.
        num_items: Number of items (indices run 1..num_items).

    >>> seen = SeenItems(np.array([0, 0, 1]), np.array([3, 1, 2]), num_items=4)
    >>> seen.contains(np.array([0, 0, 1]), np.array([1, 2, 2])).tolist(), seen.items_of(0).tolist()
    ([True, False, True], [1, 3])
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int):
        self.num_items = int(num_items)
        keys = np.sort(users.astype(np.int64) * (self.num_items + 1) + items.astype(np.int64))
        self.keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys
        self.counts = np.bincount(self.keys // (self.num_items + 1))

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * (self.num_items + 1) + items.astype(np.int64)
        position = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return self.keys[position] == keys

    def items_of(self, user: int) -> np.ndarray:
        base = user * (self.num_items + 1)
        low, high = np.searchsorted(self.keys, [base, base + self.num_items + 1])
        return self.keys[low:high] - base

    def num_seen(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros(users.shape, dtype=np.int64)
        known = users < self.counts.size
        out[known] = self.counts[users[known]]
        return out


def _draw(rng: np.random.Generator, shape: tuple[int, int], num_items: int, cdf: np.ndarray | None) -> np.ndarray:
    if cdf is None:
        return rng.integers(1, num_items + 1, size=shape, dtype=np.int64)
    return np.searchsorted(cdf, rng.random(shape), side="right").astype(np.int64) + 1


def _first_distinct_unseen(draws: np.ndarray, seen_mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first `k` draws that are unseen and not repeated earlier in the row."""
    order = np.argsort(draws, axis=1, kind="stable")
    ordered = np.take_along_axis(draws, order, axis=1)
    repeated = np.zeros(draws.shape, dtype=bool)
    np.put_along_axis(repeated, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
    valid = ~seen_mask & ~repeated
    taken = valid & (np.cumsum(valid, axis=1) <= k)
    complete = taken.sum(axis=1) == k
    return complete, draws[complete][taken[complete]].reshape(-1, k)


def sample_negatives(
    users: np.ndarray,
    seen: SeenItems,
    num_negatives: int,
    rng: np.random.Generator,
    popularity: np.ndarray | None = None,
    user_ids: list[str] | None = None,
) -> np.ndarray:
    """`num_negatives` distinct items per user that the user never interacted with, as an int32 array
    `(len(users), num_negatives)`.

    Args:
        users: 0-based user codes.
        seen: The items of every user (`SeenItems`).
        num_negatives: How many per user.
        rng: The generator (see `rng_for`).
        popularity: `None` for uniform sampling; else weights per item index (length `num_items + 1`, index 0
            unused), e.g. training interaction counts: items are drawn with probability proportional to them.
        user_ids: External user ids, only to name a user in errors.

    Raises:
        DataPreparationError: a user has fewer unseen (and, for popularity sampling, ever-interacted) items than
            `num_negatives`; the message names the user.
    """
    num_items = seen.num_items
    users = np.asarray(users, dtype=np.int64)
    out = np.zeros((users.size, num_negatives), dtype=np.int32)
    if num_negatives == 0 or users.size == 0:
        return out
    cdf = None
    weights = None
    if popularity is not None:
        weights = np.asarray(popularity, dtype=np.float64)[1 : num_items + 1].clip(min=0)
        if weights.sum() <= 0:
            raise DataPreparationError("Popularity sampling needs at least one item with a positive count.")
        cdf = np.cumsum(weights / weights.sum())
        cdf[np.flatnonzero(weights)[-1] :] = 1.0  # rounding must not leave room for trailing zero-weight items
    available = num_items - seen.num_seen(users) if weights is None else None
    if available is not None and (available < num_negatives).any():
        bad = int(np.flatnonzero(available < num_negatives)[0])
        name = user_ids[users[bad]] if user_ids is not None else str(users[bad] + 1)
        raise DataPreparationError(
            f"User {name!r} interacted with {num_items - available[bad]} of the {num_items} items, so "
            f"{num_negatives} unseen negatives cannot be sampled; lower the number of negatives."
        )
    for start in range(0, users.size, _CHUNK):
        chunk = users[start : start + _CHUNK]
        pending = np.arange(chunk.size)
        for round_ in range(_REJECTION_ROUNDS):
            if pending.size == 0:
                break
            width = num_negatives * (2 << round_) + 8
            draws = _draw(rng, (pending.size, width), num_items, cdf)
            seen_mask = seen.contains(np.repeat(chunk[pending], width), draws.ravel()).reshape(draws.shape)
            complete, picked = _first_distinct_unseen(draws, seen_mask, num_negatives)
            out[start + pending[complete]] = picked
            pending = pending[~complete]
        for row in pending:  # users who saw most of the catalogue: draw from the explicit complement
            user = int(chunk[row])
            pool = np.setdiff1d(np.arange(1, num_items + 1), seen.items_of(user), assume_unique=True)
            p = None
            if weights is not None:
                pool = pool[weights[pool - 1] > 0]
                p = weights[pool - 1] / weights[pool - 1].sum() if pool.size else None
            if pool.size < num_negatives:
                name = user_ids[user] if user_ids is not None else str(user + 1)
                raise DataPreparationError(
                    f"User {name!r} has only {pool.size} items left to sample {num_negatives} negatives from "
                    f"({'unseen items with a positive popularity' if weights is not None else 'unseen items'})."
                )
            out[start + row] = rng.choice(pool, size=num_negatives, replace=False, p=p)
    return out


def candidate_sets(
    users: np.ndarray,
    targets: np.ndarray,
    seen: SeenItems,
    num_negatives: int,
    rng: np.random.Generator,
    popularity: np.ndarray | None = None,
    user_ids: list[str] | None = None,
) -> np.ndarray:
    """The target plus `num_negatives` sampled negatives per user, shuffled within each row (so the target's
    position carries no signal): int32 `(len(users), 1 + num_negatives)`."""
    negatives = sample_negatives(users, seen, num_negatives, rng, popularity, user_ids)
    candidates = np.concatenate([np.asarray(targets, dtype=np.int32)[:, None], negatives], axis=1)
    return rng.permuted(candidates, axis=1).astype(np.int32)


def item_popularity_groups(counts: np.ndarray, fraction: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Cold and warm items: the bottom and top `fraction` of all items by training interactions (ties broken by
    item index, so the groups are deterministic). `counts` has one entry per item index (index 0 unused).

    >>> cold, warm = item_popularity_groups(np.array([0, 5, 0, 9, 1, 3, 7]), fraction=0.35)
    >>> cold.tolist(), warm.tolist()
    ([2, 4], [3, 6])
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    items = np.arange(1, counts.size)
    order = np.lexsort((items, counts[1:]))
    size = int(np.floor(fraction * items.size))
    cold = np.sort(items[order[:size]])
    warm = np.sort(items[order[::-1][:size]]) if size else np.array([], dtype=np.int64)
    return cold, warm


def few_shot_users(train_users: np.ndarray, k: int, seed: int) -> np.ndarray:
    """`k` training users (1-based indices) drawn without replacement under `seed`, sorted.

    >>> few_shot_users(np.arange(1, 11), 3, seed=0).tolist() == few_shot_users(np.arange(1, 11), 3, 0).tolist()
    True
    """
    train_users = np.asarray(train_users)
    if not 0 < k <= train_users.size:
        raise ValueError(f"Few-shot training needs 0 < K <= {train_users.size} (the training users), got {k}.")
    return np.sort(rng_for(seed, "few_shot", k).choice(train_users, size=k, replace=False))
