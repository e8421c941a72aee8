"""Evaluation: ranking metrics (plain numpy)."""

from .metrics import generation_metrics, hit_at_k, mrr, ndcg_at_k, ranking_metrics, target_ranks

__all__ = ["generation_metrics", "hit_at_k", "mrr", "ndcg_at_k", "ranking_metrics", "target_ranks"]
