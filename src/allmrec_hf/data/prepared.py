"""`PreparedDataset`: leave-one-out splits with persisted candidate sets, the item catalog, id maps and scenarios,
saved to (and loaded from) one folder that every training and evaluation script reads."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict

from ..catalog import CATALOG_FILE_NAME, ItemCatalog
from .candidates import (
    NEGATIVE_SAMPLING,
    SeenItems,
    candidate_sets,
    few_shot_users,
    item_popularity_groups,
    rng_for,
)
from .log import DataPreparationError, InteractionLog
from .preprocess import (
    KCORE_MODES,
    MISSING_TITLE_POLICIES,
    EncodedLog,
    encode_log,
    format_statistics_table,
    get_preset,
    resolve_filters,
)
from .splits import leave_one_out

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "prepared_dataset.json"
ID_MAPS_FILE = "id_maps.json"
SCENARIOS_FILE = "scenarios.json"
SPLITS_DIR = "splits"
EVALUATION_SPLITS = ("validation", "test", "cold_users")
SCENARIOS = ("test", "cold_items", "warm_items", "cold_users")


@dataclass
class PreparationConfig:
    """Every setting of `prepare_dataset`; `None` means "the preset's value, else the default".

    Args:
        name: A name for reports (e.g. `"Movies_and_TV"`); defaults to the preset's name.
        preset: One of `PRESETS` (`movies_and_tv`, `video_games`, `luxury_beauty`, `toys_and_games`, `ml-100k`).
        min_rating: Keep interactions rated at least this.
        min_interactions: Minimum interactions per user and per item (k-core threshold).
        min_user_interactions / min_item_interactions: Separate thresholds (override `min_interactions`).
        kcore: `"iterative"` (until stable), `"one_pass"` (the authors' procedure) or `"none"`.
        missing_title: `"drop"` items without a title (counted and logged) or keep them with a `"placeholder"`.
        deduplicate: Keep only the earliest interaction of a user with an item. Without it, interactions that
            repeat an earlier row exactly are kept, counted and logged (`metadata["preparation_notes"]`).
        strip_ids: Trim surrounding whitespace off user and item ids, merging ids that then agree (a step of its
            own). Without it such ids stay distinct, counted and logged.
        num_negatives: Negatives per evaluation candidate set (the paper: 19, so 20 candidates).
        negative_sampling: `"uniform"` over never-interacted items (the paper), `"popularity"` (by training
            counts), or `"none"` (no candidate sets: full-catalog ranking only).
        seed: Seeds candidate sampling and few-shot selection.
        item_group_fraction: Share of items in the cold and in the warm group (the paper: 0.35).
        hold_out_cold_users: Move users with exactly `cold_user_interactions` interactions out of training into
            a `cold_users` split (the paper's cold-user scenario).
        cold_user_interactions: See above (the paper: 3).
        few_shot_users: Sizes K of few-shot training subsets to draw and persist (the paper: 128 and 256).
    """

    name: str | None = None
    preset: str | None = None
    min_rating: float | None = None
    min_interactions: int | None = None
    min_user_interactions: int | None = None
    min_item_interactions: int | None = None
    kcore: str | None = None
    missing_title: str = "drop"
    deduplicate: bool = False
    strip_ids: bool = False
    num_negatives: int = 19
    negative_sampling: str = "uniform"
    seed: int = 42
    item_group_fraction: float = 0.35
    hold_out_cold_users: bool = False
    cold_user_interactions: int = 3
    few_shot_users: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Every setting is checked here, when the config is made (the script: while parsing its arguments),
        # so a bad one is refused before any log is read. DataPreparationError is a ValueError.
        def refuse(message: str) -> None:
            raise DataPreparationError(message)

        if self.negative_sampling not in NEGATIVE_SAMPLING:
            refuse(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {self.negative_sampling!r}")
        if self.num_negatives < 0:
            refuse(f"num_negatives must be >= 0, got {self.num_negatives}")
        if self.negative_sampling != "none" and self.num_negatives == 0:
            refuse("num_negatives=0 gives candidate sets of the target alone; use negative_sampling='none'")
        if self.kcore is not None and self.kcore not in KCORE_MODES:
            refuse(f"kcore must be one of {KCORE_MODES}, got {self.kcore!r}")
        if self.missing_title not in MISSING_TITLE_POLICIES:
            refuse(f"missing_title must be one of {MISSING_TITLE_POLICIES}, got {self.missing_title!r}")
        if not 0 < self.item_group_fraction <= 0.5:
            refuse(f"item_group_fraction must be in (0, 0.5], got {self.item_group_fraction}")
        for name in ("min_interactions", "min_user_interactions", "min_item_interactions"):
            value = getattr(self, name)
            if value is not None and value < 0:
                refuse(f"{name} must be >= 0, got {value}")
        if self.cold_user_interactions < 1:
            refuse(f"cold_user_interactions must be >= 1, got {self.cold_user_interactions}")
        if any(k < 1 for k in self.few_shot_users):
            refuse(f"few_shot_users must be positive user counts, got {self.few_shot_users}")
        if self.preset is not None:
            try:
                get_preset(self.preset)
            except ValueError as err:
                refuse(str(err))


class PreparedDataset:
    """A prepared dataset: `splits` (a `datasets.DatasetDict`), the `catalog`, the id maps and scenario subsets.

    Splits (one row per user; `user`, `history`, `target` are 1-based indices; 0 is padding):
    `train` (the training sequence is `history + [target]`), `validation` and `test` (with `candidates`, the
    target plus the sampled negatives, shuffled, unless sampling is `"none"`), and `cold_users` when users were
    held out.

    Example:

    ```python
    >>> import pandas as pd
    >>> from allmrec_hf.data import InteractionLog, prepare_dataset
    >>> log = InteractionLog.from_frames(
    ...     pd.DataFrame({"user_id": list("uuuuvvvww"), "item_id": list("abcdbcefg")}),
    ...     pd.DataFrame({"item_id": list("abcdefg"), "title": list("ABCDEFG")}))
    >>> data = prepare_dataset(log, num_negatives=2, seed=0)
    >>> data.splits["test"][0]["target"], len(data.splits["test"][0]["candidates"])
    (4, 3)
    >>> data.catalog.title(4), data.user_ids, list(data.splits["train"]["user"])  # w: too short to evaluate
    ('D', ['u', 'v', 'w'], [1, 2, 3])
    ```
    """

    def __init__(
        self,
        splits: DatasetDict,
        catalog: ItemCatalog,
        user_ids: list[str],
        metadata: dict[str, Any],
        scenarios: dict[str, Any] | None = None,
    ):
        self.splits = splits
        self.catalog = catalog
        self.user_ids = list(user_ids)
        self.metadata = metadata
        self.scenarios = scenarios or {}

    # ----------------------------------------------------------------------------------------------- queries
    @property
    def name(self) -> str:
        return self.metadata.get("name") or "dataset"

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    @property
    def has_candidates(self) -> bool:
        return "candidates" in self.splits["test"].column_names

    def statistics(self) -> dict[str, float | int]:
        return dict(self.metadata["statistics"])

    def statistics_table(self) -> str:
        """The paper's Table 2 row for this dataset, as markdown."""
        return format_statistics_table({self.name: self.statistics()})

    def user_index(self, user_id: str) -> int:
        """The 1-based index of an external user id."""
        if not hasattr(self, "_user_lookup"):
            self._user_lookup = {u: i + 1 for i, u in enumerate(self.user_ids)}
        try:
            return self._user_lookup[str(user_id)]
        except KeyError:
            raise KeyError(f"User {user_id!r} is not in the prepared dataset {self.name!r}.") from None

    def sequences(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every user's full interaction sequence in time order as flat arrays `(users, items, offsets)`:
        0-based user codes, 1-based items, and `offsets[u]:offsets[u+1]` slicing user code `u`."""
        covered = np.zeros(self.num_users + 1, dtype=bool)
        user_parts, item_parts = [], []
        for split in ("test", "cold_users", "train"):  # the test row holds a user's longest sequence
            if split not in self.splits:
                continue
            table = self.splits[split].data.table
            users = table.column("user").to_numpy().astype(np.int64)
            history = table.column("history").combine_chunks()
            lengths = history.value_lengths().to_numpy().astype(np.int64)
            values = history.flatten().to_numpy().astype(np.int64)
            targets = table.column("target").to_numpy().astype(np.int64)
            take = ~covered[users]
            if not take.any():  # e.g. train when every user is also in test
                continue
            covered[users[take]] = True
            sizes = lengths[take] + 1
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            flat = np.empty(int(sizes.sum()), dtype=np.int64)
            history_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[take]
            within = np.arange(int(lengths[take].sum())) - np.repeat(
                np.concatenate([[0], np.cumsum(lengths[take])[:-1]]), lengths[take]
            )
            flat[np.repeat(starts, lengths[take]) + within] = values[np.repeat(history_starts, lengths[take]) + within]
            flat[starts + lengths[take]] = targets[take]
            item_parts.append(flat)
            user_parts.append(np.repeat(users[take] - 1, sizes))
        users = np.concatenate(user_parts) if user_parts else np.zeros(0, np.int64)
        items = np.concatenate(item_parts) if item_parts else np.zeros(0, np.int64)
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        counts = np.bincount(users, minlength=self.num_users)
        return users, items, np.concatenate([[0], np.cumsum(counts)])

    def seen_items(self) -> SeenItems:
        """Every item each user interacted with (for excluding seen items in full-catalog ranking)."""
        users, items, _ = self.sequences()
        return SeenItems(users, items, self.num_items)

    def scenario(self, name: str) -> Dataset:
        """The evaluation rows of a scenario: `test`, `cold_items` / `warm_items` (test users whose target is in
        the bottom / top share of items by training interactions) or `cold_users` (held-out users)."""
        if name == "test":
            return self.splits["test"]
        if name in ("cold_items", "warm_items"):
            group = set(self.scenarios["item_groups"][name])
            targets = np.asarray(self.splits["test"]["target"])
            rows = np.flatnonzero(np.isin(targets, list(group)))
            return self.splits["test"].select(rows)
        if name == "cold_users":
            if "cold_users" not in self.splits:
                raise KeyError(
                    f"{self.name!r} has no cold_users split: prepare it with hold_out_cold_users=True "
                    f"(users with exactly {self.metadata['config']['cold_user_interactions']} interactions)."
                )
            return self.splits["cold_users"]
        raise KeyError(f"Unknown scenario {name!r}; choose one of {SCENARIOS}.")

    def few_shot(self, k: int, seed: int | None = None) -> Dataset:
        """The training rows of `k` users: the persisted selection when one of size `k` was prepared (and `seed`
        is not given), else drawn now under `seed` (default: the dataset's seed)."""
        persisted = self.scenarios.get("few_shot", {}).get(str(k))
        if persisted is not None and seed is None:
            users = np.asarray(persisted)
        else:
            users = few_shot_users(
                np.asarray(self.splits["train"]["user"]), k, self.metadata["config"]["seed"] if seed is None else seed
            )
        train_users = np.asarray(self.splits["train"]["user"])
        return self.splits["train"].select(np.flatnonzero(np.isin(train_users, users)))

    def item_overlap(self, other: PreparedDataset) -> dict[str, int]:
        """How many items (by external id) and titles two prepared datasets share, e.g. for cross-domain use."""
        ids = {self.catalog.item_id(i) for i in range(1, self.num_items + 1)}
        other_ids = {other.catalog.item_id(i) for i in range(1, other.num_items + 1)}
        titles, other_titles = set(self.catalog.titles), set(other.catalog.titles)
        return {"shared_item_ids": len(ids & other_ids), "shared_titles": len(titles & other_titles)}

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"PreparedDataset(name={self.name!r}, users={s['users']}, items={s['items']}, "
            f"interactions={s['interactions']}, splits={ {k: v.num_rows for k, v in self.splits.items()} })"
        )

    # ---------------------------------------------------------------------------------------------- save/load
    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> str:
        """Write everything into `directory` atomically: it is built in a temporary sibling folder and renamed
        into place only when complete, so a failure leaves no half-written dataset. An existing non-empty
        `directory` is an error unless `overwrite=True`, and even then only a prepared dataset is replaced (any
        other folder is refused, naming what it holds). What an earlier save killed midway left behind is cleaned
        up or recovered first (`recover_interrupted_save`)."""
        directory = os.path.abspath(os.fspath(directory))
        check_output_dir(directory, overwrite)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any folder
        try:
            self.splits.save_to_disk(os.path.join(staging, SPLITS_DIR))
            self.catalog.save(staging)
            _write_json(os.path.join(staging, ID_MAPS_FILE), {"users": self.user_ids})
            _write_json(os.path.join(staging, SCENARIOS_FILE), self.scenarios)
            _write_json(os.path.join(staging, METADATA_FILE), self.metadata)
            if os.path.exists(directory):
                retired = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
                os.rename(directory, os.path.join(retired, "data"))
                os.rename(staging, directory)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("Prepared dataset saved to %s", directory)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> PreparedDataset:
        """Load a folder written by `save` (or `examples/prepare_data.py`)."""
        directory = os.fspath(directory)
        if not os.path.exists(directory):
            recover_interrupted_save(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"No prepared dataset at {directory}: the folder does not exist.")
        needed = (METADATA_FILE, ID_MAPS_FILE, SCENARIOS_FILE, CATALOG_FILE_NAME, SPLITS_DIR)
        missing = [name for name in needed if not os.path.exists(os.path.join(directory, name))]
        if missing:
            raise FileNotFoundError(
                f"{directory} is not a prepared dataset (missing {', '.join(missing)}); create one with "
                "examples/prepare_data.py or PreparedDataset.save."
            )
        metadata = _read_json(os.path.join(directory, METADATA_FILE))
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: prepared-dataset format {version} is not supported (expected {FORMAT_VERSION})."
            )
        splits = DatasetDict.load_from_disk(os.path.join(directory, SPLITS_DIR))
        catalog = ItemCatalog.load(os.path.join(directory, CATALOG_FILE_NAME))
        user_ids = _read_json(os.path.join(directory, ID_MAPS_FILE))["users"]
        scenarios = _read_json(os.path.join(directory, SCENARIOS_FILE))
        return cls(splits, catalog, user_ids, metadata, scenarios)


def _leftovers(directory: str, kind: str) -> list[str]:
    parent, name = os.path.split(directory)
    if not os.path.isdir(parent):
        return []
    prefix = f".{name}.{kind}-"
    return sorted(os.path.join(parent, entry) for entry in os.listdir(parent) if entry.startswith(prefix))


def recover_interrupted_save(directory: str | os.PathLike) -> None:
    """Undo what a `PreparedDataset.save` killed midway left beside `directory`, and say so: staging folders
    (`.NAME.tmp-*`) are removed; a retired copy (`.NAME.old-*`, from a kill between replacing the old dataset
    and moving the new one in) is moved back when `directory` is missing, else removed."""
    directory = os.path.abspath(os.fspath(directory))
    for staging in _leftovers(directory, "tmp"):
        logger.warning("Removing %s, left by a save of %s that was interrupted.", staging, directory)
        shutil.rmtree(staging, ignore_errors=True)
    for retired in _leftovers(directory, "old"):
        kept = os.path.join(retired, "data")
        if not os.path.exists(directory) and os.path.isfile(os.path.join(kept, METADATA_FILE)):
            os.rename(kept, directory)
            logger.warning(
                "Recovered %s from %s: a save that was replacing it was interrupted before the new copy was in place.",
                directory,
                retired,
            )
        else:
            logger.warning("Removing %s, the old copy of %s kept by an interrupted save.", retired, directory)
        shutil.rmtree(retired, ignore_errors=True)


def check_output_dir(directory: str | os.PathLike, overwrite: bool) -> None:
    """Refuse, before any work, an output folder a prepared dataset must not be written to: a regular file, a
    non-empty folder without `overwrite`, or (even with `overwrite`) a non-empty folder that does not hold a
    prepared dataset, since replacing it would delete whatever it holds. Cleans up after an interrupted save
    first."""
    directory = os.path.abspath(os.fspath(directory))
    recover_interrupted_save(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory} is a file, not a folder; choose another output folder.")
    if not os.path.isdir(directory) or not os.listdir(directory):
        return
    if not os.path.isfile(os.path.join(directory, METADATA_FILE)):
        entries = sorted(os.listdir(directory))
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise FileExistsError(
            f"{directory} is not a prepared dataset (it holds {shown}; no {METADATA_FILE}): refusing to replace "
            "it; choose another output folder."
        )
    if not overwrite:
        raise FileExistsError(f"{directory} already holds a prepared dataset; pass overwrite=True to replace it.")


def _write_json(path: str, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, ensure_ascii=False, indent=1 if os.path.basename(path) != ID_MAPS_FILE else None)
        fh.write("\n")


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from None


def _catalog(encoded: EncodedLog) -> ItemCatalog:
    text = encoded.item_text
    fields = {
        column: [
            None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v) for v in text[column]
        ]
        for column in text.columns
        if column != "title"
    }
    return ItemCatalog([str(t) for t in text["title"]], item_ids=encoded.item_ids, fields=fields)


def _with_candidates(
    table: pa.Table,
    name: str,
    config: PreparationConfig,
    seen: SeenItems,
    popularity: np.ndarray | None,
    user_ids: list[str],
) -> pa.Table:
    if config.negative_sampling == "none" or table.num_rows == 0:
        return table
    users = table.column("user").to_numpy().astype(np.int64) - 1
    targets = table.column("target").to_numpy()
    candidates = candidate_sets(
        users, targets, seen, config.num_negatives, rng_for(config.seed, name), popularity, user_ids
    )
    width = candidates.shape[1]
    offsets = pa.array(np.arange(0, candidates.size + 1, width, dtype=np.int32))
    return table.append_column("candidates", pa.ListArray.from_arrays(offsets, pa.array(candidates.ravel())))


def prepare_dataset(log: InteractionLog, config: PreparationConfig | None = None, **settings: Any) -> PreparedDataset:
    """Filter, re-index, split (leave-one-out), sample candidate sets and build the scenario subsets.

    Args:
        log: What a reader returned (see `allmrec_hf.data.readers`).
        config: A `PreparationConfig`; keyword `settings` build or override one.

    Returns:
        A `PreparedDataset` (call `.save(directory)` to persist it).

    Raises:
        DataPreparationError: a step left no interactions (the message lists what each step removed), or a user
            has too few unseen items for the requested negatives.
    """
    if config is None:
        config = PreparationConfig(**settings)
    elif settings:
        config = PreparationConfig(**{**asdict(config), **settings})
    filters = resolve_filters(
        config.preset,
        min_rating=config.min_rating,
        min_interactions=config.min_interactions,
        min_user_interactions=config.min_user_interactions,
        min_item_interactions=config.min_item_interactions,
        kcore=config.kcore,
    )
    logger.info("Preparing %s with %s", log.source or "an interaction log", filters)
    encoded = encode_log(
        log, missing_title=config.missing_title, deduplicate=config.deduplicate, strip_ids=config.strip_ids, **filters
    )

    counts = np.diff(encoded.user_offsets())
    held_out = None
    if config.hold_out_cold_users:
        held_out = np.flatnonzero(counts == config.cold_user_interactions)
        if held_out.size == 0:
            logger.warning(
                "No user has exactly %d interactions after filtering, so the cold_users split is empty.",
                config.cold_user_interactions,
            )
        elif held_out.size == counts.size:
            raise DataPreparationError(
                f"Every user has exactly {config.cold_user_interactions} interactions: holding them out as cold "
                "users would leave nothing to train on."
            )
    tables = leave_one_out(encoded, held_out)
    if tables["test"].num_rows == 0:
        raise DataPreparationError(
            "No user has the 3 interactions a leave-one-out split needs (one to train on, one to validate, one to "
            f"test) after filtering: {encoded.statistics()}."
        )

    train_counts = np.bincount(
        np.concatenate(
            [
                tables["train"].column("history").combine_chunks().flatten().to_numpy(),
                tables["train"].column("target").to_numpy(),
            ]
        ),
        minlength=encoded.num_items + 1,
    )
    seen = SeenItems(encoded.users, encoded.items.astype(np.int64) + 1, encoded.num_items)
    popularity = train_counts if config.negative_sampling == "popularity" else None
    for name in EVALUATION_SPLITS:
        if name in tables:
            tables[name] = _with_candidates(tables[name], name, config, seen, popularity, encoded.user_ids)
    splits = DatasetDict({name: Dataset(table) for name, table in tables.items()})

    cold_items, warm_items = item_popularity_groups(train_counts, config.item_group_fraction)
    train_users = tables["train"].column("user").to_numpy()
    scenarios: dict[str, Any] = {
        "item_groups": {
            "fraction": config.item_group_fraction,
            "counted_on": "train split interactions",
            "cold_items": cold_items.tolist(),
            "warm_items": warm_items.tolist(),
        },
        "cold_users": {
            "interactions": config.cold_user_interactions,
            "held_out": bool(config.hold_out_cold_users),
            "users": (held_out + 1).tolist() if held_out is not None else [],
        },
        "few_shot": {str(k): few_shot_users(train_users, k, config.seed).tolist() for k in config.few_shot_users},
    }

    name = config.name or config.preset or "dataset"
    statistics = encoded.statistics()
    titles = [str(t) for t in encoded.item_text["title"]]
    duplicate_titles = len(titles) - len(set(titles))
    if duplicate_titles:
        logger.warning(
            "%d items share a title with another item; generated answers naming them are ambiguous.",
            duplicate_titles,
        )
    metadata = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": log.source,
        "reader_notes": list(log.notes),
        "config": asdict(config),
        "filters": filters,
        "steps": [step.to_dict() for step in encoded.steps],
        "preparation_notes": list(encoded.notes),
        "statistics": statistics,
        "split_rows": {k: v.num_rows for k, v in splits.items()},
        "evaluation": {
            "candidates": "none (full-catalog ranking)"
            if config.negative_sampling == "none"
            else f"1 positive + {config.num_negatives} negatives, {config.negative_sampling}, "
            "never-interacted items, shuffled",
            "seed": config.seed,
        },
        "duplicate_titles": duplicate_titles,
    }
    logger.info("Prepared %s:\n%s", name, format_statistics_table({name: statistics}))
    return PreparedDataset(splits, _catalog(encoded), encoded.user_ids, metadata, scenarios)
