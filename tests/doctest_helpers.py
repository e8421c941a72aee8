"""Doctest helpers shared by the tests: a parser for the docstrings' Markdown-fenced examples."""

from __future__ import annotations

import doctest
import re

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_FENCE = re.compile(r"^[ \t]*```(?:python)?[ \t]*$", re.M)


class FencedDocTestParser(doctest.DocTestParser):
    """A doctest parser that ignores lines made only of ``` or ```python (a blank line ends an expected output,
    so a closing fence right after one is not taken as part of it)."""

    def parse(self, string, name="<string>"):
        return super().parse(_FENCE.sub("", string), name)
