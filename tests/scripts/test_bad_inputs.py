"""Bad input to the scripts, table-driven: each case is the command line, the fragment its one-line error must
hold, and a check that nothing was written. A user error is one line on stderr (`<script>: error: ...`) and exit
status 2, raised before any output exists; tracebacks are for bugs only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from allmrec_hf.training.runs import run_script
from training_helpers import REPO

PREPARE = str(REPO / "examples" / "prepare_data.py")


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


def inputs(tmp: Path) -> dict[str, str]:
    """The files the cases point at."""
    return {
        "header_only": write(tmp / "header_only.csv", "user_id,item_id,rating,timestamp\n"),
        "no_ratings": write(tmp / "no_ratings.csv", "user_id,item_id,timestamp\nu,1,5\nu,2,6\nv,1,7\n"),
        "items": write(tmp / "items.csv", "item_id,title\n1,Heat\n2,Babe\n"),
        "wrong_columns": write(tmp / "wrong_columns.csv", "user,item,timestamp\nu,1,5\n"),
        "a_file": write(tmp / "a_file.txt", "notes"),
        "bad_rating": write(tmp / "bad_rating.csv", "user_id,item_id,rating,timestamp\nu,1,5,10\nu,2,x,11\n"),
        "bad_fields": write(tmp / "bad_fields.csv", "user_id,item_id,rating,timestamp\nu,1,5,10\nu,2,5\n"),
        "empty_id": write(tmp / "empty_id.csv", "user_id,item_id,rating,timestamp\nu,1,5,10\n,2,5,11\n"),
        "bad_time": write(tmp / "bad_time.csv", "user_id,item_id,rating,timestamp\nu,1,5,10\nu,2,5,soon\n"),
        "truncated_gz": _truncated_gzip(tmp / "truncated.csv.gz"),
        "prepared": _fake_prepared_dataset(tmp / "prepared"),
        "checkpoints": _folder_with(tmp / "outputs", "checkpoint-500/trainer_state.json"),
        "latin1": write(tmp / "latin1.csv", "user_id,item_id,timestamp\nRen\xe9,1,5\n", encoding="latin-1"),
    }


# (id, arguments with {name} for the files above and {out} for the output folder, fragment of the error)
PREPARE_CASES = [
    ("missing_file", "--format csv --input_path {tmp}/missing.csv --item_path {items}", "not found"),
    ("header_only", "--format csv --input_path {header_only} --item_path {items}", "has no rows"),
    (
        "wrong_columns",
        "--format csv --input_path {wrong_columns} --item_path {items}",
        "no column 'user_id'; its columns are",
    ),
    (
        "min_rating_without_ratings",
        "--format csv --input_path {no_ratings} --item_path {items} --min_rating 3",
        "has no ratings",
    ),
    ("kcore_out_of_range", "--format csv --input_path {tmp}/missing.csv --kcore -3", "kcore must be one of"),
    (
        "item_group_fraction_out_of_range",
        "--format csv --input_path {tmp}/missing.csv --item_group_fraction 1.5",
        "item_group_fraction must be in (0, 0.5]",
    ),
    ("negative_min_interactions", "--min_user_interactions -1", "min_user_interactions must be >= 0"),
    ("unknown_preset", "--preset nope", "Unknown preset 'nope'"),
    ("item_path_with_recbole", "--format recbole --input_path {tmp} --item_path {items}", "--item_path is for"),
    ("meta_path_with_movielens", "--format ml-100k --meta_path {items}", "--meta_path is for the Amazon formats"),
    ("latin1_without_encoding", "--format csv --input_path {latin1}", "not valid utf-8 text (byte 0xe9 at column 4)"),
    ("latin1_names_the_flag", "--format csv --input_path {latin1}", "--encoding latin-1"),
    ("unknown_encoding", "--format csv --input_path {latin1} --encoding nope", "--encoding: unknown encoding 'nope'"),
    ("utf16_encoding", "--format csv --input_path {latin1} --encoding utf-16", "convert the file to UTF-8"),
    ("encoding_with_amazon", "--format amazon2018 --input_path {latin1} --encoding latin-1", "--encoding is for"),
    # the cases that already worked when the corpus was started
    (
        "bad_rating",
        "--format csv --input_path {bad_rating}",
        "bad_rating.csv, line 3, field 'rating': not a number: 'x'",
    ),
    ("bad_fields", "--format csv --input_path {bad_fields}", "line 3: expected 4 fields separated by ',', found 3"),
    ("empty_id", "--format csv --input_path {empty_id}", "line 3, field 'user_id': missing (empty) id"),
    ("bad_timestamp", "--format csv --input_path {bad_time}", "field 'timestamp': not a number or a date/time: 'soon'"),
    ("truncated_gzip", "--format csv --input_path {truncated_gz}", "cannot read (corrupt compressed data?)"),
    ("folder_as_file", "--format csv --input_path {tmp}", "expected the interactions file, found a folder"),
    (
        "bad_mapping_json",
        "--format csv --input_path {bad_rating} --column_mapping {{bad",
        "--column_mapping is not valid JSON",
    ),
    ("missing_unisrec_folder", "--format unisrec --input_path {tmp}/missing", "UniSRec folder not found"),
    ("unknown_sampling", "--negative_sampling nope", "negative_sampling must be one of"),
    ("zero_few_shot", "--few_shot_users 0", "few_shot_users must be positive user counts"),
    ("negative_negatives", "--num_negatives -1", "num_negatives must be >= 0"),
    ("both_item_flags", "--format csv --input_path {bad_rating} --meta_path {items} --item_path {items}", "not both"),
    ("prepared_without_overwrite", "--format csv --input_path {bad_rating} --out {prepared}", "--overwrite_output_dir"),
    (
        "checkpoints_even_with_overwrite",
        "--format csv --input_path {bad_rating} --out {checkpoints} --overwrite_output_dir",
        "checkpoint-500",
    ),
    # fixed here: these two gave a traceback
    ("unknown_format", "--format nope --input_path {bad_rating}", "--format 'nope' is not a format this script reads"),
    (
        "unknown_mapped_column",
        '--format csv --input_path {bad_rating} --column_mapping {{"uid":"u"}}',
        "unknown interaction column(s) ['uid']",
    ),
    ("output_is_a_file", "--format csv --input_path {no_ratings} --item_path {items} --out {a_file}", "is a file"),
]


@pytest.mark.parametrize(("arguments", "fragment"), [c[1:] for c in PREPARE_CASES], ids=[c[0] for c in PREPARE_CASES])
def test_prepare_data_refuses_in_one_line(arguments, fragment, tmp_path, capsys):
    files = inputs(tmp_path)
    out = str(tmp_path / "out")
    argv = arguments.format(tmp=tmp_path, **files).split()
    if "--out" in argv:
        out = argv.pop(argv.index("--out") + 1)
        argv.remove("--out")
    before = tree(tmp_path)
    module = _load_prepare_data()
    with pytest.raises(SystemExit) as exit_info:
        run_script(module.main, [*argv, "--output_dir", out])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and fragment in lines[0], lines
    assert tree(tmp_path) == before  # nothing written, changed or removed, at any depth
    assert Path(files["a_file"]).read_text() == "notes"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> contents) and every folder (-> b"<dir>")."""
    return {str(path.relative_to(root)): b"<dir>" if path.is_dir() else path.read_bytes() for path in root.rglob("*")}


def _truncated_gzip(path: Path) -> str:
    import gzip

    data = gzip.compress(b"user_id,item_id\n" + b"u,1\n" * 1000)
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _folder_with(folder: Path, *files: str) -> str:
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    return str(folder)


def _fake_prepared_dataset(folder: Path) -> str:
    from allmrec_hf.data.prepared import METADATA_FILE

    return _folder_with(folder, METADATA_FILE)


def _load_prepare_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_data_under_test", PREPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_command_prints_one_line_and_exits_2(tmp_path):
    """The real command line: no traceback on stderr, exit status 2; ALLMREC_HF_TRACEBACK=1 shows it."""
    files = inputs(tmp_path)
    command = [sys.executable, PREPARE, "--format", "csv", "--input_path", files["header_only"]]
    command += ["--item_path", files["items"], "--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert errors == [
        f"prepare_data.py: error: {files['header_only']}: the file has no rows (a header and nothing else)"
    ]
    debug = subprocess.run(command, capture_output=True, text=True, env={**env, "ALLMREC_HF_TRACEBACK": "1"})
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_a_bug_keeps_its_traceback():
    def broken():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_script(broken)


@pytest.mark.parametrize("script", ["train_stage1", "train_ranking_head"])
def test_a_folder_that_is_not_a_cf_checkpoint_is_one_line(script, tiny_dataset, tmp_path, capsys):
    """Fixed: CheckpointMismatchError (a checkpoint of the wrong kind, or none) printed a traceback."""
    from training_helpers import example_module

    (tmp_path / "notes").mkdir()
    argv = ["--dataset_dir", tiny_dataset, "--output_dir", str(tmp_path / "out")]
    argv += ["--cf_model_path", str(tmp_path / "notes")]
    with pytest.raises(SystemExit) as exit_info:
        run_script(example_module(script).main, [*argv, "--report_to", "none", "--use_cpu", "true"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is not a model checkpoint: it has no config.json" in lines[0], lines
    assert not (tmp_path / "out").exists()
