"""Every public name has a docstring, and every public module has a reference page.

"Public" is what a module exports in ``__all__``; the public modules are
``peer_ring``, the app API ``peer_ring.app`` once it exists, and each app's
package under ``peer_ring.apps`` that exports names. Docstrings are read the
way the site's API reference reads them (griffe, with the project's ``#:``
comment extension), so a name this test accepts renders with a description.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import pkgutil
import shutil
import tempfile
from pathlib import Path
from typing import Any

import griffe
import pytest
import yaml

import peer_ring.apps

ROOT = Path(__file__).resolve().parents[2]


def public_modules() -> list[str]:
    """The modules whose ``__all__`` is the public API (see the module docstring)."""
    names = ["peer_ring"]
    if importlib.util.find_spec("peer_ring.app") is not None:
        names.append("peer_ring.app")
    for info in pkgutil.iter_modules(peer_ring.apps.__path__, "peer_ring.apps."):
        if getattr(importlib.import_module(info.name), "__all__", None):
            names.append(info.name)
    return names


def _extensions() -> griffe.Extensions:
    return griffe.load_extensions(str(ROOT / "tools" / "griffe_docstrings.py"))


@functools.cache
def _source_root() -> str:
    """A copy of the package's source without compiled extensions (griffe would
    inspect a module's .so instead of its source in the compiled build)."""
    package = Path(importlib.import_module("peer_ring").__file__ or "").parent
    root = Path(tempfile.mkdtemp(prefix="peer-ring-docsrc-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    skip = shutil.ignore_patterns("*.so", "__pycache__")
    shutil.copytree(package, root / "peer_ring", ignore=skip)
    return str(root)


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    package = griffe.load(
        module_name,
        search_paths=[_source_root()],
        extensions=_extensions(),
        resolve_aliases=True,
        resolve_external=False,
    )
    missing = []
    for name in module.__all__:
        if name.startswith("__"):
            continue
        obj: Any = package[name]
        doc = obj.docstring
        if doc is None or not doc.value.strip():
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", public_modules())
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    assert _undocumented(module_name) == [], (
        f"public names of {module_name} without a docstring (or a #: comment above them)"
    )


def _nav_paths(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_paths(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_paths(value)]
    return []


def test_every_public_module_has_an_api_reference_page() -> None:
    # mkdocs.yml holds a !!python/name tag; only the nav matters here
    text = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(text[text.index("\nnav:") :])["nav"]
    pages = {p for p in _nav_paths(nav) if p.startswith("reference/api/")}
    wanted = {f"reference/api/{m}.md" for m in public_modules()}
    assert wanted - pages == set(), "add one nav line per public module to mkdocs.yml"
    assert pages - wanted == set(), "mkdocs.yml names API pages of modules that are not public"


def test_the_check_sees_a_missing_docstring(tmp_path: Path) -> None:
    """The checker itself: a package with one documented and one bare name."""
    pkg = tmp_path / "docprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '"""Probe."""\n\n#: Documented by a comment.\nALIAS = int\n\n'
        'class Bare:\n    pass\n\n__all__ = ["ALIAS", "Bare"]\n'
    )
    loaded = griffe.load("docprobe", search_paths=[str(tmp_path)], extensions=_extensions())
    assert loaded["ALIAS"].docstring is not None
    assert loaded["ALIAS"].docstring.value == "Documented by a comment."
    assert loaded["Bare"].docstring is None
