"""The examples in the docstrings of `allmrec_hf.data`, of the model, configuration and processing classes and of the
other modules listed below run as written.

The docstrings wrap their examples in Markdown fences (```python ... ```), which plain doctest would read as
expected output; a small parser blanks those fence lines first.
"""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

MODULES = [
    "allmrec_hf.data.log",
    "allmrec_hf.data.preprocess",
    "allmrec_hf.data.splits",
    "allmrec_hf.data.candidates",
    "allmrec_hf.data.prepared",
    "allmrec_hf.data.readers",
    "allmrec_hf.data.readers.amazon",
    "allmrec_hf.data.readers.movielens",
    "allmrec_hf.data.readers.recbole",
    "allmrec_hf.data.readers.table",
    "allmrec_hf.data.readers.unisrec",
    "allmrec_hf.evaluation.metrics",
    "allmrec_hf.evaluation.fusion",
    "allmrec_hf.training.dtypes",
    "allmrec_hf.candidate_tree",
    "allmrec_hf.causal_blocks_attention",
    "allmrec_hf.catalog",
    "allmrec_hf.cf_models",
    "allmrec_hf.configuration_allmrec",
    "allmrec_hf.configuration_sasrec",
    "allmrec_hf.modeling_allmrec",
    "allmrec_hf.modeling_allmrec_ranking",
    "allmrec_hf.modeling_sasrec",
    "allmrec_hf.pipelines",
    "allmrec_hf.processing_allmrec",
    "allmrec_hf.training.collators",
    "allmrec_hf.training.runs",
]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_FENCE = re.compile(r"^[ \t]*```(?:python)?[ \t]*$", re.M)


class FencedDocTestParser(doctest.DocTestParser):
    """A doctest parser that ignores lines made only of ``` or ```python (a blank line ends an expected output,
    so a closing fence right after one is not taken as part of it)."""

    def parse(self, string, name="<string>"):
        return super().parse(_FENCE.sub("", string), name)


def _collect() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(parser=FencedDocTestParser(), exclude_empty=True)
    tests = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        tests.extend(t for t in finder.find(module, module_name) if t.examples)
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _collect()


def test_parser_blanks_fences_only():
    text = '```python\n>>> 1 + 1\n2\n```\n    ```\n>>> print("```x")\n```x\n'
    examples = FencedDocTestParser().get_examples(text)
    assert [(e.source, e.want) for e in examples] == [("1 + 1\n", "2\n"), ('print("```x")\n', "```x\n")]


def _module_of(test: doctest.DocTest) -> str:
    """The listed module a doctest was found in (the longest listed name its name starts with)."""
    return max((m for m in MODULES if test.name == m or test.name.startswith(m + ".")), key=len)


def test_every_module_has_examples():
    assert {_module_of(t) for t in DOCTESTS} == set(MODULES)
    assert len(DOCTESTS) >= 12


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name.removeprefix("allmrec_hf.data.") for t in DOCTESTS])
def test_docstring_examples(test):
    runner = doctest.DocTestRunner(optionflags=OPTIONS, verbose=False)
    output: list[str] = []
    result = runner.run(test, out=output.append, clear_globs=True)
    assert result.failed == 0, "".join(output)
    runnable = [e for e in test.examples if not e.options.get(doctest.SKIP)]
    assert result.attempted == len(runnable)  # examples marked +SKIP need the user's files
