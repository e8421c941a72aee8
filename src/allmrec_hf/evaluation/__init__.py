"""Evaluation: ranking metrics (plain numpy)."""

from .metrics import hit_at_k, mrr, ndcg_at_k, ranking_metrics, target_ranks

__all__ = ["hit_at_k", "mrr", "ndcg_at_k", "ranking_metrics", "target_ranks"]
