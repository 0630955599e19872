"""Helpers shared by the benchmarks in ``bench/``.

Benchmarks run as scripts (``.venv/bin/python bench/NAME.py``), so this module
is imported as ``from _util import ...``. It holds only what every bench
needs: the machine description, percentiles, rich output and the JSON file
under ``bench/results/``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from peer_ring._build import build

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Rich console; wide enough for result tables when output is not a terminal.
console = Console()
if not console.is_terminal:
    console = Console(width=160)


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100) of already sorted samples; NaN if empty."""
    if not sorted_samples:
        return math.nan
    rank = math.ceil(p / 100.0 * len(sorted_samples))
    return float(sorted_samples[min(max(rank, 1), len(sorted_samples)) - 1])


def percentiles(
    samples: Iterable[float], ps: Sequence[float] = (50.0, 99.0, 99.9)
) -> dict[str, float]:
    """``{"p50": ..., "p99": ..., "p999": ...}`` of ``samples`` (any order)."""
    ordered = sorted(samples)
    return {_pname(p): percentile(ordered, p) for p in ps}


def _pname(p: float) -> str:
    text = f"{p:g}".replace(".", "")
    return f"p{text}"


def _loadavg() -> tuple[float, ...] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


#: The load average when the bench script started (this module is imported
#: first thing): the load at the end would include the benchmark's own load.
LOAD_AT_START = _loadavg()


def machine() -> dict[str, Any]:
    """What the numbers were measured on (recorded with every result file)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": LOAD_AT_START,
        "loadavg_at_end": _loadavg(),  # written with the results: includes the bench's load
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``bench/results/NAME.json`` with the machine, time and command."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {
        "bench": name,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([_executable(), *sys.argv]),
        "machine": machine(),
        # compiled (mypyc) or pure: the node processes import what this process does
        "build": build(),
        **results,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def _executable() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table; numbers right-aligned, floats shown with 3 significant places."""
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    return t


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def progress() -> Progress:
    """A rich progress display (use as a context manager)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def wait_ready(proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Read a node process's JSON log lines from its stdout until it logs
    ``{"event": "ready"}``; raises if it exits first or ``timeout`` passes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} exited before it was ready ({proc.poll()})")
        try:
            if json.loads(line).get("event") == "ready":
                return
        except ValueError:
            continue
    raise RuntimeError(f"{name} not ready within {timeout} s")


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """Stop the processes this script started, by their PID: SIGTERM to each
    still running (the last started first), then wait up to ``timeout`` s for
    each before SIGKILL."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
