"""Reader of raw MovieLens folders ([`read_movielens`]): ml-100k (`u.data`, `u.item`), ml-1m / ml-10m
(`ratings.dat`, `movies.dat`) and ml-latest (`ratings.csv`, `movies.csv`)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

from ._common import (
    PathLike,
    _decode_file,
    _existing_file,
    _finish,
    _interactions_frame,
    _items_frame,
    _merge_duplicate_items,
    _read_bytes,
    _read_delimited,
    _text_lines,
)
from .table import read_table

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


__all__ = [
    "MOVIELENS_GENRES",
    "read_movielens",
]
