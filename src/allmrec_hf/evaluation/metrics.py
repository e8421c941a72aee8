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


def _named_titles(answer: str, titles: list[str]) -> list[int]:
    """Indices of the titles an answer names (its normalised text contains them), ignoring a title that is only
    part of a longer named one ("Heat" inside "Heat (1995)")."""
    inside = [i for i, title in enumerate(titles) if title and title in answer]
    return [i for i in inside if not any(titles[i] != titles[j] and titles[i] in titles[j] for j in inside)]


def generation_metrics(answers: list[str], targets: list[str], candidates: list[list[str]]) -> dict[str, float]:
    """Hit@1 of generated answers under two rules, and the share of valid answers.

    - `hit@1_substring`: the paper's rule: the target's title appears inside the answer.
    - `hit@1_strict`: the answer names exactly one candidate title and it is the target's.
    - `valid_answer_rate`: the answer names exactly one candidate title.

    Titles and answers are compared after `normalize_title` (case, quotes, outer punctuation, whitespace). A
    target title shared by another candidate can never be a strict hit (the answer is ambiguous).

    >>> generation_metrics(['"Heat (1995)"', "Heat (1995) or Babe (1995)", "no idea"],
    ...                    ["Heat (1995)", "Heat (1995)", "Babe (1995)"],
    ...                    [["Heat (1995)", "Babe (1995)"]] * 3)
    {'hit@1_substring': 0.6666666666666666, 'hit@1_strict': 0.3333333333333333, 'valid_answer_rate': 0.3333333333333333}
    """
    from ..catalog import normalize_title

    if not len(answers) == len(targets) == len(candidates):
        raise ValueError(f"{len(answers)} answers, {len(targets)} targets and {len(candidates)} candidate lists.")
    if not answers:
        return {"hit@1_substring": float("nan"), "hit@1_strict": float("nan"), "valid_answer_rate": float("nan")}
    substring = strict = valid = 0
    for answer, target, titles in zip(answers, targets, candidates, strict=True):
        answer, target = normalize_title(answer), normalize_title(target)
        titles = [normalize_title(t) for t in titles]
        if target not in titles:
            raise ValueError(f"target {target!r} is not among its candidates {titles}.")
        substring += bool(target) and target in answer
        named = _named_titles(answer, titles)
        if len(named) == 1:
            valid += 1
            strict += titles[named[0]] == target and titles.count(target) == 1
    n = len(answers)
    return {"hit@1_substring": substring / n, "hit@1_strict": strict / n, "valid_answer_rate": valid / n}
