"""Candidate sampling, item popularity groups and few-shot selection (`allmrec_hf.data.candidates`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from allmrec_hf.data import DataPreparationError, InteractionLog, SeenItems, prepare_dataset
from allmrec_hf.data.candidates import (
    STREAMS,
    candidate_sets,
    few_shot_users,
    item_popularity_groups,
    rng_for,
    sample_negatives,
)

NUM_ITEMS = 200
NUM_USERS = 300


@pytest.fixture(scope="module")
def world():
    """300 users with 55..120 distinct items each (more than the 50 a model sees) from a 200-item catalog."""
    rng = np.random.default_rng(1234)
    histories = [rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(rng.integers(55, 121)), replace=False)]
    histories += [
        rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(rng.integers(55, 121)), replace=False)
        for _ in range(NUM_USERS - 1)
    ]
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    items = np.concatenate(histories)
    seen = SeenItems(users, items, NUM_ITEMS)
    return histories, seen


def check_negatives(negatives, users, histories, width):
    assert negatives.dtype == np.int32 and negatives.shape == (len(users), width)
    assert negatives.min() >= 1 and negatives.max() <= NUM_ITEMS
    for row, user in zip(negatives, users, strict=True):
        assert len(set(row.tolist())) == width  # distinct within the row
        assert not set(row.tolist()) & set(histories[user].tolist())  # never in the WHOLE history


# ------------------------------------------------------------------------------------------- SeenItems
def test_seen_items():
    seen = SeenItems(np.array([2, 0, 0, 2, 0]), np.array([5, 3, 1, 5, 3]), num_items=6)
    assert seen.items_of(0).tolist() == [1, 3]
    assert seen.items_of(1).tolist() == []
    assert seen.items_of(2).tolist() == [5]
    assert seen.contains(np.array([0, 0, 0, 1, 2, 2]), np.array([1, 2, 3, 3, 5, 6])).tolist() == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert seen.num_seen(np.array([0, 1, 2, 7])).tolist() == [2, 0, 1, 0]  # repeats count once; 7: unknown


def test_seen_items_of_the_world_are_whole_histories(world):
    histories, seen = world
    for user in (0, 17, NUM_USERS - 1):
        assert seen.items_of(user).tolist() == sorted(histories[user].tolist())
    assert seen.num_seen(np.arange(NUM_USERS)).tolist() == [len(h) for h in histories]


# --------------------------------------------------------------------------------------------- uniform
def test_uniform_negatives_are_unseen_and_distinct(world):
    histories, seen = world
    users = np.concatenate([np.arange(NUM_USERS), [5, 5]])  # a user may appear twice
    negatives = sample_negatives(users, seen, 19, rng_for(0, "test"))
    check_negatives(negatives, users, histories, 19)
    # Uniform over unseen items: all 200 items come up across 302 x 19 draws.
    assert np.unique(negatives).size == NUM_ITEMS


def test_candidate_sets_hold_the_target_once(world):
    histories, seen = world
    users = np.arange(NUM_USERS)
    targets = np.array([h[-1] for h in histories])
    candidates = candidate_sets(users, targets, seen, 19, rng_for(3, "test"))
    assert candidates.dtype == np.int32 and candidates.shape == (NUM_USERS, 20)
    positions = []
    for row, user, target in zip(candidates, users, targets, strict=True):
        assert (row == target).sum() == 1
        positions.append(int(np.flatnonzero(row == target)[0]))
        negatives = row[row != target]
        assert len(set(negatives.tolist())) == 19 and not set(negatives.tolist()) & set(histories[user].tolist())
    # Shuffled within rows: the target is not always in the same place.
    assert len(set(positions)) > 10


def test_sampling_is_seeded(world):
    histories, seen = world
    users = np.arange(NUM_USERS)
    targets = np.array([h[0] for h in histories])
    first = candidate_sets(users, targets, seen, 19, rng_for(7, "test"))
    again = candidate_sets(users, targets, seen, 19, rng_for(7, "test"))
    other_seed = candidate_sets(users, targets, seen, 19, rng_for(8, "test"))
    other_stream = candidate_sets(users, targets, seen, 19, rng_for(7, "validation"))
    assert np.array_equal(first, again)
    assert (first != other_seed).any(axis=1).mean() > 0.9
    assert (first != other_stream).any(axis=1).mean() > 0.9


def test_rng_streams():
    draw = {purpose: rng_for(0, purpose).integers(1 << 30, size=4).tolist() for purpose in STREAMS}
    assert len({tuple(v) for v in draw.values()}) == len(STREAMS) == 4
    assert rng_for(0, "few_shot", 128).integers(1 << 30) != rng_for(0, "few_shot", 256).integers(1 << 30)
    assert rng_for(1, "test").integers(1 << 30) != rng_for(0, "test").integers(1 << 30)
    with pytest.raises(KeyError):
        rng_for(0, "train")


def test_zero_negatives_and_no_users(world):
    _, seen = world
    assert sample_negatives(np.arange(3), seen, 0, rng_for(0, "test")).shape == (3, 0)
    assert sample_negatives(np.array([], dtype=np.int64), seen, 5, rng_for(0, "test")).shape == (0, 5)


# ---------------------------------------------------------------------------------- dense users
def test_dense_user_gets_exactly_the_unseen_items():
    num_items = 500
    unseen = [5, 17, 42, 499]
    dense = np.setdiff1d(np.arange(1, num_items + 1), unseen)
    users = np.concatenate([np.zeros(dense.size, dtype=np.int64), [1, 1]])
    items = np.concatenate([dense, [1, 2]])
    seen = SeenItems(users, items, num_items)
    for seed in range(3):
        negatives = sample_negatives(np.array([1, 0, 1]), seen, 4, rng_for(seed, "test"))
        assert sorted(negatives[1].tolist()) == unseen
        assert not {1, 2} & set(negatives[0].tolist() + negatives[2].tolist())
    popularity = np.ones(num_items + 1)
    negatives = sample_negatives(np.array([0]), seen, 4, rng_for(0, "test"), popularity=popularity)
    assert sorted(negatives[0].tolist()) == unseen


def test_too_few_unseen_items_names_the_user():
    seen = SeenItems(np.array([0, 1, 1, 1, 1]), np.array([1, 1, 2, 3, 4]), num_items=6)
    with pytest.raises(DataPreparationError, match=r"User 'bob' interacted with 4 of the 6 items, so 3 unseen"):
        sample_negatives(np.array([0, 1]), seen, 3, rng_for(0, "test"), user_ids=["alice", "bob"])
    with pytest.raises(DataPreparationError, match=r"User '2' interacted with 4 of the 6 items"):
        sample_negatives(np.array([0, 1]), seen, 3, rng_for(0, "test"))
    assert sorted(sample_negatives(np.array([1]), seen, 2, rng_for(0, "test"))[0].tolist()) == [5, 6]


def test_too_few_popular_unseen_items_names_the_user():
    seen = SeenItems(np.array([0, 1, 1]), np.array([1, 1, 2]), num_items=6)
    popularity = np.array([0, 3, 3, 1, 0, 0, 2])  # items 4 and 5 are never drawn
    with pytest.raises(DataPreparationError, match=r"User 'bob' has only 2 items left to sample 3 negatives"):
        sample_negatives(np.array([0, 1]), seen, 3, rng_for(0, "test"), popularity, user_ids=["alice", "bob"])
    negatives = sample_negatives(np.array([1]), seen, 2, rng_for(0, "test"), popularity)
    assert sorted(negatives[0].tolist()) == [3, 6]
    with pytest.raises(DataPreparationError, match="at least one item with a positive count"):
        sample_negatives(np.array([0]), seen, 1, rng_for(0, "test"), np.zeros(7))


# -------------------------------------------------------------------------------------- popularity
def test_popularity_sampling_skips_zero_counts_and_favours_popular_items():
    num_items = 200
    popularity = np.ones(num_items + 1)
    popularity[0] = 0
    popularity[1:21] = 0  # items 1..20: never drawn
    popularity[21:31] = 100  # items 21..30: popular
    rng = np.random.default_rng(5)
    num_users = 400
    histories = [rng.choice(np.arange(31, num_items + 1), size=30, replace=False) for _ in range(num_users)]
    users = np.repeat(np.arange(num_users), 30)
    seen = SeenItems(users, np.concatenate(histories), num_items)
    negatives = sample_negatives(np.arange(num_users), seen, 5, rng_for(0, "test"), popularity)
    check_negatives(negatives, np.arange(num_users), histories, 5)
    counts = np.bincount(negatives.ravel(), minlength=num_items + 1)
    assert counts[:21].sum() == 0
    # The 10 popular items carry 1000 of 1170 weight: most draws, each far above a light item.
    assert counts[21:31].sum() > 0.5 * negatives.size
    assert counts[21:31].min() > 5 * counts[31:].mean()


class _LargestDraws:
    """A generator stand-in whose uniform draws are all the largest double below 1."""

    def random(self, shape):
        return np.full(shape, np.nextafter(1.0, 0.0))


def test_popularity_sampling_never_reaches_trailing_zero_weight_items():
    # Fixed: with 19 equal weights the cumulative sum ends at 1 - 4e-16, and draws above it picked item 20
    # (weight 0) because only the very last entry of the CDF was set to 1.
    popularity = np.array([0] + [1] * 19 + [0])
    seen = SeenItems(np.array([0]), np.array([1]), num_items=20)
    assert sample_negatives(np.array([0]), seen, 1, _LargestDraws(), popularity).tolist() == [[19]]


# ------------------------------------------------------------------------------------ item groups
def test_item_popularity_groups_by_hand():
    #                     item:  1  2  3  4  5  6  7  8  9 10
    counts = np.array([0, 3, 1, 3, 0, 1, 3, 2, 0, 5, 1])
    cold, warm = item_popularity_groups(counts, 0.35)  # floor(3.5) = 3 items each
    # Ascending by (count, index): 4, 8, 2, 5, 10, 7, 1, 3, 6, 9.
    assert cold.tolist() == [2, 4, 8]  # ties at count 1: the lowest index (2) first
    assert warm.tolist() == [3, 6, 9]  # ties at count 3: taken from the highest index down
    cold, warm = item_popularity_groups(counts, 0.5)
    assert (cold.tolist(), warm.tolist()) == ([2, 4, 5, 8, 10], [1, 3, 6, 7, 9])
    cold, warm = item_popularity_groups(counts, 0.05)  # floor(0.5) = 0
    assert cold.size == warm.size == 0
    for bad in (0, -0.1, 0.51):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 0.5\]"):
            item_popularity_groups(counts, bad)


# ------------------------------------------------------------------------------------------ few-shot
def test_few_shot_users():
    train = np.arange(1, 101)
    picked = few_shot_users(train, 10, seed=3)
    assert picked.tolist() == few_shot_users(train, 10, 3).tolist()
    assert picked.tolist() == sorted(set(picked.tolist())) and len(picked) == 10
    assert set(picked.tolist()) <= set(train.tolist())
    assert picked.tolist() != few_shot_users(train, 10, 4).tolist()
    assert few_shot_users(np.array([9, 4, 7]), 3, 0).tolist() == [4, 7, 9]
    for k in (0, 101, -1):
        with pytest.raises(ValueError, match=r"needs 0 < K <= 100 \(the training users\), got"):
            few_shot_users(train, k, 0)


# ------------------------------------------------------------------------ streams in prepared datasets
def _log() -> InteractionLog:
    """60 users with 3..12 interactions over 40 items (a few users with exactly 3)."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(60):
        n = 3 if u % 7 == 0 else int(rng.integers(4, 13))
        users += [f"u{u:02d}"] * n
        items += [f"i{i:02d}" for i in rng.choice(40, size=n, replace=False)]
    titles = pd.DataFrame({"item_id": [f"i{i:02d}" for i in range(40)], "title": [f"T{i}" for i in range(40)]})
    return InteractionLog.from_frames(pd.DataFrame({"user_id": users, "item_id": items}), titles)


@pytest.fixture(scope="module")
def log():
    return _log()


def test_prepared_candidates_come_from_their_own_streams(log):
    data = prepare_dataset(log, num_negatives=9, seed=11)
    seen = data.seen_items()
    for split in ("validation", "test"):
        rows = data.splits[split]
        users = np.asarray(rows["user"]) - 1
        expected = candidate_sets(users, np.asarray(rows["target"]), seen, 9, rng_for(11, split), None, data.user_ids)
        assert np.asarray(rows["candidates"]).tolist() == expected.tolist()
    # Scenario settings that do not change the test users do not change the candidates.
    other = prepare_dataset(log, num_negatives=9, seed=11, few_shot_users=[5, 20])
    assert other.splits["test"].to_list() == data.splits["test"].to_list()
    assert other.splits["validation"].to_list() == data.splits["validation"].to_list()
    nobody = prepare_dataset(log, num_negatives=9, seed=11, hold_out_cold_users=True, cold_user_interactions=2)
    assert nobody.splits["cold_users"].num_rows == 0
    assert nobody.splits["test"].to_list() == data.splits["test"].to_list()
    reseeded = prepare_dataset(log, num_negatives=9, seed=12)
    assert reseeded.splits["test"]["target"][:] == data.splits["test"]["target"][:]
    assert reseeded.splits["test"]["candidates"][:] != data.splits["test"]["candidates"][:]


def test_prepared_cold_user_candidates_do_not_touch_the_test_stream(log):
    data = prepare_dataset(log, num_negatives=9, seed=11, hold_out_cold_users=True)
    cold = data.splits["cold_users"]
    assert cold["user"][:] == [u * 7 + 1 for u in range(9)]  # u00, u07, ..., u56 have exactly 3
    seen = data.seen_items()
    for split, rows in (("test", data.splits["test"]), ("cold_users", cold)):
        users = np.asarray(rows["user"]) - 1
        expected = candidate_sets(users, np.asarray(rows["target"]), seen, 9, rng_for(11, split))
        assert np.asarray(rows["candidates"]).tolist() == expected.tolist()
        for user, row in zip(users, rows["candidates"], strict=True):
            assert len(set(row)) == 10 and len(set(row) & set(seen.items_of(user).tolist())) == 1


def test_prepared_popularity_candidates_never_use_untrained_items(log):
    # x0, x1, x2: only ever the last (test) or next-to-last (validation) item of a few users.
    extra = pd.DataFrame({"user_id": ["u01", "u02", "u03", "u03", "u04"], "item_id": ["x0", "x1", "x1", "x2", "x2"]})
    log = InteractionLog.from_frames(
        pd.concat([log.interactions[["user_id", "item_id"]], extra]),
        pd.concat([log.items, pd.DataFrame({"item_id": ["x0", "x1", "x2"], "title": ["X0", "X1", "X2"]})]),
    )
    data = prepare_dataset(log, num_negatives=4, negative_sampling="popularity", seed=1)
    train = data.splits["train"]
    trained = [i for history in train["history"] for i in history] + train["target"][:]
    counts = np.bincount(trained, minlength=data.num_items + 1)
    untrained = set(np.flatnonzero(counts[1:] == 0) + 1)
    assert untrained == {data.catalog.index(i) for i in ("x0", "x1", "x2")}
    for split in ("validation", "test"):
        for row in data.splits[split]:
            negatives = set(row["candidates"]) - {row["target"]}
            assert len(negatives) == 4 and not negatives & untrained


def test_no_negative_sampling_gives_no_candidates(log):
    data = prepare_dataset(log, negative_sampling="none", num_negatives=0, hold_out_cold_users=True)
    assert not data.has_candidates
    for split in ("validation", "test", "cold_users"):
        assert data.splits[split].column_names == ["user", "history", "target"]
    assert data.metadata["evaluation"]["candidates"] == "none (full-catalog ranking)"
