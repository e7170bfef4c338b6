"""Plot a fan-out comparison: server CPU per delivered MB and latency p99 against viewers.

Reads the JSON written by ``bench/compare.py`` and draws one PNG with two panels
sharing the viewer axis: server CPU ms per delivered MB, and end-to-end latency
p99 (ms), one line per server and stream bitrate.  Runs repeated with
``--repeat`` are drawn as their median with the individual runs as dots.

Needs matplotlib (a bench-only dependency, not in pyproject)::

    .venv/bin/pip install matplotlib
    .venv/bin/python bench/plot_compare.py bench/results/compare-quiet.json \\
        --out docs/benchmarks-compare.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

COLORS = {"streamserver": "tab:blue", "nginx-rtmp": "tab:orange"}
MARKERS = ["o", "s", "^", "D"]


def series(
    runs: list[dict[str, Any]], key: Any
) -> dict[tuple[str, float], list[tuple[int, float]]]:
    """(server, bitrate) -> [(viewers, value)] for every run that has the value."""
    out: dict[tuple[str, float], list[tuple[int, float]]] = {}
    for run in runs:
        value = key(run)
        if value is None:
            continue
        out.setdefault((run["server"], round(run["bitrate_kbps"], -1)), []).append(
            (run["viewers"], value)
        )
    return out


def draw(axes: Any, data: dict[tuple[str, float], list[tuple[int, float]]], ylabel: str) -> None:
    bitrates = sorted({kbps for _, kbps in data}, reverse=True)
    for (server, kbps), points in sorted(data.items()):
        by_n: dict[int, list[float]] = {}
        for n, value in points:
            by_n.setdefault(n, []).append(value)
        xs = sorted(by_n)
        ys = [statistics.median(by_n[n]) for n in xs]
        marker = MARKERS[bitrates.index(kbps) % len(MARKERS)]
        color = COLORS.get(server)
        linestyle = "-" if kbps == bitrates[0] else "--"
        axes.plot(
            xs,
            ys,
            marker=marker,
            linestyle=linestyle,
            color=color,
            label=f"{server}, {kbps / 1000:g} Mbit/s",
        )
        for n in xs:
            if len(by_n[n]) > 1:
                axes.scatter([n] * len(by_n[n]), by_n[n], color=color, s=8, alpha=0.5)
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_ylabel(ylabel)
    axes.set_xscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="compare-*.json files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default=None)
    options = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    machine = None
    for path in options.results:
        data = json.loads(path.read_text())
        if "runs" not in data:
            raise SystemExit(f"{path}: not a bench/compare.py result")
        runs.extend(data["runs"])
        machine = machine or data.get("machine")
    figure, (cpu_axes, latency_axes) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    draw(cpu_axes, series(runs, lambda r: r["server_cpu_ms_per_mb"]), "server CPU ms per MB")
    draw(latency_axes, series(runs, lambda r: r["latency_ms"]["p99"]), "latency p99 (ms)")
    latency_axes.set_xlabel("viewers")
    viewers = sorted({run["viewers"] for run in runs})
    latency_axes.set_xticks(viewers)
    latency_axes.set_xticklabels([str(v) for v in viewers])
    latency_axes.xaxis.set_minor_formatter(NullFormatter())
    title = options.title or "Fan-out: streamserver vs nginx-rtmp, one publisher, loopback"
    if machine:
        title += (
            f"\n{machine.get('nproc')} CPUs ({machine.get('cpu')}), kernel {machine.get('kernel')}"
        )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(options.out, dpi=110)
    sys.stderr.write(f"wrote {options.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
