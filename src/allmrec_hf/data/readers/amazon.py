"""Readers of Amazon Review Data 2018 ([`read_amazon2018`]) and Amazon Reviews 2023 ([`read_amazon2023`]): JSON
lines, optionally gzip-compressed, with item metadata."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

from ._common import (
    _ARROW_KINDS,
    _BLOCK_SIZE,
    PathLike,
    _decode_line,
    _existing_file,
    _finish,
    _first_true,
    _interactions_frame,
    _is_gzip,
    _items_frame,
    _iter_lines,
)

logger = logging.getLogger(__name__)


def _json_value(value: Any, kind: str, path: Path, number: int, field: str) -> Any:
    """One field of a JSON line converted to `kind`, raising a `DataFormatError` naming it when it cannot be."""
    if kind == "id":
        if isinstance(value, (dict, list, bool)) or value == "":
            raise DataFormatError(f"not a usable id: {value!r}", path=str(path), line=number, field=field)
        return str(value)
    if kind == "float":
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        raise DataFormatError(f"not a number: {value!r}", path=str(path), line=number, field=field)
    # "int": an integer timestamp (integral floats and digit strings accepted)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise DataFormatError(f"not an integer timestamp: {value!r}", path=str(path), line=number, field=field)


def _scan_json_reviews(path: Path, fields: list[tuple[str, str, str]]) -> dict[str, list]:
    """Line-by-line read of JSON review lines (the slow path): raises at the first bad line or field."""
    out: dict[str, list] = {column: [] for _, column, _ in fields}
    for number, raw in _iter_lines(path):
        if not raw.strip():
            continue
        text = _decode_line(raw, path, number)
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"not valid JSON ({err.msg} at column {err.colno})", path=str(path), line=number
            ) from None
        if not isinstance(record, dict):
            raise DataFormatError(f"expected a JSON object, found {type(record).__name__}", path=str(path), line=number)
        for name, column, kind in fields:
            value = record.get(name)
            if value is None:
                reason = "missing field" if name not in record else "null value"
                raise DataFormatError(reason, path=str(path), line=number, field=name)
            out[column].append(_json_value(value, kind, path, number, name))
    return out


def _read_json_reviews(path: PathLike, fields: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Reviews from JSON lines: `fields` lists (name in the file, our column, kind "id" | "float" | "int").

    The fast path is `pyarrow.json.read_json` with an explicit schema; when it fails or finds missing or empty
    values the file is scanned line by line, which names the first bad line and field (or, when it finds
    nothing wrong, e.g. ratings written as strings, gives the rows itself)."""
    file = _existing_file(path, "review file")
    schema = pa.schema([(name, _ARROW_KINDS[kind]) for name, _, kind in fields])
    parse_options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        source = pa.input_stream(str(file), compression="gzip" if _is_gzip(file) else None)
        table = pa_json.read_json(
            source, read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE), parse_options=parse_options
        )
        table.validate(full=True)  # the JSON reader does not check that strings are valid UTF-8
    except (pa.ArrowException, ValueError, OSError) as err:
        reason = str(err)
    else:
        problems = []
        for name, _, kind in fields:
            column = table.column(name)
            if column.null_count or (kind == "id" and _first_true(pc.equal(column, "")) is not None):
                problems.append(name)
        if not problems:
            if table.num_rows == 0:
                raise DataFormatError("the review file is empty (no reviews)", path=str(file))
            return _interactions_frame({column: table.column(name) for name, column, _ in fields})
        reason = f"missing or empty values in {problems}"
    logger.info("fast JSON read of %s failed (%s): scanning it line by line", file, reason[:300])
    columns = _scan_json_reviews(file, fields)
    if not columns[fields[0][1]]:
        raise DataFormatError("the review file is empty (no reviews)", path=str(file))
    logger.warning("%s was read line by line (slow) because the fast JSON reader failed: %s", file, reason[:300])
    return pd.DataFrame(columns)


def _parse_object_line(text: str, path: Path, number: int) -> dict:
    """One metadata line: strict JSON, else a Python literal (`ast.literal_eval`, which evaluates no code)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataFormatError(
                f"neither JSON nor a Python dict literal ({json_error.msg} at column {json_error.colno})",
                path=str(path),
                line=number,
            ) from None
    if not isinstance(record, dict):
        raise DataFormatError(f"expected an object, found {type(record).__name__}", path=str(path), line=number)
    return record


def _joined(value: Any, sep: str) -> Any:
    """A list of strings joined with `sep` (for paragraphs); other values unchanged."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return sep.join(value)
    return value


def _read_json_metadata(
    path: PathLike, id_field: str, text_fields: Mapping[str, tuple[str, ...]], notes: list[str]
) -> pd.DataFrame:
    """Item metadata from JSON (or Python-literal) lines: `text_fields` maps our column to the file's keys,
    the first present one used. Repeated ids are merged (noted)."""
    file = _existing_file(path, "metadata file")
    records: dict[str, dict[str, str | None]] = {}
    repeated_rows, repeated_ids = 0, set()
    for number, raw in _iter_lines(file):
        if not raw.strip():
            continue
        record = _parse_object_line(_decode_line(raw, file, number), file, number)
        item = record.get(id_field)
        if item is None or isinstance(item, (dict, list)) or str(item).strip() == "":
            reason = "missing field" if id_field not in record else f"not a usable id: {item!r}"
            raise DataFormatError(reason, path=str(file), line=number, field=id_field)
        item = str(item)
        row = {}
        for column, keys in text_fields.items():
            value = next((record[key] for key in keys if record.get(key) not in (None, "", [])), None)
            row[column] = clean_text(_joined(value, " ") if column == "description" else value)
        old = records.get(item)
        if old is None:
            records[item] = row
        else:
            repeated_rows += 1
            repeated_ids.add(item)
            for column, value in row.items():
                if old[column] is None and value is not None:
                    old[column] = value
    if repeated_rows:
        note = (
            f"{file.name}: {repeated_rows + len(repeated_ids)} metadata lines for {len(repeated_ids)} repeated "
            "item id(s) merged into one row per item (the first non-empty value of each field kept)"
        )
        logger.warning(note)
        notes.append(note)
    ids = list(records)
    return _items_frame(ids, {column: [records[i][column] for i in ids] for column in text_fields})


def read_amazon2018(reviews_path: PathLike, meta_path: PathLike | None = None) -> InteractionLog:
    """Read Amazon Review Data (2018): reviews and, optionally, item metadata.

    Args:
        reviews_path: JSON lines (`.json` or `.json.gz`) with `reviewerID`, `asin`, `overall` (the rating) and
            `unixReviewTime` (seconds); other fields are ignored.
        meta_path: The category's `meta_*.json(.gz)`: one object per line, strict JSON or a Python dict
            literal (both occur), with `asin`, `title`, `description` (list or string), `category` (list;
            `categories` of the 2014 release also read) and `brand`.

    Returns:
        An `InteractionLog`; its items have the text columns `title`, `description`, `categories` and `brand`
        (items are the metadata's, repeated `asin` lines merged with a note).

    Example:

    ```python
    >>> log = read_amazon2018("Video_Games.json.gz", "meta_Video_Games.json.gz")  # doctest: +SKIP
    >>> list(log.items.columns)  # doctest: +SKIP
    ['item_id', 'title', 'description', 'categories', 'brand']
    ```
    """
    fields = [
        ("reviewerID", "user_id", "id"),
        ("asin", "item_id", "id"),
        ("overall", "rating", "float"),
        ("unixReviewTime", "timestamp", "int"),
    ]
    interactions = _read_json_reviews(reviews_path, fields)
    notes: list[str] = []
    items = None
    if meta_path is not None:
        text_fields = {
            "title": ("title",),
            "description": ("description",),
            "categories": ("category", "categories"),
            "brand": ("brand",),
        }
        items = _read_json_metadata(meta_path, "asin", text_fields, notes)
    source = f"amazon2018: {reviews_path}" + (f" + {meta_path}" if meta_path is not None else "")
    return _finish(interactions, items, source, notes, reviews_path)


def read_amazon2023(reviews_path: PathLike, meta_path: PathLike | None = None) -> InteractionLog:
    """Read Amazon Reviews 2023: reviews and, optionally, item metadata.

    Args:
        reviews_path: JSON lines (plain or gzip) with `user_id`, `parent_asin` (the item id), `rating` and
            `timestamp` (milliseconds, kept as they are); other fields are ignored.
        meta_path: Metadata JSON lines with `parent_asin`, `title`, `description` (list), `features` (list) and
            `categories` (list).

    Returns:
        An `InteractionLog`; its items have the text columns `title`, `description`, `features` and
        `categories`.

    Example:

    ```python
    >>> log = read_amazon2023("All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl.gz")  # doctest: +SKIP
    ```
    """
    fields = [
        ("user_id", "user_id", "id"),
        ("parent_asin", "item_id", "id"),
        ("rating", "rating", "float"),
        ("timestamp", "timestamp", "int"),
    ]
    interactions = _read_json_reviews(reviews_path, fields)
    notes: list[str] = []
    items = None
    if meta_path is not None:
        text_fields = {
            "title": ("title",),
            "description": ("description",),
            "features": ("features",),
            "categories": ("categories",),
        }
        items = _read_json_metadata(meta_path, "parent_asin", text_fields, notes)
    source = f"amazon2023: {reviews_path}" + (f" + {meta_path}" if meta_path is not None else "")
    return _finish(interactions, items, source, notes, reviews_path)


__all__ = [
    "read_amazon2018",
    "read_amazon2023",
]
