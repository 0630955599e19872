"""Griffe extension: ``#:`` comments above an attribute are its docstring.

peer-ring documents module constants, type aliases and dataclass fields with
``#:`` comment blocks right above them (the Sphinx autodoc convention), e.g.::

    #: A user conflict resolver: the visible sibling values -> one value.
    MergeFunction = Callable[[list[bytes]], bytes]

Griffe reads only string literals after an attribute, so without this the
API reference and ``tests/unit/test_docstrings.py`` would see those names as
undocumented. Loaded by mkdocs.yml (mkdocstrings ``extensions``) and by the
test, so both judge the same docstrings.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


def comment_doc(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` block ending on the line above ``lineno`` (1-based), or None."""
    block: list[str] = []
    index = lineno - 2
    while index >= 0:
        text = lines[index].strip()
        if not text.startswith("#:"):
            break
        block.append(text[2:].removeprefix(" "))
        index -= 1
    if not block:
        return None
    return "\n".join(reversed(block)).strip() or None


class CommentDocstrings(griffe.Extension):
    """Give attributes without a docstring the ``#:`` comment above them."""

    def on_attribute_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        attr: griffe.Attribute,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if attr.docstring is not None or attr.lineno is None:
            return
        module = attr.module
        try:
            lines = module.lines_collection[module.filepath]  # type: ignore[index]
        except (KeyError, TypeError, griffe.BuiltinModuleError):
            return
        doc = comment_doc(list(lines), attr.lineno)
        if doc:
            attr.docstring = griffe.Docstring(doc, lineno=attr.lineno, parent=attr)
