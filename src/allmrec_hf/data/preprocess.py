"""Filtering (rating threshold, k-core, missing titles), presets, re-indexing and chronological ordering.

Everything here works on integer codes with numpy, so a log of ten million interactions is prepared in seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .log import DataPreparationError, InteractionLog

logger = logging.getLogger(__name__)

KCORE_MODES = ("iterative", "one_pass", "none")
MISSING_TITLE_POLICIES = ("drop", "placeholder")
PLACEHOLDER_TITLE = "Item {item_id}"


@dataclass(frozen=True)
class PreparationPreset:
    """A dataset's filtering rules. `kcore="one_pass"` counts interactions per user and per item once (after the
    rating filter) and keeps the interactions whose user and item both reach `min_interactions`; this is what the
    A-LLMRec authors did, so a few users can end with fewer interactions than the threshold."""

    min_interactions: int = 0
    min_rating: float | None = None
    kcore: str = "one_pass"
    description: str = ""


PRESETS: dict[str, PreparationPreset] = {
    "movies_and_tv": PreparationPreset(5, None, "one_pass", "Amazon Movies_and_TV (paper: 5 interactions)"),
    "video_games": PreparationPreset(5, None, "one_pass", "Amazon Video_Games (paper: 5 interactions)"),
    "luxury_beauty": PreparationPreset(4, 3.0, "one_pass", "Amazon Luxury_Beauty (paper: 4 interactions, rating >= 3)"),
    "toys_and_games": PreparationPreset(
        4, 3.0, "one_pass", "Amazon Toys_and_Games (paper: 4 interactions, rating >= 3)"
    ),
    "ml-100k": PreparationPreset(0, None, "none", "MovieLens-100k (every user already has >= 20 ratings)"),
}
"""The paper's per-dataset rules (Table 2), by lower-case name; `get_preset` also accepts `Movies_and_TV` etc."""


def get_preset(name: str) -> PreparationPreset:
    """The preset called `name` (case-insensitive; `-` and `_` are interchangeable except in `ml-100k`).

    >>> get_preset("Luxury_Beauty").min_rating
    3.0
    """
    key = name.strip().lower()
    for candidate in (key, key.replace("-", "_"), key.replace("_", "-")):
        if candidate in PRESETS:
            return PRESETS[candidate]
    raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")


@dataclass
class FilterStep:
    """What one preparation step did, for logs and the saved metadata."""

    name: str
    interactions_before: int
    interactions_after: int
    users_before: int
    users_after: int
    items_before: int
    items_after: int
    detail: str = ""

    @property
    def removed(self) -> int:
        return self.interactions_before - self.interactions_after

    def describe(self) -> str:
        text = (
            f"{self.name}: removed {self.removed:,} of {self.interactions_before:,} interactions "
            f"(users {self.users_before:,} -> {self.users_after:,}, items {self.items_before:,} -> "
            f"{self.items_after:,})"
        )
        return f"{text}; {self.detail}" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "removed": self.removed}


@dataclass
class EncodedLog:
    """A filtered log as integer codes, sorted by user and then time (stable for equal timestamps).

    `users[k]` / `items[k]` are 0-based codes into `user_ids` / `item_ids`, the external ids in the final index
    order: item code `c` becomes item index `c + 1` (0 is padding), likewise for users.
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: list[str]
    item_ids: list[str]
    item_text: pd.DataFrame  # one row per item code, in index order: title and text columns
    steps: list[FilterStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was counted and kept (padded ids, repeated rows)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    def user_offsets(self) -> np.ndarray:
        """`offsets[u]:offsets[u + 1]` is user code `u`'s slice of `items` (length `num_users + 1`)."""
        counts = np.bincount(self.users, minlength=self.num_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def statistics(self) -> dict[str, float | int]:
        """The paper's Table 2 figures: users, items, interactions and mean sequence length."""
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "mean_sequence_length": round(self.num_interactions / max(self.num_users, 1), 2),
        }


def _distinct(codes: np.ndarray, keep: np.ndarray, size: int) -> int:
    return int(np.count_nonzero(np.bincount(codes[keep], minlength=size)))


def _natural_order(ids: pd.Index) -> np.ndarray:
    """Positions that sort `ids` numerically when every id is an integer, else lexicographically."""
    values = ids.astype("str")
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    if not numeric.isna().any() and (numeric == numeric.round()).all():
        return np.argsort(numeric.to_numpy(), kind="stable")
    return np.argsort(np.asarray(values, dtype=object), kind="stable")


class _Working:
    """Mutable state while filtering: codes plus a keep-mask, so no step copies the ten-million-row arrays."""

    def __init__(self, log: InteractionLog):
        frame = log.interactions
        self.user_codes, self.user_uniques = pd.factorize(frame["user_id"], sort=False)
        self.item_codes, self.item_uniques = pd.factorize(frame["item_id"], sort=False)
        self.user_codes = self.user_codes.astype(np.int64)
        self.item_codes = self.item_codes.astype(np.int64)
        self.ratings = frame["rating"].to_numpy(dtype=np.float64)
        self.timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
        self.keep = np.ones(len(frame), dtype=bool)
        self.steps: list[FilterStep] = []
        self.notes: list[str] = []
        self.strip_ids = False

    def snapshot(self) -> tuple[int, int, int]:
        return (
            int(self.keep.sum()),
            _distinct(self.user_codes, self.keep, len(self.user_uniques)),
            _distinct(self.item_codes, self.keep, len(self.item_uniques)),
        )

    def apply(self, name: str, new_keep: np.ndarray, detail: str = "") -> None:
        before = self.snapshot()
        self.keep = new_keep
        after = self.snapshot()
        step = FilterStep(name, before[0], after[0], before[1], after[1], before[2], after[2], detail)
        self.steps.append(step)
        logger.info(step.describe())
        if after[0] == 0:
            history = "; ".join(s.describe() for s in self.steps)
            raise DataPreparationError(f"No interactions are left after the step '{name}'. Steps so far: {history}")


def _padded_ids(uniques: pd.Index) -> tuple[int, int]:
    """(ids with surrounding whitespace, ids that trimming would merge into another) among distinct `uniques`."""
    values = uniques.astype("str")
    trimmed = values.str.strip()
    return int((trimmed != values).sum()), int(len(trimmed) - trimmed.nunique())


def _check_ids(work: _Working, strip_ids: bool) -> None:
    """Count (and log) ids with surrounding whitespace; `strip_ids` trims them, merging ids that then agree, as a
    step of its own."""
    padded = {
        what: _padded_ids(uniques) for what, uniques in (("user", work.user_uniques), ("item", work.item_uniques))
    }
    if not any(count for count, _ in padded.values()):
        return
    summary = ", ".join(
        f"{count:,} {what} ids with surrounding whitespace ({merged:,} equal to another id once trimmed)"
        for what, (count, merged) in padded.items()
        if count
    )
    if not strip_ids:
        logger.warning("%s: kept as distinct ids; strip_ids=True (prepare_data.py --strip_ids) trims them.", summary)
        work.notes.append(f"{summary}: kept as given")
        return
    n, users_before, items_before = work.snapshot()
    for what in ("user", "item"):
        uniques = getattr(work, f"{what}_uniques")
        new_codes, new_uniques = pd.factorize(uniques.astype("str").str.strip(), sort=False)
        setattr(work, f"{what}_codes", new_codes.astype(np.int64)[getattr(work, f"{what}_codes")])
        setattr(work, f"{what}_uniques", pd.Index(new_uniques))
    work.strip_ids = True
    _, users_after, items_after = work.snapshot()
    step = FilterStep("ids trimmed of surrounding whitespace", n, n, users_before, users_after, items_before,
                      items_after, summary)  # fmt: skip
    work.steps.append(step)
    logger.warning(step.describe())


def _count_repeated_rows(work: _Working) -> None:
    """Count (and log) interactions that repeat an earlier row exactly: same user, item, rating and time."""
    frame = pd.DataFrame({"u": work.user_codes, "i": work.item_codes, "t": work.timestamps, "r": work.ratings})
    repeated = int(frame[work.keep].duplicated().sum())
    if repeated:
        message = f"{repeated:,} interactions repeat an earlier row exactly (same user, item, rating and timestamp)"
        logger.warning("%s: kept; deduplicate=True (prepare_data.py --deduplicate) keeps each user's earliest "
                       "interaction with an item.", message)  # fmt: skip
        work.notes.append(f"{message}: kept")


def _item_text_table(log: InteractionLog, strip_ids: bool = False) -> tuple[pd.DataFrame, list[str]]:
    items = log.items
    if strip_ids:
        items = items.assign(item_id=items["item_id"].astype("str").str.strip())
    items = items.drop_duplicates("item_id", keep="first")
    if len(items) != len(log.items):
        logger.info("Item metadata: %d duplicate item_id rows; the first of each is used.", len(log.items) - len(items))
    text_columns = [c for c in items.columns if c != "item_id"]
    return items.set_index("item_id"), text_columns


def _apply_title_policy(work: _Working, items: pd.DataFrame, policy: str) -> dict[int, str]:
    """Returns placeholder titles by item code (empty unless `policy == "placeholder"`)."""
    titles = items["title"].reindex(work.item_uniques.astype("str"))
    missing = titles.isna().to_numpy() | (titles.astype("str").str.strip() == "").to_numpy()
    present_codes = np.unique(work.item_codes[work.keep])
    missing_codes = present_codes[missing[present_codes]]
    if missing_codes.size == 0:
        return {}
    examples = ", ".join(repr(str(work.item_uniques[c])) for c in missing_codes[:5])
    if policy == "drop":
        mask = np.zeros(len(work.item_uniques), dtype=bool)
        mask[missing_codes] = True
        work.apply(
            "items without a title dropped",
            work.keep & ~mask[work.item_codes],
            f"{missing_codes.size:,} items had no title (e.g. {examples})",
        )
        return {}
    placeholders = {int(c): PLACEHOLDER_TITLE.format(item_id=work.item_uniques[c]) for c in missing_codes}
    message = f"{missing_codes.size:,} items have no title (e.g. {examples}); titled 'Item <id>' (placeholder policy)"
    logger.warning(message)
    n, u, i = work.snapshot()
    work.steps.append(FilterStep("placeholder titles for items without one", n, n, u, u, i, i, message))
    return placeholders


def _kcore(work: _Working, min_user: int, min_item: int, mode: str) -> None:
    if mode == "none" or (min_user <= 1 and min_item <= 1):
        return
    num_users, num_items = len(work.user_uniques), len(work.item_uniques)
    if mode == "one_pass":
        user_counts = np.bincount(work.user_codes[work.keep], minlength=num_users)
        item_counts = np.bincount(work.item_codes[work.keep], minlength=num_items)
        keep = work.keep & (user_counts[work.user_codes] >= min_user) & (item_counts[work.item_codes] >= min_item)
        work.apply(f"one-pass threshold (users >= {min_user}, items >= {min_item}, counted once)", keep)
        return
    keep = work.keep.copy()
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(work.user_codes[keep], minlength=num_users)
        item_counts = np.bincount(work.item_codes[keep], minlength=num_items)
        new_keep = keep & (user_counts[work.user_codes] >= min_user) & (item_counts[work.item_codes] >= min_item)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
        if not keep.any():
            break
    work.apply(
        f"iterative {min_user}/{min_item}-core (users >= {min_user}, items >= {min_item})", keep, f"{rounds} round(s)"
    )


def encode_log(
    log: InteractionLog,
    *,
    min_rating: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    kcore: str = "iterative",
    missing_title: str = "drop",
    deduplicate: bool = False,
    strip_ids: bool = False,
) -> EncodedLog:
    """Filter a log and turn it into integer codes sorted by user and time.

    Steps, each logged with what it removed (an error names the step that left nothing):
    0. `strip_ids`: trim surrounding whitespace off user and item ids (ids that then agree are merged). Without
       it such ids are kept as given, counted and logged; so are interactions that repeat an earlier row exactly
       (see `deduplicate`), in `notes`.
    1. `min_rating`: keep interactions rated at least this (interactions without a rating are removed too).
    2. `deduplicate`: keep only the first (earliest) interaction of each user with each item.
    3. `missing_title`: `"drop"` removes items without a title (and their interactions); `"placeholder"` keeps
       them titled `"Item <id>"`. Both are counted and logged.
    4. k-core: `"iterative"` repeats until every user has `min_user_interactions` and every item
       `min_item_interactions`; `"one_pass"` counts once (the authors' procedure); `"none"` skips it.

    Users and items are then re-indexed in natural order of their ids (numeric when all ids are integers).

    Example:

    ```python
    >>> import pandas as pd
    >>> log = InteractionLog.from_frames(
    ...     pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["2", "1", "1"], "timestamp": [5, 7, 1]}),
    ...     pd.DataFrame({"item_id": ["1", "2"], "title": ["Heat", "Babe"]}))
    >>> encoded = encode_log(log)
    >>> encoded.item_ids, encoded.users.tolist(), encoded.items.tolist()  # u: Babe (t=5) then Heat (t=7)
    (['1', '2'], [0, 0, 1], [1, 0, 0])
    ```
    """
    if kcore not in KCORE_MODES:
        raise ValueError(f"kcore must be one of {KCORE_MODES}, got {kcore!r}")
    if missing_title not in MISSING_TITLE_POLICIES:
        raise ValueError(f"missing_title must be one of {MISSING_TITLE_POLICIES}, got {missing_title!r}")
    if log.num_interactions == 0:
        raise DataPreparationError(f"The interaction log read from {log.source or 'the input'} is empty.")
    work = _Working(log)
    _check_ids(work, strip_ids)
    if not deduplicate:
        _count_repeated_rows(work)
    if min_rating is not None and np.isnan(work.ratings).all():
        raise DataPreparationError(
            f"min_rating={min_rating:g} was asked for, but the log read from {log.source or 'the input'} has no "
            "ratings; leave min_rating out (or use a preset without one)."
        )
    if min_rating is not None:
        work.apply(f"rating >= {min_rating:g}", work.keep & (work.ratings >= min_rating))
    if deduplicate:  # among the interactions still kept (a pair's earliest one may be gone with the rating filter)
        kept = np.flatnonzero(work.keep)
        pair = work.user_codes[kept] * len(work.item_uniques) + work.item_codes[kept]
        order = np.lexsort((kept, work.timestamps[kept], pair))
        sorted_pairs = pair[order]
        is_first = np.ones(kept.size, dtype=bool)
        is_first[1:] = sorted_pairs[1:] != sorted_pairs[:-1]
        first = np.zeros(work.keep.size, dtype=bool)
        first[kept[order]] = is_first
        work.apply("repeated (user, item) pairs removed, earliest kept", work.keep & first)
    items, _ = _item_text_table(log, work.strip_ids)
    placeholders = _apply_title_policy(work, items, missing_title)
    _kcore(work, min_user_interactions, min_item_interactions, kcore)

    rows = np.flatnonzero(work.keep)
    user_codes, item_codes, timestamps = work.user_codes[rows], work.item_codes[rows], work.timestamps[rows]

    # Re-index the surviving users and items in natural id order.
    used_users = np.flatnonzero(np.bincount(user_codes, minlength=len(work.user_uniques)))
    used_items = np.flatnonzero(np.bincount(item_codes, minlength=len(work.item_uniques)))
    user_order = used_users[_natural_order(work.user_uniques[used_users])]
    item_order = used_items[_natural_order(work.item_uniques[used_items])]
    user_map = np.full(len(work.user_uniques), -1, dtype=np.int64)
    user_map[user_order] = np.arange(len(user_order))
    item_map = np.full(len(work.item_uniques), -1, dtype=np.int64)
    item_map[item_order] = np.arange(len(item_order))
    users, items_new = user_map[user_codes], item_map[item_codes]

    # Chronological per user; equal timestamps keep the input's row order (`rows` is increasing and the sort is
    # stable, so it needs no key of its own).
    order = np.lexsort((timestamps, users))
    users, items_new = users[order].astype(np.int32), items_new[order].astype(np.int32)

    item_ids = [str(v) for v in work.item_uniques[item_order]]
    item_text = items.reindex(item_ids).reset_index(drop=True)
    if "title" not in item_text.columns:
        item_text["title"] = None
    if placeholders:  # only for the items the k-core kept
        old_codes = np.fromiter(placeholders, dtype=np.int64)
        new_codes = item_map[old_codes]
        kept_items = new_codes >= 0
        if kept_items.any():
            item_text.loc[new_codes[kept_items], "title"] = [placeholders[int(c)] for c in old_codes[kept_items]]
    return EncodedLog(
        users=users,
        items=items_new,
        user_ids=[str(v) for v in work.user_uniques[user_order]],
        item_ids=item_ids,
        item_text=item_text,
        steps=work.steps,
        notes=work.notes,
    )


def resolve_filters(
    preset: str | None = None,
    *,
    min_rating: float | None = None,
    min_interactions: int | None = None,
    min_user_interactions: int | None = None,
    min_item_interactions: int | None = None,
    kcore: str | None = None,
) -> dict[str, Any]:
    """Combine a preset with explicit settings (explicit ones win) into `encode_log` keyword arguments.

    >>> resolve_filters("toys_and_games")
    {'min_rating': 3.0, 'min_user_interactions': 4, 'min_item_interactions': 4, 'kcore': 'one_pass'}
    >>> resolve_filters("toys_and_games", min_item_interactions=1, kcore="iterative")["min_item_interactions"]
    1
    """
    base = get_preset(preset) if preset else PreparationPreset(0, None, "iterative")
    if min_interactions is not None:
        base = replace(base, min_interactions=min_interactions)
    return {
        "min_rating": base.min_rating if min_rating is None else min_rating,
        "min_user_interactions": base.min_interactions if min_user_interactions is None else min_user_interactions,
        "min_item_interactions": base.min_interactions if min_item_interactions is None else min_item_interactions,
        "kcore": kcore or base.kcore,
    }


def format_statistics_table(rows: dict[str, dict[str, float | int]]) -> str:
    """Dataset statistics as a markdown table in the layout of the paper's Table 2.

    >>> print(format_statistics_table({"ml-100k": {"users": 943, "items": 1682, "interactions": 100000,
    ...                                            "mean_sequence_length": 106.04}}))
    | Dataset | # Users | # Items | # Interactions | Avg. seq. length |
    |---|---:|---:|---:|---:|
    | ml-100k | 943 | 1,682 | 100,000 | 106.04 |
    """
    lines = ["| Dataset | # Users | # Items | # Interactions | Avg. seq. length |", "|---|---:|---:|---:|---:|"]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['users']:,} | {s['items']:,} | {s['interactions']:,} | {s['mean_sequence_length']:.2f} |"
        )
    return "\n".join(lines)
