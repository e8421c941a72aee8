"""Readers of RecBole atomic files ([`read_recbole`]) and of the MovieLens-100k sample bundled with the `recbole`
wheel ([`read_movielens_100k`])."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np
import pandas as pd

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

from ._common import (
    PathLike,
    _decode_file,
    _decode_line,
    _delimited_line_of_row,
    _existing_file,
    _finish,
    _float_times_to_int,
    _interactions_frame,
    _items_frame,
    _iter_lines,
    _Locator,
    _merge_duplicate_items,
    _read_bytes,
    _read_delimited,
    check_encoding,
)

_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_RECBOLE_TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
_RECBOLE_RENAMES = {"class": "genres"}
_YEAR = re.compile(r"\d{4}")


def _recbole_header(path: Path, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """The typed header of a RecBole atomic file: [(name, type)]."""
    for number, raw in _iter_lines(path):
        line = _decode_line(raw, path, number, encoding).rstrip("\r\n")
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


def _delimited_utf8(file: Path, fields: list[tuple[str, str]], encoding: str) -> dict:
    """`_read_delimited` of a tab-separated file with a header line, in any ASCII-compatible `encoding`."""
    if codecs.lookup(encoding).name == "utf-8":
        return _read_delimited(file, fields, sep="\t", header_lines=1)
    raw = _read_bytes(file)
    utf8 = _decode_file(raw, file, encoding)[0].encode("utf-8")
    return _read_delimited(file, fields, sep="\t", header_lines=1, data=utf8, original=raw, encoding=encoding)


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
    file: Path,
    user_field: str,
    item_field: str,
    rating_field: str | None,
    timestamp_field: str | None,
    notes: list,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    header = _recbole_header(file, encoding)
    names = [name for name, _ in header]
    _require_field(names, user_field, file)
    _require_field(names, item_field, file)
    wanted = {user_field: ("user_id", "id"), item_field: ("item_id", "id")}
    if rating_field is not None and rating_field in names:
        wanted[rating_field] = ("rating", "float")
    if timestamp_field is not None and timestamp_field in names:
        wanted[timestamp_field] = ("timestamp", "float")
    fields = [wanted.get(name, (name, "skip")) for name in names]
    columns = _delimited_utf8(file, fields, encoding)
    if "timestamp" in columns:
        values = columns["timestamp"].to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            loc = _Locator(str(file), _delimited_line_of_row(file, 1))
            raise loc.error(int(np.flatnonzero(~finite)[0]), "not a usable timestamp", timestamp_field)
        columns["timestamp"] = _float_times_to_int(values, f"{file.name}, {timestamp_field!r}", notes)
    return _interactions_frame(columns)


def _read_recbole_items(
    file: Path, item_field: str, title_field: str | None, notes: list[str], encoding: str = "utf-8"
) -> pd.DataFrame:
    """Items of a RecBole `.item` file: title from `title_field` (default: the first of title, movie_title,
    item_name, name present), other token / token_seq fields as text columns (`class` renamed `genres`, its
    space-separated tokens joined with ", ")."""
    header = _recbole_header(file, encoding)
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
    columns = _delimited_utf8(file, fields, encoding)
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
    encoding: str = "utf-8",
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
        encoding: The files' text encoding, e.g. "latin-1" (any Python codec that writes ASCII as ASCII).

    Returns:
        An `InteractionLog`; items have `title` and the `.item` file's other token / token_seq fields as text
        columns under their names, except `class`, which becomes `genres` (", "-joined tokens).

    Example:

    ```python
    >>> log = read_recbole("dataset/ml-1m")  # doctest: +SKIP
    ```
    """
    check_encoding(encoding)
    folder, name = _locate_recbole(path, dataset_name)
    inter_file = _existing_file(folder / f"{name}.inter", "RecBole .inter file")
    notes: list[str] = []
    interactions = _read_recbole_interactions(
        inter_file, user_field, item_field, rating_field, timestamp_field, notes, encoding
    )
    item_file = folder / f"{name}.item"
    items = _read_recbole_items(item_file, item_field, title_field, notes, encoding) if item_file.is_file() else None
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


__all__ = [
    "read_movielens_100k",
    "read_recbole",
]
