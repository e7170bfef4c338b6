"""Plot (and tabulate) fan-out comparisons: CPU per delivered MB and latency p99 against viewers.

Reads one or more JSON files written by ``bench/compare.py`` and draws one PNG: a
column per reader mode of the load generator (*batched*: fanout.py's default,
viewers other than the probes read with ``SO_RCVLOWAT``; *eager*: every viewer
reads each frame as it arrives, ``--rcvlowat 0 --probes all``), with server CPU
ms per delivered MB on top and end-to-end latency p99 below, one line per server
and stream bitrate.  Repeated runs of a case are drawn as their median, with the
single runs as dots.

Runs during which the rest of the machine used more than ``--max-other`` CPU
seconds per second (fanout's ``machine.other_cpu_s_per_s``) are left out and
listed on stderr.  ``--markdown FILE`` also writes the medians as tables.

Needs matplotlib (a bench-only dependency, not in pyproject)::

    .venv/bin/pip install matplotlib
    .venv/bin/python bench/plot_compare.py bench/results/compare-*.json \\
        --out docs/benchmarks-compare.png --markdown bench/results/compare-tables.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

DIRECT_WRITE = "streamserver, direct write (experiment)"
HTTP_FLV = "streamserver, http-flv"
COLORS = {
    "streamserver": "tab:blue",
    "nginx-rtmp": "tab:orange",
    DIRECT_WRITE: "tab:green",
    HTTP_FLV: "tab:purple",
}
MODES = ("batched", "eager")

Case = tuple[str, str, int, float]  # mode, server, viewers, kbit/s


def mode(run: dict[str, Any]) -> str:
    return "eager" if run["generator"].get("rcvlowat") == 0 else "batched"


def server(run: dict[str, Any]) -> str:
    """The server's name; streamserver started by bench/experiments/ gets its own, and so
    do runs whose viewers played HTTP-FLV."""
    if "twistd_direct_write" in run.get("server_command", ""):
        return DIRECT_WRITE
    if run.get("protocol", "rtmp") != "rtmp":
        return f"{run['server']}, {run['protocol']}"
    return str(run["server"])


def group(runs: list[dict[str, Any]]) -> dict[Case, list[dict[str, Any]]]:
    cases: dict[Case, list[dict[str, Any]]] = {}
    for run in runs:
        key = (mode(run), server(run), run["viewers"], round(run["bitrate_kbps"], -1))
        cases.setdefault(key, []).append(run)
    return cases


def med(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> float | None:
    values = [v for v in map(get, runs) if v is not None]
    return statistics.median(values) if values else None


def draw(
    axes: Any,
    cases: dict[Case, list[dict[str, Any]]],
    which: str,
    get: Callable[[dict[str, Any]], Any],
    ylabel: str,
) -> None:
    lines: dict[tuple[str, float], list[tuple[int, list[float]]]] = {}
    for (run_mode, name, viewers, kbps), runs in sorted(cases.items()):
        if run_mode != which:
            continue
        values = [v for v in map(get, runs) if v is not None]
        if values:
            lines.setdefault((name, kbps), []).append((viewers, values))
    bitrates = sorted({kbps for _, kbps in lines}, reverse=True)
    for (name, kbps), points in sorted(lines.items()):
        xs = [n for n, _ in points]
        ys = [statistics.median(values) for _, values in points]
        color = COLORS.get(name)
        main = kbps == bitrates[0]
        axes.plot(
            xs,
            ys,
            marker="o" if main else "s",
            linestyle="-" if main else "--",
            color=color,
            label=f"{name}, {kbps / 1000:g} Mbit/s",
        )
        for n, values in points:
            if len(values) > 1:
                axes.scatter([n] * len(values), values, color=color, s=10, alpha=0.5)
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_ylabel(ylabel)
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(cases: dict[Case, list[dict[str, Any]]]) -> str:
    out = []
    for which in MODES:
        rows = sorted(
            ((key, runs) for key, runs in cases.items() if key[0] == which),
            key=lambda item: (item[0][2], -item[0][3], item[0][1]),
        )
        if not rows:
            continue
        out.append(f"**{which} readers** (median of the runs; CPU ms per MB min-max)\n")
        out.append(
            "| server | viewers | Mbit/s | runs | server CPU s/s | CPU ms per MB | "
            "latency p50 / p99 ms | frames lost (all runs) | RSS idle / peak MB | "
            "RSS per idle viewer KB | generator CPU s/s |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for (_, name, viewers, kbps), runs in rows:
            per_mb = [r["server_cpu_ms_per_mb"] for r in runs]
            lost = sum((r["frames_lost_per_viewer"] or {}).get("total") or 0 for r in runs)
            spread = f" ({min(per_mb):.2f}-{max(per_mb):.2f})" if len(runs) > 1 else ""
            per_viewer = med(runs, lambda r: r["rss_bytes_per_idle_viewer"])
            out.append(
                f"| {name} | {viewers} | {kbps / 1000:g} | {len(runs)} "
                f"| {fmt(med(runs, lambda r: r['server_cpu_s_per_s']), 3)} "
                f"| {fmt(med(runs, lambda r: r['server_cpu_ms_per_mb']), 2)}{spread} "
                f"| {fmt(med(runs, lambda r: r['latency_ms']['p50']), 2)} / "
                f"{fmt(med(runs, lambda r: r['latency_ms']['p99']), 2)} "
                f"| {lost} "
                f"| {fmt(med(runs, lambda r: r['rss_mb']['idle_viewers']))} / "
                f"{fmt(med(runs, lambda r: r['rss_mb']['peak']))} "
                f"| {fmt(per_viewer / 1000 if per_viewer is not None else None)} "
                f"| {fmt(med(runs, lambda r: r['generator']['cpu_s_per_s']), 3)} |"
            )
        out.append("")
        out.append(
            "| server | viewers | Mbit/s | CPU per MB, server / nginx-rtmp "
            "| p99, server - nginx-rtmp, ms |"
        )
        out.append("|---|---|---|---|---|")
        pairs: dict[tuple[int, float], dict[str, list[dict[str, Any]]]] = {}
        for (_, name, viewers, kbps), runs in rows:
            pairs.setdefault((viewers, kbps), {})[name] = runs
        for (viewers, kbps), servers in sorted(pairs.items()):
            theirs = servers.get("nginx-rtmp")
            for name in ("streamserver", DIRECT_WRITE, HTTP_FLV):
                ours = servers.get(name)
                if not ours or not theirs:
                    continue
                a = med(ours, lambda r: r["server_cpu_ms_per_mb"])
                b = med(theirs, lambda r: r["server_cpu_ms_per_mb"])
                p = med(ours, lambda r: r["latency_ms"]["p99"])
                q = med(theirs, lambda r: r["latency_ms"]["p99"])
                out.append(
                    f"| {name} | {viewers} | {kbps / 1000:g} "
                    f"| {fmt(a / b if a and b else None, 2)}x "
                    f"| {fmt(p - q if p is not None and q is not None else None, 2)} |"
                )
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="compare-*.json files")
    parser.add_argument("--out", type=Path, required=True, help="the PNG")
    parser.add_argument("--markdown", type=Path, default=None, help="also write tables here")
    parser.add_argument("--max-other", type=float, default=0.25)
    parser.add_argument("--title", default=None)
    options = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    machine = None
    for path in options.results:
        data = json.loads(path.read_text())
        if "runs" not in data:
            raise SystemExit(f"{path}: not a bench/compare.py result")
        machine = machine or data.get("machine")
        for run in data["runs"]:
            other = run["machine"].get("other_cpu_s_per_s")
            if other is not None and other > options.max_other:
                sys.stderr.write(
                    f"left out {path.name}: {run['label']} ({mode(run)}): other load {other} s/s\n"
                )
                continue
            runs.append(run)
    cases = group(runs)
    modes = [m for m in MODES if any(key[0] == m for key in cases)]
    figure, axes = plt.subplots(
        2, len(modes), figsize=(6 * len(modes), 8), sharex=True, squeeze=False
    )
    viewers = sorted({run["viewers"] for run in runs})
    for column, which in enumerate(modes):
        cpu_axes, latency_axes = axes[0][column], axes[1][column]
        draw(cpu_axes, cases, which, lambda r: r["server_cpu_ms_per_mb"], "server CPU ms per MB")
        draw(latency_axes, cases, which, lambda r: r["latency_ms"]["p99"], "latency p99 (ms)")
        cpu_axes.set_title(f"{which} readers", fontsize=10)
        latency_axes.set_xlabel("viewers")
        latency_axes.set_xticks(viewers)
        latency_axes.set_xticklabels([str(v) for v in viewers])
        latency_axes.xaxis.set_minor_formatter(NullFormatter())
    title = options.title or "Fan-out on loopback: streamserver vs nginx-rtmp, one publisher"
    if machine:
        title += (
            f"\n{machine.get('nproc')} CPUs ({machine.get('cpu')}), kernel {machine.get('kernel')}"
        )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(options.out, dpi=110)
    sys.stderr.write(f"wrote {options.out}\n")
    if options.markdown is not None:
        options.markdown.write_text(markdown(cases))
        sys.stderr.write(f"wrote {options.markdown}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
