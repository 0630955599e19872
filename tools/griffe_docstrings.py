"""Griffe extensions for peer-ring's docstring conventions.

``CommentDocstrings``: ``#:`` comments above an attribute are its docstring.

peer-ring documents module constants, type aliases and dataclass fields with
``#:`` comment blocks right above them (the Sphinx autodoc convention), e.g.::

    #: A user conflict resolver: the visible sibling values -> one value.
    MergeFunction = Callable[[list[bytes]], bytes]

Griffe reads only string literals after an attribute, so without this the
API reference and ``tests/unit/test_docstrings.py`` would see those names as
undocumented. Loaded by mkdocs.yml (mkdocstrings ``extensions``) and by the
test, so both judge the same docstrings.

``SphinxRoles``: the docstrings use Sphinx cross-reference roles
(``:class:`~peer_ring.errors.ConfigError```), which Markdown would show
literally; they become inline code of the name (``ConfigError``).
"""

from __future__ import annotations

import ast
import re
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


_ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc|obj):`~?(?:[\w.]+\.)?([\w]+)(\(\))?`")


def strip_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```, ``:meth:`x.y()``` -> ```y()```."""
    return _ROLE.sub(lambda m: f"`{m.group(1)}{m.group(2) or ''}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring to inline code."""

    def on_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        obj: griffe.Object,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = strip_roles(obj.docstring.value)
