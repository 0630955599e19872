"""MkDocs hooks (mkdocs.yml ``hooks:``): pages generated at build time.

* **API reference**: every navigation entry ``reference/api/MODULE.md``
  becomes a page for the public module ``MODULE``: a table of the names in
  its ``__all__`` (first line of each docstring), then mkdocstrings renders
  each of them from its docstring. Adding a public module to the reference
  is one line in mkdocs.yml's ``nav``; the page needs no file.
* **Command line**: ``reference/cli.md`` is the help of every ``peer-ring``
  command and option, read from the click command tree, so it cannot drift
  from the program.

* **Project pages**: ``project/*.md`` are the repository's root files
  (CONTRIBUTING.md, SECURITY.md, ...), one source for both; their links,
  written for the repository (``docs/kv.md``, ``SECURITY.md``), are
  rewritten to the site's pages.

The configuration and metrics references are committed pages written by
``tools/gen_reference.py`` (a unit test checks they are current).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import griffe
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

TOOLS = Path(__file__).resolve().parent
#: Where the reference reads the source: the Makefile's copy of src/ without
#: compiled extensions (griffe would inspect a module's .so instead of its
#: source), else src/.
SRC = TOOLS.parent / os.environ.get("PEER_RING_DOCS_SRC", "src")

API_PREFIX = "reference/api/"
CLI_PAGE = "reference/cli.md"


def _nav_paths(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_paths(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_paths(value)


def api_modules(nav: Any) -> list[str]:
    """The modules named by ``reference/api/MODULE.md`` entries of the navigation."""
    return [
        path[len(API_PREFIX) : -len(".md")]
        for path in _nav_paths(nav)
        if path.startswith(API_PREFIX) and path.endswith(".md")
    ]


def summaries(module_name: str, names: list[str]) -> dict[str, str]:
    """First paragraph of each name's docstring, read as the reference reads it."""
    extensions = griffe.load_extensions(
        f"{TOOLS / 'griffe_docstrings.py'}:CommentDocstrings",
        f"{TOOLS / 'griffe_docstrings.py'}:SphinxRoles",
    )
    package = griffe.load(
        module_name, search_paths=[str(SRC)], extensions=extensions, resolve_aliases=True,
        resolve_external=False,
    )  # fmt: skip
    out = {}
    for name in names:
        doc = package[name].docstring
        text = doc.value.strip().split("\n\n")[0] if doc is not None else ""
        out[name] = escape_cell(text.replace("\n", " "))
    return out


def api_page(module_name: str) -> str:
    """Markdown of the reference page of one public module."""
    module = importlib.import_module(module_name)
    names = [n for n in getattr(module, "__all__", []) if not n.startswith("__")]
    if not names:
        raise ValueError(f"{module_name} has no __all__: it is not a public module")
    lines = [
        f"# `{module_name}`",
        "",
        "_Generated from the docstrings of the names in "
        f"`{module_name}.__all__`; import them from `{module_name}`, not from "
        "the modules that define them._",
        "",
        "| name | what |",
        "|---|---|",
    ]
    for name, summary in summaries(module_name, names).items():
        lines.append(f"| [`{name}`](#{module_name}.{name}) | {summary} |")
    lines += [
        "",
        f"::: {module_name}",
        "    options:",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "      show_submodules: false",
        "      members:",
        *(f"        - {n}" for n in names),
        "",
    ]
    return "\n".join(lines)


def escape_cell(text: str) -> str:
    """Escape ``|`` for a Markdown table cell, except inside code spans (where the
    table parser already ignores it and a backslash would show)."""
    parts = re.sub(r"``([^`]+)``", r"`\1`", text).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _command_help(cmd: click.Command, path: list[str], out: list[str]) -> None:
    ctx = click.Context(cmd, info_name=" ".join(path))
    level = "#" * min(len(path) + 1, 4)
    out += [f"{level} `{' '.join(path)}`", ""]
    if cmd.help:
        out += [inspect.cleandoc(cmd.help), ""]
    pieces = cmd.collect_usage_pieces(ctx)
    out += ["```text", f"{' '.join(path)} {' '.join(pieces)}".rstrip(), "```", ""]
    rows = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or record[0].startswith("--help"):
            continue
        rows.append(f"| `{record[0]}` | {escape_cell(record[1])} |")
    if rows:
        out += ["| option | meaning |", "|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                _command_help(sub, [*path, name], out)


def cli_page() -> str:
    """Markdown of every ``peer-ring`` command's help."""
    from peer_ring.cli import main

    out = [
        "# Command line",
        "",
        "_Generated from the `peer-ring` program itself (`peer-ring COMMAND --help` "
        "prints the same)._ Durations are seconds; `HOST:PORT` addresses.",
        "",
    ]
    _command_help(main, ["peer-ring"], out)
    return "\n".join(out)


#: Root files of the repository -> their page on the site (under project/).
ROOT_FILES = {
    "CONTRIBUTING.md": "contributing.md",
    "CODE_OF_CONDUCT.md": "code-of-conduct.md",
    "SECURITY.md": "security.md",
    "CHANGELOG.md": "changelog.md",
}


def rewrite_root_links(markdown: str) -> str:
    """Links of a root file, as seen from a page in project/."""
    for name, page in ROOT_FILES.items():
        markdown = markdown.replace(f"]({name})", f"]({page})")
        markdown = markdown.replace(f"]({name}#", f"]({page}#")
    return markdown.replace("](docs/", "](../")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages (they have no file under docs/)."""
    for module_name in api_modules(config.nav):
        uri = f"{API_PREFIX}{module_name}.md"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, content=api_page(module_name)))
    if files.get_file_from_path(CLI_PAGE) is None:
        files.append(File.generated(config, CLI_PAGE, content=cli_page()))
    root = Path(config.config_file_path).parent
    for name, page in ROOT_FILES.items():
        text = rewrite_root_links((root / name).read_text())
        files.append(File.generated(config, f"project/{page}", content=text))
    return files
