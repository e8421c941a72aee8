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

from pathlib import Path
from typing import Any

from allmrec_hf.data.log import InteractionLog

from ._common import PathLike, check_encoding
from .amazon import read_amazon2018, read_amazon2023
from .movielens import MOVIELENS_GENRES, read_movielens
from .recbole import read_movielens_100k, read_recbole
from .table import _table_format, read_hf_dataset, read_table
from .unisrec import read_unisrec

READER_FORMATS = ("amazon2018", "amazon2023", "movielens", "ml-100k", "recbole", "unisrec", "csv", "parquet")
"""The format names [`read_log`] accepts."""


def read_log(
    format: str, path: PathLike | None = None, *, meta_path: PathLike | None = None, **kwargs: Any
) -> InteractionLog:
    """Read a data set by format name (one of `READER_FORMATS`).

    Args:
        format: "amazon2018", "amazon2023", "movielens", "ml-100k" (the recbole sample; no path), "recbole",
            "unisrec", "csv" (CSV or TSV, by extension) or "parquet".
        path: The file or folder.
        meta_path: Item metadata: the Amazon metadata file, or the item table of "csv" / "parquet".
        **kwargs: Passed to the reader (e.g. `encoding` for "csv", "movielens" and "recbole", `columns` for "csv").

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
    "check_encoding",
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
