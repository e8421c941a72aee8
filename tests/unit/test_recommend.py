"""`recommend()`: CF retrieval over the whole catalog, A-LLMRec reranking, top k back (tiny random models)."""

from __future__ import annotations

import pytest
import torch

from conftest import NUM_ITEMS, build_model

HISTORIES = [[1, 2, 3, 4, 5, 6], [7, 3, 9], []]  # the last one is a cold user


@pytest.fixture(params=["llama", "gpt2"])
def model(request, processor):
    return build_model(request.param, processor)


def cf_top(model, processor, histories, n):
    scores = model.recommender.cf_model.score_all_items(processor(histories=histories)["cf_input_ids"])
    for row, history in enumerate(histories):
        scores[row, history] = float("-inf")
    return [set(row) for row in scores.topk(n, dim=1).indices.tolist()]


def test_recommend_never_returns_seen_items_and_ranks_best_first(model, processor):
    results = model.recommend(processor, HISTORIES, k=4, num_retrieved=8)
    retrieved = cf_top(model, processor, HISTORIES, 8)
    assert [len(r) for r in results] == [4, 4, 4]
    for history, recs, pool in zip(HISTORIES, results, retrieved, strict=True):
        items = [r["item"] for r in recs]
        assert not set(items) & set(history)
        assert set(items) <= pool  # reranked from the CF model's top 8
        assert len(set(items)) == 4
        scores = [r["score"] for r in recs]
        assert scores == sorted(scores, reverse=True)
        assert [r["title"] for r in recs] == [processor.catalog.title(i) for i in items]
        assert [r["item_id"] for r in recs] == [processor.catalog.item_id(i) for i in items]


def test_recommend_scores_are_the_rerankers(model, processor):
    """With every unseen item retrieved, the top item is the one score_candidates likes best."""
    history = [1, 2, 3]
    unseen = [i for i in range(1, NUM_ITEMS + 1) if i not in history]
    recs = model.recommend(processor, [history], k=3, num_retrieved=len(unseen))[0]
    batch = processor(histories=[history], candidates=[unseen])
    scores = model.score_candidates(**batch)[0]
    best = torch.argsort(scores, descending=True)[:3].tolist()
    assert [r["item"] for r in recs] == [unseen[j] for j in best]
    # Same candidates in another order and padding: equal up to float rounding.
    assert [r["score"] for r in recs] == pytest.approx([float(scores[j]) for j in best], rel=1e-4)


def test_recommend_refuses_impossible_requests(processor):
    model = build_model("llama", processor)
    with pytest.raises(ValueError, match="1 <= k <= num_retrieved"):
        model.recommend(processor, [[1]], k=5, num_retrieved=3)
    almost_everything = list(range(1, NUM_ITEMS))  # one unseen item left
    with pytest.raises(ValueError, match="user 1 has only 1 unseen items; cannot recommend 2"):
        model.recommend(processor, [[1], almost_everything], k=2, num_retrieved=4)


def test_rank_candidates_with_lists_of_different_lengths(model, processor):
    candidates = [[4, 5, 6, 7], [8, 9]]
    ranked = model.rank_candidates(processor, [[1, 2], [3]], candidates)
    assert [sorted(r["item"] for r in row) for row in ranked] == [[4, 5, 6, 7], [8, 9]]  # padding never ranked
    for row in ranked:
        assert [r["score"] for r in row] == sorted((r["score"] for r in row), reverse=True)
        assert all(r["score"] > float("-inf") for r in row)
    assert [len(row) for row in model.rank_candidates(processor, [[1, 2], [3]], candidates, k=1)] == [1, 1]
