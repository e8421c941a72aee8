"""Reader of UniSRec-style processed sets ([`read_unisrec`]), e.g. the Amazon "Scientific" set."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from allmrec_hf.data.log import DataFormatError, InteractionLog, clean_text

from ._common import (
    PathLike,
    _decode_file,
    _delimited_line_of_row,
    _existing_file,
    _finish,
    _items_frame,
    _Locator,
    _merge_duplicate_items,
    _read_bytes,
    _read_delimited,
    _text_lines,
)
from .recbole import _read_recbole_items, _recbole_header, _require_field

logger = logging.getLogger(__name__)


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


__all__ = [
    "read_unisrec",
]
