"""The ranking head's scores plus a weight times the CF model's own scores, the weight chosen on validation.

The head reads the CF model's state but is trained on its own; adding the CF model's score of each item back
(`score = head + w * cf`) is a late fusion whose weight `w` is picked on the validation candidates (never on
test). Weights are searched relative to the two score spreads, so the same grid fits any score scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import ranking_metrics, target_ranks

#: Weights relative to `spread(head) / spread(cf)` (1: both terms spread the candidates equally); 0 is the head.
RELATIVE_WEIGHTS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)


def score_spread(scores: np.ndarray) -> float:
    """The mean over rows of the standard deviation of each row's finite scores (`(rows, candidates)`).

    >>> score_spread(np.array([[0.0, 2.0, -np.inf], [1.0, 1.0, 1.0]]))
    0.5
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    counts = finite.sum(1)
    if not bool((counts > 0).all()):
        raise ValueError("every row needs at least one finite score.")
    values = np.where(finite, scores, 0.0)
    means = values.sum(1) / counts
    variances = (np.where(finite, values - means[:, None], 0.0) ** 2).sum(1) / counts
    return float(np.sqrt(variances).mean())


@dataclass
class CFScoreWeightChoice:
    """The chosen weight `weight` (absolute, as `ALLMRecRankingConfig.cf_score_weight` takes it), its value
    relative to the score spreads, the spread ratio, the metric it maximised, and every tried weight's metrics."""

    weight: float
    relative_weight: float
    scale: float
    metric: str
    table: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "weight": self.weight,
            "relative_weight": self.relative_weight,
            "scale": self.scale,
            "metric": self.metric,
            "table": self.table,
        }


def fused_scores(head_scores: np.ndarray, cf_scores: np.ndarray, weight: float) -> np.ndarray:
    """`head + weight * cf`, with `-inf` (padding) wherever either is `-inf`; weight 0 gives the head's scores.
    Computed in the scores' own precision, as the model adds them (`ALLMRecForItemRanking`, float32)."""
    head_scores = np.asarray(head_scores)
    if weight == 0:
        return head_scores
    cf_scores = np.asarray(cf_scores)
    if cf_scores.shape != head_scores.shape:
        raise ValueError(f"CF scores of shape {cf_scores.shape} for head scores of shape {head_scores.shape}.")
    out = head_scores + weight * np.where(np.isfinite(cf_scores), cf_scores, 0.0)
    return np.where(np.isfinite(head_scores) & np.isfinite(cf_scores), out, -np.inf)


def choose_cf_score_weight(
    head_scores: np.ndarray,
    cf_scores: np.ndarray,
    target_positions: np.ndarray,
    metric: str = "ndcg@10",
    relative_weights: Sequence[float] = RELATIVE_WEIGHTS,
    ks: tuple[int, ...] = (1, 5, 10),
) -> CFScoreWeightChoice:
    """The weight `w` of `head + w * cf` that maximises `metric` on these (validation) candidates; on a tie the
    smaller weight wins, so the pure head (0, always tried) is kept unless adding the CF score helps.

    >>> head = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> cf = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    >>> choice = choose_cf_score_weight(head, cf, np.array([1, 2]), metric="hit@1")
    >>> choice.relative_weight, round(choice.weight, 3), choice.table[0]["hit@1"], choice.table[-1]["hit@1"]
    (0.6, 0.346, 0.0, 1.0)
    """
    head_scores, cf_scores = np.asarray(head_scores), np.asarray(cf_scores)
    if head_scores.shape != cf_scores.shape:
        raise ValueError(f"CF scores of shape {cf_scores.shape} for head scores of shape {head_scores.shape}.")
    if 0.0 not in relative_weights:
        relative_weights = (0.0, *relative_weights)
    cf_spread = score_spread(cf_scores)
    scale = score_spread(head_scores) / cf_spread if cf_spread > 0 else 0.0
    table, best = [], None
    for relative in sorted(set(float(w) for w in relative_weights)):
        weight = relative * scale
        ranks = target_ranks(fused_scores(head_scores, cf_scores, weight), np.asarray(target_positions))
        metrics = ranking_metrics(ranks, ks)
        if metric not in metrics:
            raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(metrics)}.")
        table.append({"relative_weight": relative, "weight": weight, **metrics})
        if best is None or metrics[metric] > best[metric]:
            best = table[-1]
    return CFScoreWeightChoice(best["weight"], best["relative_weight"], scale, metric, table)


__all__ = ["RELATIVE_WEIGHTS", "CFScoreWeightChoice", "choose_cf_score_weight", "fused_scores", "score_spread"]
