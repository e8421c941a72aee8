"""Ranking and generation metrics against hand-computed values, and the local `evaluate` module."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from allmrec_hf.evaluation import generation_metrics, hit_at_k, mrr, ndcg_at_k, ranking_metrics, target_ranks

METRIC_DIR = Path(__file__).resolve().parents[2] / "metrics" / "allmrec_ranking"


def test_target_ranks_count_ties_against_the_target():
    scores = np.array([[0.2, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0], [0.3, 0.1, 0.3, 0.0]])
    assert target_ranks(scores, np.array([2, 0, 0])).tolist() == [1, 3, 1]
    valid = np.array([[True, False, True, True]] * 3)  # column 1 is padding / excluded
    assert target_ranks(scores, np.array([2, 0, 0]), valid).tolist() == [0, 2, 1]


def test_hit_ndcg_mrr_by_hand():
    ranks = np.array([0, 1, 4, 12])
    assert hit_at_k(ranks, 1) == 0.25
    assert hit_at_k(ranks, 5) == 0.75
    assert ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert ndcg_at_k(ranks, 1) == 0.25
    assert mrr(ranks) == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 13) / 4)
    assert ranking_metrics(ranks, ks=(5,)) == {
        "hit@5": 0.75,
        "ndcg@5": pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4),
        "mrr": pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 13) / 4),
    }
    assert math.isnan(hit_at_k(np.array([]), 1)) and math.isnan(mrr(np.array([])))


CANDIDATES = ["Heat (1995)", "Babe (1995)", "Casino (1995)"]


@pytest.mark.parametrize(
    ("answer", "substring", "strict", "valid"),
    [
        ('"Heat (1995)"', 1, 1, 1),  # the paper's answer format
        ("  heat (1995).  ", 1, 1, 1),  # case, spaces and outer punctuation do not matter
        ("I recommend Heat (1995) to this user", 1, 1, 1),  # named inside a sentence
        ("Heat (1995) or Babe (1995)", 1, 0, 0),  # a substring hit, but two candidates named: invalid
        ('"Babe (1995)"', 0, 0, 1),  # valid, wrong
        ("Heat", 0, 0, 0),  # a fragment names nothing
        ("Toy Story (1995)", 0, 0, 0),  # not a candidate
        ("", 0, 0, 0),
    ],
)
def test_generation_rules_on_crafted_answers(answer, substring, strict, valid):
    result = generation_metrics([answer], ["Heat (1995)"], [CANDIDATES])
    assert result == {"hit@1_substring": substring, "hit@1_strict": strict, "valid_answer_rate": valid}


def test_generation_rules_with_a_title_inside_another():
    # "Heat" inside "Heat (1995)" is not a second title named.
    candidates = ["Heat", "Heat (1995)", "Babe"]
    assert generation_metrics(["Heat (1995)"], ["Heat (1995)"], [candidates])["hit@1_strict"] == 1
    # The paper's substring rule credits the shorter target although the answer names the longer title.
    assert generation_metrics(["Heat (1995)"], ["Heat"], [candidates]) == {
        "hit@1_substring": 1.0,
        "hit@1_strict": 0.0,
        "valid_answer_rate": 1.0,
    }


def test_a_title_shared_by_two_candidates_is_never_a_strict_hit():
    candidates = ["Chasing Amy (1997)", "Chasing Amy (1997)", "Babe (1995)"]  # ML-100k has such pairs
    result = generation_metrics(["Chasing Amy (1997)"], ["Chasing Amy (1997)"], [candidates])
    assert result["hit@1_substring"] == 1 and result["hit@1_strict"] == 0


def test_generation_metrics_average_and_check_input():
    answers = ['"Heat (1995)"', '"Babe (1995)"', "Casino (1995), Heat (1995)", "nothing"]
    targets = ["Heat (1995)", "Heat (1995)", "Casino (1995)", "Babe (1995)"]
    assert generation_metrics(answers, targets, [CANDIDATES] * 4) == {
        "hit@1_substring": 0.5,
        "hit@1_strict": 0.25,
        "valid_answer_rate": 0.5,
    }
    with pytest.raises(ValueError, match="not among its candidates"):
        generation_metrics(["x"], ["Toy Story (1995)"], [CANDIDATES])
    with pytest.raises(ValueError, match="1 answers, 2 targets"):
        generation_metrics(["x"], ["a", "b"], [CANDIDATES])


def test_evaluate_module_loads_offline_from_its_folder(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    metric = evaluate.load(str(METRIC_DIR))
    scores = [[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.5, 0.5, 0.1]]
    references = [1, 2, 0]
    result = metric.compute(predictions=scores, references=references, ks=[1, 3])
    expected = ranking_metrics(target_ranks(np.array(scores), np.array(references)), (1, 3))
    assert result == pytest.approx(expected)
    assert result["hit@1"] == pytest.approx(1 / 3)  # the tie in the last row counts against the target
    with pytest.raises(ValueError, match="references must be indices"):
        metric.compute(predictions=scores, references=[1, 2, 3])


def test_cf_score_weight_is_chosen_by_the_metric_and_keeps_the_pure_head_unless_the_sum_helps():
    from allmrec_hf.evaluation.fusion import choose_cf_score_weight, fused_scores, score_spread

    rng = np.random.default_rng(0)
    targets = np.zeros(200, dtype=np.int64)
    perfect = np.where(np.arange(5) == 0, 1.0, 0.0) + rng.normal(0, 0.1, (200, 5))  # the target always first
    noise = rng.normal(0, 1.0, (200, 5))
    choice = choose_cf_score_weight(perfect, noise, targets)
    assert choice.weight == 0 and choice.relative_weight == 0  # the CF term only hurts: the head alone
    assert choice.table[0]["ndcg@10"] == 1.0 and min(row["hit@1"] for row in choice.table) < 1.0
    # A head that sees only half of the signal, a CF model that sees the other half: the sum wins.
    half = np.where(np.arange(5) == 0, 1.0, 0.0) * (rng.random((200, 1)) < 0.5) + rng.normal(0, 0.3, (200, 5))
    other = np.where(np.arange(5) == 0, 1.0, 0.0) * (rng.random((200, 1)) < 0.5) + rng.normal(0, 0.3, (200, 5))
    choice = choose_cf_score_weight(half, other, targets, metric="hit@1")
    assert choice.weight > 0 and choice.metric == "hit@1"
    assert (
        max(row["hit@1"] for row in choice.table)
        == next(row["hit@1"] for row in choice.table if row["weight"] == choice.weight)
        > choice.table[0]["hit@1"]
    )
    assert choice.scale == pytest.approx(score_spread(half) / score_spread(other))
    # Equal metrics at every weight: the smallest (0) wins.
    assert choose_cf_score_weight(perfect, perfect, targets).weight == 0
    # Padding stays -inf in the sum; the weight 0 gives the head's scores.
    head, cf = np.array([[1.0, -np.inf]]), np.array([[2.0, -np.inf]])
    assert fused_scores(head, cf, 0.5).tolist() == [[2.0, -np.inf]]
    assert fused_scores(head, cf, 0).tolist() == head.tolist()
    with pytest.raises(ValueError, match=r"CF scores of shape \(1, 3\) for head scores of shape \(1, 2\)"):
        choose_cf_score_weight(head, np.zeros((1, 3)), np.array([0]))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        choose_cf_score_weight(perfect, noise, targets, metric="auc")
    with pytest.raises(ValueError, match="every row needs at least one finite score"):
        score_spread(np.array([[-np.inf, -np.inf]]))
