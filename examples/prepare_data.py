#!/usr/bin/env python
"""Prepare a dataset for A-LLMRec: read a log, filter it, split it leave-one-out, sample the evaluation candidate
sets and write everything (splits, item catalog, id maps, scenarios) to one folder the other scripts read.

With no arguments it prepares MovieLens-100k from the installed `recbole` wheel (`pip install --no-deps
recbole==1.2.1`; its terms forbid redistribution, so it is read in place and never copied into the repository):

    python examples/prepare_data.py --output_dir outputs/data/ml-100k

Amazon Review Data 2018 with the paper's Movies_and_TV rules:

    python examples/prepare_data.py --format amazon2018 --input_path Movies_and_TV.json.gz \\
        --meta_path meta_Movies_and_TV.json.gz --preset movies_and_tv --output_dir outputs/data/movies

Your own CSV (columns mapped to user_id / item_id / rating / timestamp, item titles in a second file):

    python examples/prepare_data.py --format csv --input_path logs.csv \\
        --column_mapping '{"user_id": "customer", "item_id": "sku", "timestamp": "time"}' \\
        --item_path items.csv --item_column_mapping '{"item_id": "sku", "title": "name"}' \\
        --min_interactions 5 --output_dir outputs/data/shop

All arguments can also come from one JSON file: `python examples/prepare_data.py args.json`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from allmrec_hf.data import DataFormatError, PreparationConfig, prepare_dataset
from allmrec_hf.data.prepared import check_output_dir
from allmrec_hf.data.readers import READER_FORMATS, check_encoding, read_log
from allmrec_hf.training.runs import parse_arguments, run_script

logger = logging.getLogger("prepare_data")


@dataclass
class InputArguments:
    """What to read and where to write."""

    format: str = field(default="ml-100k", metadata={"help": f"Input format, one of {', '.join(READER_FORMATS)}."})
    input_path: str | None = field(
        default=None, metadata={"help": "Interactions: a file (reviews, ratings, CSV, Parquet) or a folder."}
    )
    meta_path: str | None = field(default=None, metadata={"help": "Item metadata file (Amazon formats)."})
    item_path: str | None = field(default=None, metadata={"help": "Item text file for csv/parquet input."})
    column_mapping: str | None = field(
        default=None, metadata={"help": 'csv/parquet: JSON mapping of our columns to yours, e.g. {"user_id": "uid"}.'}
    )
    item_column_mapping: str | None = field(
        default=None, metadata={"help": 'csv/parquet: JSON mapping for the item file, e.g. {"title": "name"}.'}
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Text encoding of csv/tsv, movielens or recbole files, e.g. latin-1 (default: UTF-8; "
            "movielens: UTF-8, else latin-1)."
        },
    )
    output_dir: str = field(default="outputs/data/ml-100k", metadata={"help": "Where the prepared dataset goes."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing output_dir."})


_ENCODING_FORMATS = ("csv", "movielens", "recbole")


def _reader_kwargs(args: InputArguments) -> dict:
    kwargs: dict = {}
    if args.meta_path:
        kwargs["meta_path"] = args.meta_path
    for name, value in (("columns", args.column_mapping), ("item_columns", args.item_column_mapping)):
        if value:
            try:
                kwargs[name] = json.loads(value)
            except json.JSONDecodeError as err:
                raise SystemExit(f"--{name.replace('columns', 'column_mapping')} is not valid JSON: {err}") from None
    key = str(args.format).strip().lower()
    if key not in READER_FORMATS:
        raise SystemExit(
            f"--format {args.format!r} is not a format this script reads; use one of {', '.join(READER_FORMATS)}."
        )
    if args.meta_path and not args.item_path and not key.startswith("amazon"):
        raise SystemExit(
            f"--meta_path is for the Amazon formats; format {args.format!r} takes none"
            + (
                " (its item table goes in --item_path)."
                if key in ("csv", "parquet")
                else " (it finds its item files itself)."
            )
        )
    if args.item_path and key not in ("csv", "parquet"):
        raise SystemExit(
            f"--item_path is for csv/parquet input; format {args.format!r} finds its item files itself "
            "(Amazon formats take --meta_path)."
        )
    if args.encoding:
        if key not in _ENCODING_FORMATS:
            raise SystemExit(
                f"--encoding is for {', '.join(_ENCODING_FORMATS)} input; format {args.format!r} is read as UTF-8."
            )
        try:
            kwargs["encoding"] = check_encoding(args.encoding)
        except ValueError as err:
            raise SystemExit(f"--encoding: {err}") from None
    if args.item_path:  # read_log takes the item table of csv/parquet input as meta_path
        if args.meta_path:
            raise SystemExit("Give --meta_path (Amazon metadata) or --item_path (csv/parquet items), not both.")
        kwargs["meta_path"] = args.item_path
    return kwargs


def main(argv: list[str] | None = None) -> str:
    inputs, config = parse_arguments((InputArguments, PreparationConfig), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    output_dir = os.path.abspath(inputs.output_dir)
    try:  # refused before the log is read: a file, a folder that is not a prepared dataset, no --overwrite
        check_output_dir(output_dir, inputs.overwrite_output_dir)
    except FileExistsError as err:
        raise SystemExit(str(err).replace("overwrite=True", "--overwrite_output_dir")) from None
    if config.name is None:
        config.name = config.preset or inputs.format
    if config.preset is None and inputs.format == "ml-100k":
        config.preset = "ml-100k"

    try:  # the readers raise ValueError for bad arguments (format, column mapping, encoding); data errors name the file
        log = read_log(inputs.format, inputs.input_path, **_reader_kwargs(inputs))
    except ValueError as err:
        if isinstance(err, DataFormatError):
            raise
        raise SystemExit(str(err)) from None
    logger.info("Read %r", log)
    data = prepare_dataset(log, config)
    data.save(output_dir, overwrite=inputs.overwrite_output_dir)

    print(data.statistics_table())
    for step in data.metadata["steps"]:
        print(f"- {step['name']}: removed {step['removed']:,} interactions")
    rows = ", ".join(f"{name} {n:,}" for name, n in data.metadata["split_rows"].items())
    print(f"Splits: {rows}. Candidates: {data.metadata['evaluation']['candidates']}.")
    print(f"Prepared dataset written to {output_dir}")
    return output_dir


if __name__ == "__main__":
    run_script(main)
