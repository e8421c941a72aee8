"""Helpers shared by the readers: reading plain or gzip-compressed files line by line, decoding text, naming
the line of a bad row ([`_Locator`]), checking and converting id / rating / timestamp columns, building the
interaction and item frames, merging repeated item rows, the vectorised read of delimited files without
quoting, and [`_finish`], which turns the frames into an [`InteractionLog`]."""

from __future__ import annotations

import codecs
import gzip
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from allmrec_hf.data.log import DataFormatError, InteractionLog

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


_ARROW_KINDS = {"id": pa.string(), "text": pa.string(), "float": pa.float64(), "int": pa.int64()}
_BLOCK_SIZE = 1 << 24  # 16 MiB: Amazon review lines can be long
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # a decimal number, as text


# ================================================================================================ files
def _existing_file(path: PathLike, what: str = "file") -> Path:
    """`path` as a `Path`, after checking that it is a file (FileNotFoundError naming it otherwise)."""
    file = Path(path)
    if file.is_dir():
        raise DataFormatError(f"expected the {what}, found a folder", path=str(file))
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


_ENCODING_HINT = "give the file's encoding (encoding='latin-1'; prepare_data.py --encoding latin-1) or convert the file"


def check_encoding(encoding: str) -> str:
    """`encoding` when Python knows it and it writes ASCII as ASCII (the readers split lines and fields on bytes);
    a ValueError naming it otherwise.

    >>> check_encoding("latin-1")
    'latin-1'
    >>> check_encoding("utf-16")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: encoding 'utf-16' does not write ASCII as single bytes ...: convert the file to UTF-8
    """
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if "\n,\t:".encode(encoding) != b"\n,\t:":
        raise ValueError(
            f"encoding {encoding!r} does not write ASCII as single bytes (lines and separators cannot be found): "
            "convert the file to UTF-8"
        )
    return encoding


def _decode_line(raw: bytes, path: Path, number: int, encoding: str = "utf-8") -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataFormatError(
            f"not valid {encoding} text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); {_ENCODING_HINT}",
            path=str(path),
            line=number,
        ) from None


def _decode_error(data: bytes, err: UnicodeDecodeError, path: Path, encoding: str) -> DataFormatError:
    """A `DataFormatError` naming the line and column of a decoding error in a whole file's bytes."""
    line = data.count(b"\n", 0, err.start) + 1
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return DataFormatError(
        f"not valid {encoding} text (byte 0x{data[err.start]:02x} at column {column}); {_ENCODING_HINT}",
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
    if len(column) == 0:
        raise DataFormatError("the file has no rows (a header and nothing else)", path=loc.path)
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
