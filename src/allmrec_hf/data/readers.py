"""Readers of public recommendation data formats, each returning an [`InteractionLog`].

Supported formats (see [`read_log`] for the names):

- Amazon Review Data 2018 ([`read_amazon2018`]) and Amazon Reviews 2023 ([`read_amazon2023`]): JSON lines,
  optionally gzip-compressed, with item metadata;
- MovieLens raw folders ([`read_movielens`]): ml-100k (`u.data`, `u.item`), ml-1m / ml-10m (`ratings.dat`,
  `movies.dat`) and ml-latest (`ratings.csv`, `movies.csv`); the MovieLens-100k sample bundled with the
  `recbole` wheel ([`read_movielens_100k`]);
- RecBole atomic files ([`read_recbole`]) and UniSRec-style processed sets ([`read_unisrec`]);
- generic CSV / TSV / Parquet tables ([`read_table`]) and `datasets.Dataset` objects ([`read_hf_dataset`]).

Interactions are read with vectorised parsers (`pyarrow`); only when that fast path fails, or finds missing or
unparsable values, is the file scanned line by line to name the first bad line and field in a
[`DataFormatError`]. Item text is cleaned with [`clean_text`]; nothing is dropped here (items without a title
keep `title=None`).

Example:

```python
>>> from allmrec_hf.data.readers import read_log
>>> log = read_log("ml-100k")  # doctest: +SKIP
>>> log.num_interactions, log.items.loc[0, "title"]  # doctest: +SKIP
(100000, 'Toy Story (1995)')
```
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

READER_FORMATS = ("amazon2018", "amazon2023", "movielens", "ml-100k", "recbole", "unisrec", "csv", "parquet")
"""The format names [`read_log`] accepts."""

MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The 19 genres of ml-100k's `u.item` flags, in order (used when the folder has no `u.genre`)."""

_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_RECBOLE_TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
_RECBOLE_RENAMES = {"class": "genres"}
_ARROW_KINDS = {"id": pa.string(), "text": pa.string(), "float": pa.float64(), "int": pa.int64()}
_BLOCK_SIZE = 1 << 24  # 16 MiB: Amazon review lines can be long
_YEAR = re.compile(r"\d{4}")
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # a decimal number, as text


# ================================================================================================ files
def _existing_file(path: PathLike, what: str = "file") -> Path:
    """`path` as a `Path`, after checking that it is a file (FileNotFoundError naming it otherwise)."""
    file = Path(path)
    if file.is_dir():
        raise DataFormatError(f"expected a {what}, found a folder", path=str(file))
    if not file.is_file():
        raise FileNotFoundError(f"{what} not found: {file}")
    return file


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip-compressed."""
    if _is_gzip(path):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as err:
            raise DataFormatError(f"cannot decompress: {err}", path=str(path)) from None
    return path.read_bytes()


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) of a plain or gzip-compressed file."""
    opener = gzip.open if _is_gzip(path) else open
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                yield number, raw
    except (OSError, EOFError) as err:
        raise DataFormatError(
            f"cannot read (corrupt compressed data?): {err}", path=str(path), line=number + 1
        ) from None


def _decode_line(raw: bytes, path: Path, number: int, encoding: str = "utf-8") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"not valid {encoding} text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "give the file's encoding or convert the file",
            path=str(path),
            line=number,
        ) from None


def _decode_error(data: bytes, err: UnicodeDecodeError, path: Path, encoding: str) -> DataFormatError:
    """A `DataFormatError` naming the line and column of a decoding error in a whole file's bytes."""
    line = data.count(b"\n", 0, err.start) + 1
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return DataFormatError(
        f"not valid {encoding} text (byte 0x{data[err.start]:02x} at column {column}); "
        "give the file's encoding (e.g. encoding='latin-1') or convert the file",
        path=str(path),
        line=line,
    )


def _decode_file(data: bytes, path: Path, encoding: str) -> tuple[str, str]:
    """Decode a whole file: `encoding="auto"` tries UTF-8 strictly, then latin-1 (logged); an explicit encoding
    is used as given and a failure names the line. Returns (text, encoding used)."""
    if encoding == "auto":
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            logger.info("%s is not valid UTF-8: read as latin-1", path)
            return data.decode("latin-1"), "latin-1"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise _decode_error(data, err, path, encoding) from None
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    logger.info("%s read as %s", path, encoding)
    return text, encoding


def _text_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of decoded text, skipping blank lines."""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


# ================================================================================================ locations
class _Locator:
    """Names where data row `row` (0-based, header excluded) of a source is, for error messages: a line when
    `line_of_row` can tell, else the row number (Parquet files, in-memory tables)."""

    def __init__(self, path: str | None, line_of_row: Callable[[int], int] | None = None):
        self.path, self.line_of_row = path, line_of_row

    def error(self, row: int, message: str, field: str | None = None) -> DataFormatError:
        if self.line_of_row is not None:
            return DataFormatError(message, path=self.path, line=self.line_of_row(row), field=field)
        return DataFormatError(f"row {row + 1}: {message}", path=self.path, field=field)


def _delimited_line_of_row(path: Path, header_lines: int) -> Callable[[int], int]:
    """Line number of a data row of a file without quoting, where blank lines are skipped (as pyarrow does)."""

    def line_of_row(row: int) -> int:
        data = np.frombuffer(_read_bytes(path), dtype=np.uint8)
        ends = np.flatnonzero(data == 10)
        if len(data) and data[-1] != 10:
            ends = np.append(ends, len(data))
        starts = np.concatenate([[0], ends[:-1] + 1])
        size = ends - starts
        blank = (size == 0) | ((size == 1) & (data[np.minimum(starts, max(len(data) - 1, 0))] == 13))
        numbers = np.arange(1, len(ends) + 1)
        data_lines = numbers[(numbers > header_lines) & ~blank]
        return int(data_lines[row]) if row < len(data_lines) else len(ends) + 1

    return line_of_row


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value of a boolean array (nulls count as false), or None."""
    index = pc.index(pc.fill_null(mask, False), True).as_py()
    return None if index < 0 else index


# ================================================================================================ values
def _check_value(value: str, kind: str, path: Path, number: int, field: str) -> None:
    """Raise when one text field of a delimited file cannot be read as `kind`."""
    if kind == "text":
        return
    if not value.strip():
        raise DataFormatError("empty value", path=str(path), line=number, field=field)
    if kind == "float":
        try:
            float(value)
        except ValueError:
            raise DataFormatError(f"not a number: {value!r}", path=str(path), line=number, field=field) from None
    elif kind == "int":
        try:
            int(value)
        except ValueError:
            raise DataFormatError(f"not an integer: {value!r}", path=str(path), line=number, field=field) from None


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


def _float_times_to_int(values: np.ndarray, what: str, notes: list[str]) -> np.ndarray:
    """Float timestamps as int64: unchanged when all are whole numbers, else x1000 and rounded (noted)."""
    if np.all(np.floor(values) == values):
        return values.astype(np.int64)
    note = f"{what}: fractional timestamps multiplied by 1000 and rounded to integers"
    logger.info(note)
    notes.append(note)
    return np.round(values * 1000.0).astype(np.int64)


def _id_column(column: pa.ChunkedArray, loc: _Locator, field: str) -> pa.ChunkedArray:
    """An id column as strings, raising at the first missing or empty id."""
    if pa.types.is_floating(column.type):
        whole = pc.equal(pc.floor(column), column)
        bad = _first_true(pc.invert(whole))
        if bad is not None:
            raise loc.error(bad, f"not a usable id: {column[bad].as_py()!r}", field)
        column = pc.cast(column, pa.int64())
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataFormatError(
                f"ids of type {column.type} cannot be read: {err}", path=loc.path, field=field
            ) from None
    bad = _first_true(pc.is_null(column))
    if bad is None:
        bad = _first_true(pc.equal(pc.utf8_trim_whitespace(column), ""))
    if bad is not None:
        raise loc.error(bad, "missing (empty) id", field)
    return column


def _rating_column(column: pa.ChunkedArray, loc: _Locator, field: str) -> np.ndarray:
    """Ratings as float64; missing ones (null, empty text) become NaN, unparsable ones raise."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        return pc.cast(column, pa.float64()).to_numpy()
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataFormatError(f"ratings of type {column.type}, expected numbers", path=loc.path, field=field)
    try:
        return pc.cast(column, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        pass
    stripped = pc.utf8_trim_whitespace(column)
    usable = pc.or_(pc.equal(stripped, ""), pc.match_substring_regex(stripped, _NUMBER))  # empty: no rating
    row = _first_true(pc.invert(usable))
    if row is not None:
        raise loc.error(row, f"not a number: {column[row].as_py()!r}", field)
    numbers = pd.to_numeric(stripped.to_pandas().replace("", None), errors="coerce")
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _timestamp_column(column: pa.ChunkedArray, loc: _Locator, field: str, notes: list[str]) -> np.ndarray:
    """Timestamps as int64: integers as they are, whole floats cast, dates and date/time strings (ISO 8601
    first, then any format pandas recognises) as seconds since 1970-01-01 UTC. Missing or unparsable ones
    raise, naming the row's line."""
    bad = _first_true(pc.is_null(column))
    if bad is not None:
        raise loc.error(bad, "missing timestamp", field)
    kind = column.type
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.int64()).to_numpy()
    if pa.types.is_floating(kind):
        values = pc.cast(column, pa.float64()).to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise loc.error(row, f"not a usable timestamp: {values[row]!r}", field)
        return _float_times_to_int(values, f"{loc.path}, {field!r}", notes)
    if pa.types.is_timestamp(kind):
        return np.floor_divide(pc.cast(column, pa.int64()).to_numpy(), _UNIT_PER_SECOND[kind.unit])
    if pa.types.is_date32(kind):
        return pc.cast(column, pa.int32()).to_numpy().astype(np.int64) * 86_400
    if pa.types.is_date64(kind):
        return np.floor_divide(pc.cast(column, pa.int64()).to_numpy(), 1000)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataFormatError(f"timestamps of type {kind}, expected numbers or dates", path=loc.path, field=field)
    stripped = pc.utf8_trim_whitespace(column)
    bad = _first_true(pc.equal(stripped, ""))
    if bad is not None:
        raise loc.error(bad, "missing timestamp", field)
    for number_type in (pa.int64(), pa.float64()):
        try:
            values = pc.cast(stripped, number_type).to_numpy()
        except pa.ArrowInvalid:
            continue
        if number_type == pa.int64():
            return values
        return _timestamp_column(pa.chunked_array([values]), loc, field, notes)
    if pc.match_substring_regex(stripped[:1], _NUMBER).to_pylist() == [True]:  # numbers (the first one is)
        row = _first_true(pc.invert(pc.match_substring_regex(stripped, _NUMBER)))
        if row is not None:
            raise loc.error(row, f"not a number or a date/time: {column[row].as_py()!r}", field)
        numbers = pd.to_numeric(stripped.to_pandas(), errors="coerce")  # e.g. numbers too large for arrow
        return _timestamp_column(pa.chunked_array([numbers.to_numpy(dtype=np.float64)]), loc, field, notes)
    return _datetime_seconds(stripped.to_pandas(), column, loc, field)


def _datetime_seconds(text: pd.Series, column: pa.ChunkedArray, loc: _Locator, field: str) -> np.ndarray:
    """Date/time strings as seconds since 1970-01-01 UTC (naive ones taken as UTC): ISO 8601 first, then the
    format pandas infers from the first value, then each remaining value on its own (in chunks, so that the
    first unparsable value is found early)."""
    times = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    missing = np.flatnonzero(times.isna().to_numpy())
    if len(missing):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": handled below
            times.iloc[missing] = pd.to_datetime(text.iloc[missing], errors="coerce", utc=True)
        missing = np.flatnonzero(times.isna().to_numpy())
    for start in range(0, len(missing), 10_000):
        part = missing[start : start + 10_000]
        parsed = pd.to_datetime(text.iloc[part], format="mixed", errors="coerce", utc=True)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            row = int(part[bad[0]])
            raise loc.error(row, f"not a number or a date/time: {column[row].as_py()!r}", field)
        times.iloc[part] = parsed
    seconds = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


# ================================================================================================ frames
def _interactions_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """A frame of the given interaction columns (arrow arrays become pandas columns without copies to Python)."""
    data = {}
    for name, values in columns.items():
        data[name] = values.to_pandas() if isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    return pd.DataFrame(data)


def _items_frame(ids: list[str], text: Mapping[str, list]) -> pd.DataFrame:
    """An items frame with object columns (missing text stays `None`, not NaN)."""
    data = {"item_id": pd.Series(ids, dtype=object)}
    if "title" not in text:
        data["title"] = pd.Series([None] * len(ids), dtype=object)
    for name, values in text.items():
        data[name] = pd.Series(values, dtype=object)
    columns = ["item_id", "title"] + [name for name in data if name not in ("item_id", "title")]
    return pd.DataFrame(data)[columns]


def _merge_duplicate_items(items: pd.DataFrame, what: str, notes: list[str]) -> pd.DataFrame:
    """One row per item id: rows of a repeated id are merged, keeping each field's first non-empty value."""
    repeated = items["item_id"].duplicated(keep=False)
    if not repeated.any():
        return items
    num_ids = int(items.loc[repeated, "item_id"].nunique())
    num_rows = int(repeated.sum())
    merged = items.groupby("item_id", sort=False).first().reset_index()
    merged = merged.astype(object).where(merged.notna(), None)
    note = (
        f"{what}: {num_rows} metadata rows for {num_ids} repeated item id(s) merged into one row per item "
        "(the first non-empty value of each field kept)"
    )
    logger.warning(note)
    notes.append(note)
    return merged[list(items.columns)]


def _finish(
    interactions: pd.DataFrame, items: pd.DataFrame | None, source: str, notes: list[str], path: Path | str
) -> InteractionLog:
    if len(interactions) == 0:
        raise DataFormatError("the interactions file is empty (no interactions)", path=str(path))
    log = InteractionLog.from_frames(interactions, items, source=source, notes=notes)
    logger.info("read %r", log)
    return log


# ================================================================================================ JSON lines
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


# ================================================================================================ delimited
def _scan_delimited(
    data: bytes, path: Path, sep: str, fields: list[tuple[str, str]], header_lines: int, encoding: str, reason: str
) -> DataFormatError:
    """The error for the first bad line of a delimited file without quoting (the slow diagnostic path)."""
    for number, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        if number <= header_lines or not raw.strip():
            continue
        text = _decode_line(raw, path, number, encoding)
        parts = text.split(sep)
        if len(parts) != len(fields):
            return DataFormatError(
                f"expected {len(fields)} fields separated by {sep!r}, found {len(parts)}", path=str(path), line=number
            )
        for value, (name, kind) in zip(parts, fields, strict=True):
            _check_value(value, kind, path, number, name)
    return DataFormatError(f"cannot be read: {reason}", path=str(path))


def _read_delimited(
    path: Path,
    fields: list[tuple[str, str]],
    *,
    sep: str,
    header_lines: int = 0,
    data: bytes | None = None,
    original: bytes | None = None,
    original_sep: str | None = None,
    encoding: str = "utf-8",
) -> dict[str, pa.ChunkedArray]:
    """Vectorised read of a delimited file without quoting. `fields` lists (name, kind) for every field of a
    line, kind one of "id", "text", "float", "int" or "skip"; returns the named columns, not "skip" ones.

    `data` (UTF-8 bytes) is parsed instead of the file when given; `original`/`original_sep`/`encoding`
    describe the file as it is, for the line-by-line diagnostic scan run when the fast read fails or finds
    missing values."""
    names = [f"f{i}" for i in range(len(fields))]
    kept = {names[i]: (name, kind) for i, (name, kind) in enumerate(fields) if kind != "skip"}
    source = pa.BufferReader(data) if data is not None else str(path)
    try:
        table = pa_csv.read_csv(
            source,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=header_lines, block_size=_BLOCK_SIZE),
            parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: _ARROW_KINDS[kind] for n, (_, kind) in kept.items()},
                include_columns=list(kept),
                null_values=[""],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError, OSError) as err:
        reason = str(err)
    else:
        problems = []
        for n, (name, kind) in kept.items():
            column = table.column(n)
            if column.null_count or (kind == "id" and _first_true(pc.equal(column, "")) is not None):
                problems.append(name)
        if not problems:
            return {name: table.column(n) for n, (name, _) in kept.items()}
        reason = f"missing values in {problems}"
    logger.info("fast read of %s failed (%s): scanning it line by line", path, reason[:300])
    raw = original if original is not None else (data if data is not None else _read_bytes(path))
    for_scan = [(name, "text" if kind == "skip" else kind) for name, kind in fields]
    raise _scan_delimited(raw, path, original_sep or sep, for_scan, header_lines, encoding, reason)


# ================================================================================================ MovieLens
def _movielens_ratings(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    data = _read_bytes(path)
    if not data or data.isspace():
        raise DataFormatError("the ratings file is empty (no interactions)", path=str(path))
    text, used = _decode_file(data, path, encoding)
    utf8 = data if codecs.lookup(used).name in ("utf-8", "ascii") else text.encode("utf-8")
    del text
    fields = [("user_id", "id"), ("item_id", "id"), ("rating", "float"), ("timestamp", "int")]
    fast = utf8 if sep == "\t" else utf8.replace(sep.encode(), b"\t")
    columns = _read_delimited(path, fields, sep="\t", data=fast, original=data, original_sep=sep, encoding=used)
    return _interactions_frame(columns)


def _movielens_genre_names(folder: Path, encoding: str) -> tuple[str, ...]:
    file = folder / "u.genre"
    if not file.is_file():
        return MOVIELENS_GENRES
    text, _ = _decode_file(_read_bytes(file), file, encoding)
    names: dict[int, str] = {}
    for number, line in _text_lines(text):
        name, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit():
            raise DataFormatError("expected 'genre|index'", path=str(file), line=number)
        names[int(index)] = name
    return tuple(names[i] for i in sorted(names))


def _movielens_100k_items(folder: Path, encoding: str) -> pd.DataFrame:
    file = _existing_file(folder / "u.item", "MovieLens item file")
    genres = _movielens_genre_names(folder, encoding)
    text, _ = _decode_file(_read_bytes(file), file, encoding)
    ids, titles, item_genres = [], [], []
    for number, line in _text_lines(text):
        parts = line.split("|")
        if len(parts) < 5 + len(genres):
            raise DataFormatError(
                f"expected {5 + len(genres)} '|'-separated fields (id|title|release date|video release date|url|"
                f"{len(genres)} genre flags), found {len(parts)}",
                path=str(file),
                line=number,
            )
        flags = parts[-len(genres) :]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataFormatError(f"genre flags must be 0 or 1, found {flags}", path=str(file), line=number)
        if not parts[0].strip():
            raise DataFormatError("missing movie id", path=str(file), line=number, field="movie id")
        ids.append(parts[0].strip())
        titles.append(clean_text("|".join(parts[1 : len(parts) - len(genres) - 3])))
        item_genres.append(clean_text([g for g, flag in zip(genres, flags, strict=True) if flag == "1"]))
    return _items_frame(ids, {"title": titles, "genres": item_genres})


def _movielens_dat_items(file: Path, encoding: str) -> pd.DataFrame:
    text, _ = _decode_file(_read_bytes(file), file, encoding)
    ids, titles, item_genres = [], [], []
    for number, line in _text_lines(text):
        parts = line.split("::")
        if len(parts) < 3:
            raise DataFormatError(
                f"expected MovieID::Title::Genres, found {len(parts)} '::'-separated fields",
                path=str(file),
                line=number,
            )
        if not parts[0].strip():
            raise DataFormatError("missing movie id", path=str(file), line=number, field="MovieID")
        ids.append(parts[0].strip())
        titles.append(clean_text("::".join(parts[1:-1])))
        item_genres.append(_genre_list(parts[-1]))
    return _items_frame(ids, {"title": titles, "genres": item_genres})


def _genre_list(value: str) -> str | None:
    genres = [g for g in value.split("|") if g.strip() and g.strip() != "(no genres listed)"]
    return clean_text(genres)


def read_movielens(path: PathLike, encoding: str = "auto") -> InteractionLog:
    """Read a raw MovieLens folder.

    Recognised layouts: ml-100k (`u.data`: `user item rating timestamp`, tab-separated; `u.item`:
    `id|title|release date|video release date|url|19 genre flags`, genre names from `u.genre` when present),
    ml-1m / ml-10m (`ratings.dat`: `UserID::MovieID::Rating::Timestamp`; `movies.dat`:
    `MovieID::Title::Genres`, genres `|`-separated) and ml-latest (`ratings.csv`, `movies.csv` with headers;
    read as UTF-8).

    Args:
        path: The folder (or its ratings file).
        encoding: "auto" reads each file as UTF-8 when it is valid UTF-8 and as latin-1 otherwise (ml-100k and
            ml-1m are latin-1), logging the choice; any other value is used as given, and a file that does not
            decode raises a `DataFormatError` naming the line.

    Returns:
        An `InteractionLog` whose items have `title` (as in the file, e.g. "Toy Story (1995)") and `genres`
        (", "-joined).

    Example:

    ```python
    >>> log = read_movielens("ml-1m")  # doctest: +SKIP
    >>> log.items.loc[0, ["title", "genres"]].tolist()  # doctest: +SKIP
    ['Toy Story (1995)', "Animation, Children's, Comedy"]
    ```
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder not found: {folder}")
    notes: list[str] = []
    if (folder / "u.data").is_file():
        ratings_file = folder / "u.data"
        interactions = _movielens_ratings(ratings_file, "\t", encoding)
        items = _movielens_100k_items(folder, encoding) if (folder / "u.item").is_file() else None
    elif (folder / "ratings.dat").is_file():
        ratings_file = folder / "ratings.dat"
        interactions = _movielens_ratings(ratings_file, "::", encoding)
        movies = folder / "movies.dat"
        items = _movielens_dat_items(movies, encoding) if movies.is_file() else None
    elif (folder / "ratings.csv").is_file():
        ratings_file = folder / "ratings.csv"
        columns = {"user_id": "userId", "item_id": "movieId", "rating": "rating", "timestamp": "timestamp"}
        movies = folder / "movies.csv"
        log = read_table(
            ratings_file,
            columns=columns,
            item_path=movies if movies.is_file() else None,
            item_columns={"item_id": "movieId", "title": "title", "genres": "genres"},
        )
        if movies.is_file():
            genres = [None if g is None else _genre_list(g) for g in log.items["genres"]]
            log.items["genres"] = pd.Series(genres, index=log.items.index, dtype=object)
        log.source = f"movielens: {folder}"
        return log
    else:
        raise FileNotFoundError(
            f"{folder} holds no MovieLens ratings file (u.data, ratings.dat or ratings.csv were looked for)"
        )
    if items is not None:
        items = _merge_duplicate_items(items, f"{folder.name} items", notes)
    return _finish(interactions, items, f"movielens: {folder}", notes, ratings_file)


# ================================================================================================ RecBole
def _recbole_header(path: Path) -> list[tuple[str, str]]:
    """The typed header of a RecBole atomic file: [(name, type)]."""
    for number, raw in _iter_lines(path):
        line = _decode_line(raw, path, number).rstrip("\r\n")
        fields = []
        for part in line.split("\t"):
            name, sep, kind = part.rpartition(":")
            if not sep or not name or kind not in _RECBOLE_TYPES:
                raise DataFormatError(
                    f"not a RecBole header field 'name:type' with type in {list(_RECBOLE_TYPES)}",
                    path=str(path),
                    line=1,
                    field=part,
                )
            fields.append((name, kind))
        return fields
    raise DataFormatError("the file is empty (no header line)", path=str(path))


def _require_field(names: list[str], field: str, path: Path) -> None:
    if field not in names:
        raise DataFormatError(f"no such field; the header has {names}", path=str(path), line=1, field=field)


def _locate_recbole(path: PathLike, dataset_name: str | None) -> tuple[Path, str]:
    """(folder, dataset name) of RecBole files given the folder or the `.inter` file."""
    target = Path(path)
    if target.is_file():
        if target.suffix != ".inter":
            raise DataFormatError("expected a RecBole folder or '.inter' file", path=str(target))
        return target.parent, dataset_name or target.stem
    if not target.is_dir():
        raise FileNotFoundError(f"RecBole folder not found: {target}")
    if dataset_name is None:
        if (target / f"{target.name}.inter").is_file():
            dataset_name = target.name
        else:
            found = sorted(p.stem for p in target.glob("*.inter"))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"{target}: cannot tell the dataset: expected {target.name}.inter or a single '.inter' file, "
                    f"found {found or 'none'}; pass dataset_name"
                )
            dataset_name = found[0]
    return target, dataset_name


def _read_recbole_interactions(
    file: Path, user_field: str, item_field: str, rating_field: str | None, timestamp_field: str | None, notes: list
) -> pd.DataFrame:
    header = _recbole_header(file)
    names = [name for name, _ in header]
    _require_field(names, user_field, file)
    _require_field(names, item_field, file)
    wanted = {user_field: ("user_id", "id"), item_field: ("item_id", "id")}
    if rating_field is not None and rating_field in names:
        wanted[rating_field] = ("rating", "float")
    if timestamp_field is not None and timestamp_field in names:
        wanted[timestamp_field] = ("timestamp", "float")
    fields = [wanted.get(name, (name, "skip")) for name in names]
    columns = _read_delimited(file, fields, sep="\t", header_lines=1)
    if "timestamp" in columns:
        values = columns["timestamp"].to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            loc = _Locator(str(file), _delimited_line_of_row(file, 1))
            raise loc.error(int(np.flatnonzero(~finite)[0]), "not a usable timestamp", timestamp_field)
        columns["timestamp"] = _float_times_to_int(values, f"{file.name}, {timestamp_field!r}", notes)
    return _interactions_frame(columns)


def _read_recbole_items(file: Path, item_field: str, title_field: str | None, notes: list[str]) -> pd.DataFrame:
    """Items of a RecBole `.item` file: title from `title_field` (default: the first of title, movie_title,
    item_name, name present), other token / token_seq fields as text columns (`class` renamed `genres`, its
    space-separated tokens joined with ", ")."""
    header = _recbole_header(file)
    names = [name for name, _ in header]
    _require_field(names, item_field, file)
    if title_field is None:
        title_field = next((name for name in _RECBOLE_TITLE_FIELDS if name in names), None)
    elif title_field not in names:
        _require_field(names, title_field, file)
    fields = []
    for name, kind in header:
        if name == item_field:
            fields.append((name, "id"))
        elif kind in ("token", "token_seq"):
            fields.append((name, "text"))
        else:
            fields.append((name, "skip"))
    columns = _read_delimited(file, fields, sep="\t", header_lines=1)
    ids = columns.pop(item_field).to_pylist()
    text: dict[str, list] = {}
    if title_field is not None:
        text["title"] = [clean_text(v) for v in columns[title_field].to_pylist()]
    for name, values in columns.items():
        if name == title_field:
            continue
        if name in _RECBOLE_RENAMES:
            text[_RECBOLE_RENAMES[name]] = [clean_text(v.split()) for v in values.to_pylist()]
        else:
            text[name] = [clean_text(v) for v in values.to_pylist()]
    items = _items_frame(ids, text)
    return _merge_duplicate_items(items, file.name, notes)


def read_recbole(
    path: PathLike,
    dataset_name: str | None = None,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str | None = "rating",
    timestamp_field: str | None = "timestamp",
    title_field: str | None = None,
) -> InteractionLog:
    """Read RecBole atomic files: `<name>.inter` and, when present, `<name>.item`.

    Both are tab-separated with a typed header line (`user_id:token  item_id:token  rating:float
    timestamp:float`; types token, token_seq, float, float_seq).

    Args:
        path: The folder holding the files, or the `.inter` file itself.
        dataset_name: The files' base name; default the folder's name, or the folder's only `.inter` file.
        user_field, item_field: The header names of the user and item ids.
        rating_field, timestamp_field: The header names of the rating and time, used when present (whole float
            timestamps become int64; without timestamps the position in the file orders each user's items).
        title_field: The `.item` field holding titles; default the first of `title`, `movie_title`,
            `item_name`, `name` present.

    Returns:
        An `InteractionLog`; items have `title` and the `.item` file's other token / token_seq fields as text
        columns under their names, except `class`, which becomes `genres` (", "-joined tokens).

    Example:

    ```python
    >>> log = read_recbole("dataset/ml-1m")  # doctest: +SKIP
    ```
    """
    folder, name = _locate_recbole(path, dataset_name)
    inter_file = _existing_file(folder / f"{name}.inter", "RecBole .inter file")
    notes: list[str] = []
    interactions = _read_recbole_interactions(inter_file, user_field, item_field, rating_field, timestamp_field, notes)
    item_file = folder / f"{name}.item"
    items = _read_recbole_items(item_file, item_field, title_field, notes) if item_file.is_file() else None
    return _finish(interactions, items, f"recbole: {inter_file}", notes, inter_file)


def read_movielens_100k() -> InteractionLog:
    """Read the MovieLens-100k sample bundled with the `recbole` wheel (read in place; install it with
    `pip install --no-deps recbole==1.2.1`).

    Titles are composed as in the raw MovieLens files, `"{movie_title} ({release_year})"` (the bare title when
    the year is not a 4-digit year); `genres` come from the `class` field (", "-joined).

    Raises:
        OfflineModelUnavailableError: `recbole` is not installed.

    Example:

    ```python
    >>> log = read_movielens_100k()  # doctest: +SKIP
    >>> log.num_users, log.num_items, log.num_interactions  # doctest: +SKIP
    (943, 1682, 100000)
    ```
    """
    from allmrec_hf.offline_models import movielens_100k_path

    folder = Path(movielens_100k_path())
    notes: list[str] = []
    inter_file = _existing_file(folder / "ml-100k.inter", "RecBole .inter file")
    interactions = _read_recbole_interactions(inter_file, "user_id", "item_id", "rating", "timestamp", notes)
    items = _read_recbole_items(folder / "ml-100k.item", "item_id", "movie_title", notes)
    years = items.pop("release_year") if "release_year" in items.columns else [None] * len(items)
    titles = [
        None if title is None else (f"{title} ({year})" if year is not None and _YEAR.fullmatch(year) else title)
        for title, year in zip(items["title"], years, strict=True)
    ]
    items["title"] = pd.Series(titles, index=items.index, dtype=object)
    return _finish(interactions, items, f"ml-100k (recbole sample): {folder}", notes, inter_file)


# ================================================================================================ UniSRec
def _unisrec_rows(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, _Locator]:
    """One `.inter` file of a UniSRec set as flat arrays: (users per row, row lengths, flat item indices of
    each row's history followed by its target, the header-free row numbers of the flat items, locator)."""
    header = _recbole_header(file)
    names = [name for name, _ in header]
    for field in ("user_id", "item_id_list", "item_id"):
        _require_field(names, field, file)
    kinds = {"user_id": "id", "item_id_list": "text", "item_id": "id"}
    columns = _read_delimited(file, [(name, kinds.get(name, "skip")) for name in names], sep="\t", header_lines=1)
    users = columns["user_id"].to_numpy(zero_copy_only=False)
    targets = columns["item_id"].to_numpy(zero_copy_only=False)
    split = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(columns["item_id_list"])).combine_chunks()
    history = pc.list_flatten(split)
    parents = pc.list_parent_indices(split).to_numpy()
    keep = pc.not_equal(history, "").to_numpy(zero_copy_only=False)
    history = history.to_numpy(zero_copy_only=False)[keep]
    parents = parents[keep]
    num_rows = len(users)
    history_lengths = np.bincount(parents, minlength=num_rows)
    lengths = history_lengths + 1
    ends = np.cumsum(lengths)
    flat = np.empty(int(ends[-1]) if num_rows else 0, dtype=object)
    is_target = np.zeros(len(flat), dtype=bool)
    is_target[ends - 1] = True
    flat[is_target] = targets
    flat[~is_target] = history  # history items keep their row order (parents are sorted)
    rows = np.repeat(np.arange(num_rows), lengths)
    return users, lengths, flat, rows, _Locator(str(file), _delimited_line_of_row(file, 1))


def _read_index(file: Path, what: str) -> pd.Series:
    """A `<name>.item2index` / `.user2index` file (`id<TAB>index`, no header) as index -> id."""
    columns = _read_delimited(file, [(what, "id"), ("index", "id")], sep="\t")
    ids = columns[what].to_numpy(zero_copy_only=False)
    index = columns["index"].to_numpy(zero_copy_only=False)
    mapping = pd.Series(ids, index=pd.Index(index, dtype=object), dtype=object)
    repeated = mapping.index.duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise _Locator(str(file), _delimited_line_of_row(file, 0)).error(row, f"index {index[row]!r} repeated", "index")
    return mapping


def _unisrec_text(file: Path) -> pd.DataFrame:
    """Items of a UniSRec `<name>.text` file ("title. categories. brand. ")."""
    header = _recbole_header(file)
    names = [name for name, _ in header]
    if len(names) < 2:
        raise DataFormatError(f"expected the fields item_id and text, found {names}", path=str(file), line=1)
    text_data, _ = _decode_file(_read_bytes(file), file, "utf-8")
    ids, titles, categories, brands = [], [], [], []
    for number, line in _text_lines(text_data):
        if number == 1:
            continue
        item, sep, text = line.partition("\t")
        if not sep:
            raise DataFormatError("expected 'item_id<TAB>text'", path=str(file), line=number)
        if not item.strip():
            raise DataFormatError("missing item id", path=str(file), line=number, field=names[0])
        text = text.strip()
        if text.endswith("."):
            text = text[:-1]
        parts = text.rsplit(". ", 2)
        title, category, brand = parts if len(parts) == 3 else (text, None, None)
        ids.append(item.strip())
        titles.append(clean_text(title))
        categories.append(clean_text(category))
        brands.append(clean_text(brand))
    return _items_frame(ids, {"title": titles, "categories": categories, "brand": brands})


def read_unisrec(path: PathLike, dataset_name: str | None = None) -> InteractionLog:
    """Read a UniSRec-style processed set (e.g. the Amazon "Scientific" set).

    The folder holds `<name>.train.inter`, `<name>.valid.inter`, `<name>.test.inter` (header
    `user_id:token  item_id_list:token_seq  item_id:token`; each row a user, its history as space-separated
    0-based item indices and the next item), `<name>.item2index` (ASIN<TAB>index), optionally
    `<name>.user2index`, and `<name>.text` (ASIN<TAB>"title. categories. brand. ") or a RecBole `<name>.item`.

    Each user's full sequence is rebuilt from all its rows: every row is a window of the sequence ending at
    its target. Rows shorter than the longest row of all files are prefixes (history + target); the longest
    rows may have truncated histories (UniSRec keeps the last 50 items) and are placed one after the other in
    the order UniSRec writes them: train rows later in the file end earlier, then the valid row, then the test
    row.
    Without truncation the sequence is simply the longest row (normally the test row). Every row must agree
    with the rebuilt sequence (a `DataFormatError` names the first row that does not). Timestamps are
    positions in the sequence; item ids are ASINs, user ids those of `user2index` (else the indices).

    Returns:
        An `InteractionLog` whose items have `title`, `categories` and `brand` (None when the text has no
        ". "-separated parts).

    Example:

    ```python
    >>> log = read_unisrec("data/Scientific")  # doctest: +SKIP
    >>> log.num_users, log.num_interactions  # doctest: +SKIP
    (8442, 59384)
    ```
    """
    folder = Path(path)
    if folder.is_file():
        dataset_name = dataset_name or folder.name.split(".")[0]
        folder = folder.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"UniSRec folder not found: {folder}")
    if dataset_name is None:
        found = sorted({p.name.split(".")[0] for p in folder.glob("*.item2index")})
        if len(found) != 1:
            raise FileNotFoundError(
                f"{folder}: cannot tell the dataset: expected a single '<name>.item2index' file, found "
                f"{found or 'none'}; pass dataset_name"
            )
        dataset_name = found[0]
    inter_files = [folder / f"{dataset_name}.{split}.inter" for split in ("train", "valid", "test")]
    inter_files = [file for file in inter_files if file.is_file()]
    if not inter_files:
        raise FileNotFoundError(f"{folder} holds no {dataset_name}.train/valid/test.inter file")
    item2index = _existing_file(folder / f"{dataset_name}.item2index", "UniSRec item2index file")

    parts = [_unisrec_rows(file) for file in inter_files]
    users = np.concatenate([p[0] for p in parts])
    lengths = np.concatenate([p[1] for p in parts]).astype(np.int64)
    flat = np.concatenate([p[2] for p in parts])
    row_offsets = np.cumsum([0] + [len(p[0]) for p in parts])
    rows = np.concatenate([p[3] + offset for p, offset in zip(parts, row_offsets[:-1], strict=True)])
    file_rank = np.concatenate([np.full(len(p[0]), rank) for rank, p in enumerate(parts)])
    num_rows = len(users)
    if num_rows == 0:
        raise DataFormatError("the interactions files are empty (no rows)", path=str(inter_files[0]))

    def locate(row: int) -> tuple[_Locator, int]:
        part = int(np.searchsorted(row_offsets, row, side="right")) - 1
        return parts[part][4], row - int(row_offsets[part])

    ends = np.cumsum(lengths)
    starts = ends - lengths
    in_row = np.arange(len(flat)) - starts[rows]  # position of each flat item within its row

    def field_of(element: int) -> str:
        return "item_id" if in_row[element] == lengths[rows[element]] - 1 else "item_id_list"

    items_of_index = _read_index(item2index, "item")
    item_codes = items_of_index.index.get_indexer(flat)
    if (item_codes < 0).any():
        at = int(np.flatnonzero(item_codes < 0)[0])
        loc, local = locate(int(rows[at]))
        raise loc.error(local, f"item index {flat[at]!r} is not in {item2index.name}", field_of(at))

    # Place each row by the position of its target. Rows shorter than the longest row of all files are
    # prefixes: their target is at (length - 1). The longest rows may be truncated windows: sorted per user by
    # file (train < valid < test) and, within the train file, latest row first (UniSRec's order), they end at
    # consecutive positions from (longest length - 1) on.
    longest = int(lengths.max())
    user_codes, user_names = pd.factorize(users)
    target_position = lengths - 1
    window = np.flatnonzero(lengths == longest)
    order = window[np.lexsort((-window, file_rank[window], user_codes[window]))]
    rank = pd.Series(user_codes[order]).groupby(user_codes[order]).cumcount().to_numpy()
    target_position[order] += rank
    position = target_position[rows] - (lengths[rows] - 1) + in_row  # of each flat item in the user's sequence
    seq_lengths = pd.Series(target_position + 1).groupby(user_codes).max().sort_index().to_numpy()
    user_offsets = np.cumsum(seq_lengths) - seq_lengths
    slot = user_offsets[user_codes[rows]] + position
    sequence = np.full(int(seq_lengths.sum()), -1, dtype=np.int64)
    sequence[slot] = item_codes
    mismatch = np.flatnonzero(sequence[slot] != item_codes)
    if len(mismatch):
        at = int(mismatch[0])
        row = int(rows[at])
        loc, local = locate(row)
        raise loc.error(
            local,
            f"user {users[row]}'s rows disagree: item {flat[at]} at position {position[at] + 1} of the user's "
            f"sequence, where another row has {items_of_index.index[sequence[slot[at]]]}",
            field_of(at),
        )
    if (sequence < 0).any():  # cannot happen: windows placed as above leave no gaps
        raise DataFormatError("cannot rebuild the users' sequences (gaps)", path=str(inter_files[-1]))

    user_ids = np.asarray(user_names, dtype=object)
    user2index = folder / f"{dataset_name}.user2index"
    if user2index.is_file():
        users_of_index = _read_index(user2index, "user")
        codes = users_of_index.index.get_indexer(user_ids)
        if (codes < 0).any():
            code = int(np.flatnonzero(codes < 0)[0])
            loc, local = locate(int(np.flatnonzero(user_codes == code)[0]))
            raise loc.error(local, f"user index {user_ids[code]!r} is not in {user2index.name}", "user_id")
        user_ids = users_of_index.to_numpy()[codes]
    interactions = pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, seq_lengths),
            "item_id": items_of_index.to_numpy()[sequence],
            "timestamp": np.arange(len(sequence), dtype=np.int64) - np.repeat(user_offsets, seq_lengths),
        }
    )

    notes: list[str] = []
    text_file, item_file = folder / f"{dataset_name}.text", folder / f"{dataset_name}.item"
    if text_file.is_file():
        items = _merge_duplicate_items(_unisrec_text(text_file), text_file.name, notes)
    elif item_file.is_file():
        items = _read_recbole_items(item_file, "item_id", None, notes)
    else:
        items = None
        logger.warning("%s has no %s.text or .item file: items have no text", folder, dataset_name)
    return _finish(interactions, items, f"unisrec: {folder} ({dataset_name})", notes, inter_files[0])


# ================================================================================================ tables
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


def _csv_records(path: Path, sep: str, quoting: bool) -> Iterator[tuple[int, list[str]]]:
    """(last line number, fields) of each record of a CSV/TSV file, read with the `csv` module (slow path)."""
    state = {"line": 0}

    def lines() -> Iterator[str]:
        for number, raw in _iter_lines(path):
            state["line"] = number
            yield _decode_line(raw, path, number)

    reader = csv.reader(lines(), delimiter=sep, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        for record in reader:
            yield state["line"], record
    except csv.Error as err:
        raise DataFormatError(f"malformed line: {err}", path=str(path), line=state["line"]) from None


def _csv_header(path: Path, sep: str, quoting: bool) -> list[str]:
    for _, record in _csv_records(path, sep, quoting):
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


def _csv_line_of_row(path: Path, sep: str, quoting: bool) -> Callable[[int], int]:
    """Line number of a data row of a CSV/TSV file: counted line by line when the file has no quotes (fast),
    else with the `csv` module (quoted fields may span lines)."""

    def line_of_row(row: int) -> int:
        if not (quoting and _has_quotes(path)):
            return _delimited_line_of_row(path, 1)(row)
        seen = -2  # the header is record -1
        for number, record in _csv_records(path, sep, quoting):
            if record:
                seen += 1
                if seen == row:
                    return number
        return -1

    return line_of_row


def _scan_csv(path: Path, sep: str, quoting: bool, num_fields: int, reason: str) -> DataFormatError:
    """The error for the first malformed record of a CSV/TSV file (the slow diagnostic path)."""
    for number, record in _csv_records(path, sep, quoting):
        if record and len(record) != num_fields:
            return DataFormatError(
                f"expected {num_fields} fields separated by {sep!r}, found {len(record)}", path=str(path), line=number
            )
    return DataFormatError(f"cannot be read: {reason}", path=str(path))


def _table_columns(path: Path, fmt: str, sep: str | None) -> list[str]:
    """The column names of a CSV/TSV/Parquet file."""
    if fmt == "parquet":
        try:
            return pq.read_schema(path).names
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataFormatError(f"not a readable Parquet file: {err}", path=str(path)) from None
    return _csv_header(path, sep or ("\t" if fmt == "tsv" else ","), fmt == "csv")


def _load_table(
    path: Path,
    fmt: str,
    sep: str | None,
    names: list[str],
    wanted: list[str],
    as_strings: list[str],
    what: str,
    multiline: bool = False,
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
                read_options=pa_csv.ReadOptions(block_size=_BLOCK_SIZE),
                parse_options=pa_csv.ParseOptions(
                    delimiter=sep, quote_char='"' if quoting else False, newlines_in_values=multiline and quoting
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=wanted,
                    column_types={name: pa.string() for name in strings},
                    strings_can_be_null=False,
                ),
            )
            return table, _Locator(str(path), _csv_line_of_row(path, sep, quoting))
        except (pa.ArrowException, ValueError, OSError) as err:
            reason = str(err)
    logger.info("fast read of %s failed (%s): scanning it line by line", path, reason[:300])
    raise _scan_csv(path, sep, quoting, len(names), reason)


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

    Returns:
        An `InteractionLog`.

    Example:

    ```python
    >>> log = read_table("ratings.csv", columns={"user_id": "uid", "item_id": "movie", "timestamp": "ts"},
    ...                  item_path="movies.parquet")  # doctest: +SKIP
    ```
    """
    file = _existing_file(path, "interactions file")
    fmt = _table_format(file, file_format)
    if fmt is None:
        raise ValueError(f"cannot tell the format of {file} from its extension: pass file_format='csv'|'tsv'|'parquet'")
    names = _table_columns(file, fmt, sep)
    mapping = _interaction_mapping(columns, names)
    wanted = list(dict.fromkeys(mapping.values()))
    ids = [mapping["user_id"], mapping["item_id"]]
    table, loc = _load_table(file, fmt, sep, names, wanted, ids, "the interactions file")
    notes: list[str] = []
    interactions = _interactions_from_arrow(table, mapping, loc, notes)
    items = None
    if item_path is not None:
        item_file = _existing_file(item_path, "item file")
        item_fmt = _table_format(item_file, None) or fmt
        item_sep = sep if item_fmt == fmt else None
        item_names = _table_columns(item_file, item_fmt, item_sep)
        item_mapping = _item_mapping(item_columns, item_names, mapping["item_id"])
        item_wanted = list(dict.fromkeys(item_mapping.values()))
        item_table, item_loc = _load_table(
            item_file, item_fmt, item_sep, item_names, item_wanted, item_wanted, "the item file", multiline=True
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


# ================================================================================================ dispatcher
def read_log(
    format: str, path: PathLike | None = None, *, meta_path: PathLike | None = None, **kwargs: Any
) -> InteractionLog:
    """Read a data set by format name (one of `READER_FORMATS`).

    Args:
        format: "amazon2018", "amazon2023", "movielens", "ml-100k" (the recbole sample; no path), "recbole",
            "unisrec", "csv" (CSV or TSV, by extension) or "parquet".
        path: The file or folder.
        meta_path: Item metadata: the Amazon metadata file, or the item table of "csv" / "parquet".
        **kwargs: Passed to the reader (e.g. `encoding` for "movielens", `columns` for "csv").

    Example:

    ```python
    >>> read_log("amazon2018", "Beauty.json.gz", meta_path="meta_Beauty.json.gz")  # doctest: +SKIP
    >>> read_log("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown format 'nope'; valid formats: amazon2018, amazon2023, movielens, ml-100k, recbole, ...
    ```
    """
    key = str(format).strip().lower()
    if key not in READER_FORMATS:
        raise ValueError(f"unknown format {format!r}; valid formats: {', '.join(READER_FORMATS)}")
    if key == "ml-100k":
        if path is not None or meta_path is not None:
            raise ValueError("format 'ml-100k' reads the sample bundled with recbole: give no path")
        return read_movielens_100k(**kwargs)
    if path is None:
        raise ValueError(f"format {format!r} needs a path")
    if key == "amazon2018":
        return read_amazon2018(path, meta_path, **kwargs)
    if key == "amazon2023":
        return read_amazon2023(path, meta_path, **kwargs)
    if key in ("csv", "parquet"):
        file_format = kwargs.pop("file_format", None)
        if file_format is None and _table_format(Path(path), None) is None:
            file_format = key  # an unknown extension: read as the format says
        return read_table(path, item_path=meta_path, file_format=file_format, **kwargs)
    if meta_path is not None:
        raise ValueError(f"format {format!r} takes no meta_path (its item files are found beside the interactions)")
    reader = {"movielens": read_movielens, "recbole": read_recbole, "unisrec": read_unisrec}[key]
    return reader(path, **kwargs)


__all__ = [
    "MOVIELENS_GENRES",
    "READER_FORMATS",
    "read_amazon2018",
    "read_amazon2023",
    "read_hf_dataset",
    "read_log",
    "read_movielens",
    "read_movielens_100k",
    "read_recbole",
    "read_table",
    "read_unisrec",
]
