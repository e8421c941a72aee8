"""Readers of generic tables: CSV / TSV / Parquet files ([`read_table`]) and `datasets.Dataset` objects, pandas
DataFrames or pyarrow Tables ([`read_hf_dataset`])."""

from __future__ import annotations

import codecs
import csv
import gzip
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

from ._common import (
    _BLOCK_SIZE,
    PathLike,
    _decode_line,
    _delimited_line_of_row,
    _existing_file,
    _finish,
    _id_column,
    _interactions_frame,
    _is_gzip,
    _items_frame,
    _iter_lines,
    _Locator,
    _merge_duplicate_items,
    _rating_column,
    _timestamp_column,
    check_encoding,
)

logger = logging.getLogger(__name__)

_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSION_SUFFIXES = (".gz",)


def _table_format(path: Path, file_format: str | None) -> str | None:
    if file_format is not None:
        fmt = file_format.lower().lstrip(".")
        if fmt not in ("csv", "tsv", "parquet"):
            raise ValueError(f"unknown file_format {file_format!r}; valid: 'csv', 'tsv', 'parquet'")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    return _TABLE_SUFFIXES.get(suffixes[-1]) if suffixes else None


def _csv_records(path: Path, sep: str, quoting: bool, encoding: str = "utf-8") -> Iterator[tuple[int, list[str]]]:
    """(last line number, fields) of each record of a CSV/TSV file, read with the `csv` module (slow path)."""
    state = {"line": 0}

    def lines() -> Iterator[str]:
        for number, raw in _iter_lines(path):
            state["line"] = number
            yield _decode_line(raw, path, number, encoding)

    reader = csv.reader(lines(), delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        for record in reader:
            yield state["line"], record
    except csv.Error as err:
        raise DataFormatError(f"malformed line: {err}", path=str(path), line=state["line"]) from None


def _csv_header(path: Path, sep: str, quoting: bool, encoding: str) -> list[str]:
    for _, record in _csv_records(path, sep, quoting, encoding):
        if record:
            record[0] = record[0].lstrip("\ufeff")
            return [name.strip() for name in record]
    raise DataFormatError("the file is empty (no header line)", path=str(path))


def _has_quotes(path: Path) -> bool:
    """Whether a quote occurs after the first (header) line."""
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        f.readline()
        while chunk := f.read(1 << 24):
            if b'"' in chunk:
                return True
    return False


def _csv_line_of_row(path: Path, sep: str, quoting: bool, encoding: str) -> Callable[[int], int]:
    """Line number of a data row of a CSV/TSV file: counted line by line when the file has no quotes (fast),
    else with the `csv` module (quoted fields may span lines)."""

    def line_of_row(row: int) -> int:
        if not (quoting and _has_quotes(path)):
            return _delimited_line_of_row(path, 1)(row)
        seen = -2  # the header is record -1
        for number, record in _csv_records(path, sep, quoting, encoding):
            if record:
                seen += 1
                if seen == row:
                    return number
        return -1

    return line_of_row


def _scan_csv(path: Path, sep: str, quoting: bool, num_fields: int, reason: str, encoding: str) -> DataFormatError:
    """The error for the first malformed record of a CSV/TSV file (the slow diagnostic path)."""
    for number, record in _csv_records(path, sep, quoting, encoding):
        if record and len(record) != num_fields:
            return DataFormatError(
                f"expected {num_fields} fields separated by {sep!r}, found {len(record)}", path=str(path), line=number
            )
    return DataFormatError(f"cannot be read: {reason}", path=str(path))


def _table_columns(path: Path, fmt: str, sep: str | None, encoding: str = "utf-8") -> list[str]:
    """The column names of a CSV/TSV/Parquet file."""
    if fmt == "parquet":
        try:
            return pq.read_schema(path).names
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataFormatError(f"not a readable Parquet file: {err}", path=str(path)) from None
    return _csv_header(path, sep or ("\t" if fmt == "tsv" else ","), fmt == "csv", encoding)


def _load_table(
    path: Path,
    fmt: str,
    sep: str | None,
    names: list[str],
    wanted: list[str],
    as_strings: list[str],
    what: str,
    multiline: bool = False,
    encoding: str = "utf-8",
) -> tuple[pa.Table, _Locator]:
    """Read the `wanted` columns of a CSV/TSV/Parquet file whose columns are `names` (`as_strings` ones as
    strings, others inferred), checking first that the file has them. `multiline`: quoted CSV values may
    span lines (item text; slower)."""
    if fmt == "parquet":
        _check_columns(names, wanted, path, what, line=None)
        try:
            table = pq.read_table(path, columns=wanted)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataFormatError(f"cannot read the Parquet file: {err}", path=str(path)) from None
        return table, _Locator(str(path))
    sep = sep or ("\t" if fmt == "tsv" else ",")
    quoting = fmt == "csv"
    _check_columns(names, wanted, path, what, line=1)
    reason = ""
    for strings in (as_strings, wanted):  # second try: everything as strings (type inference failed)
        try:
            table = pa_csv.read_csv(
                str(path),
                read_options=pa_csv.ReadOptions(block_size=_BLOCK_SIZE, encoding=encoding),
                parse_options=pa_csv.ParseOptions(
                    delimiter=sep, quote_char='"' if quoting else False, newlines_in_values=multiline and quoting
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=wanted,
                    column_types={name: pa.string() for name in strings},
                    strings_can_be_null=False,
                ),
            )
            return table, _Locator(str(path), _csv_line_of_row(path, sep, quoting, encoding))
        except (pa.ArrowException, ValueError, OSError) as err:
            reason = str(err)
    logger.info("fast read of %s failed (%s): scanning it line by line", path, reason[:300])
    raise _scan_csv(path, sep, quoting, len(names), reason, encoding)


def _check_columns(names: list[str], wanted: list[str], path: Path | str | None, what: str, line: int | None):
    for name in wanted:
        if name not in names:
            raise DataFormatError(
                f"{what} has no column {name!r}; its columns are {names}",
                path=None if path is None else str(path),
                line=line,
                field=name,
            )


def _interaction_mapping(columns: Mapping[str, str | None] | None, names: list[str]) -> dict[str, str]:
    """Our column -> the source's column. Unnamed `rating` / `timestamp` are taken when the source has a column of
    that name; `None` leaves one out."""
    unknown = set(columns or {}) - {"user_id", "item_id", "rating", "timestamp"}
    if unknown:
        raise ValueError(f"unknown interaction column(s) {sorted(unknown)}: use user_id, item_id, rating, timestamp")
    mapping: dict[str, str] = {}
    for ours in ("user_id", "item_id", "rating", "timestamp"):
        if columns is not None and ours in columns:
            if columns[ours] is not None:
                mapping[ours] = columns[ours]
        elif ours in ("user_id", "item_id") or ours in names:
            mapping[ours] = ours
    return mapping


def _interactions_from_arrow(
    table: pa.Table, mapping: Mapping[str, str], loc: _Locator, notes: list[str]
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for ours in ("user_id", "item_id"):
        columns[ours] = _id_column(table.column(mapping[ours]), loc, mapping[ours])
    if "rating" in mapping:
        columns["rating"] = _rating_column(table.column(mapping["rating"]), loc, mapping["rating"])
    if "timestamp" in mapping:
        columns["timestamp"] = _timestamp_column(table.column(mapping["timestamp"]), loc, mapping["timestamp"], notes)
    return _interactions_frame(columns)


def _item_mapping(item_columns: Mapping[str, str] | None, names: list[str], default_id: str | None) -> dict[str, str]:
    """Our item column -> the item file's column. The id column defaults to `item_id`, else to `default_id`
    (the interactions' item column); without `item_columns` every other column is text under its own name."""
    id_column = "item_id" if "item_id" in names or default_id not in names else default_id
    if item_columns is not None:
        return {"item_id": id_column, **item_columns}
    mapping = {"item_id": id_column}
    for name in names:
        if name != id_column:
            mapping[name] = name
    return mapping


def _items_from_arrow(table: pa.Table, mapping: Mapping[str, str], loc: _Locator, notes: list[str]) -> pd.DataFrame:
    ids = _id_column(table.column(mapping["item_id"]), loc, mapping["item_id"]).to_pylist()
    text = {ours: [clean_text(v) for v in table.column(theirs).to_pylist()] for ours, theirs in mapping.items()}
    del text["item_id"]
    return _merge_duplicate_items(_items_frame(ids, text), loc.path or "items", notes)


def read_table(
    path: PathLike,
    *,
    columns: Mapping[str, str | None] | None = None,
    item_path: PathLike | None = None,
    item_columns: Mapping[str, str] | None = None,
    file_format: str | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
) -> InteractionLog:
    """Read interactions (and optionally item text) from CSV, TSV or Parquet files.

    Args:
        path: The interactions file (`.csv`, `.tsv`, `.parquet`, `.pq`; gzip-compressed `.csv.gz`, `.tsv.gz` too).
        columns: Our column -> the file's column, e.g. `{"user_id": "uid", "item_id": "movie", "rating":
            "stars", "timestamp": "ts"}`. Unmapped names default to themselves; `rating` and `timestamp` are
            optional (taken when the file has them; map one to `None` to leave it out). Timestamps may be
            integers, floats or date/time strings (read as seconds since 1970-01-01 UTC).
        item_path: A file with item text, read the same way.
        item_columns: Our item column -> the item file's column: `item_id`, `title`, and any further text
            columns under the given names (only these are read). `item_id` defaults to the file's `item_id`
            column, else to the interactions' item column. Default: the id, `title` if present, and every other
            column as text under its own name.
        file_format: "csv", "tsv" or "parquet"; default from the file's extension.
        sep: The CSV separator (default "," for CSV, tab for TSV).
        encoding: The text encoding of CSV/TSV files (both files), e.g. "latin-1"; any Python codec that writes
            ASCII as ASCII. Parquet stores UTF-8 and takes none.

    Returns:
        An `InteractionLog`.

    Example:

    ```python
    >>> log = read_table("ratings.csv", columns={"user_id": "uid", "item_id": "movie", "timestamp": "ts"},
    ...                  item_path="movies.parquet")  # doctest: +SKIP
    ```
    """
    check_encoding(encoding)
    file = _existing_file(path, "interactions file")
    fmt = _table_format(file, file_format)
    if fmt is None:
        raise ValueError(f"cannot tell the format of {file} from its extension: pass file_format='csv'|'tsv'|'parquet'")
    if fmt == "parquet" and codecs.lookup(encoding).name != "utf-8":
        raise ValueError(f"{file} is Parquet, which stores text as UTF-8: give no encoding (got {encoding!r})")
    names = _table_columns(file, fmt, sep, encoding)
    mapping = _interaction_mapping(columns, names)
    wanted = list(dict.fromkeys(mapping.values()))
    ids = [mapping["user_id"], mapping["item_id"]]
    table, loc = _load_table(file, fmt, sep, names, wanted, ids, "the interactions file", encoding=encoding)
    notes: list[str] = []
    interactions = _interactions_from_arrow(table, mapping, loc, notes)
    items = None
    if item_path is not None:
        item_file = _existing_file(item_path, "item file")
        item_fmt = _table_format(item_file, None) or fmt
        item_sep = sep if item_fmt == fmt else None
        item_names = _table_columns(item_file, item_fmt, item_sep, encoding)
        item_mapping = _item_mapping(item_columns, item_names, mapping["item_id"])
        item_wanted = list(dict.fromkeys(item_mapping.values()))
        item_table, item_loc = _load_table(
            item_file,
            item_fmt,
            item_sep,
            item_names,
            item_wanted,
            item_wanted,
            "the item file",
            multiline=True,
            encoding=encoding,
        )
        items = _items_from_arrow(item_table, item_mapping, item_loc, notes)
    source = f"{fmt}: {file}" + (f" + {item_path}" if item_path is not None else "")
    return _finish(interactions, items, source, notes, file)


def _as_arrow(data: Any, what: str) -> pa.Table:
    """An arrow table of a `datasets.Dataset` (its selected rows), a pandas DataFrame or an arrow table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "with_format") and hasattr(data, "column_names"):
        table = data.with_format("arrow")[:]
        if isinstance(table, pa.Table):
            return table
    raise TypeError(f"{what} must be a datasets.Dataset, a pandas.DataFrame or a pyarrow.Table, not {type(data)}")


def read_hf_dataset(
    dataset: Any,
    *,
    columns: Mapping[str, str | None] | None = None,
    items: Any = None,
) -> InteractionLog:
    """Read interactions from a `datasets.Dataset` (a pandas DataFrame or pyarrow Table works too).

    Args:
        dataset: One row per interaction.
        columns: Our column -> the dataset's column, as in [`read_table`].
        items: Item text: a Dataset or DataFrame with an `item_id` column (or the interactions' item column's
            name), `title` if present, and every other column as a text column under its name (list values are
            joined with ", ").

    Returns:
        An `InteractionLog`. Errors name the 1-based row.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"uid": ["u1", "u1"], "item_id": ["a", "b"], "rating": [4.0, 5.0]})
    >>> read_hf_dataset(ds, columns={"user_id": "uid"}).num_interactions
    2
    ```
    """
    table = _as_arrow(dataset, "dataset")
    mapping = _interaction_mapping(columns, table.column_names)
    _check_columns(table.column_names, list(mapping.values()), "<dataset>", "the dataset", line=None)
    notes: list[str] = []
    interactions = _interactions_from_arrow(table, mapping, _Locator("<dataset>"), notes)
    item_frame = None
    if items is not None:
        item_table = _as_arrow(items, "items")
        item_mapping = _item_mapping(None, item_table.column_names, mapping["item_id"])
        _check_columns(item_table.column_names, list(item_mapping.values()), "<items>", "the items", line=None)
        item_frame = _items_from_arrow(item_table, item_mapping, _Locator("<items>"), notes)
    return _finish(interactions, item_frame, "datasets.Dataset", notes, "<dataset>")


__all__ = [
    "read_hf_dataset",
    "read_table",
]
