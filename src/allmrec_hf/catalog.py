"""`ItemCatalog`: the recommender's vocabulary of items, their ids and their text."""

from __future__ import annotations

import difflib
import json
import os
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CATALOG_FILE_NAME = "item_catalog.jsonl"
_RESERVED_FIELDS = ("index", "item_id", "title")


def normalize_title(text: str) -> str:
    """Normalise a title for matching: Unicode NFKC, case-folded, quotes and outer punctuation stripped,
    whitespace collapsed.

    >>> normalize_title('  "Toy Story (1995)". ')
    'toy story (1995)'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\"\u201c\u201d\u2018\u2019`]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(string.punctuation.replace("(", "").replace(")", "") + " ")


class _SafeFields(dict):
    def __missing__(self, key: str) -> str:
        return ""


class ItemCatalog:
    r"""
    The items a recommender knows: a dense integer index (1..N; 0 is padding, as in the CF model), the
    external item id (e.g. an ASIN), a title, and optional text fields such as a description.

    Args:
        titles: One title per item, in index order (item `i + 1` has `titles[i]`).
        item_ids: External ids, unique; default `"1"`, `"2"`, ...
        fields: Extra text fields by name (`{"description": [...]}`), each one value (or `None`) per item.

    Example:

    ```python
    >>> from allmrec_hf import ItemCatalog
    >>> catalog = ItemCatalog(["Toy Story (1995)", "Heat (1995)"], item_ids=["m1", "m2"],
    ...                       fields={"description": ["Toys come alive.", None]})
    >>> catalog.index("m2"), catalog.title(1), catalog.find_title("heat (1995)")
    (2, 'Toy Story (1995)', [2])
    >>> catalog.text(1, "{title}, {description}")
    'Toy Story (1995), Toys come alive.'
    ```
    """

    def __init__(
        self,
        titles: Sequence[str],
        item_ids: Sequence[str] | None = None,
        fields: Mapping[str, Sequence[Any]] | None = None,
    ):
        titles = list(titles)
        if item_ids is None:
            item_ids = [str(i) for i in range(1, len(titles) + 1)]
        item_ids = [str(item_id) for item_id in item_ids]
        if len(item_ids) != len(titles):  # checked first: the title error below names the item_id
            raise ValueError(f"got {len(item_ids)} item_ids for {len(titles)} titles.")
        for position, title in enumerate(titles):
            if not isinstance(title, str) or not title.strip():
                raise ValueError(
                    f"item at index {position + 1} (item_id {item_ids[position]!r}) "
                    f"has no title ({title!r}); every catalog item needs a non-empty title."
                )
        self._titles = titles
        self._item_ids = item_ids
        self._index_by_id: dict[str, int] = {}
        for position, item_id in enumerate(item_ids):
            if item_id in self._index_by_id:
                raise ValueError(
                    f"duplicate item_id {item_id!r} at indices {self._index_by_id[item_id]} and {position + 1}."
                )
            self._index_by_id[item_id] = position + 1
        self._fields: dict[str, list[Any]] = {}
        for name, values in (fields or {}).items():
            if name in _RESERVED_FIELDS:
                raise ValueError(
                    f"field name {name!r} is reserved; catalog fields cannot be called {_RESERVED_FIELDS}."
                )
            values = list(values)
            if len(values) != len(titles):
                raise ValueError(f"field {name!r} has {len(values)} values for {len(titles)} items.")
            self._fields[name] = values
        self._indices_by_title: dict[str, list[int]] = {}
        for position, title in enumerate(titles):
            self._indices_by_title.setdefault(normalize_title(title), []).append(position + 1)

    # ----------------------------------------------------------------------------------------------- lookups
    @property
    def num_items(self) -> int:
        """Number of real items (the largest index)."""
        return len(self._titles)

    def __len__(self) -> int:
        return len(self._titles)

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and not isinstance(index, bool) and 1 <= index <= len(self._titles)

    def __repr__(self) -> str:
        return f"ItemCatalog(num_items={self.num_items}, fields={list(self._fields)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemCatalog) and self.to_records() == other.to_records()

    @property
    def field_names(self) -> list[str]:
        return list(self._fields)

    @property
    def titles(self) -> list[str]:
        """All titles in index order (item `i` is at position `i - 1`)."""
        return list(self._titles)

    def check_index(self, index: int, what: str = "item") -> int:
        """Return `index` as an int, or raise `KeyError` naming it when it is not a catalog index."""
        if isinstance(index, bool):  # True == 1, but a flag is not an item
            raise KeyError(f"{what} {index!r} is not an integer catalog index.")
        if not isinstance(index, int):
            try:
                as_int = int(index)
            except (TypeError, ValueError):
                raise KeyError(f"{what} {index!r} is not an integer catalog index.") from None
            if as_int != index:
                raise KeyError(f"{what} {index!r} is not an integer catalog index.")
            index = as_int
        if not 1 <= index <= len(self._titles):
            raise KeyError(f"{what} {index} is not in the catalog (valid indices are 1..{len(self._titles)}).")
        return index

    def title(self, index: int) -> str:
        return self._titles[self.check_index(index) - 1]

    def item_id(self, index: int) -> str:
        return self._item_ids[self.check_index(index) - 1]

    def field(self, index: int, name: str) -> Any:
        if name not in self._fields:
            raise KeyError(f"catalog has no field {name!r} (fields: {self.field_names}).")
        return self._fields[name][self.check_index(index) - 1]

    def index(self, item_id: str) -> int:
        """The catalog index of an external item id."""
        try:
            return self._index_by_id[str(item_id)]
        except KeyError:
            raise KeyError(f"item_id {item_id!r} is not in the catalog.") from None

    def indices(self, item_ids: Iterable[str]) -> list[int]:
        return [self.index(item_id) for item_id in item_ids]

    def find_title(self, title: str) -> list[int]:
        """Indices whose normalised title equals the normalised `title` (several when titles repeat)."""
        return list(self._indices_by_title.get(normalize_title(title), []))

    def closest_titles(self, title: str, n: int = 5) -> list[str]:
        """Up to `n` catalog titles closest to `title` (for error messages on unknown titles)."""
        matches = difflib.get_close_matches(normalize_title(title), list(self._indices_by_title), n=n, cutoff=0.3)
        return [self._titles[self._indices_by_title[match][0] - 1] for match in matches]

    def check_text_template(self, template: str, what: str = "item text template") -> None:
        """Refuse a `text` template that names a field this catalog does not have, naming it and those it has."""
        known = {"title", "item_id", *self.field_names}
        for _, name, _, _ in string.Formatter().parse(template):
            if name is not None and name not in known:
                raise ValueError(
                    f"{what} {template!r} names the field {{{name}}}, which the item catalog does not have (it has: "
                    f"{', '.join(sorted(known))})."
                )

    def text(self, index: int, template: str = "{title}, {description}") -> str:
        """Item text from `template` and the item's fields; missing fields render empty and the separators
        left dangling by them are removed."""
        index = self.check_index(index)
        values = _SafeFields({name: values[index - 1] for name, values in self._fields.items()})
        values["title"] = self._titles[index - 1]
        values["item_id"] = self._item_ids[index - 1]
        for name, value in list(values.items()):
            if value is None:
                values[name] = ""
            elif isinstance(value, (list, tuple)):
                values[name] = " ".join(str(part) for part in value if part)
        text = string.Formatter().vformat(template, (), values)
        text = re.sub(r"\s+", " ", text)
        text = re.sub(r"(\s*[,;:|-]\s*)+$", "", text.strip())
        text = re.sub(r"^(\s*[,;:|.-]\s*)+", "", text)
        text = re.sub(r"([,;:|])(\s*[,;:|])+", r"\1", text)
        return text.strip()

    # ------------------------------------------------------------------------------------------ serialisation
    def to_records(self) -> list[dict[str, Any]]:
        records = []
        for position, title in enumerate(self._titles):
            record = {"index": position + 1, "item_id": self._item_ids[position], "title": title}
            for name, values in self._fields.items():
                record[name] = values[position]
            records.append(record)
        return records

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], source: str = "records") -> ItemCatalog:
        """Build from dicts with `title` (required), `item_id` and any other fields. When records carry an
        `index`, they must be exactly 1..N (in any order)."""
        records = list(records)
        if any("index" in record for record in records):
            by_index: dict[int, Mapping[str, Any]] = {}
            for line, record in enumerate(records, 1):
                if "index" not in record:
                    raise ValueError(f"{source}: record {line} has no 'index' while others do.")
                index = record["index"]
                if (
                    not isinstance(index, int)
                    or isinstance(index, bool)
                    or index in by_index
                    or not 1 <= index <= len(records)
                ):
                    raise ValueError(
                        f"{source}: record {line} has index {index!r}; "
                        f"indices must be unique integers 1..{len(records)}."
                    )
                by_index[index] = record
            records = [by_index[i] for i in range(1, len(records) + 1)]
        field_names: list[str] = []
        for record in records:
            for name in record:
                if name not in _RESERVED_FIELDS and name not in field_names:
                    field_names.append(name)
        for line, record in enumerate(records, 1):
            if "title" not in record:
                raise ValueError(f"{source}: record {line} has no 'title' field.")
        return cls(
            titles=[record["title"] for record in records],
            item_ids=[record.get("item_id", str(i)) for i, record in enumerate(records, 1)],
            fields={name: [record.get(name) for record in records] for name in field_names},
        )

    def save(self, directory: str | os.PathLike) -> str:
        """Write `item_catalog.jsonl` (one JSON object per item) into `directory`; returns the file path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, CATALOG_FILE_NAME)
        tmp_path = path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8") as handle:
            for record in self.to_records():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp_path, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ItemCatalog:
        """Read a catalog from a `.jsonl` file or from a folder holding `item_catalog.jsonl`."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CATALOG_FILE_NAME)
        records = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from None
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}."
                    )
                records.append(record)
        return cls.from_records(records, source=path)


__all__ = ["CATALOG_FILE_NAME", "ItemCatalog", "normalize_title"]
