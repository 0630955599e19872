"""Pictures of the benchmark results for ``docs/benchmarks.md`` (``make bench``).

Run: ``.venv/bin/python bench/plot.py`` after the sweep it reads::

    .venv/bin/python bench/kv.py --embedded --sizes 3 --mixes get,put \\
        --concurrency 8,16,32,64,128,256 --seconds 2 --runs 5 --output kv-sweep

Reads ``bench/results/kv-sweep.json`` (``--sweep`` to pick another file) and
writes, into ``docs/img/`` (``--out``), 900x500 px PNGs at 110 dpi:

* ``kv-throughput-vs-concurrency.png`` -- embedded KV ops/s (left) and
  p50/p99 latency (right) against the operations outstanding in total, for
  pure get and pure put; bars span the runs' min..max ops/s when the sweep
  was run with ``--runs`` > 1.
* ``kv-latency-cdf.png`` -- latency CDF of get and put at ``--cdf-concurrency``
  outstanding (default 64), log-x, from the histogram of every operation's
  latency that the ``bench`` peer op answers (20 buckets per decade, so
  values are exact to ~12 %); right panel: the tail, 1 - CDF on a log axis.

Every picture carries the machine, the load average at the start, the date
and the exact command of its data in a footnote. Needs matplotlib (the
``bench`` extra: ``pip install -e '.[bench]'``); nothing in ``src`` or
``tests`` imports this file.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after matplotlib.use
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMG = ROOT / "docs" / "img"
DPI = 110
SIZE_PX = (900, 500)
COLORS = {"get": "#1f77b4", "put": "#d62728"}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def figure(ncols: int) -> tuple[Figure, list[Any]]:
    fig, axes = plt.subplots(
        1, ncols, figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI, squeeze=False
    )
    return fig, list(axes[0])


def footnote(fig: Figure, doc: dict[str, Any], extra: str = "") -> None:
    """Machine, load, date and the command that produced the data, under the plots."""
    m = doc.get("machine", {})
    load_s = "/".join(f"{x:.1f}" for x in m.get("loadavg_at_start") or []) or "?"
    if m.get("loadavg_at_end"):
        load_s += " (end " + "/".join(f"{x:.1f}" for x in m["loadavg_at_end"]) + ")"
    head = (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores shared by every node process and "
        f"the load generators; Python {m.get('python', '?')}; load avg at start {load_s}; "
        f"{doc.get('when', '?')}"
    )
    lines = textwrap.wrap(head + (f"; {extra}" if extra else ""), width=175)
    lines += textwrap.wrap("$ " + doc.get("command", "?"), width=175, subsequent_indent="    ")
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=6.5, color="#444444", va="bottom")


def save(fig: Figure, out: Path) -> Path:
    """Write a PNG with a 128-colour palette (a third of the bytes, same look)."""
    from PIL import Image  # matplotlib's own dependency

    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(colors=128).save(out, optimize=True)
    return out


def embedded_rows(doc: dict[str, Any], mix: str, nodes: int) -> list[dict[str, Any]]:
    rows = [r for r in doc.get("embedded", []) if r["mix"] == mix and r["nodes"] == nodes]
    return sorted(rows, key=lambda r: r["concurrency"])


def plot_throughput(doc: dict[str, Any], out: Path, nodes: int = 3) -> Path:
    fig, (ax_ops, ax_lat) = figure(2)
    concs: set[int] = set()
    shape = ""
    for mix in ("get", "put"):
        rows = embedded_rows(doc, mix, nodes)
        if not rows:
            continue
        r0 = rows[0]
        shape = f"{nodes} nodes, N={r0['n']} R={r0['r']} W={r0['w']}"
        xs = [r["concurrency"] for r in rows]
        concs.update(xs)
        ops = [r["ops_s"] for r in rows]
        lo = [r["ops_s"] - min(r.get("ops_s_runs", [r["ops_s"]])) for r in rows]
        hi = [max(r.get("ops_s_runs", [r["ops_s"]])) - r["ops_s"] for r in rows]
        color = COLORS.get(mix)
        ax_ops.errorbar(xs, ops, yerr=[lo, hi], marker="o", capsize=3, color=color, label=f"{mix}")
        ax_lat.plot(xs, [r["p99_ms"] for r in rows], marker="o", color=color, label=f"{mix} p99")
        ax_lat.plot(
            xs,
            [r["p50_ms"] for r in rows],
            marker="s",
            linestyle="--",
            color=color,
            alpha=0.7,
            label=f"{mix} p50",
        )
    ticks = sorted(concs)
    for ax in (ax_ops, ax_lat):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("operations outstanding (total over the nodes)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    runs = max((r.get("runs", 1) for r in doc.get("embedded", [])), default=1)
    ax_ops.set_ylabel("operations/s (cluster total)")
    ax_ops.set_ylim(bottom=0)
    ax_ops.yaxis.set_major_formatter(lambda v, _: f"{v / 1000:.0f}k")
    ax_ops.set_title(
        "Throughput" + (f" (median of {runs} runs, bar: min..max)" if runs > 1 else ""),
        fontsize=10,
    )
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax_lat.set_title("Latency of the median run (p50, p99)", fontsize=10)
    fig.suptitle(f"Embedded KV, {shape}: throughput and latency vs concurrency", fontsize=12)
    footnote(fig, doc, "load generated inside the node processes (bench peer op)")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.22, wspace=0.25)
    return save(fig, out)


def cdf_points(hist: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(latency ms at each bucket's upper edge, fraction of operations at or below it)."""
    k, first, counts = hist["per_decade"], hist["first"], hist["counts"]
    total = sum(counts)
    xs = [10 ** (first / k) / 1000.0]
    ys = [0.0]
    acc = 0
    for j, n in enumerate(counts):
        acc += n
        xs.append(10 ** ((first + j + 1) / k) / 1000.0)
        ys.append(acc / total)
    return xs, ys


def plot_cdf(doc: dict[str, Any], out: Path, concurrency: int, nodes: int = 3) -> Path:
    fig, (ax_cdf, ax_tail) = figure(2)
    shape = ""
    smallest = 1.0
    for mix in ("get", "put"):
        rows = [r for r in embedded_rows(doc, mix, nodes) if r["concurrency"] == concurrency]
        if not rows or not rows[0].get("latency_hist"):
            continue
        r = rows[0]
        shape = f"{nodes} nodes, N={r['n']} R={r['r']} W={r['w']}"
        xs, ys = cdf_points(r["latency_hist"])
        smallest = min(smallest, 1.0 / max(1, sum(r["latency_hist"]["counts"])))
        label = f"{mix}: p50 {r['p50_ms']:.2g}, p99 {r['p99_ms']:.2g}, p99.9 {r['p999_ms']:.2g} ms"
        color = COLORS.get(mix)
        ax_cdf.plot(xs, ys, color=color, label=label)
        tail = [(x, 1.0 - y) for x, y in zip(xs, ys, strict=True) if 1.0 - y > 1e-12]
        ax_tail.plot([t[0] for t in tail], [t[1] for t in tail], color=color, label=mix)
    for ax in (ax_cdf, ax_tail):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.set_xlabel("latency (ms, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    ax_cdf.set_ylim(0, 1.0)
    ax_cdf.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_cdf.set_ylabel("operations at or below the latency")
    ax_cdf.set_title("CDF", fontsize=10)
    ax_cdf.legend(fontsize=7.5, loc="upper left")
    ax_tail.set_yscale("log")
    ax_tail.set_ylim(bottom=smallest / 2, top=1.0)
    ax_tail.yaxis.set_major_formatter(lambda v, _: f"{v * 100:g} %")
    for q in (0.01, 0.001):
        ax_tail.axhline(q, color="#888888", linewidth=0.8, linestyle=":")
    for q, name in ((0.01, "p99"), (0.001, "p99.9")):
        ax_tail.text(0.01, q * 1.1, name, transform=ax_tail.get_yaxis_transform(), fontsize=7)
    ax_tail.set_ylabel("operations slower than the latency")
    ax_tail.set_title("Tail (1 - CDF)", fontsize=10)
    ax_tail.legend(fontsize=8)
    fig.suptitle(
        f"Embedded KV, {shape}: latency at {concurrency} operations outstanding", fontsize=12
    )
    footnote(fig, doc, "every operation of the measured window, 20 log buckets per decade")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.86, bottom=0.22, wspace=0.3)
    return save(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--sweep", default="kv-sweep", help="results file of the sweep, no .json")
    ap.add_argument("--out", type=Path, default=IMG, help="directory for the PNGs")
    ap.add_argument("--cdf-concurrency", type=int, default=64, help="outstanding ops of the CDF")
    args = ap.parse_args()
    path = args.results / f"{args.sweep}.json"
    if not path.exists():
        print(
            f"plot: {path} is missing; run bench/kv.py --embedded --sizes 3 --mixes get,put "
            f"--concurrency 8,16,32,64,128,256 --seconds 2 --runs 5 --output {args.sweep} first",
            file=sys.stderr,
        )
        return 1
    doc = load(path)
    written = [
        plot_throughput(doc, args.out / "kv-throughput-vs-concurrency.png"),
        plot_cdf(doc, args.out / "kv-latency-cdf.png", args.cdf_concurrency),
    ]
    for w in written:
        print(f"wrote {w.relative_to(ROOT) if w.is_relative_to(ROOT) else w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
