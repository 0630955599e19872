"""Optional compiled build of the request hot path (mypyc).

Everything about the package lives in ``pyproject.toml``; this file only adds
C extensions when ``PEER_RING_COMPILE=1``. The modules named in
``peer_ring._build.HOT_MODULES`` are then compiled by mypyc from the same
typed Python source (mypy strict is what makes that possible), and Python
imports the compiled module in place of the ``.py`` one. Without the variable
the package is pure Python and behaves the same, only slower
(docs/benchmarks.md has both figures). ``peer_ring._build.build()`` tells
which one is running.

    pip install mypy . && PEER_RING_COMPILE=1 pip install --no-build-isolation .

mypy type-checks while mypyc compiles, so mypy and the package's own
dependencies (whose types it reads) must be installed where the build runs:
hence ``--no-build-isolation`` after a plain install.
    PEER_RING_COMPILE=1 python setup.py build_ext --inplace   # `make compile`
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup


def _ext_modules() -> list[object]:
    if os.environ.get("PEER_RING_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        raise SystemExit(
            "PEER_RING_COMPILE=1 needs mypy (it contains mypyc), the package's "
            "dependencies and a C compiler in the build environment: "
            "pip install mypy . && PEER_RING_COMPILE=1 pip install --no-build-isolation ."
        ) from exc

    here = Path(__file__).parent
    names = runpy.run_path(str(here / "src" / "peer_ring" / "_build.py"))["HOT_MODULES"]
    paths = ["src/" + name.replace(".", "/") + ".py" for name in names]
    return list(mypycify(paths, opt_level="3", debug_level="0"))


setup(ext_modules=_ext_modules())
