"""ItemCatalog: lookups, item text, (de)serialisation and the errors on bad input."""

from __future__ import annotations

import json
import os
import re

import pytest

from allmrec_hf import ItemCatalog, normalize_title
from allmrec_hf.catalog import CATALOG_FILE_NAME


@pytest.fixture
def small() -> ItemCatalog:
    return ItemCatalog(
        ["Toy Story (1995)", "Heat (1995)", "heat (1995)", "Casino (1995)"],
        item_ids=["m1", "m2", "m3", "m4"],
        fields={
            "description": ["Toys come alive.", None, "A remake.", None],
            "year": [1995, 1995, None, 1995],
            "genres": [["Animation", "Comedy"], [], ["Crime"], None],
        },
    )


# --------------------------------------------------------------------------------------------- lookups
def test_basic_properties(small):
    assert len(small) == small.num_items == 4
    assert small.titles == ["Toy Story (1995)", "Heat (1995)", "heat (1995)", "Casino (1995)"]
    assert small.field_names == ["description", "year", "genres"]
    assert 1 in small and 4 in small
    assert 0 not in small and 5 not in small and "1" not in small and True not in small
    assert repr(small) == "ItemCatalog(num_items=4, fields=['description', 'year', 'genres'])"


def test_lookups_both_ways(small):
    for index, item_id in enumerate(["m1", "m2", "m3", "m4"], 1):
        assert small.index(item_id) == index
        assert small.item_id(index) == item_id
    assert small.indices(["m4", "m1"]) == [4, 1]
    assert small.title(1) == "Toy Story (1995)"
    assert small.title(4) == "Casino (1995)"
    assert small.field(1, "description") == "Toys come alive."
    assert small.field(2, "description") is None
    assert small.field(3, "genres") == ["Crime"]


def test_default_item_ids_are_one_based_strings():
    catalog = ItemCatalog(["A", "B", "C"])
    assert [catalog.item_id(i) for i in (1, 2, 3)] == ["1", "2", "3"]
    assert catalog.index("2") == 2
    assert catalog.index(3) == 3  # ids are compared as strings


def test_integer_item_ids_are_stored_as_strings():
    catalog = ItemCatalog(["A", "B"], item_ids=[10, 20])
    assert catalog.item_id(2) == "20"
    assert catalog.index("10") == 1


def test_find_title_is_normalised_and_returns_duplicates(small):
    assert small.find_title("toy story (1995)") == [1]
    assert small.find_title('  "TOY   STORY (1995)". ') == [1]
    assert small.find_title("\u201cCasino (1995)\u201d") == [4]
    assert small.find_title("Heat (1995)") == [2, 3]
    assert small.find_title("Heat") == []
    # the result is a copy: mutating it does not corrupt the catalog
    small.find_title("Heat (1995)").append(99)
    assert small.find_title("Heat (1995)") == [2, 3]


def test_closest_titles(small):
    assert small.closest_titles("Toy Stori (1995)")[0] == "Toy Story (1995)"
    assert small.closest_titles("casino 1995", n=1) == ["Casino (1995)"]
    assert len(small.closest_titles("Toy Story (1995)", n=2)) <= 2
    assert small.closest_titles("zzzzzzzzzzzzzzzzzzzzzzzzz") == []
    # duplicate normalised titles are offered once
    heat = small.closest_titles("Heat (1995)")
    assert heat[0] == "Heat (1995)" and heat.count("Heat (1995)") + heat.count("heat (1995)") == 1


# --------------------------------------------------------------------------------------------- text
def test_text_default_template(small):
    assert small.text(1) == "Toy Story (1995), Toys come alive."
    assert small.text(2) == "Heat (1995)"  # missing description: no dangling ", "
    assert small.text(3) == "heat (1995), A remake."


def test_text_custom_templates_and_missing_fields(small):
    assert small.text(1, "{title} | {year} | {item_id}") == "Toy Story (1995) | 1995 | m1"
    assert small.text(3, "{title} | {year} | {item_id}") == "heat (1995) | m3"
    assert small.text(2, "{description}: {title}") == "Heat (1995)"
    assert small.text(2, "{title}, {description}, {year}") == "Heat (1995), 1995"
    assert small.text(2, "{title}; {description}; {genres}") == "Heat (1995)"
    assert small.text(1, "{title}: {genres}") == "Toy Story (1995): Animation Comedy"
    assert small.text(4, "{title}, {genres}") == "Casino (1995)"
    # a field the catalog does not have renders empty as well
    assert small.text(1, "{title}, {director}") == "Toy Story (1995)"
    assert small.text(1, "Title:   {title}\n  {description}") == "Title: Toy Story (1995) Toys come alive."


def test_text_checks_the_index(small):
    with pytest.raises(KeyError, match="item 5 is not in the catalog"):
        small.text(5)


def test_field_errors_name_the_field_and_index(small):
    with pytest.raises(KeyError, match="no field 'plot'"):
        small.field(1, "plot")
    with pytest.raises(KeyError, match="item 0 is not in the catalog"):
        small.field(0, "description")


# --------------------------------------------------------------------------------------------- saving
def test_save_load_round_trip(small, tmp_path):
    path = small.save(tmp_path / "cat")
    assert os.path.basename(path) == CATALOG_FILE_NAME == "item_catalog.jsonl"
    assert sorted(os.listdir(tmp_path / "cat")) == ["item_catalog.jsonl"]  # no temporary file left
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[1]) == {
        "index": 2,
        "item_id": "m2",
        "title": "Heat (1995)",
        "description": None,
        "year": 1995,
        "genres": [],
    }
    from_dir = ItemCatalog.load(tmp_path / "cat")
    from_file = ItemCatalog.load(path)
    assert from_dir == small and from_file == small
    assert from_dir.titles == small.titles
    assert from_dir.field(3, "genres") == ["Crime"]
    assert from_dir.find_title("heat (1995)") == [2, 3]


def test_save_load_keeps_unicode(tmp_path):
    catalog = ItemCatalog(["Amélie (2001)", "千と千尋の神隠し"], item_ids=["a", "b"])
    path = catalog.save(tmp_path)
    assert "Amélie" in open(path, encoding="utf-8").read()  # written as UTF-8, not escaped
    loaded = ItemCatalog.load(tmp_path)
    assert loaded == catalog and loaded.title(2) == "千と千尋の神隠し"


def test_equality(small):
    assert small == ItemCatalog.from_records(small.to_records())
    assert small != ItemCatalog(small.titles, item_ids=["m1", "m2", "m3", "m4"])  # fields differ
    assert small != small.to_records()
    assert ItemCatalog(["A"]) != ItemCatalog(["B"])


def test_from_records_without_index():
    catalog = ItemCatalog.from_records([{"title": "A", "plot": "p"}, {"title": "B", "item_id": "x"}])
    assert catalog.titles == ["A", "B"]
    assert catalog.item_id(1) == "1" and catalog.item_id(2) == "x"
    assert catalog.field_names == ["plot"]
    assert catalog.field(2, "plot") is None


def test_from_records_with_index_in_any_order():
    records = [
        {"index": 3, "item_id": "c", "title": "C"},
        {"index": 1, "item_id": "a", "title": "A"},
        {"index": 2, "item_id": "b", "title": "B", "extra": 7},
    ]
    catalog = ItemCatalog.from_records(records)
    assert catalog.titles == ["A", "B", "C"]
    assert catalog.indices(["a", "b", "c"]) == [1, 2, 3]
    assert catalog.field(2, "extra") == 7 and catalog.field(1, "extra") is None
    assert catalog.to_records()[0] == {"index": 1, "item_id": "a", "title": "A", "extra": None}


# --------------------------------------------------------------------------------------------- errors
def test_duplicate_item_id():
    with pytest.raises(ValueError, match=r"duplicate item_id 'x' at indices 1 and 3"):
        ItemCatalog(["A", "B", "C"], item_ids=["x", "y", "x"])


@pytest.mark.parametrize("title", ["", "   ", None, 5])
def test_missing_title(title):
    with pytest.raises(ValueError, match=r"item at index 2 \(item_id 'b'\) has no title \(" + repr(title)):
        ItemCatalog(["A", title, "C"], item_ids=["a", "b", "c"])


def test_missing_title_without_item_ids():
    with pytest.raises(ValueError, match=r"item at index 1 \(item_id '1'\) has no title \(None\)"):
        ItemCatalog([None])


def test_item_ids_length_mismatch():
    with pytest.raises(ValueError, match="got 1 item_ids for 2 titles"):
        ItemCatalog(["A", "B"], item_ids=["a"])


def test_item_ids_length_mismatch_with_an_empty_title():
    # the title error must not crash on the short item_ids list
    with pytest.raises(ValueError, match="got 1 item_ids for 3 titles"):
        ItemCatalog(["A", "B", ""], item_ids=["a"])


@pytest.mark.parametrize("name", ["index", "item_id", "title"])
def test_reserved_field_names(name):
    with pytest.raises(ValueError, match=f"field name '{name}' is reserved"):
        ItemCatalog(["A"], fields={name: ["x"]})


def test_field_length_mismatch():
    with pytest.raises(ValueError, match="field 'description' has 1 values for 2 items"):
        ItemCatalog(["A", "B"], fields={"description": ["only one"]})


@pytest.mark.parametrize("index", [0, 5, -1, 100])
def test_check_index_out_of_range(small, index):
    with pytest.raises(KeyError, match=rf"item {index} is not in the catalog \(valid indices are 1\.\.4\)"):
        small.check_index(index)


@pytest.mark.parametrize("index", ["2", 2.5, None, "two", True, [1]])
def test_check_index_not_an_integer(small, index):
    with pytest.raises(KeyError, match=re.escape(f"target {index!r} is not an integer catalog index")):
        small.check_index(index, what="target")


def test_check_index_accepts_integral_values(small):
    import numpy as np
    import torch

    assert small.check_index(3) == 3
    assert small.check_index(np.int64(2)) == 2
    assert small.check_index(torch.tensor(4)) == 4
    assert type(small.check_index(np.int64(2))) is int


def test_title_and_item_id_check_the_index(small):
    with pytest.raises(KeyError, match="item 9 is not in the catalog"):
        small.title(9)
    with pytest.raises(KeyError, match="item 0 is not in the catalog"):
        small.item_id(0)


def test_unknown_item_id(small):
    with pytest.raises(KeyError, match="item_id 'm99' is not in the catalog"):
        small.index("m99")
    with pytest.raises(KeyError, match="item_id 'nope' is not in the catalog"):
        small.indices(["m1", "nope"])


def test_load_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / CATALOG_FILE_NAME
    path.write_text('{"index": 1, "title": "A"}\n\n{"index": 2, "title": "B",\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3: not valid JSON") as error:
        ItemCatalog.load(tmp_path)
    assert str(path) in str(error.value)


def test_load_non_object_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"title": "A"}\n["B"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected a JSON object, got list"):
        ItemCatalog.load(path)


def test_load_skips_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('\n{"title": "A"}\n   \n{"title": "B"}\n\n', encoding="utf-8")
    assert ItemCatalog.load(path).titles == ["A", "B"]


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ItemCatalog.load(tmp_path / "missing")


def test_from_records_missing_title():
    with pytest.raises(ValueError, match="src: record 2 has no 'title' field"):
        ItemCatalog.from_records([{"title": "A"}, {"item_id": "b"}], source="src")


def test_from_records_partial_index():
    with pytest.raises(ValueError, match="record 2 has no 'index' while others do"):
        ItemCatalog.from_records([{"index": 1, "title": "A"}, {"title": "B"}])


@pytest.mark.parametrize("bad", [0, 3, "1", 1.0, True])
def test_from_records_bad_index(bad):
    records = [{"index": 1, "title": "A"}, {"index": bad, "title": "B"}]
    message = f"record 2 has index {bad!r}; indices must be unique integers 1..2"
    with pytest.raises(ValueError, match=re.escape(message)):
        ItemCatalog.from_records(records)


def test_from_records_duplicate_index():
    with pytest.raises(ValueError, match="record 2 has index 1; indices must be unique"):
        ItemCatalog.from_records([{"index": 1, "title": "A"}, {"index": 1, "title": "B"}])


def test_from_records_file_errors_name_the_file(tmp_path):
    path = tmp_path / CATALOG_FILE_NAME
    path.write_text('{"index": 1, "title": "A"}\n{"index": 1, "title": "B"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="record 2 has index 1") as error:
        ItemCatalog.load(tmp_path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------- normalize_title
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('  "Toy Story (1995)". ', "toy story (1995)"),
        ("Heat (1995)!", "heat (1995)"),
        ("(500) Days of Summer (2009)", "(500) days of summer (2009)"),
        ("\u201cCasino\u201d", "casino"),
        ("\u2018Casino\u2019", "casino"),
        ("`Casino`", "casino"),
        ("Toy\t\n  Story", "toy story"),
        ("\uff34\uff4f\uff59", "toy"),  # full-width letters (NFKC)
        ("Stra\u00dfe", "strasse"),  # case folding, not just lower()
        ("Ame\u0301lie", "am\u00e9lie"),  # combining accent composed
        ("...Heat, the movie?!", "heat, the movie"),
        ("M*A*S*H", "m*a*s*h"),
        ('"', ""),
        ("", ""),
    ],
)
def test_normalize_title(raw, expected):
    assert normalize_title(raw) == expected


def test_normalize_title_is_idempotent():
    for title in ['  "Toy Story (1995)". ', "\u201cHeat\u201d!", "Stra\u00dfe  X"]:
        once = normalize_title(title)
        assert normalize_title(once) == once
