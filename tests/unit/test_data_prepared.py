"""`PreparedDataset`: preparation end to end on a hand-checkable log, queries, scenarios, save/load, and
`examples/prepare_data.py`."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import DatasetDict

from allmrec_hf import ItemCatalog
from allmrec_hf.data import (
    DataPreparationError,
    InteractionLog,
    PreparationConfig,
    PreparedDataset,
    prepare_dataset,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prepare_data.py"

# Sequences in time order; item ids i01..i12 so that item index == the number.
SEQUENCES = {
    "u1": [1, 2, 3, 4, 5],
    "u2": [2, 3, 1],
    "u3": [1, 7],
    "u4": [4, 5, 6, 7, 8, 9],
    "u5": [10],
    "u6": [3, 8, 11, 12],
    "u7": [2, 9, 11],
}


def toy_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        (u, f"i{i:02d}", 100 * n + 7 * k) for n, (u, seq) in enumerate(SEQUENCES.items()) for k, i in enumerate(seq)
    ]
    rows[0], rows[1] = (rows[0][0], rows[0][1], 1), (rows[1][0], rows[1][1], 1)  # u1: i01, i02 at the same time
    rows = rows[::-1]  # rows in reverse time order: only the timestamps (and row order for ties) order them
    rows[-2:] = rows[-2:][::-1]  # ...but keep i01 before i02 in the input
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(12, 0, -1)],
            "title": [f"Title {i}" for i in range(12, 0, -1)],
            "description": [None if i % 3 == 0 else f"about {i}" for i in range(12, 0, -1)],
        }
    )
    return interactions, items


def toy_log() -> InteractionLog:
    return InteractionLog.from_frames(*toy_frames(), source="toy")


@pytest.fixture(scope="module")
def data() -> PreparedDataset:
    return prepare_dataset(toy_log(), name="toy", num_negatives=4, seed=3, few_shot_users=[2, 3])


@pytest.fixture(scope="module")
def cold_data() -> PreparedDataset:
    return prepare_dataset(toy_log(), num_negatives=4, seed=3, hold_out_cold_users=True)


def rows(split) -> list[tuple[int, list[int], int]]:
    return [(r["user"], r["history"], r["target"]) for r in split]


# ------------------------------------------------------------------------------------------ preparation
def test_splits_by_hand(data):
    assert data.user_ids == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    assert [data.catalog.item_id(i) for i in range(1, 13)] == [f"i{i:02d}" for i in range(1, 13)]
    assert rows(data.splits["train"]) == [
        (1, [1, 2], 3),
        (2, [], 2),
        (3, [1], 7),
        (4, [4, 5, 6], 7),
        (5, [], 10),
        (6, [3], 8),
        (7, [], 2),
    ]
    assert rows(data.splits["validation"]) == [
        (1, [1, 2, 3], 4),
        (2, [2], 3),
        (4, [4, 5, 6, 7], 8),
        (6, [3, 8], 11),
        (7, [2], 9),
    ]
    assert rows(data.splits["test"]) == [
        (1, [1, 2, 3, 4], 5),
        (2, [2, 3], 1),
        (4, [4, 5, 6, 7, 8], 9),
        (6, [3, 8, 11], 12),
        (7, [2, 9], 11),
    ]
    assert set(data.splits) == {"train", "validation", "test"}
    assert data.metadata["split_rows"] == {"train": 7, "validation": 5, "test": 5}


def test_candidates_in_the_prepared_splits(data):
    assert data.has_candidates
    for name, split in data.splits.items():  # 1-based: 0 is padding and never an item
        assert min(min(split["user"]), min(split["target"]), *(min(h, default=1) for h in split["history"])) >= 1, name
    for split in ("validation", "test"):
        for row in data.splits[split]:
            user = data.user_ids[row["user"] - 1]
            candidates = row["candidates"]
            assert len(candidates) == 5 and len(set(candidates)) == 5 and candidates.count(row["target"]) == 1
            negatives = set(candidates) - {row["target"]}
            assert not negatives & set(SEQUENCES[user])  # not even items from later in the sequence
    assert (
        data.metadata["evaluation"]["candidates"]
        == "1 positive + 4 negatives, uniform, never-interacted items, shuffled"
    )


def test_catalog_and_metadata(data):
    assert data.catalog.titles == [f"Title {i}" for i in range(1, 13)]
    assert data.catalog.field_names == ["description"]
    assert [data.catalog.field(i, "description") for i in (1, 3, 4)] == ["about 1", None, "about 4"]
    assert data.name == "toy" and data.num_users == 7 and data.num_items == 12
    meta = data.metadata
    assert meta["format_version"] == 1 and meta["source"] == "toy"
    assert meta["filters"] == {
        "min_rating": None,
        "min_user_interactions": 0,
        "min_item_interactions": 0,
        "kcore": "iterative",
    }
    assert meta["steps"] == [] and meta["duplicate_titles"] == 0
    assert meta["config"]["few_shot_users"] == [2, 3] and meta["config"]["seed"] == 3
    assert repr(data) == (
        "PreparedDataset(name='toy', users=7, items=12, interactions=24, "
        "splits={'train': 7, 'validation': 5, 'test': 5})"
    )


def test_statistics(data):
    assert data.statistics() == {"users": 7, "items": 12, "interactions": 24, "mean_sequence_length": 3.43}
    assert data.statistics_table().splitlines()[-1] == "| toy | 7 | 12 | 24 | 3.43 |"


def test_sequences_reconstruct_the_input(data, cold_data):
    frame = toy_frames()[0].reset_index().sort_values(["user_id", "timestamp", "index"])
    expected = {u: [int(i[1:]) for i in g["item_id"]] for u, g in frame.groupby("user_id")}
    assert expected == SEQUENCES
    for prepared in (data, cold_data):
        users, items, offsets = prepared.sequences()
        got = {prepared.user_ids[u]: items[offsets[u] : offsets[u + 1]].tolist() for u in range(7)}
        assert got == SEQUENCES
        assert users.tolist() == [u for u, seq in enumerate(SEQUENCES.values()) for _ in seq]
        assert offsets.tolist() == [0, 5, 8, 10, 16, 17, 21, 24]
    seen = data.seen_items()
    assert seen.items_of(3).tolist() == [4, 5, 6, 7, 8, 9]


def test_sequences_when_every_user_is_evaluable():
    # Fixed: the train split then adds no user, and sequences() (and seen_items()) crashed on it.
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuuvvvv"), "item_id": list("abcbcda")}),
        pd.DataFrame({"item_id": list("abcd"), "title": list("ABCD")}),
    )
    data = prepare_dataset(log, negative_sampling="none", num_negatives=0)
    assert data.splits["train"]["user"][:] == [1, 2]
    users, items, offsets = data.sequences()
    assert (users.tolist(), items.tolist(), offsets.tolist()) == (
        [0, 0, 0, 1, 1, 1, 1],
        [1, 2, 3, 2, 3, 4, 1],
        [0, 3, 7],
    )
    assert data.seen_items().items_of(0).tolist() == [1, 2, 3]


def test_missing_text_values_become_none():
    # Fixed: pd.NA in a text column (string dtype) was stored as the text "<NA>".
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuu"), "item_id": list("abc")}),
        pd.DataFrame(
            {
                "item_id": list("abc"),
                "title": list("ABC"),
                "genre": pd.array(["x", None, "z"], dtype="string"),
                "year": [1999.0, np.nan, 2001.0],
            }
        ),
    )
    catalog = prepare_dataset(log, negative_sampling="none", num_negatives=0).catalog
    assert [catalog.field(i, "genre") for i in (1, 2, 3)] == ["x", None, "z"]
    assert [catalog.field(i, "year") for i in (1, 2, 3)] == ["1999.0", None, "2001.0"]


def test_filters_and_steps_recorded():
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuuuvvvw"), "item_id": list("abceabed"), "rating": [5, 4, 1, 3, 5, 5, 5, 5]}),
        pd.DataFrame({"item_id": list("abcde"), "title": ["A", "B", "C", None, "E"]}),
    )
    data = prepare_dataset(log, preset="Luxury_Beauty", min_interactions=2, negative_sampling="none", num_negatives=0)
    assert data.name == "Luxury_Beauty"
    assert data.metadata["filters"] == {
        "min_rating": 3.0,
        "min_user_interactions": 2,
        "min_item_interactions": 2,
        "kcore": "one_pass",
    }
    assert [(s["name"], s["removed"]) for s in data.metadata["steps"]] == [
        ("rating >= 3", 1),
        ("items without a title dropped", 1),
        ("one-pass threshold (users >= 2, items >= 2, counted once)", 0),
    ]
    assert data.user_ids == ["u", "v"] and data.catalog.titles == ["A", "B", "E"]


def test_config_object_and_overrides():
    config = PreparationConfig(name="cfg", num_negatives=2, seed=5)
    data = prepare_dataset(toy_log(), config, seed=6)
    assert data.metadata["config"]["seed"] == 6 and data.metadata["config"]["num_negatives"] == 2
    assert data.name == "cfg" and config.seed == 5
    assert prepare_dataset(toy_log(), negative_sampling="none", num_negatives=0).name == "dataset"


def test_config_validation():
    with pytest.raises(ValueError, match="negative_sampling must be one of"):
        PreparationConfig(negative_sampling="hard")
    with pytest.raises(ValueError, match="num_negatives must be >= 0"):
        PreparationConfig(num_negatives=-1)
    with pytest.raises(ValueError, match="use negative_sampling='none'"):
        PreparationConfig(num_negatives=0)


def test_preparation_errors(caplog):
    short = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuv"), "item_id": list("abc")}),
        pd.DataFrame({"item_id": list("abc"), "title": list("ABC")}),
    )
    with pytest.raises(DataPreparationError, match="No user has the 3 interactions a leave-one-out split needs"):
        prepare_dataset(short, num_negatives=1)
    threes = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuuvvv"), "item_id": list("abcbcd")}),
        pd.DataFrame({"item_id": list("abcd"), "title": list("ABCD")}),
    )
    with pytest.raises(DataPreparationError, match="Every user has exactly 3 interactions"):
        prepare_dataset(threes, num_negatives=1, hold_out_cold_users=True)
    with pytest.raises(DataPreparationError, match="User 'u' interacted with 3 of the 4 items, so 2 unseen"):
        prepare_dataset(threes, num_negatives=2)
    with caplog.at_level(logging.WARNING, logger="allmrec_hf.data.prepared"):
        data = prepare_dataset(threes, num_negatives=1, hold_out_cold_users=True, cold_user_interactions=5)
    assert "No user has exactly 5 interactions after filtering" in caplog.text
    assert data.splits["cold_users"].num_rows == 0 and data.scenarios["cold_users"]["users"] == []
    with pytest.raises(ValueError, match="few-shot|Few-shot"):
        prepare_dataset(threes, num_negatives=1, few_shot_users=[3])


def test_duplicate_titles_are_counted(caplog):
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("uuu"), "item_id": list("abc")}),
        pd.DataFrame({"item_id": list("abc"), "title": ["Heat", "Heat", "Babe"]}),
    )
    with caplog.at_level(logging.WARNING, logger="allmrec_hf.data.prepared"):
        data = prepare_dataset(log, negative_sampling="none", num_negatives=0)
    assert data.metadata["duplicate_titles"] == 1
    assert "1 items share a title with another item" in caplog.text


# -------------------------------------------------------------------------------------------- queries
def test_user_index(data):
    assert data.user_index("u4") == 4
    with pytest.raises(KeyError, match="User 'nobody' is not in the prepared dataset 'toy'"):
        data.user_index("nobody")


def test_scenarios(data):
    # Training counts: i01 2, i02 3, i03 2, i04..i06 1, i07 2, i08 1, i09 0, i10 1, i11 0, i12 0.
    assert data.scenarios["item_groups"]["cold_items"] == [4, 9, 11, 12]
    assert data.scenarios["item_groups"]["warm_items"] == [1, 2, 3, 7]
    assert data.scenario("test") is data.splits["test"]
    cold = data.scenario("cold_items")
    assert rows(cold) == [(4, [4, 5, 6, 7, 8], 9), (6, [3, 8, 11], 12), (7, [2, 9], 11)]
    assert "candidates" in cold.column_names
    assert rows(data.scenario("warm_items")) == [(2, [2, 3], 1)]
    with pytest.raises(KeyError, match=r"no cold_users split: prepare it with hold_out_cold_users=True"):
        data.scenario("cold_users")
    with pytest.raises(KeyError, match="Unknown scenario 'cold'"):
        data.scenario("cold")
    assert data.scenarios["cold_users"] == {"interactions": 3, "held_out": False, "users": []}


def test_cold_users_scenario(cold_data):
    # u2 and u7 have exactly 3 interactions: held out of train, validation and test.
    assert rows(cold_data.scenario("cold_users")) == [(2, [2, 3], 1), (7, [2, 9], 11)]
    assert cold_data.scenarios["cold_users"] == {"interactions": 3, "held_out": True, "users": [2, 7]}
    assert cold_data.splits["train"]["user"][:] == [1, 3, 4, 5, 6]
    assert cold_data.splits["test"]["user"][:] == [1, 4, 6]
    for row in cold_data.splits["cold_users"]:
        assert len(row["candidates"]) == 5 and row["candidates"].count(row["target"]) == 1
    # i02 is trained on once now (u2 and u7 gone): the groups follow the training split. Counts: i01, i03, i07: 2;
    # i02, i04, i05, i06, i08, i10: 1 (ties taken from the highest index down); i09, i11, i12: 0.
    assert cold_data.scenarios["item_groups"]["warm_items"] == [1, 3, 7, 10]
    assert cold_data.scenarios["item_groups"]["cold_items"] == [2, 9, 11, 12]


def test_few_shot(data):
    persisted = data.scenarios["few_shot"]
    assert set(persisted) == {"2", "3"}
    for k in (2, 3):
        subset = data.few_shot(k)
        assert subset["user"][:] == persisted[str(k)] and len(persisted[str(k)]) == k
        assert set(persisted[str(k)]) <= set(range(1, 8))
        by_user = {r[0]: r for r in rows(data.splits["train"])}
        assert rows(subset) == [by_user[u] for u in persisted[str(k)]]
    drawn = data.few_shot(4)  # not persisted: drawn now under the dataset's seed
    assert drawn.num_rows == 4 and drawn["user"][:] == data.few_shot(4, seed=3)["user"][:]
    picks = {tuple(data.few_shot(3, seed=s)["user"][:]) for s in range(8)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="0 < K <= 7"):
        data.few_shot(8)


def test_item_overlap(data):
    other_log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": list("xxxx"), "item_id": ["i01", "i02", "z1", "z2"]}),
        pd.DataFrame({"item_id": ["i01", "i02", "z1", "z2"], "title": ["Title 1", "Other", "Title 5", "Z"]}),
    )
    other = prepare_dataset(other_log, negative_sampling="none", num_negatives=0)
    assert data.item_overlap(other) == {"shared_item_ids": 2, "shared_titles": 2}
    assert other.item_overlap(data) == {"shared_item_ids": 2, "shared_titles": 2}
    assert data.item_overlap(data) == {"shared_item_ids": 12, "shared_titles": 12}


# ------------------------------------------------------------------------------------------ save/load
def assert_same(a: PreparedDataset, b: PreparedDataset) -> None:
    assert set(a.splits) == set(b.splits)
    for name in a.splits:
        assert a.splits[name].to_list() == b.splits[name].to_list()
        assert a.splits[name].features == b.splits[name].features
    assert a.catalog == b.catalog
    assert a.catalog.titles == b.catalog.titles and a.catalog.field_names == b.catalog.field_names
    assert [a.catalog.item_id(i) for i in range(1, a.num_items + 1)] == [
        b.catalog.item_id(i) for i in range(1, b.num_items + 1)
    ]
    assert a.user_ids == b.user_ids and a.metadata == b.metadata and a.scenarios == b.scenarios


def test_save_load_round_trip(data, cold_data, tmp_path):
    for prepared, folder in ((data, tmp_path / "toy"), (cold_data, tmp_path / "nested" / "cold")):
        assert prepared.save(folder) == str(folder)
        loaded = PreparedDataset.load(folder)
        assert_same(prepared, loaded)
        assert loaded.sequences()[1].tolist() == prepared.sequences()[1].tolist()
        assert loaded.few_shot(2)["user"][:] == prepared.few_shot(2)["user"][:]
        assert loaded.statistics_table() == prepared.statistics_table()
        assert loaded.scenario("cold_items").to_list() == prepared.scenario("cold_items").to_list()
    assert sorted(os.listdir(tmp_path / "toy")) == [
        "id_maps.json",
        "item_catalog.jsonl",
        "prepared_dataset.json",
        "scenarios.json",
        "splits",
    ]
    assert json.loads((tmp_path / "toy" / "id_maps.json").read_text()) == {"users": data.user_ids}
    assert sorted(os.listdir(tmp_path)) == ["nested", "toy"]  # no staging folders left behind
    assert os.listdir(tmp_path / "nested") == ["cold"]


def test_saved_folder_is_readable_by_others(data, tmp_path):
    old = os.umask(0o022)
    try:
        data.save(tmp_path / "out")
    finally:
        os.umask(old)
    for root, _dirs, files in os.walk(tmp_path / "out"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) & 0o044 == 0o044, name


def test_save_refuses_to_overwrite_unless_asked(data, cold_data, tmp_path):
    target = tmp_path / "out"
    data.save(target)
    with pytest.raises(FileExistsError, match="already holds a prepared dataset; pass overwrite=True"):
        cold_data.save(target)
    assert_same(PreparedDataset.load(target), data)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="file is a file, not a folder"):
        data.save(tmp_path / "file", overwrite=True)
    cold_data.save(target, overwrite=True)
    loaded = PreparedDataset.load(target)
    assert_same(loaded, cold_data)
    assert "cold_users" in loaded.splits
    assert sorted(os.listdir(tmp_path)) == ["file", "out"]
    (tmp_path / "empty").mkdir()
    data.save(tmp_path / "empty")  # an existing empty folder is fine
    assert_same(PreparedDataset.load(tmp_path / "empty"), data)


def test_overwrite_replaces_only_a_prepared_dataset(data, tmp_path):
    """`overwrite=True` pointed by a slip at a folder of checkpoints must not delete them."""
    outputs = tmp_path / "outputs"
    (outputs / "checkpoint-40").mkdir(parents=True)
    (outputs / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(
        FileExistsError,
        match=r"outputs is not a prepared dataset \(it holds checkpoint-40, "
        r"model.safetensors; no prepared_dataset.json\): refusing to replace it",
    ):
        data.save(outputs, overwrite=True)
    assert sorted(os.listdir(outputs)) == ["checkpoint-40", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["outputs"]


def test_save_cleans_up_after_a_save_killed_midway(data, cold_data, tmp_path, caplog):
    """A kill during `save` leaves `.NAME.tmp-*` staging folders: the next save removes them and says so."""
    (tmp_path / ".out.tmp-abc" / "splits").mkdir(parents=True)
    (tmp_path / ".out.tmp-def").mkdir()
    with caplog.at_level("WARNING", logger="allmrec_hf"):
        data.save(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sum("left by a save of" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("then", ["save", "load"])
def test_a_kill_between_the_two_renames_is_recovered(data, cold_data, tmp_path, caplog, then):
    """A kill after the old dataset was moved aside and before the new one moved in leaves the output missing,
    the old copy only under `.NAME.old-*`: the next save or load puts it back and says so."""
    data.save(tmp_path / "out")
    (tmp_path / ".out.old-xyz").mkdir()
    os.rename(tmp_path / "out", tmp_path / ".out.old-xyz" / "data")
    with caplog.at_level("WARNING", logger="allmrec_hf"):
        if then == "save":
            with pytest.raises(FileExistsError, match="already holds a prepared dataset"):
                cold_data.save(tmp_path / "out")  # the recovered copy is not replaced without overwrite=True
        assert_same(PreparedDataset.load(tmp_path / "out"), data)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert any("Recovered" in r.getMessage() and ".out.old-xyz" in r.getMessage() for r in caplog.records)


def _fail(*args, **kwargs):
    raise RuntimeError("disk full")


@pytest.mark.parametrize("where", ["catalog", "splits"])
def test_failed_save_leaves_nothing_behind(data, tmp_path, monkeypatch, where):
    if where == "catalog":
        monkeypatch.setattr(ItemCatalog, "save", _fail)
    else:
        monkeypatch.setattr(DatasetDict, "save_to_disk", _fail)
    with pytest.raises(RuntimeError, match="disk full"):
        data.save(tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_dataset(data, cold_data, tmp_path, monkeypatch):
    data.save(tmp_path / "out")
    monkeypatch.setattr(ItemCatalog, "save", _fail)
    with pytest.raises(RuntimeError, match="disk full"):
        cold_data.save(tmp_path / "out", overwrite=True)
    assert os.listdir(tmp_path) == ["out"]
    monkeypatch.undo()
    assert_same(PreparedDataset.load(tmp_path / "out"), data)


def test_load_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder does not exist"):
        PreparedDataset.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=r"is not a prepared dataset \(missing prepared_dataset.json, id_maps.json, scenarios.json, "
        r"item_catalog.jsonl, splits\); create one with examples/prepare_data.py",
    ):
        PreparedDataset.load(tmp_path / "empty")
    data.save(tmp_path / "out")
    os.remove(tmp_path / "out" / "scenarios.json")
    with pytest.raises(FileNotFoundError, match=r"\(missing scenarios.json\)"):
        PreparedDataset.load(tmp_path / "out")
    data.save(tmp_path / "v2")
    meta = tmp_path / "v2" / "prepared_dataset.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 2}))
    with pytest.raises(ValueError, match="prepared-dataset format 2 is not supported"):
        PreparedDataset.load(tmp_path / "v2")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"prepared_dataset.json is not valid JSON \(line 1\)"):
        PreparedDataset.load(tmp_path / "v2")


# ------------------------------------------------------------------------------- examples/prepare_data.py
def load_example():
    pytest.importorskip("allmrec_hf.data.readers")
    spec = importlib.util.spec_from_file_location("prepare_data_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except ImportError as err:  # readers still being written
        pytest.skip(f"examples/prepare_data.py cannot be imported yet: {err}")
    finally:
        del sys.modules[spec.name]
    return module


def write_csv(tmp_path) -> tuple[Path, Path]:
    interactions, items = toy_frames()
    log_path, item_path = tmp_path / "log.csv", tmp_path / "items.csv"
    interactions.rename(columns={"user_id": "customer", "item_id": "sku", "timestamp": "time"}).to_csv(
        log_path, index=False
    )
    items.rename(columns={"item_id": "sku", "title": "name"}).to_csv(item_path, index=False)
    return log_path, item_path


def example_args(log_path, item_path, out, *extra: str) -> list[str]:
    return [
        "--format",
        "csv",
        "--input_path",
        str(log_path),
        "--column_mapping",
        '{"user_id": "customer", "item_id": "sku", "timestamp": "time"}',
        "--item_path",
        str(item_path),
        "--item_column_mapping",
        '{"item_id": "sku", "title": "name", "description": "description"}',
        "--num_negatives",
        "4",
        "--seed",
        "3",
        "--few_shot_users",
        "2",
        "3",
        "--output_dir",
        str(out),
        *extra,
    ]


def test_example_prepares_a_csv(data, tmp_path, capsys):
    example = load_example()
    log_path, item_path = write_csv(tmp_path)
    out = tmp_path / "out"
    assert example.main(example_args(log_path, item_path, out)) == str(out)
    printed = capsys.readouterr().out
    assert "| csv | 7 | 12 | 24 | 3.43 |" in printed
    assert "Splits: train 7, validation 5, test 5." in printed
    loaded = PreparedDataset.load(out)
    assert loaded.name == "csv"
    for name in ("train", "validation", "test"):
        assert loaded.splits[name].to_list() == data.splits[name].to_list()
    assert loaded.user_ids == data.user_ids and loaded.catalog == data.catalog
    assert loaded.scenarios == data.scenarios


def test_example_refuses_an_existing_output_dir(tmp_path):
    example = load_example()
    log_path, item_path = write_csv(tmp_path)
    out = tmp_path / "out"
    args = example_args(log_path, item_path, out)
    example.main(args)
    before = PreparedDataset.load(out)
    with pytest.raises(SystemExit, match=r"out already holds a prepared dataset; pass --overwrite_output_dir"):
        example.main(example_args(log_path, item_path, out, "--seed", "9"))
    assert_same(PreparedDataset.load(out), before)
    example.main(example_args(log_path, item_path, out, "--seed", "9", "--overwrite_output_dir"))
    assert PreparedDataset.load(out).metadata["config"]["seed"] == 9
    assert sorted(os.listdir(tmp_path)) == ["items.csv", "log.csv", "out"]


@pytest.mark.parametrize("target", ["checkpoints", "file"])
def test_example_refuses_an_output_dir_it_must_not_replace_before_reading_the_log(tmp_path, target):
    example = load_example()
    out = tmp_path / target
    if target == "file":
        out.write_text("notes")
        expected = "is a file, not a folder"
    else:
        (out / "checkpoint-40").mkdir(parents=True)
        expected = r"is not a prepared dataset \(it holds checkpoint-40; no prepared_dataset.json\)"
    missing_log = tmp_path / "missing.csv"  # never read: the refusal comes first
    args = ["--format", "csv", "--input_path", str(missing_log), "--output_dir", str(out), "--overwrite_output_dir"]
    with pytest.raises(SystemExit, match=expected):
        example.main(args)
    assert sorted(os.listdir(tmp_path)) == [target]
    assert out.is_file() if target == "file" else os.listdir(out) == ["checkpoint-40"]


def test_example_rejects_two_item_files(tmp_path):
    example = load_example()
    log_path, item_path = write_csv(tmp_path)
    args = example_args(log_path, item_path, tmp_path / "out", "--meta_path", str(item_path))
    with pytest.raises(SystemExit, match=r"Give --meta_path \(Amazon metadata\) or --item_path"):
        example.main(args)
    assert sorted(os.listdir(tmp_path)) == ["items.csv", "log.csv"]


def test_example_reads_arguments_from_a_json_file(data, tmp_path):
    example = load_example()
    log_path, item_path = write_csv(tmp_path)
    settings = {
        "format": "csv",
        "input_path": str(log_path),
        "column_mapping": json.dumps({"user_id": "customer", "item_id": "sku", "timestamp": "time"}),
        "item_path": str(item_path),
        "item_column_mapping": json.dumps({"item_id": "sku", "title": "name", "description": "description"}),
        "num_negatives": 4,
        "seed": 3,
        "few_shot_users": [2, 3],
        "name": "from-json",
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "args.json").write_text(json.dumps(settings))
    example.main([str(tmp_path / "args.json")])
    loaded = PreparedDataset.load(tmp_path / "out")
    assert loaded.name == "from-json"
    assert loaded.splits["test"].to_list() == data.splits["test"].to_list()
    assert loaded.scenarios == data.scenarios
