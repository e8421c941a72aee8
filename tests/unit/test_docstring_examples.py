"""The examples in the docstrings of every module of `allmrec_hf` run as written.

The docstrings wrap their examples in Markdown fences (```python ... ```), which plain doctest would read as
expected output; a small parser blanks those fence lines first.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

from doctest_helpers import OPTIONS, FencedDocTestParser


def _package_modules() -> list[str]:
    """Every module of the installed package (found by walking it, so a new module's examples run too)."""
    import allmrec_hf

    return sorted(info.name for info in pkgutil.walk_packages(allmrec_hf.__path__, "allmrec_hf."))


MODULES = _package_modules()


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


# The main classes' modules: each must show a runnable example (the others run theirs when they have one).
WITH_EXAMPLES = {
    "allmrec_hf.catalog",
    "allmrec_hf.configuration_allmrec",
    "allmrec_hf.configuration_sasrec",
    "allmrec_hf.data.prepared",
    "allmrec_hf.modeling_allmrec",
    "allmrec_hf.modeling_allmrec_ranking",
    "allmrec_hf.modeling_sasrec",
    "allmrec_hf.pipelines",
    "allmrec_hf.processing_allmrec",
}


def _module_of(test: doctest.DocTest) -> str:
    """The module a doctest was found in (the longest module name its name starts with)."""
    return max((m for m in MODULES if test.name == m or test.name.startswith(m + ".")), key=len)


def test_every_module_is_collected_and_the_main_ones_have_examples():
    assert {"allmrec_hf.training.collators", "allmrec_hf.training.memory", "allmrec_hf.offline_models"} <= set(MODULES)
    assert WITH_EXAMPLES <= {_module_of(t) for t in DOCTESTS}
    assert len(DOCTESTS) >= 70


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name.removeprefix("allmrec_hf.data.") for t in DOCTESTS])
def test_docstring_examples(test):
    runner = doctest.DocTestRunner(optionflags=OPTIONS, verbose=False)
    output: list[str] = []
    result = runner.run(test, out=output.append, clear_globs=True)
    assert result.failed == 0, "".join(output)
    runnable = [e for e in test.examples if not e.options.get(doctest.SKIP)]
    assert result.attempted == len(runnable)  # examples marked +SKIP need the user's files
