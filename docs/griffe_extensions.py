"""Griffe extensions for the API reference (mkdocs.yml), so that the pages show what the code already says:

- `TransformersStyleReferences`: the docstrings name other objects the way transformers' docstrings do,
  [`ItemCatalog`]; each such name becomes a cross-reference that links to the object's page when the reference
  documents it, and stays plain code otherwise (an optional reference never fails the build).
- `FieldHelpDocstrings`: an argument dataclass documents its fields with `field(metadata={"help": ...})`, which
  is what `--help` prints; that text becomes the field's docstring.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict

import griffe

REFERENCE = re.compile(r"\[`~?([A-Za-z_][\w.]*)`\](?![\[(])")


class TransformersStyleReferences(griffe.Extension):
    """Rewrite [`Name`] in every docstring of the package into an optional autorefs cross-reference."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        objects = list(_walk(pkg))
        paths: dict[str, set[str]] = defaultdict(set)
        for obj in objects:
            paths[obj.name].add(obj.path)
        for obj in objects:
            if obj.docstring is not None:
                link = lambda match, o=obj: _reference(match.group(1), o, paths)  # noqa: E731
                obj.docstring.value = REFERENCE.sub(link, obj.docstring.value)


class FieldHelpDocstrings(griffe.Extension):
    """Give every `x: T = field(..., metadata={"help": "..."})` attribute without a docstring that help text."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for obj in _walk(pkg):
            if obj.is_attribute and obj.docstring is None and obj.value is not None:
                text = _field_help(str(obj.value))
                if text:
                    obj.docstring = griffe.Docstring(text, parent=obj)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _reference(name: str, obj: griffe.Object, paths: dict[str, set[str]]) -> str:
    short = name.rsplit(".", 1)[-1]
    candidates = paths.get(short, set())
    module = obj if obj.is_module else obj.module
    local = f"{module.path}.{short}"
    target = local if local in candidates else (next(iter(candidates)) if len(candidates) == 1 else None)
    if target is None:
        return f"`{short}`"
    return f'<autoref identifier="{target}" optional><code>{short}</code></autoref>'


def _field_help(source: str) -> str | None:
    """The `help` of a `field(..., metadata={"help": ...})` call's source, if it is one."""
    if not source.startswith("field("):
        return None
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None
    for keyword in getattr(call, "keywords", []):
        if keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "help":
                    try:
                        return str(ast.literal_eval(value))
                    except ValueError:  # an f-string or a name: not known statically
                        return None
    return None
