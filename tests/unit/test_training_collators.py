"""The training collators: next-item shifting and left padding, negatives and candidate sets drawn per
(seed, epoch, user) whatever the batch, labels on the answer only, and stage 1's item-text tensors."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState

from allmrec_hf import ALLMRecProcessor, PromptTemplate
from allmrec_hf.data import PreparedDataset
from allmrec_hf.training.collators import (
    CFCollator,
    SetEpochCallback,
    Stage1Collator,
    Stage2Collator,
    example_rng,
    sample_unseen,
)

NUM_ITEMS = 40  # the tiny dataset's catalog (training_helpers.NUM_ITEMS)


@pytest.fixture(scope="module")
def train_rows(tiny_dataset) -> list[dict]:
    rows = PreparedDataset.load(tiny_dataset).splits["train"]
    return [{"user": r["user"], "history": list(r["history"]), "target": r["target"]} for r in rows]


@pytest.fixture
def data_processor(tokenizer, tiny_dataset) -> ALLMRecProcessor:
    catalog = PreparedDataset.load(tiny_dataset).catalog
    return ALLMRecProcessor(tokenizer, tokenizer, catalog, prompt_template=PromptTemplate(history_length=5))


def sequence(row) -> list[int]:
    return list(row["history"]) + [int(row["target"])]


def unpadded(values: torch.Tensor) -> list[int]:
    return [int(v) for v in values.tolist() if v != 0]


def cf_negatives(collator: CFCollator, rows: list[dict]) -> dict[int, list[int]]:
    batch = collator(rows)
    return {row["user"]: unpadded(batch["negative_ids"][i]) for i, row in enumerate(rows)}


# ============================================================================================== CF collator
def test_cf_labels_are_the_inputs_shifted_by_one_and_left_padded():
    rows = [
        {"user": 1, "history": list(range(1, 9)), "target": 9},  # longer than max_length: the last 5 positions
        {"user": 2, "history": [5, 6], "target": 7},
        {"user": 3, "history": [12], "target": 30},
    ]
    batch = CFCollator(num_items=NUM_ITEMS, max_length=5, seed=0)(rows)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (3, 5) for k in ("input_ids", "labels", "negative_ids")}
    assert batch["input_ids"].tolist() == [[4, 5, 6, 7, 8], [0, 0, 0, 5, 6], [0, 0, 0, 0, 12]]
    assert batch["labels"].tolist() == [[5, 6, 7, 8, 9], [0, 0, 0, 6, 7], [0, 0, 0, 0, 30]]
    inputs, labels = batch["input_ids"], batch["labels"]
    inner = labels[:, :-1] != 0
    assert torch.equal(labels[:, :-1][inner], inputs[:, 1:][inner])  # label t = input t+1
    assert torch.equal(labels != 0, inputs != 0)  # the same positions are real


def test_cf_negatives_are_unseen_and_only_where_there_is_a_label(train_rows):
    batch = CFCollator(num_items=NUM_ITEMS, max_length=20, seed=3)(train_rows)
    negatives, labels = batch["negative_ids"], batch["labels"]
    assert negatives.shape == labels.shape
    assert torch.equal(negatives == 0, labels == 0)
    for i, row in enumerate(train_rows):
        drawn = unpadded(negatives[i])
        assert len(drawn) == len(sequence(row)) - 1
        assert not set(drawn) & set(sequence(row))
        assert all(1 <= item <= NUM_ITEMS for item in drawn)


def test_cf_draws_depend_on_seed_epoch_and_user_only(train_rows):
    collator = CFCollator(num_items=NUM_ITEMS, max_length=20, seed=0)
    whole = cf_negatives(collator, train_rows)
    reversed_batch = cf_negatives(collator, train_rows[::-1])
    one_by_one = {k: v for row in train_rows for k, v in cf_negatives(collator, [row]).items()}
    mixed = {**cf_negatives(collator, train_rows[5:1:-1]), **cf_negatives(collator, train_rows[:2] + train_rows[5:])}
    assert whole == reversed_batch == one_by_one == mixed
    assert whole == cf_negatives(CFCollator(num_items=NUM_ITEMS, max_length=20, seed=0), train_rows)

    collator.set_epoch(1)
    next_epoch = cf_negatives(collator, train_rows)
    assert all(next_epoch[user] != whole[user] for user in whole)
    assert next_epoch == cf_negatives(collator, train_rows[::-1])
    other_seed = cf_negatives(CFCollator(num_items=NUM_ITEMS, max_length=20, seed=1), train_rows)
    assert all(other_seed[user] != whole[user] for user in whole)


def test_example_rng_streams():
    first = example_rng(0, 2, 7).integers(0, 1 << 30, 8).tolist()
    assert first == example_rng(0, 2, 7).integers(0, 1 << 30, 8).tolist()
    for other in (example_rng(0, 2, 7, stream=1), example_rng(0, 3, 7), example_rng(0, 2, 8), example_rng(1, 2, 7)):
        assert other.integers(0, 1 << 30, 8).tolist() != first


def test_sample_unseen_refuses_an_impossible_draw():
    rng = example_rng(0, 0, 1)
    assert sorted(sample_unseen(rng, 5, {1, 2}, 3)) == [3, 4, 5]
    with pytest.raises(ValueError, match="cannot sample 4 items"):
        sample_unseen(rng, 5, {1, 2}, 4)
    assert set(sample_unseen(rng, 5, {1, 2, 3, 4}, 3, distinct=False)) == {5}


@pytest.mark.parametrize(("epoch", "expected"), [(None, 0), (0, 0), (0.0, 0), (0.5, 0), (1.0, 1), (1.5, 1), (3.0, 3)])
def test_set_epoch_callback(epoch, expected, train_rows):
    collator = CFCollator(num_items=NUM_ITEMS, max_length=20, seed=0)
    collator.set_epoch(7)
    state = TrainerState()
    state.epoch = epoch
    SetEpochCallback(collator).on_epoch_begin(None, state, TrainerControl())
    assert collator.epoch == expected
    reference = CFCollator(num_items=NUM_ITEMS, max_length=20, seed=0)
    reference.set_epoch(expected)
    assert cf_negatives(collator, train_rows) == cf_negatives(reference, train_rows)


# ========================================================================================== stage-2 collator
def test_stage2_candidate_sets(data_processor, train_rows):
    collator = Stage2Collator(data_processor, NUM_ITEMS, num_candidates=6, seed=0)
    by_user = {}
    for row in train_rows:
        candidates = collator.candidates_for(row)
        assert len(candidates) == 6
        assert len(set(candidates)) == 6
        assert candidates.count(row["target"]) == 1
        others = set(candidates) - {row["target"]}
        assert not others & set(row["history"])
        assert all(1 <= item <= NUM_ITEMS for item in candidates)
        by_user[row["user"]] = candidates
    assert len({tuple(c).index(r["target"]) for c, r in zip(by_user.values(), train_rows, strict=True)}) > 1  # shuffled

    # The same per (seed, epoch, user), different in the next epoch.
    assert all(collator.candidates_for(row) == by_user[row["user"]] for row in train_rows[::-1])
    collator.set_epoch(1)
    assert all(collator.candidates_for(row) != by_user[row["user"]] for row in train_rows)
    with pytest.raises(ValueError, match="num_candidates must be >= 1"):
        Stage2Collator(data_processor, NUM_ITEMS, num_candidates=0)


def test_stage2_batches_label_the_answer_only(data_processor, train_rows):
    collator = Stage2Collator(data_processor, NUM_ITEMS, num_candidates=4, seed=0)
    rows = train_rows[:5]
    batch = collator(rows)
    assert sorted(batch) == ["attention_mask", "cf_input_ids", "input_ids", "item_ids", "labels"]
    assert batch["labels"].shape == batch["input_ids"].shape == batch["attention_mask"].shape
    for i, row in enumerate(rows):
        answer = data_processor.answer_ids(row["target"])
        labelled = (batch["labels"][i] != -100).nonzero().flatten().tolist()
        width = batch["input_ids"].shape[1]
        assert labelled == list(range(width - len(answer), width))  # left padding: the answer ends the row
        assert batch["labels"][i, labelled].tolist() == answer == batch["input_ids"][i, labelled].tolist()
        length = int(batch["attention_mask"][i].sum())
        assert (
            batch["attention_mask"][i, width - length :].all()
            and not batch["attention_mask"][i, : width - length].any()
        )
        candidates = collator.candidates_for(row)
        assert unpadded(batch["item_ids"][i]) == row["history"][-5:] + candidates  # placeholders, in order
        assert unpadded(batch["cf_input_ids"][i]) == row["history"]
    # The same row gives the same prompt in another batch.
    alone = collator([rows[3]])
    assert alone["input_ids"][0].tolist() == batch["input_ids"][3][batch["attention_mask"][3].bool()].tolist()


def test_stage2_batches_tokenise_only_the_target_answers(data_processor, train_rows, monkeypatch):
    """Training reads the prompt and its answer: the candidates' answers (for scoring) are not tokenised."""
    calls: list[int] = []
    answer_ids = data_processor.answer_ids
    monkeypatch.setattr(data_processor, "answer_ids", lambda item: calls.append(item) or answer_ids(item))
    rows = train_rows[:5]
    Stage2Collator(data_processor, NUM_ITEMS, num_candidates=4, seed=0)(rows)
    assert calls == [row["target"] for row in rows]
    scoring = data_processor(histories=[rows[0]["history"]], candidates=[[1, 2, 3]])
    assert scoring["candidate_input_ids"].shape[:2] == (1, 3)  # scoring batches still carry them


# ========================================================================================== stage-1 collator
def item_tokens(processor, item: int) -> list[int]:
    encoded = processor.tokenize_item_texts([item])
    return encoded["input_ids"][0][encoded["attention_mask"][0].bool()].tolist()


def check_text(processor, ids, text, mask):
    """Rows of text for padding ids are all zero; others are the item's tokenised text."""
    assert text.shape[:2] == ids.shape and mask.shape == text.shape
    for i in range(ids.shape[0]):
        for p in range(ids.shape[1]):
            item = int(ids[i, p])
            if item == 0:
                assert not text[i, p].any() and not mask[i, p].any()
            else:
                assert text[i, p][mask[i, p].bool()].tolist() == item_tokens(processor, item)


def test_stage1_last_item(data_processor, train_rows):
    rows = train_rows[:6]
    collator = Stage1Collator(data_processor, NUM_ITEMS, max_length=4, seed=0)
    batch = collator(rows)
    width = max(min(len(r["history"]), 4) for r in rows)
    assert batch["cf_input_ids"].shape == (6, width)
    assert batch["positive_ids"].tolist() == [[r["target"]] for r in rows]
    assert batch["negative_ids"].shape == (6, 1)
    for i, row in enumerate(rows):
        assert batch["cf_input_ids"][i].tolist() == [0] * (width - len(row["history"][-4:])) + row["history"][-4:]
        assert int(batch["negative_ids"][i, 0]) not in sequence(row)
    assert batch["positive_text_input_ids"].dim() == 3 and batch["positive_text_input_ids"].shape[:2] == (6, 1)
    check_text(
        data_processor, batch["positive_ids"], batch["positive_text_input_ids"], batch["positive_text_attention_mask"]
    )
    check_text(
        data_processor, batch["negative_ids"], batch["negative_text_input_ids"], batch["negative_text_attention_mask"]
    )


def test_stage1_all_positions(data_processor, train_rows):
    rows = train_rows[:6]
    collator = Stage1Collator(data_processor, NUM_ITEMS, max_length=6, seed=0, all_positions=True)
    batch = collator(rows)
    positions = max(min(len(sequence(r)) - 1, 6) for r in rows)
    assert positions > 1
    assert batch["positive_ids"].shape == batch["negative_ids"].shape == (6, positions)
    assert batch["cf_input_ids"].shape == (6, positions)
    for i, row in enumerate(rows):
        labels = sequence(row)[1:][-6:]
        assert batch["positive_ids"][i].tolist() == [0] * (positions - len(labels)) + labels
        assert unpadded(batch["cf_input_ids"][i]) == sequence(row)[:-1][-6:]
        assert not set(unpadded(batch["negative_ids"][i])) & set(sequence(row))
    assert torch.equal(batch["negative_ids"] == 0, batch["positive_ids"] == 0)
    # The user representation at position t (of the last P) precedes positive t.
    real = batch["positive_ids"][:, :-1] != 0
    assert torch.equal(batch["positive_ids"][:, :-1][real], batch["cf_input_ids"][:, 1:][real])
    assert batch["positive_text_input_ids"].shape[:2] == (6, positions)
    assert (batch["positive_ids"] == 0).any()  # some padding rows to check
    check_text(
        data_processor, batch["positive_ids"], batch["positive_text_input_ids"], batch["positive_text_attention_mask"]
    )
    check_text(
        data_processor, batch["negative_ids"], batch["negative_text_input_ids"], batch["negative_text_attention_mask"]
    )

    # Seeded per (seed, epoch, user), on a stream of its own.
    again = collator(rows[::-1])
    assert torch.equal(again["negative_ids"].flip(0), batch["negative_ids"])
    collator.set_epoch(1)
    assert not torch.equal(collator(rows)["negative_ids"], batch["negative_ids"])


def test_stage2_uses_persisted_candidates_when_the_row_has_them(data_processor, tiny_dataset):
    """Validation rows carry the persisted candidate sets: every epoch scores the same prompts (eval_loss stays
    comparable across epochs); training rows get fresh ones."""
    row = PreparedDataset.load(tiny_dataset).splits["validation"][0]
    collator = Stage2Collator(data_processor, NUM_ITEMS, num_candidates=6, seed=0)
    assert collator.candidates_for(row) == list(row["candidates"])
    collator.set_epoch(3)
    assert collator.candidates_for(row) == list(row["candidates"])
    fresh = {k: row[k] for k in ("user", "history", "target")}
    assert collator.candidates_for(fresh) != list(row["candidates"])
