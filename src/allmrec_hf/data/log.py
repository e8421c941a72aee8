"""The common in-memory form every reader produces: an `InteractionLog` (interactions + item text)."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
"""Columns of `InteractionLog.interactions`, in this order."""


class DataFormatError(ValueError):
    """Bad input data. The message names the file, the line (1-based, counting a header line) and the field
    whenever they are known; they are also kept as attributes for programs.

    Example:

    ```python
    >>> str(DataFormatError("not a number: 'abc'", path="u.data", line=7, field="rating"))
    "u.data, line 7, field 'rating': not a number: 'abc'"
    ```
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(", ".join(where) + ": " + message if where else message)


class DataPreparationError(ValueError):
    """Preparation cannot go on (e.g. a filter removed every interaction); the message says which step did what."""


_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def clean_text(value: object) -> str | None:
    """Item text clean-up shared by all readers: HTML entities unescaped (also doubly escaped ones such as
    `&amp;quot;`), HTML tags removed, whitespace collapsed. Lists are joined with `", "`. Empty text gives `None`.

    >>> clean_text("  Tom &amp;amp; Jerry<br/>  the   movie ")
    'Tom & Jerry the movie'
    >>> clean_text(["Toys", "", "Games"]), clean_text("  "), clean_text(None)
    ('Toys, Games', None, None)
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [clean_text(v) for v in value]
        value = ", ".join(p for p in parts if p)
    text = str(value)
    for _ in range(3):  # Amazon metadata is sometimes escaped more than once
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return text or None


def _as_string_ids(column: pd.Series) -> pd.Series:
    """Ids as pandas' string dtype (Arrow-backed: compact and fast to factorise, unlike Python objects)."""
    return column.astype("str").reset_index(drop=True)


@dataclass
class InteractionLog:
    """Interactions and item text, as read from any supported format, before filtering and re-indexing.

    Attributes:
        interactions: A `pandas.DataFrame` with the columns of `INTERACTION_COLUMNS`: `user_id` and `item_id`
            (strings, the dataset's own ids), `rating` (float64, NaN where the format has no rating) and
            `timestamp` (int64 in any unit that orders a user's interactions in time; readers of formats
            without times use the position in the user's sequence). Row order is kept as a tie-breaker for
            equal timestamps.
        items: A `pandas.DataFrame` with `item_id` (string, unique), `title` (string or None) and any further
            text columns (e.g. `description`, `genres`, `brand`), already cleaned with `clean_text`. Items may
            be missing from it or lack a title; `prepare_dataset` applies the missing-title policy.
        source: What was read (format and paths), for reports.
        notes: What the reader did that a user should know (e.g. duplicate metadata rows merged).

    Example:

    ```python
    >>> import pandas as pd
    >>> log = InteractionLog.from_frames(
    ...     pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [2, 1]}),
    ...     pd.DataFrame({"item_id": ["a", "b"], "title": ["Heat", "Babe"]}), source="example")
    >>> log.num_users, log.num_interactions, log.interactions.dtypes["rating"]
    (1, 2, dtype('float64'))
    ```
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_frames(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        source: str = "",
        notes: list[str] | None = None,
    ) -> InteractionLog:
        """Build a log from frames with at least `user_id` and `item_id` (interactions) and `item_id` (items),
        coercing dtypes: ids to strings, `rating` to float64 (NaN if absent), `timestamp` to int64 (the row
        order within each user if absent)."""
        missing = [c for c in ("user_id", "item_id") if c not in interactions.columns]
        if missing:
            raise DataFormatError(f"interactions lack the column(s) {missing}", path=source or None)
        for column in ("user_id", "item_id", "timestamp"):  # else a cryptic error (or a NaN id) further on
            if column in interactions.columns:
                empty = np.flatnonzero(interactions[column].isna().to_numpy())
                if empty.size:
                    raise DataFormatError(
                        f"{empty.size} interaction(s) have no value (the first: row {empty[0]} of the frame)",
                        path=source or None,
                        field=column,
                    )
        frame = pd.DataFrame(
            {
                "user_id": _as_string_ids(interactions["user_id"]),
                "item_id": _as_string_ids(interactions["item_id"]),
            }
        )
        if "rating" in interactions.columns:
            frame["rating"] = pd.to_numeric(interactions["rating"]).astype("float64").to_numpy()
        else:
            frame["rating"] = np.nan
        if "timestamp" in interactions.columns:
            frame["timestamp"] = interactions["timestamp"].astype("int64").to_numpy()
        else:
            frame["timestamp"] = frame.groupby("user_id", sort=False).cumcount().astype("int64")
        if items is None:
            items = pd.DataFrame({"item_id": pd.unique(frame["item_id"]), "title": None})
        if "item_id" not in items.columns:
            raise DataFormatError("item metadata lacks the column 'item_id'", path=source or None)
        items = items.copy()
        items["item_id"] = items["item_id"].astype(str)
        if "title" not in items.columns:
            items["title"] = None
        return cls(frame, items.reset_index(drop=True), source=source, notes=list(notes or []))

    @property
    def num_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def num_items(self) -> int:
        return int(self.interactions["item_id"].nunique())

    @property
    def num_interactions(self) -> int:
        return len(self.interactions)

    def __repr__(self) -> str:
        return (
            f"InteractionLog(source={self.source!r}, users={self.num_users}, items={self.num_items}, "
            f"interactions={self.num_interactions}, item_text_columns={list(self.items.columns)})"
        )
