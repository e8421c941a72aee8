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
    before = sorted(os.listdir(tmp_path))
    module = _load_prepare_data()
    with pytest.raises(SystemExit) as exit_info:
        run_script(module.main, [*argv, "--output_dir", out])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and fragment in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, nothing removed
    assert Path(files["a_file"]).read_text() == "notes"


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
