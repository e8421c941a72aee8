"""Readers of the supported data formats: exact values from small fixture files, and precise errors."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest

from allmrec_hf.data.log import DataFormatError, InteractionLog
from allmrec_hf.data.readers import (
    READER_FORMATS,
    read_amazon2018,
    read_amazon2023,
    read_hf_dataset,
    read_log,
    read_movielens,
    read_movielens_100k,
    read_recbole,
    read_table,
    read_unisrec,
)


# ================================================================================================ helpers
def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def write_gz(path, text: str):
    with gzip.open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    return path


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def assert_located(err: DataFormatError, file_name: str, line: int | None, field: str | None):
    """The error names the file, the line and the field, in its message and its attributes."""
    message = str(err)
    assert file_name in message, message
    assert err.path is not None and err.path.endswith(file_name)
    if line is not None:
        assert f"line {line}" in message, message
        assert err.line == line
    if field is not None:
        assert repr(field) in message, message
        assert err.field == field


def rows(log: InteractionLog) -> list[tuple]:
    return list(log.interactions.itertuples(index=False, name=None))


def item_records(log: InteractionLog) -> dict[str, dict]:
    return {r["item_id"]: {k: v for k, v in r.items() if k != "item_id"} for r in log.items.to_dict("records")}


def check_dtypes(log: InteractionLog):
    assert list(log.interactions.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert log.interactions["rating"].dtype == np.float64
    assert log.interactions["timestamp"].dtype == np.int64
    assert log.items["item_id"].is_unique
    assert "title" in log.items.columns


# ================================================================================================ Amazon 2018
REVIEWS_2018 = [
    {"reviewerID": "U1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "great"},
    {"reviewerID": "U2", "asin": "B02", "overall": 3.0, "unixReviewTime": 1400000100, "style": {"Size:": "L"}},
    {"reviewerID": "U1", "asin": "B02", "overall": 4.0, "unixReviewTime": 1300000000, "verified": True},
]
META_2018 = (
    json.dumps(
        {
            "asin": "B01",
            "title": "Tom &amp; Jerry <b>Deluxe</b>",
            "description": ["Two friends.", "  A chase. "],
            "category": ["Toys &amp; Games", "Puzzles"],
            "brand": "ACME",
        }
    )
    + "\n"
    + "{'asin': 'B02', 'title': \"It's a Game\", 'description': 'Plain text', 'category': [], 'brand': ''}\n"
    + "\n"
    + "{'asin': 'B03', 'description': ['no title here']}\n"
    + json.dumps({"asin": "B03", "title": "Late Title", "brand": "Other"})
    + "\n"
)


def test_amazon2018_gzip_reviews_and_mixed_metadata(tmp_path, caplog):
    reviews = write_gz(tmp_path / "Toys.json.gz", jsonl(*REVIEWS_2018))
    meta = write(tmp_path / "meta_Toys.json", META_2018)
    with caplog.at_level(logging.WARNING, logger="allmrec_hf.data.readers"):
        log = read_amazon2018(reviews, meta)
    check_dtypes(log)
    assert rows(log) == [
        ("U1", "B01", 5.0, 1400000000),
        ("U2", "B02", 3.0, 1400000100),
        ("U1", "B02", 4.0, 1300000000),
    ]
    assert list(log.items.columns) == ["item_id", "title", "description", "categories", "brand"]
    assert item_records(log) == {
        "B01": {
            "title": "Tom & Jerry Deluxe",
            "description": "Two friends. A chase.",
            "categories": "Toys & Games, Puzzles",
            "brand": "ACME",
        },
        "B02": {"title": "It's a Game", "description": "Plain text", "categories": None, "brand": None},
        # two lines for B03, merged: the first non-empty value of each field
        "B03": {"title": "Late Title", "description": "no title here", "categories": None, "brand": "Other"},
    }
    assert len(log.notes) == 1 and "merged" in log.notes[0] and "meta_Toys.json" in log.notes[0]
    assert any("merged" in r.getMessage() for r in caplog.records)


def test_amazon2018_without_metadata_and_plain_file(tmp_path):
    reviews = write(tmp_path / "Toys.json", jsonl(*REVIEWS_2018))
    log = read_amazon2018(reviews)
    assert log.num_interactions == 3 and log.num_users == 2
    assert sorted(log.items["item_id"]) == ["B01", "B02"] and log.items["title"].isna().all()


def test_amazon2018_slow_path_accepts_ratings_written_as_strings(tmp_path):
    records = [dict(REVIEWS_2018[0], overall="5.0"), dict(REVIEWS_2018[1], unixReviewTime="1400000100")]
    log = read_amazon2018(write(tmp_path / "r.json", jsonl(*records)))
    assert rows(log) == [("U1", "B01", 5.0, 1400000000), ("U2", "B02", 3.0, 1400000100)]


@pytest.mark.parametrize(
    "bad_line, line, field, reason",
    [
        ({"reviewerID": "U9", "overall": 5.0, "unixReviewTime": 1}, 3, "asin", "missing"),
        ({"reviewerID": "U9", "asin": "B9", "overall": "abc", "unixReviewTime": 1}, 3, "overall", "not a number"),
        ({"reviewerID": "U9", "asin": "B9", "overall": 1.0, "unixReviewTime": "abc"}, 3, "unixReviewTime", "integer"),
        ({"reviewerID": "U9", "asin": None, "overall": 1.0, "unixReviewTime": 2}, 3, "asin", "null"),
        ({"reviewerID": "", "asin": "B9", "overall": 1.0, "unixReviewTime": 2}, 3, "reviewerID", "id"),
    ],
)
def test_amazon2018_bad_review_lines(tmp_path, bad_line, line, field, reason):
    text = jsonl(REVIEWS_2018[0], REVIEWS_2018[1], bad_line, REVIEWS_2018[2])
    for name, writer in (("bad.json", write), ("bad.json.gz", write_gz)):
        with pytest.raises(DataFormatError, match=reason) as info:
            read_amazon2018(writer(tmp_path / name, text))
        assert_located(info.value, name, line, field)


def test_amazon2018_malformed_json_and_encoding(tmp_path):
    text = jsonl(*REVIEWS_2018[:2]) + '{"reviewerID": "U3", "asin": \n'
    with pytest.raises(DataFormatError, match="not valid JSON") as info:
        read_amazon2018(write(tmp_path / "broken.json", text))
    assert_located(info.value, "broken.json", 3, None)

    latin = jsonl(REVIEWS_2018[0]) + '{"reviewerID": "Ren\xe9", "asin": "B1", "overall": 1, "unixReviewTime": 5}\n'
    with pytest.raises(DataFormatError, match="UTF-8|utf-8") as info:
        read_amazon2018(write(tmp_path / "latin.json", latin, encoding="latin-1"))
    assert_located(info.value, "latin.json", 2, None)


def test_amazon2018_bad_metadata_line(tmp_path):
    reviews = write(tmp_path / "r.json", jsonl(*REVIEWS_2018))
    meta = write(tmp_path / "meta.json", json.dumps({"asin": "B01"}) + "\n{'asin': 'B02', 'title': oops}\n")
    with pytest.raises(DataFormatError, match="neither JSON nor a Python") as info:
        read_amazon2018(reviews, meta)
    assert_located(info.value, "meta.json", 2, None)
    meta = write(tmp_path / "meta2.json", json.dumps({"asin": "B01"}) + "\n" + json.dumps({"title": "x"}) + "\n")
    with pytest.raises(DataFormatError, match="missing") as info:
        read_amazon2018(reviews, meta)
    assert_located(info.value, "meta2.json", 2, "asin")


def test_amazon_empty_and_missing_files(tmp_path):
    with pytest.raises(DataFormatError, match="empty") as info:
        read_amazon2018(write(tmp_path / "empty.json", ""))
    assert_located(info.value, "empty.json", None, None)
    with pytest.raises(DataFormatError, match="empty"):
        read_amazon2023(write(tmp_path / "blank.jsonl", "\n\n"))
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_amazon2018(tmp_path / "nothere.json")


# ================================================================================================ Amazon 2023
def test_amazon2023(tmp_path):
    reviews = write_gz(
        tmp_path / "All_Beauty.jsonl.gz",
        jsonl(
            {
                "rating": 5.0,
                "title": "ok",
                "asin": "X1",
                "parent_asin": "P1",
                "user_id": "AG1",
                "timestamp": 1588687728923,
            },
            {
                "rating": 2,
                "asin": "X2",
                "parent_asin": "P2",
                "user_id": "AG1",
                "timestamp": 1588687728924,
                "images": [],
            },
        ),
    )
    meta = write(
        tmp_path / "meta_All_Beauty.jsonl",
        jsonl(
            {
                "parent_asin": "P1",
                "title": "Lip &amp;amp; Cheek",
                "description": ["Soft.", "Red."],
                "features": ["Vegan", "Matte"],
                "categories": ["Beauty", "Makeup"],
                "store": "Shop",
            },
            {"parent_asin": "P2", "title": None, "description": [], "features": [], "categories": []},
        ),
    )
    log = read_amazon2023(reviews, meta)
    check_dtypes(log)
    assert rows(log) == [("AG1", "P1", 5.0, 1588687728923), ("AG1", "P2", 2.0, 1588687728924)]
    assert list(log.items.columns) == ["item_id", "title", "description", "features", "categories"]
    assert item_records(log) == {
        "P1": {
            "title": "Lip & Cheek",
            "description": "Soft. Red.",
            "features": "Vegan, Matte",
            "categories": "Beauty, Makeup",
        },
        "P2": {"title": None, "description": None, "features": None, "categories": None},
    }
    bad = write(tmp_path / "bad.jsonl", jsonl({"user_id": "a", "rating": 1, "timestamp": 3}))
    with pytest.raises(DataFormatError, match="missing") as info:
        read_amazon2023(bad)
    assert_located(info.value, "bad.jsonl", 1, "parent_asin")


# ================================================================================================ MovieLens
def make_ml100k(folder, with_genre_file: bool = True):
    folder.mkdir()
    write(folder / "u.data", "1\t10\t4\t881250949\n2\t20\t3\t891717742\n1\t20\t5\t878887116\n")
    flags10 = ["0"] * 19
    flags10[3] = flags10[4] = "1"  # Animation, Children's
    flags20 = ["0"] * 19
    flags20[8] = "1"  # Drama
    item_lines = [
        "10|Toy Story (1995)|01-Jan-1995||http://x?Toy%20Story%20(1995)|" + "|".join(flags10),
        "20|Misérables, Les (1995)|01-Jan-1995||http://x|" + "|".join(flags20),
        "30|unknown||||" + "|".join(["1"] + ["0"] * 18),
    ]
    write(folder / "u.item", "\n".join(item_lines) + "\n", encoding="latin-1")
    if with_genre_file:
        from allmrec_hf.data.readers import MOVIELENS_GENRES

        text = "".join(f"{g}|{i}\n" for i, g in enumerate(MOVIELENS_GENRES)) + "\n"
        write(folder / "u.genre", text)
    return folder


@pytest.mark.parametrize("with_genre_file", [True, False])
def test_movielens_100k_latin1_folder(tmp_path, caplog, with_genre_file):
    folder = make_ml100k(tmp_path / "ml-100k", with_genre_file)
    with caplog.at_level(logging.INFO, logger="allmrec_hf.data.readers"):
        log = read_movielens(folder)
    check_dtypes(log)
    assert rows(log) == [("1", "10", 4.0, 881250949), ("2", "20", 3.0, 891717742), ("1", "20", 5.0, 878887116)]
    assert item_records(log) == {
        "10": {"title": "Toy Story (1995)", "genres": "Animation, Children's"},
        "20": {"title": "Misérables, Les (1995)", "genres": "Drama"},
        "30": {"title": "unknown", "genres": "unknown"},
    }
    assert any("latin-1" in r.getMessage() and "u.item" in r.getMessage() for r in caplog.records)


def test_movielens_explicit_encoding_failure_names_the_line(tmp_path):
    folder = make_ml100k(tmp_path / "ml-100k")
    with pytest.raises(DataFormatError, match="not valid utf-8") as info:
        read_movielens(folder, encoding="utf-8")
    assert_located(info.value, "u.item", 2, None)
    assert read_movielens(folder, encoding="latin-1").items["title"].iloc[1] == "Misérables, Les (1995)"


def test_movielens_bad_rating_lines(tmp_path):
    folder = make_ml100k(tmp_path / "ml-100k")
    write(folder / "u.data", "1\t10\t4\t881250949\n2\t20\t3\n")
    with pytest.raises(DataFormatError, match="expected 4 fields") as info:
        read_movielens(folder)
    assert_located(info.value, "u.data", 2, None)
    write(folder / "u.data", "1\t10\t4\t881250949\n\n2\t20\tabc\t5\n")
    with pytest.raises(DataFormatError, match="not a number: 'abc'") as info:
        read_movielens(folder)
    assert_located(info.value, "u.data", 3, "rating")
    write(folder / "u.data", "1\t10\t4\t88125x949\n")
    with pytest.raises(DataFormatError, match="not an integer") as info:
        read_movielens(folder)
    assert_located(info.value, "u.data", 1, "timestamp")
    write(folder / "u.data", "")
    with pytest.raises(DataFormatError, match="empty"):
        read_movielens(folder)
    with pytest.raises(FileNotFoundError, match="no MovieLens ratings file"):
        read_movielens(tmp_path)


def test_movielens_1m_folder(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    )
    movies += "7::Città delle donne, La (1980)::Comedy|Drama\n"
    write(folder / "movies.dat", movies, encoding="latin-1")
    log = read_log("movielens", folder)
    check_dtypes(log)
    assert rows(log) == [("1", "1193", 5.0, 978300760), ("1", "661", 3.0, 978302109), ("2", "1193", 4.0, 978298413)]
    assert item_records(log) == {
        "1193": {"title": "One Flew Over the Cuckoo's Nest (1975)", "genres": "Drama"},
        "661": {"title": "James and the Giant Peach (1996)", "genres": "Animation, Children's, Musical"},
        "7": {"title": "Città delle donne, La (1980)", "genres": "Comedy, Drama"},
    }
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661:3::978302109\n")
    with pytest.raises(DataFormatError, match="expected 4 fields separated by '::'") as info:
        read_movielens(folder)
    assert_located(info.value, "ratings.dat", 2, None)


def test_movielens_latest_csv_folder(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    write(
        folder / "movies.csv",
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n3,"Grumpier Old Men, The (1995)",'
        "(no genres listed)\n",
    )
    log = read_movielens(folder / "ratings.csv")
    assert rows(log) == [("1", "1", 4.0, 964982703), ("1", "3", 3.5, 964981247)]
    assert item_records(log) == {
        "1": {"title": "Toy Story (1995)", "genres": "Adventure, Animation, Children"},
        "3": {"title": "Grumpier Old Men, The (1995)", "genres": None},
    }


# ================================================================================================ RecBole
def make_recbole(folder, name="toy"):
    folder.mkdir()
    write(
        folder / f"{name}.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
        "u1\ti1\t4\t100\tnice one\nu1\ti2\t3.5\t90\t\nu2\ti1\t1\t120.0\tbad\n",
    )
    write(
        folder / f"{name}.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tprice:float\n"
        "i1\tHeat &amp; Dust\t1995\tCrime Sci-Fi Film-Noir\t9.5\n"
        "i2\tBabe\t\tChildren's\t1\n",
    )
    return folder


def test_recbole_folder(tmp_path):
    folder = make_recbole(tmp_path / "toy")
    log = read_recbole(folder)
    check_dtypes(log)
    assert rows(log) == [("u1", "i1", 4.0, 100), ("u1", "i2", 3.5, 90), ("u2", "i1", 1.0, 120)]
    assert list(log.items.columns) == ["item_id", "title", "release_year", "genres"]
    assert item_records(log) == {
        "i1": {"title": "Heat & Dust", "release_year": "1995", "genres": "Crime, Sci-Fi, Film-Noir"},
        "i2": {"title": "Babe", "release_year": None, "genres": "Children's"},
    }
    # the .inter file itself, other field names, no timestamp (position order) and no rating
    log = read_log("recbole", folder / "toy.inter", timestamp_field=None, rating_field=None, title_field="release_year")
    assert log.interactions["timestamp"].tolist() == [0, 1, 0] and log.interactions["rating"].isna().all()
    assert log.items["title"].tolist() == ["1995", None]


def test_recbole_errors(tmp_path):
    folder = make_recbole(tmp_path / "toy")
    with pytest.raises(DataFormatError, match="no such field") as info:
        read_recbole(folder, user_field="uid")
    assert_located(info.value, "toy.inter", 1, "uid")
    write(folder / "toy.inter", "user_id:token\titem_id:token\trating:float\nu1\ti1\t4\nu1\ti2\tabc\n")
    with pytest.raises(DataFormatError, match="not a number") as info:
        read_recbole(folder)
    assert_located(info.value, "toy.inter", 3, "rating")
    write(folder / "toy.inter", "user_id:token\titem_id:token\nu1\ti1\nu1\n")
    with pytest.raises(DataFormatError, match="expected 2 fields") as info:
        read_recbole(folder)
    assert_located(info.value, "toy.inter", 3, None)
    write(folder / "toy.inter", "user_id\titem_id:token\nu1\ti1\n")
    with pytest.raises(DataFormatError, match="RecBole header") as info:
        read_recbole(folder)
    assert_located(info.value, "toy.inter", 1, "user_id")
    write(folder / "toy.inter", "user_id:token\titem_id:token\n")
    with pytest.raises(DataFormatError, match="empty"):
        read_recbole(folder)
    with pytest.raises(FileNotFoundError):
        read_recbole(tmp_path / "missing")


def test_movielens_100k_from_recbole_wheel():
    from allmrec_hf.offline_models import OfflineModelUnavailableError

    try:
        log = read_movielens_100k()
    except OfflineModelUnavailableError as err:
        pytest.skip(str(err))
    check_dtypes(log)
    assert (log.num_interactions, log.num_users, log.num_items) == (100_000, 943, 1682)
    toy_story = item_records(log)["1"]
    assert toy_story == {"title": "Toy Story (1995)", "genres": "Animation, Children's, Comedy"}
    assert rows(log)[0] == ("196", "242", 3.0, 881250949)
    assert read_log("ml-100k").num_interactions == 100_000


# ================================================================================================ UniSRec
def make_unisrec(folder, name="Sci"):
    """Users 0 and 1; histories truncated to 3 items (UniSRec truncates to 50): user 0's full sequence is
    items 0 1 2 3 4 5 (6 items), user 1's is 2 3 4 (3 items)."""
    folder.mkdir()
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    # user 0: targets at positions 1..3 in train (written latest first), 4 in valid, 5 in test
    write(folder / f"{name}.train.inter", header + "0\t0 1 2\t3\n0\t0 1\t2\n0\t0\t1\n")
    write(folder / f"{name}.valid.inter", header + "0\t1 2 3\t4\n1\t2\t3\n")
    write(folder / f"{name}.test.inter", header + "0\t2 3 4\t5\n1\t2 3\t4\n")
    asins = ["B0A", "B0B", "B0C", "B0D", "B0E", "B0F"]
    write(folder / f"{name}.item2index", "".join(f"{a}\t{i}\n" for i, a in enumerate(asins)))
    write(folder / f"{name}.user2index", "AUSER0\t0\nAUSER1\t1\n")
    text = "item_id:token\ttext:token_seq\n"
    text += "B0A\tSanding Roll 80 Grit. Industrial &amp; Scientific Abrasives. PORTER-CABLE. \n"
    text += "B0B\tGlue, 8 oz. Adhesives. Gorilla. \n"
    text += "B0C\tJust a title\n"
    text += "B0D\tA.B. Tape v2. Tapes. 3M. \n"
    write(folder / f"{name}.text", text)
    return folder


def test_unisrec_rebuilds_sequences_and_reads_text(tmp_path):
    folder = make_unisrec(tmp_path / "Sci")
    log = read_unisrec(folder)
    check_dtypes(log)
    assert log.interactions["rating"].isna().all()
    got = [(u, i, t) for u, i, _, t in rows(log)]
    assert got == [("AUSER0", a, t) for t, a in enumerate(["B0A", "B0B", "B0C", "B0D", "B0E", "B0F"])] + [
        ("AUSER1", "B0C", 0),
        ("AUSER1", "B0D", 1),
        ("AUSER1", "B0E", 2),
    ]
    assert item_records(log) == {
        "B0A": {
            "title": "Sanding Roll 80 Grit",
            "categories": "Industrial & Scientific Abrasives",
            "brand": "PORTER-CABLE",
        },
        "B0B": {"title": "Glue, 8 oz", "categories": "Adhesives", "brand": "Gorilla"},
        "B0C": {"title": "Just a title", "categories": None, "brand": None},
        "B0D": {"title": "A.B. Tape v2", "categories": "Tapes", "brand": "3M"},
    }
    # without user2index, user ids are the indices; a file inside the folder works as the path
    (folder / "Sci.user2index").unlink()
    log = read_log("unisrec", folder / "Sci.test.inter")
    assert log.interactions["user_id"].unique().tolist() == ["0", "1"]


def test_unisrec_only_test_file_is_the_longest_row(tmp_path):
    folder = make_unisrec(tmp_path / "Sci")
    (folder / "Sci.train.inter").unlink()
    (folder / "Sci.valid.inter").unlink()
    log = read_unisrec(folder, "Sci")
    assert log.interactions.groupby("user_id").size().to_dict() == {"AUSER0": 4, "AUSER1": 3}


def test_unisrec_inconsistent_rows(tmp_path):
    folder = make_unisrec(tmp_path / "Sci")
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    write(folder / "Sci.train.inter", header + "0\t0 1 2\t3\n0\t0 1\t2\n0\t0\t1\n1\t3\t3\n1\t2\t3\n")
    with pytest.raises(DataFormatError, match="disagree") as info:
        read_unisrec(folder)
    assert_located(info.value, "Sci.train.inter", 5, "item_id_list")
    write(folder / "Sci.train.inter", header + "0\t0 1 2\t3\n0\t0 1\t9\n")
    with pytest.raises(DataFormatError, match="not in Sci.item2index") as info:
        read_unisrec(folder)
    assert_located(info.value, "Sci.train.inter", 3, "item_id")
    write(folder / "Sci.train.inter", header + "0\t0 1 2\n")
    with pytest.raises(DataFormatError, match="expected 3 fields") as info:
        read_unisrec(folder)
    assert_located(info.value, "Sci.train.inter", 2, None)
    write(folder / "Sci.train.inter", "user_id:token\titem_id:token\n0\t1\n")
    with pytest.raises(DataFormatError, match="no such field") as info:
        read_unisrec(folder)
    assert_located(info.value, "Sci.train.inter", 1, "item_id_list")


# ================================================================================================ tables
def test_read_table_csv_with_mapped_columns_and_dates(tmp_path):
    path = write(
        tmp_path / "ratings.csv",
        "uid,movie,stars,ts,extra\n"
        'u1,0042,4.5,2021-03-04T10:00:00Z,"a, b"\n'
        "u2,0007,,2021-03-04 10:00:01,x\n"
        "u1,0007,3,2021-03-05,y\n",
    )
    items = write(
        tmp_path / "movies.csv",
        'movie,name,plot,year\n0042,Heat &amp; Dust,"A film, long",1983\n0007,Babe,,1995\n0007,,talking pig,\n',
    )
    log = read_table(
        path,
        columns={"user_id": "uid", "item_id": "movie", "rating": "stars", "timestamp": "ts"},
        item_path=items,
        item_columns={"item_id": "movie", "title": "name", "description": "plot"},
    )
    check_dtypes(log)
    assert rows(log)[0] == ("u1", "0042", 4.5, 1614852000)
    assert rows(log)[2] == ("u1", "0007", 3.0, 1614902400)
    assert log.interactions["timestamp"].tolist()[1] == 1614852001 and np.isnan(rows(log)[1][2])
    assert item_records(log) == {
        "0042": {"title": "Heat & Dust", "description": "A film, long"},
        "0007": {"title": "Babe", "description": "talking pig"},
    }
    assert len(log.notes) == 1 and "merged" in log.notes[0]
    # item_id defaults to the interactions' item column; only mapped item columns are read
    log = read_table(
        path, columns={"user_id": "uid", "item_id": "movie"}, item_path=items, item_columns={"title": "name"}
    )
    assert list(log.items.columns) == ["item_id", "title"] and log.items["item_id"].tolist() == ["0042", "0007"]
    with pytest.raises(DataFormatError, match=r"no column 'blurb'.*\['movie', 'name', 'plot', 'year'\]") as info:
        read_table(path, columns={"user_id": "uid", "item_id": "movie"}, item_path=items, item_columns={"x": "blurb"})
    assert_located(info.value, "movies.csv", 1, "blurb")


def test_read_table_tsv_and_parquet_and_defaults(tmp_path):
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "a"],
            "item_id": [3, 1, 2],
            "rating": [1.0, 2.0, 3.0],
            "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02", "1970-01-01 00:00:05"], format="ISO8601"),
        }
    )
    frame.to_parquet(tmp_path / "log.parquet")
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["One", None, "Three"], "tags": [["x", "y"], [], None]})
    items.to_parquet(tmp_path / "items.pq")
    log = read_log("parquet", tmp_path / "log.parquet", meta_path=tmp_path / "items.pq")
    check_dtypes(log)
    assert rows(log) == [("a", "3", 1.0, 1577836800), ("b", "1", 2.0, 1577923200), ("a", "2", 3.0, 5)]
    assert item_records(log) == {
        "1": {"title": "One", "tags": "x, y"},
        "2": {"title": None, "tags": None},
        "3": {"title": "Three", "tags": None},
    }
    write(tmp_path / "log.tsv", 'user_id\titem_id\ttimestamp\nu\t"quoted\t10\nu\ti2\t11\n')
    log = read_log("csv", tmp_path / "log.tsv")
    assert rows(log)[0][1] == '"quoted' and log.interactions["rating"].isna().all()
    log = read_table(tmp_path / "log.tsv", columns={"timestamp": None})
    assert log.interactions["timestamp"].tolist() == [0, 1]
    write_gz(tmp_path / "log.csv.gz", "user_id,item_id,rating\nu,i,2\nv,i,\n")
    log = read_log("csv", tmp_path / "log.csv.gz")
    assert log.interactions["rating"].tolist()[0] == 2.0 and np.isnan(log.interactions["rating"].tolist()[1])
    write_gz(tmp_path / "bad.tsv.gz", "user_id\titem_id\trating\nu\ti\t2\nv\ti\tx\n")
    with pytest.raises(DataFormatError, match="not a number: 'x'") as info:
        read_table(tmp_path / "bad.tsv.gz")
    assert_located(info.value, "bad.tsv.gz", 3, "rating")


def test_read_table_and_recbole_take_an_encoding(tmp_path):
    # Fixed: the latin-1 error said "give the file's encoding", but nothing took one.
    inter = write(tmp_path / "log.csv", "user_id,item_id\nRen\xe9,1\nRen\xe9,2\n", encoding="latin-1")
    items = write(tmp_path / "items.csv", 'item_id,title\n1,"Mis\xe9rables, Les"\n2,Caf\xe9\n', encoding="latin-1")
    with pytest.raises(DataFormatError, match="not valid utf-8 text.*--encoding latin-1"):
        read_table(inter, item_path=items)
    log = read_table(inter, item_path=items, encoding="latin-1")
    assert log.interactions["user_id"].tolist() == ["René", "René"]
    assert log.items["title"].tolist() == ["Misérables, Les", "Café"]
    bad = write(tmp_path / "bad.csv", "user_id,item_id\nu,1\nu,\x81\n", encoding="latin-1")  # undefined in cp1252
    with pytest.raises(DataFormatError) as info:
        read_table(bad, encoding="cp1252")
    assert_located(info.value, "bad.csv", 3, None)
    with pytest.raises(ValueError, match="unknown encoding 'nope'"):
        read_table(inter, encoding="nope")
    with pytest.raises(ValueError, match="'utf-16' does not write ASCII as single bytes"):
        read_table(inter, encoding="utf-16")
    pd.DataFrame({"user_id": ["u"], "item_id": ["1"]}).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match="is Parquet, which stores text as UTF-8"):
        read_table(tmp_path / "log.parquet", encoding="latin-1")

    folder = tmp_path / "shop"
    folder.mkdir()
    write(folder / "shop.inter", "user_id:token\titem_id:token\nRen\xe9\t1\n", encoding="latin-1")
    write(folder / "shop.item", "item_id:token\ttitle:token_seq\n1\tCaf\xe9\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match="not valid utf-8"):
        read_recbole(folder)
    log = read_recbole(folder, encoding="latin-1")
    assert log.interactions["user_id"].tolist() == ["René"] and log.items["title"].tolist() == ["Café"]


def test_read_table_large_integer_timestamps_and_float_seconds(tmp_path):
    write(tmp_path / "a.csv", "user_id,item_id,timestamp\nu,i,1614852000.0\nu,j,1614852001.0\n")
    assert read_table(tmp_path / "a.csv").interactions["timestamp"].tolist() == [1614852000, 1614852001]
    write(tmp_path / "b.csv", "user_id,item_id,timestamp\nu,i,1.25\nu,j,2.5\n")
    log = read_table(tmp_path / "b.csv")
    assert log.interactions["timestamp"].tolist() == [1250, 2500] and "1000" in log.notes[0]
    write(tmp_path / "c.csv", "user_id,item_id,timestamp\nu,i,03/04/2021 10:00\nu,j,12/31/2021 23:59:59\n")
    assert read_table(tmp_path / "c.csv").interactions["timestamp"].tolist() == [1614852000, 1640995199]


@pytest.mark.parametrize(
    "text, line, field, reason",
    [
        ("uid,item_id,ts\nu1,i1,2021-01-01\nu2,i2,abc\n", 3, "ts", "not a number or a date/time: 'abc'"),
        ("uid,item_id,ts\nu1,i1,1614852000\nu2,i2,1614852001\nu3,i3,abc\n", 4, "ts", "date/time: 'abc'"),
        ("uid,item_id,ts\nu1,i1,03/04/2021 10:00\nu2,i2,03/05/2021 10:00\nu3,i3,x\n", 4, "ts", "date/time: 'x'"),
        ("uid,item_id,ts\nu1,i1,5\nu2,i2,\n", 3, "ts", "missing timestamp"),
        ("uid,item_id,ts,stars\nu1,i1,5,4\n\nu2,i2,6,abc\n", 4, "stars", "not a number: 'abc'"),
        ("uid,item_id,ts\nu1,,5\n", 2, "item_id", "missing"),
        ('uid,item_id,ts\nu1,i1,5\n"u2\nstill u2",i2,6\nu3,i3,7,8\n', 5, None, "expected 3 fields"),
    ],
)
def test_read_table_bad_values(tmp_path, text, line, field, reason):
    path = write(tmp_path / "bad.csv", text)
    columns = {"user_id": "uid", "timestamp": "ts"}
    if "stars" in text:
        columns["rating"] = "stars"
    with pytest.raises(DataFormatError, match=reason) as info:
        read_table(path, columns=columns)
    assert_located(info.value, "bad.csv", line, field)


def test_read_table_structural_errors(tmp_path):
    path = write(tmp_path / "r.csv", "uid,item,when\nu1,i1,5\n")
    with pytest.raises(DataFormatError, match=r"no column 'movie'.*\['uid', 'item', 'when'\]") as info:
        read_table(path, columns={"user_id": "uid", "item_id": "movie"})
    assert_located(info.value, "r.csv", 1, "movie")
    with pytest.raises(DataFormatError, match="empty") as info:
        read_table(write(tmp_path / "header_only.csv", "user_id,item_id\n"))
    assert_located(info.value, "header_only.csv", None, None)
    with pytest.raises(DataFormatError, match="empty"):
        read_table(write(tmp_path / "nothing.csv", ""))
    with pytest.raises(DataFormatError, match="not valid utf-8") as info:
        read_table(write(tmp_path / "latin.csv", "user_id,item_id\nu1,i1\nRené,i2\n", encoding="latin-1"))
    assert_located(info.value, "latin.csv", 3, None)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="file_format"):
        read_table(write(tmp_path / "r.txt", "user_id,item_id\nu,i\n"))
    assert read_table(tmp_path / "r.txt", file_format="csv").num_interactions == 1
    pd.DataFrame({"user_id": ["u", None], "item_id": ["i", "j"]}).to_parquet(tmp_path / "nulls.parquet")
    with pytest.raises(DataFormatError, match="row 2: missing") as info:
        read_table(tmp_path / "nulls.parquet")
    assert_located(info.value, "nulls.parquet", None, "user_id")
    with pytest.raises(DataFormatError, match="Parquet"):
        read_table(write(tmp_path / "fake.parquet", "not parquet"))


# ================================================================================================ datasets
def test_read_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"uid": ["u1", "u2", "u1", "u3"], "item_id": ["a", "b", "b", "c"], "stars": [5, 4, 3, 2], "t": [3, 2, 1, 0]}
    ).select([2, 0, 1])  # a dataset with an indices mapping: only the selected rows count
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["Alpha &amp; Co", None], "categories": [["x"], ["y", "z"]]})
    log = read_hf_dataset(ds, columns={"user_id": "uid", "rating": "stars", "timestamp": "t"}, items=items)
    check_dtypes(log)
    assert rows(log) == [("u1", "b", 3.0, 1), ("u1", "a", 5.0, 3), ("u2", "b", 4.0, 2)]
    assert item_records(log) == {
        "a": {"title": "Alpha & Co", "categories": "x"},
        "b": {"title": None, "categories": "y, z"},
    }
    log = read_hf_dataset(ds, columns={"user_id": "uid"}, items=datasets.Dataset.from_pandas(items))
    assert log.interactions["rating"].isna().all() and log.items["title"].tolist() == ["Alpha & Co", None]
    with pytest.raises(DataFormatError, match=r"no column 'user_id'.*uid") as info:
        read_hf_dataset(ds)
    assert info.value.field == "user_id"
    bad = datasets.Dataset.from_dict({"user_id": ["u", "v"], "item_id": ["a", "b"], "timestamp": ["2020-01-01", "x"]})
    with pytest.raises(DataFormatError, match="row 2: not a number or a date/time: 'x'") as info:
        read_hf_dataset(bad)
    assert info.value.field == "timestamp"


# ================================================================================================ dispatcher
def test_read_log_dispatch(tmp_path):
    assert READER_FORMATS == (
        "amazon2018",
        "amazon2023",
        "movielens",
        "ml-100k",
        "recbole",
        "unisrec",
        "csv",
        "parquet",
    )
    with pytest.raises(ValueError, match="unknown format 'yelp'.*amazon2018.*parquet"):
        read_log("yelp", tmp_path)
    with pytest.raises(ValueError, match="needs a path"):
        read_log("csv")
    with pytest.raises(ValueError, match="meta_path"):
        read_log("movielens", tmp_path, meta_path=tmp_path)
    reviews = write(tmp_path / "r.jsonl", jsonl({"user_id": "u", "parent_asin": "p", "rating": 1, "timestamp": 2}))
    assert rows(read_log("Amazon2023", reviews)) == [("u", "p", 1.0, 2)]
    write(tmp_path / "r.csv", "user_id,item_id\nu,i\n")
    log = read_log("csv", tmp_path / "r.csv")
    assert [(u, i, t) for u, i, _, t in rows(log)] == [("u", "i", 0)] and log.interactions["rating"].isna().all()
