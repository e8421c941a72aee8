"""The `next-item-recommendation` pipeline: histories as ids or titles in, ranked items out."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

from allmrec_hf import ALLMRecProcessor, NextItemRecommendationPipeline
from conftest import build_model


@pytest.fixture
def model(processor):
    return build_model("llama", processor)


@pytest.fixture
def recommender(model, processor):
    return pipeline("next-item-recommendation", model=model, processor=processor, device="cpu")


def test_the_task_builds_our_pipeline(recommender):
    assert isinstance(recommender, NextItemRecommendationPipeline)


def test_ids_and_titles_give_the_same_recommendations(recommender, model, processor):
    history = [1, 2, 3]
    by_ids = recommender(history, k=3, num_retrieved=6)
    by_titles = recommender([processor.catalog.title(i) for i in history], k=3, num_retrieved=6)
    assert by_ids == by_titles == model.recommend(processor, [history], k=3, num_retrieved=6)[0]
    assert not {r["item"] for r in by_ids} & set(history)


def test_candidates_are_ranked_by_the_model(recommender, model, processor):
    result = recommender([1, 2], candidates=[5, 6, 7, 8], k=4)
    batch = processor(histories=[[1, 2]], candidates=[[5, 6, 7, 8]])
    scores = model.score_candidates(**batch)[0]
    expected = [[5, 6, 7, 8][j] for j in torch.argsort(scores, descending=True).tolist()]
    assert [r["item"] for r in result] == expected
    assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)


def test_a_batch_of_histories(recommender):
    results = recommender([[1, 2], [3], []], k=2)
    assert len(results) == 3 and all(len(r) == 2 for r in results)


def test_unknown_and_ambiguous_titles(recommender, processor):
    title = processor.catalog.title(4)
    with pytest.raises(ValueError) as err:
        recommender([title[:-1] + "9"], k=2)  # a near miss
    assert "Unknown history item" in str(err.value) and title in str(err.value)  # the closest titles are listed
    with pytest.raises(KeyError, match="candidate 999"):
        recommender([1], candidates=[2, 999], k=1)


def test_the_pipeline_needs_the_processor(model):
    with pytest.raises(ValueError, match="needs the model's ALLMRecProcessor"):
        NextItemRecommendationPipeline(model=model, device="cpu")


def test_round_trip_through_a_saved_checkpoint(model, processor, tmp_path):
    lm_dir = tmp_path / "lm"
    model.language_model.save_pretrained(lm_dir)
    processor.tokenizer.save_pretrained(lm_dir)
    model.config.base_model_name_or_path = str(lm_dir)
    model.save_pretrained(tmp_path / "recommender")
    processor.save_pretrained(tmp_path / "recommender")
    expected = pipeline("next-item-recommendation", model=model, processor=processor, device="cpu")([1, 2], k=3)
    loaded = pipeline(
        "next-item-recommendation",
        model=str(tmp_path / "recommender"),
        processor=ALLMRecProcessor.from_pretrained(tmp_path / "recommender"),
        device="cpu",
    )
    assert loaded([1, 2], k=3) == expected


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True])
@pytest.mark.parametrize("candidates", [None, [5, 6, 7]], ids=["catalog", "candidates"])
def test_one_rule_for_k_with_or_without_candidates(recommender, k, candidates):
    """k=0 gave [] with candidates and raised without; k=2.5 gave a raw TypeError: now one named refusal."""
    with pytest.raises(ValueError, match=rf"k must be a positive integer \(how many items to return\), got {k!r}"):
        recommender([1, 2], k=k, candidates=candidates)


def test_a_single_title_is_a_one_item_history_not_its_characters(recommender, processor):
    title = processor.catalog.title(3)
    assert recommender(title, k=2) == recommender([title], k=2) == recommender([3], k=2)
    assert recommender(3, k=2) == recommender([3], k=2)
    with pytest.raises(ValueError, match="candidates must be a list of items"):
        recommender([1], candidates=processor.catalog.title(4))
