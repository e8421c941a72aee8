"""Ranking metrics as plain numpy functions (no model, no torch).

A *rank* is the 0-based position of the target in a list sorted by descending score (0 = ranked first).
Ties are resolved pessimistically: the target ranks below every other item with the same score, so a model
that gives every candidate the same score earns no credit.
"""

from __future__ import annotations

import numpy as np


def target_ranks(scores: np.ndarray, target_positions: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The 0-based rank of each row's target among that row's scores.

    Args:
        scores: `(users, candidates)` scores, higher is better.
        target_positions: `(users,)` column of the target in `scores`.
        valid: Optional `(users, candidates)` mask; invalid columns (padding, excluded items) never outrank.

    >>> target_ranks(np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]]), np.array([2, 0])).tolist()
    [1, 1]
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, target_positions][:, None]
    beats = scores >= target_scores
    beats[rows, target_positions] = False
    if valid is not None:
        beats &= np.asarray(valid, dtype=bool)
    return beats.sum(axis=1)


def hit_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target is in the top `k`.

    >>> hit_at_k(np.array([0, 3, 12]), 5)
    0.6666666666666666
    """
    ranks = np.asarray(ranks)
    return float((ranks < k).mean()) if ranks.size else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Normalised discounted cumulative gain with one relevant item: `1 / log2(rank + 2)` inside the top `k`.

    >>> round(ndcg_at_k(np.array([0, 1, 10]), 10), 4)
    0.5436
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if not ranks.size:
        return float("nan")
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean())


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank, `1 / (rank + 1)`.

    >>> mrr(np.array([0, 1, 3]))
    0.5833333333333334
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    return float((1.0 / (ranks + 1.0)).mean()) if ranks.size else float("nan")


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """`hit@k` and `ndcg@k` for each `k`, and `mrr`.

    >>> ranking_metrics(np.array([0, 2]), ks=(1, 5))
    {'hit@1': 0.5, 'ndcg@1': 0.5, 'hit@5': 1.0, 'ndcg@5': 0.75, 'mrr': 0.6666666666666666}
    """
    out: dict[str, float] = {}
    for k in ks:
        out[f"hit@{k}"] = hit_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = mrr(ranks)
    return out
