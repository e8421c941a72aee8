"""Filtering, presets, re-indexing and ordering (`allmrec_hf.data.log` / `.preprocess`) and the leave-one-out
splits (`.splits`), on hand-checkable logs."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from allmrec_hf.data import PRESETS, DataFormatError, DataPreparationError, InteractionLog, clean_text, encode_log
from allmrec_hf.data.preprocess import (
    EncodedLog,
    FilterStep,
    format_statistics_table,
    get_preset,
    resolve_filters,
)
from allmrec_hf.data.splits import leave_one_out


def make_log(users, items, *, ratings=None, timestamps=None, titles=None, source="") -> InteractionLog:
    """A log from parallel lists; `titles` maps item id -> title (default: every item titled by its id)."""
    frame = {"user_id": list(users), "item_id": list(items)}
    if ratings is not None:
        frame["rating"] = list(ratings)
    if timestamps is not None:
        frame["timestamp"] = list(timestamps)
    if titles is None:
        titles = {i: f"Title {i}" for i in dict.fromkeys(items)}
    meta = pd.DataFrame({"item_id": list(titles), "title": list(titles.values())})
    return InteractionLog.from_frames(pd.DataFrame(frame), meta, source=source)


def pairs(encoded: EncodedLog) -> list[tuple[str, str]]:
    """The kept interactions as (user id, item id), in the encoded (user, time) order."""
    return [(encoded.user_ids[u], encoded.item_ids[i]) for u, i in zip(encoded.users, encoded.items, strict=True)]


def sequence_of(encoded: EncodedLog, user_id: str) -> list[str]:
    return [item for user, item in pairs(encoded) if user == user_id]


# ---------------------------------------------------------------------------------------- log.py
def test_clean_text():
    assert clean_text("  Tom &amp;amp; Jerry<br/>  the \n  movie ") == "Tom & Jerry the movie"
    assert clean_text("&amp;quot;Quoted&amp;quot; &lt;b&gt;bold&lt;/b&gt;") == '"Quoted" bold'
    assert clean_text(["Toys", "", None, "  Games "]) == "Toys, Games"
    assert clean_text(("a",)) == "a"
    assert clean_text(np.array(["x", "y"])) == "x, y"
    assert clean_text(12) == "12"
    for empty in (None, float("nan"), "", "   ", "<br/>", [], ["", None]):
        assert clean_text(empty) is None, empty


def test_clean_text_missing_values_of_pandas_and_numpy():
    # Fixed: pd.NA (Arrow/string columns) and numpy float32 NaN used to become the text "<NA>" / "nan".
    assert clean_text(pd.NA) is None
    assert clean_text(np.float32("nan")) is None
    assert clean_text(np.float64("nan")) is None


def test_data_format_error_message_and_attributes():
    err = DataFormatError("not a number: 'abc'", path="u.data", line=7, field="rating")
    assert str(err) == "u.data, line 7, field 'rating': not a number: 'abc'"
    assert (err.path, err.line, err.field, err.reason) == ("u.data", 7, "rating", "not a number: 'abc'")
    assert str(DataFormatError("bad")) == "bad"
    assert str(DataFormatError("bad", line=3)) == "line 3: bad"
    assert isinstance(err, ValueError) and issubclass(DataPreparationError, ValueError)


def test_from_frames_coerces_dtypes_and_fills_defaults():
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": [7, 7, 3, 7, 3], "item_id": [10, 2, 2, 5, 10]}, index=[10, 20, 30, 40, 50])
    )
    frame = log.interactions
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert frame["user_id"].tolist() == ["7", "7", "3", "7", "3"]
    assert frame["item_id"].tolist() == ["10", "2", "2", "5", "10"]
    assert frame["rating"].dtype == np.float64 and frame["rating"].isna().all()
    # Without timestamps, the row order within each user.
    assert frame["timestamp"].dtype == np.int64 and frame["timestamp"].tolist() == [0, 1, 0, 2, 1]
    # Without item metadata: every item, untitled.
    assert log.items["item_id"].tolist() == ["10", "2", "5"] and log.items["title"].isna().all()
    assert (log.num_users, log.num_items, log.num_interactions) == (2, 3, 5)
    assert "users=2, items=3, interactions=5" in repr(log)


def test_from_frames_keeps_given_ratings_timestamps_and_item_columns():
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "rating": ["4.5"], "timestamp": [1700000000]}),
        pd.DataFrame({"item_id": [1, 2], "brand": ["x", "y"]}),
        source="frames",
        notes=["a note"],
    )
    assert log.interactions["rating"].tolist() == [4.5]
    assert log.interactions["timestamp"].tolist() == [1700000000]
    assert log.items["item_id"].tolist() == ["1", "2"]
    assert log.items["title"].isna().all() and log.items["brand"].tolist() == ["x", "y"]
    assert (log.source, log.notes) == ("frames", ["a note"])


def test_from_frames_errors_name_the_missing_columns():
    with pytest.raises(DataFormatError, match=r"^in.csv: interactions lack the column\(s\) \['item_id'\]"):
        InteractionLog.from_frames(pd.DataFrame({"user_id": ["u"]}), source="in.csv")
    with pytest.raises(DataFormatError, match="item metadata lacks the column 'item_id'"):
        InteractionLog.from_frames(pd.DataFrame({"user_id": ["u"], "item_id": ["a"]}), pd.DataFrame({"id": ["a"]}))


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
def test_from_frames_rejects_missing_ids_and_times(column):
    # Fixed: a missing id failed later with "'list' argument must have no negative elements", a missing
    # timestamp with pandas' IntCastingNaNError.
    frame = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "timestamp": [1, 2, 3]})
    frame[column] = frame[column].astype(object)
    frame.loc[[1, 2], column] = None
    with pytest.raises(DataFormatError, match=rf"^log.csv, field '{column}': 2 interaction\(s\) have no value "):
        InteractionLog.from_frames(frame, source="log.csv")


# ------------------------------------------------------------------------------------------ presets
def test_presets_follow_the_paper():
    assert (PRESETS["movies_and_tv"].min_interactions, PRESETS["movies_and_tv"].min_rating) == (5, None)
    assert (PRESETS["video_games"].min_interactions, PRESETS["video_games"].min_rating) == (5, None)
    assert (PRESETS["luxury_beauty"].min_interactions, PRESETS["luxury_beauty"].min_rating) == (4, 3.0)
    assert (PRESETS["toys_and_games"].min_interactions, PRESETS["toys_and_games"].min_rating) == (4, 3.0)
    assert {name: p.kcore for name, p in PRESETS.items()} == {
        "movies_and_tv": "one_pass",
        "video_games": "one_pass",
        "luxury_beauty": "one_pass",
        "toys_and_games": "one_pass",
        "ml-100k": "none",
    }


@pytest.mark.parametrize(
    "name, key",
    [
        ("Movies_and_TV", "movies_and_tv"),
        ("movies-and-tv", "movies_and_tv"),
        (" VIDEO_GAMES ", "video_games"),
        ("Luxury_Beauty", "luxury_beauty"),
        ("Toys-And-Games", "toys_and_games"),
        ("ml-100k", "ml-100k"),
        ("ML_100K", "ml-100k"),
    ],
)
def test_get_preset_is_case_insensitive(name, key):
    assert get_preset(name) is PRESETS[key]


def test_get_preset_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown preset 'Beauty'; choose one of \['luxury_beauty', 'ml-100k'"):
        get_preset("Beauty")


def test_resolve_filters_defaults_and_presets():
    assert resolve_filters() == {
        "min_rating": None,
        "min_user_interactions": 0,
        "min_item_interactions": 0,
        "kcore": "iterative",
    }
    assert resolve_filters("Movies_and_TV") == {
        "min_rating": None,
        "min_user_interactions": 5,
        "min_item_interactions": 5,
        "kcore": "one_pass",
    }
    assert resolve_filters("ml-100k")["kcore"] == "none"


def test_resolve_filters_explicit_settings_beat_the_preset():
    assert resolve_filters("luxury_beauty", min_rating=4.0, min_interactions=2, kcore="iterative") == {
        "min_rating": 4.0,
        "min_user_interactions": 2,
        "min_item_interactions": 2,
        "kcore": "iterative",
    }
    # Separate thresholds beat min_interactions, which beats the preset.
    assert resolve_filters("video_games", min_interactions=3, min_user_interactions=7) == {
        "min_rating": None,
        "min_user_interactions": 7,
        "min_item_interactions": 3,
        "kcore": "one_pass",
    }
    assert resolve_filters(min_item_interactions=2, min_rating=0.0)["min_rating"] == 0.0
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_filters("nope")


# ------------------------------------------------------------------------------------------ k-core
# u1: a, b   u2: a, c, d   u3: c, d   (the paper's example for k = 2)
KCORE_USERS = ["u1", "u1", "u2", "u2", "u2", "u3", "u3"]
KCORE_ITEMS = ["a", "b", "a", "c", "d", "c", "d"]


def test_one_pass_threshold_counts_once():
    encoded = encode_log(
        make_log(KCORE_USERS, KCORE_ITEMS), min_user_interactions=2, min_item_interactions=2, kcore="one_pass"
    )
    # b is dropped (1 interaction), so u1 ends with 1 interaction: the authors' procedure.
    assert pairs(encoded) == [("u1", "a"), ("u2", "a"), ("u2", "c"), ("u2", "d"), ("u3", "c"), ("u3", "d")]
    assert encoded.item_ids == ["a", "c", "d"] and encoded.user_ids == ["u1", "u2", "u3"]
    [step] = encoded.steps
    assert step.name == "one-pass threshold (users >= 2, items >= 2, counted once)"
    assert (step.interactions_before, step.interactions_after, step.removed) == (7, 6, 1)
    assert (step.users_before, step.users_after, step.items_before, step.items_after) == (3, 3, 4, 3)


def test_iterative_kcore_repeats_until_stable():
    encoded = encode_log(
        make_log(KCORE_USERS, KCORE_ITEMS), min_user_interactions=2, min_item_interactions=2, kcore="iterative"
    )
    assert pairs(encoded) == [("u2", "c"), ("u2", "d"), ("u3", "c"), ("u3", "d")]
    assert encoded.user_ids == ["u2", "u3"] and encoded.item_ids == ["c", "d"]
    [step] = encoded.steps
    assert step.name == "iterative 2/2-core (users >= 2, items >= 2)"
    # b goes, then u1 (1 left), then a (1 left), then nothing: 4 rounds counting the stable one.
    assert step.detail == "4 round(s)"
    assert (step.removed, step.users_after, step.items_after) == (3, 2, 2)


def test_separate_user_and_item_thresholds_and_none():
    log = make_log(KCORE_USERS, KCORE_ITEMS)
    # Users >= 3 only: u2 keeps everything.
    encoded = encode_log(log, min_user_interactions=3, min_item_interactions=0, kcore="one_pass")
    assert pairs(encoded) == [("u2", "a"), ("u2", "c"), ("u2", "d")]
    # kcore="none" and thresholds <= 1 are no-ops (no step recorded).
    for kwargs in (
        {"min_user_interactions": 5, "min_item_interactions": 5, "kcore": "none"},
        {"min_user_interactions": 1, "min_item_interactions": 1, "kcore": "iterative"},
    ):
        encoded = encode_log(log, **kwargs)
        assert encoded.num_interactions == 7 and encoded.steps == []


def _rated_log() -> InteractionLog:
    # A, B, C rate x, y, z, w (>= 3); D rated w 2; E did not rate w.
    users, items, ratings = [], [], []
    for user, row in {
        "A": [5, 5, 5, 5],
        "B": [4, 4, 4, 4],
        "C": [3, 3, 3, 3],
        "D": [5, 5, 5, 2],
        "E": [5, 5, 5, None],
    }.items():
        for item, rating in zip("xyzw", row, strict=True):
            users.append(user)
            items.append(item)
            ratings.append(np.nan if rating is None else rating)
    return make_log(users, items, ratings=ratings)


@pytest.mark.parametrize("preset", ["luxury_beauty", "Toys_and_Games"])
def test_rating_threshold_applies_before_counting(preset):
    log = _rated_log()
    # Without the rating filter every user and item has >= 4 interactions.
    assert encode_log(log, min_user_interactions=4, min_item_interactions=4, kcore="one_pass").num_interactions == 20
    encoded = encode_log(log, **resolve_filters(preset))
    # After "rating >= 3" (D-w and E-w go): D and E have 3 interactions and w has 3 users, so all of them go;
    # A, B, C keep x, y, z (3 < 4 interactions each: the threshold is counted once).
    assert pairs(encoded) == [(u, i) for u in "ABC" for i in "xyz"]
    assert [(s.name, s.removed) for s in encoded.steps] == [
        ("rating >= 3", 2),
        ("one-pass threshold (users >= 4, items >= 4, counted once)", 9),
    ]


def test_rating_threshold_removes_unrated_interactions():
    log = make_log(["u", "u", "u"], ["a", "b", "c"], ratings=[3.0, np.nan, 2.5])
    encoded = encode_log(log, min_rating=2.5)
    assert pairs(encoded) == [("u", "a"), ("u", "c")]
    assert encoded.steps[0].name == "rating >= 2.5" and encoded.steps[0].removed == 1


@pytest.mark.parametrize("preset", ["movies_and_tv", "Video_Games"])
def test_five_interaction_presets_ignore_ratings(preset):
    users, items, ratings = [], [], []
    for n, user in enumerate("ABCDE"):
        for k, item in enumerate("pqrst"):
            users.append(user)
            items.append(item)
            ratings.append(1.0 if (n + k) % 4 == 0 else (np.nan if k == 2 else 5.0))
    users += ["F"] * 4
    items += list("pqrs")
    ratings += [5.0] * 4
    encoded = encode_log(make_log(users, items, ratings=ratings), **resolve_filters(preset))
    assert encoded.user_ids == list("ABCDE") and encoded.item_ids == list("pqrst")
    assert encoded.num_interactions == 25  # F (4 interactions) removed; 1-rated and unrated ones kept
    assert [(s.name, s.removed) for s in encoded.steps] == [
        ("one-pass threshold (users >= 5, items >= 5, counted once)", 4)
    ]


# ------------------------------------------------------------------------------------- errors
def test_empty_after_a_filter_names_the_step():
    log = make_log(KCORE_USERS, KCORE_ITEMS, ratings=[1, 2, 3, 4, 5, 1, 2], source="toy.csv")
    with pytest.raises(DataPreparationError, match=r"No interactions are left after the step 'rating >= 6'"):
        encode_log(log, min_rating=6)
    with pytest.raises(DataPreparationError) as info:
        encode_log(log, min_rating=3, min_user_interactions=3, min_item_interactions=2, kcore="one_pass")
    message = str(info.value)
    assert "after the step 'one-pass threshold (users >= 3, items >= 2, counted once)'" in message
    assert "rating >= 3: removed 4 of 7 interactions" in message  # the steps so far
    with pytest.raises(DataPreparationError, match=r"after the step 'iterative 3/3-core"):
        encode_log(log, min_user_interactions=3, min_item_interactions=3)
    untitled = make_log(["u"], ["a"], titles={"a": None})
    with pytest.raises(DataPreparationError, match="after the step 'items without a title dropped'"):
        encode_log(untitled)


def test_empty_log_is_an_error():
    log = InteractionLog.from_frames(pd.DataFrame({"user_id": [], "item_id": []}), source="empty.csv")
    with pytest.raises(DataPreparationError, match=r"The interaction log read from empty.csv is empty"):
        encode_log(log)


def test_bad_options():
    log = make_log(["u"], ["a"])
    with pytest.raises(ValueError, match="kcore must be one of"):
        encode_log(log, kcore="twice")
    with pytest.raises(ValueError, match="missing_title must be one of"):
        encode_log(log, missing_title="keep")


# ----------------------------------------------------------------------------- ordering and indexing
def test_chronological_order_is_stable_for_equal_timestamps():
    log = make_log(
        ["u", "v", "u", "u", "v", "u", "u", "v"],
        ["a", "x", "b", "c", "y", "d", "e", "z"],
        timestamps=[5, 9, 1, 5, 9, 1, 3, 2],
    )
    encoded = encode_log(log)
    assert sequence_of(encoded, "u") == ["b", "d", "e", "a", "c"]  # t = 1, 1, 3, 5, 5 (ties in row order)
    assert sequence_of(encoded, "v") == ["z", "x", "y"]
    assert encoded.users.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert encoded.users.dtype == np.int32 and encoded.items.dtype == np.int32
    assert encoded.user_offsets().tolist() == [0, 5, 8]


def test_natural_reindexing_numeric_ids():
    log = make_log(["10", "2", "1", "10"], ["30", "4", "100", "4"])
    encoded = encode_log(log)
    assert encoded.user_ids == ["1", "2", "10"]  # numerically, not "1" < "10" < "2"
    assert encoded.item_ids == ["4", "30", "100"]
    assert pairs(encoded) == [("1", "100"), ("2", "4"), ("10", "30"), ("10", "4")]
    assert encoded.items.tolist() == [2, 0, 1, 0]  # 0-based codes; item index = code + 1
    assert encoded.item_text["title"].tolist() == ["Title 4", "Title 30", "Title 100"]


def test_natural_reindexing_non_numeric_ids_are_lexicographic():
    encoded = encode_log(make_log(["b2", "b10", "a"], ["10", "9", "x"]))
    assert encoded.user_ids == ["a", "b10", "b2"]
    assert encoded.item_ids == ["10", "9", "x"]  # one non-integer id: all compared as text


def test_item_text_columns_follow_the_index_order():
    log = InteractionLog.from_frames(
        pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["b", "a", "c"]}),
        pd.DataFrame(
            {
                "item_id": ["c", "a", "b", "a", "zz"],
                "title": ["C", "A", "B", "A again", "unused"],
                "brand": ["bc", None, "bb", "ba2", "bz"],
            }
        ),
    )
    encoded = encode_log(log)
    assert encoded.item_ids == ["a", "b", "c"]
    # duplicate metadata rows: the first is used; items never interacted with are not in the catalog
    assert encoded.item_text["title"].tolist() == ["A", "B", "C"]
    assert [None if pd.isna(v) else v for v in encoded.item_text["brand"]] == [None, "bb", "bc"]


def test_statistics_and_table():
    encoded = encode_log(make_log(["u", "u", "u", "v", "w", "w", "w"], list("abcabcd")))
    assert encoded.statistics() == {"users": 3, "items": 4, "interactions": 7, "mean_sequence_length": 2.33}
    table = format_statistics_table({"toy": encoded.statistics(), "big": {**encoded.statistics(), "items": 12345}})
    assert table.splitlines() == [
        "| Dataset | # Users | # Items | # Interactions | Avg. seq. length |",
        "|---|---:|---:|---:|---:|",
        "| toy | 3 | 4 | 7 | 2.33 |",
        "| big | 3 | 12,345 | 7 | 2.33 |",
    ]


def test_filter_step_reporting():
    step = FilterStep("x", 1000, 250, 10, 5, 40, 30, "why")
    assert step.removed == 750
    assert step.describe() == "x: removed 750 of 1,000 interactions (users 10 -> 5, items 40 -> 30); why"
    assert step.to_dict() == {
        "name": "x",
        "interactions_before": 1000,
        "interactions_after": 250,
        "users_before": 10,
        "users_after": 5,
        "items_before": 40,
        "items_after": 30,
        "detail": "why",
        "removed": 750,
    }


# ----------------------------------------------------------------------------------- missing titles
def _untitled_log() -> InteractionLog:
    # a: titled; b: None; c: blank; d: not in the metadata at all.
    return InteractionLog.from_frames(
        pd.DataFrame({"user_id": ["u", "u", "u", "v", "v", "v"], "item_id": ["a", "b", "c", "d", "a", "b"]}),
        pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Alpha", None, "   "]}),
    )


def test_missing_titles_dropped_counted_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="allmrec_hf.data.preprocess"):
        encoded = encode_log(_untitled_log(), missing_title="drop")
    assert pairs(encoded) == [("u", "a"), ("v", "a")]
    assert encoded.item_text["title"].tolist() == ["Alpha"]
    [step] = encoded.steps
    assert (step.name, step.removed, step.items_before, step.items_after) == (
        "items without a title dropped",
        4,
        4,
        1,
    )
    assert step.detail == "3 items had no title (e.g. 'b', 'c', 'd')"
    assert step.describe() in caplog.text


def test_missing_titles_placeholder_keeps_items(caplog):
    with caplog.at_level(logging.INFO, logger="allmrec_hf.data.preprocess"):
        encoded = encode_log(_untitled_log(), missing_title="placeholder")
    assert encoded.num_interactions == 6
    assert encoded.item_ids == ["a", "b", "c", "d"]
    assert encoded.item_text["title"].tolist() == ["Alpha", "Item b", "Item c", "Item d"]
    [step] = encoded.steps
    assert (step.name, step.removed) == ("placeholder titles for items without one", 0)
    assert step.detail == "3 items have no title (e.g. 'b', 'c', 'd'); titled 'Item <id>' (placeholder policy)"
    assert any(r.levelno == logging.WARNING and step.detail in r.getMessage() for r in caplog.records)


def test_missing_titles_only_counted_for_items_left_by_earlier_filters():
    log = make_log(["u", "u", "u"], ["a", "b", "c"], ratings=[5, 1, 5], titles={"a": "A", "b": None, "c": "C"})
    encoded = encode_log(log, min_rating=3)
    assert [s.name for s in encoded.steps] == ["rating >= 3"]  # b went with its rating, not as untitled


def test_placeholder_items_removed_by_the_kcore():
    # Fixed: an untitled item removed by the later k-core made the placeholder assignment fail (KeyError).
    log = make_log(
        ["u", "u", "v", "v", "w"], ["a", "b", "a", "b", "c"], titles={"a": "A", "b": None}
    )  # c: not in the metadata; w and c fall to the 2-core
    encoded = encode_log(log, missing_title="placeholder", min_user_interactions=2, min_item_interactions=2)
    assert encoded.item_ids == ["a", "b"]
    assert encoded.item_text["title"].tolist() == ["A", "Item b"]
    log = make_log(["u", "u", "v", "v", "w"], ["a", "b", "a", "b", "c"], titles={"a": "A", "b": "B"})
    encoded = encode_log(log, missing_title="placeholder", min_user_interactions=2, min_item_interactions=2)
    assert encoded.item_text["title"].tolist() == ["A", "B"]


# --------------------------------------------------------------------------------------- duplicates
def test_deduplicate_keeps_the_earliest_interaction():
    log = make_log(["u", "u", "u", "v", "u"], ["a", "b", "a", "a", "a"], timestamps=[5, 3, 1, 4, 1])
    assert sequence_of(encode_log(log), "u") == ["a", "a", "b", "a"]
    encoded = encode_log(log, deduplicate=True)
    assert sequence_of(encoded, "u") == ["a", "b"]  # a at t=1, not a at t=5
    assert sequence_of(encoded, "v") == ["a"]  # other users' pairs are their own
    [step] = encoded.steps
    assert (step.name, step.removed) == ("repeated (user, item) pairs removed, earliest kept", 2)


def test_deduplicate_after_the_rating_filter():
    # Fixed: an earliest interaction removed by the rating filter also removed the pair's later, kept ones.
    log = make_log(["u", "u", "u"], ["a", "a", "b"], ratings=[1, 5, 5], timestamps=[1, 2, 3])
    encoded = encode_log(log, min_rating=3, deduplicate=True)
    assert sequence_of(encoded, "u") == ["a", "b"]
    assert [(s.name, s.removed) for s in encoded.steps] == [
        ("rating >= 3", 1),
        ("repeated (user, item) pairs removed, earliest kept", 0),
    ]


def test_repeated_rows_are_counted_and_kept(caplog):
    # Fixed: exact duplicate rows were kept without a word.
    log = make_log(["u", "u", "u", "v"], ["a", "a", "b", "a"], timestamps=[1, 1, 2, 1])
    with caplog.at_level(logging.WARNING, logger="allmrec_hf.data.preprocess"):
        encoded = encode_log(log)
    assert sequence_of(encoded, "u") == ["a", "a", "b"]  # kept: the user did not ask for filtering
    assert encoded.notes == [
        "1 interactions repeat an earlier row exactly (same user, item, rating and timestamp): kept"
    ]
    assert any("--deduplicate" in r.getMessage() for r in caplog.records)
    assert encode_log(log, deduplicate=True).notes == []  # removed by the step, which counts them
    assert encode_log(make_log(["u", "u"], ["a", "a"], timestamps=[1, 2])).notes == []  # a re-watch is not a copy


def test_ids_with_surrounding_spaces_are_counted_or_trimmed(caplog):
    # Fixed: " u" and "u" silently became two users.
    log = make_log(["u", " u", "v", "v"], ["a", "b", "a", "b "], timestamps=[1, 2, 3, 4], titles={"a": "A", "b": "B"})
    with caplog.at_level(logging.WARNING, logger="allmrec_hf.data.preprocess"):
        kept = encode_log(log, missing_title="placeholder")
    assert kept.user_ids == [" u", "u", "v"] and kept.item_ids == ["a", "b", "b "]
    assert kept.notes[0].startswith(
        "1 user ids with surrounding whitespace (1 equal to another id once trimmed), 1 item"
    )
    assert any("--strip_ids" in r.getMessage() for r in caplog.records)
    trimmed = encode_log(log, strip_ids=True)
    assert trimmed.user_ids == ["u", "v"] and trimmed.item_ids == ["a", "b"]
    assert sequence_of(trimmed, "u") == ["a", "b"] and sequence_of(trimmed, "v") == ["a", "b"]
    assert trimmed.item_text["title"].tolist() == ["A", "B"]  # metadata ids are trimmed the same way
    [step] = trimmed.steps
    assert (step.name, step.removed, step.users_before, step.users_after) == (
        "ids trimmed of surrounding whitespace",
        0,
        3,
        2,
    )
    assert encode_log(make_log(["u"], ["a"], titles={"a": "A"})).notes == []


# ------------------------------------------------------------------------------------ leave-one-out
def _loo_log() -> EncodedLog:
    # Users 1..4 with 1, 2, 3 and 5 interactions; item ids 1..9 so that item index == item id.
    sequences = {"1": [7], "2": [3, 1], "3": [2, 5, 9], "4": [4, 6, 8, 1, 2]}
    users = [u for u, seq in sequences.items() for _ in seq]
    items = [str(i) for seq in sequences.values() for i in seq]
    encoded = encode_log(make_log(users, items))
    assert encoded.item_ids == [str(i) for i in range(1, 10)]
    return encoded


def test_leave_one_out_rows():
    tables = leave_one_out(_loo_log())
    assert set(tables) == {"train", "validation", "test"}
    assert tables["train"].to_pylist() == [
        {"user": 1, "history": [], "target": 7},  # 1 interaction: train-only
        {"user": 2, "history": [3], "target": 1},  # 2 interactions: train-only, whole sequence
        {"user": 3, "history": [], "target": 2},  # training sequence = sequence minus the last two
        {"user": 4, "history": [4, 6], "target": 8},
    ]
    assert tables["validation"].to_pylist() == [
        {"user": 3, "history": [2], "target": 5},
        {"user": 4, "history": [4, 6, 8], "target": 1},
    ]
    assert tables["test"].to_pylist() == [
        {"user": 3, "history": [2, 5], "target": 9},
        {"user": 4, "history": [4, 6, 8, 1], "target": 2},
    ]
    for table in tables.values():
        assert table.schema.names == ["user", "history", "target"]
        assert table.schema.field("user").type == pa.int32()
        assert table.schema.field("history").type == pa.list_(pa.int32())
        assert table.schema.field("target").type == pa.int32()


def test_leave_one_out_items_are_one_based():
    encoded = encode_log(make_log(["u"] * 3, ["x", "y", "z"]))
    assert encoded.items.tolist() == [0, 1, 2]  # codes
    assert leave_one_out(encoded)["test"].to_pylist() == [{"user": 1, "history": [1, 2], "target": 3}]


def test_leave_one_out_held_out_cold_users():
    tables = leave_one_out(_loo_log(), held_out_users=np.array([2]))  # user "3" (code 2)
    assert tables["cold_users"].to_pylist() == [{"user": 3, "history": [2, 5], "target": 9}]
    assert [r["user"] for r in tables["train"].to_pylist()] == [1, 2, 4]
    assert tables["validation"]["user"].to_pylist() == tables["test"]["user"].to_pylist() == [4]
    empty = leave_one_out(_loo_log(), held_out_users=np.array([], dtype=np.int64))
    assert empty["cold_users"].num_rows == 0 and empty["cold_users"].schema == empty["test"].schema
    assert empty["test"].to_pylist() == leave_one_out(_loo_log())["test"].to_pylist()
