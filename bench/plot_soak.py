"""Plot soak runs: the server's RSS over time, and slow viewers' lag p99 per second.

Reads two or more sample files written by ``bench/soak.py --out`` and draws one PNG
with two panels sharing the time axis: server RSS (MB) per run, and the slow viewers'
per-second lag p99 per run (log scale: with ``--no-drop`` it grows without bound).
Optionally writes the runs' summaries and commands to one JSON file.

Needs matplotlib (a bench-only dependency, not in pyproject)::

    .venv/bin/pip install matplotlib
    .venv/bin/python bench/plot_soak.py bench/results/policy-on.json \\
        bench/results/no-drop.json --label "policy on" --label=--no-drop \\
        --out docs/soak-rss.png --summary-out docs/soak-results.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path: Path) -> dict[str, Any]:
    """A soak result file: ``{"summary": {...}, "samples": [...]}``."""
    data = json.loads(path.read_text())
    if "samples" not in data or "summary" not in data:
        raise SystemExit(f"{path}: not a bench/soak.py --out file")
    return data


def plot(runs: list[tuple[str, dict[str, Any]]], out: Path, title: str) -> None:
    figure, (rss_axes, lag_axes) = plt.subplots(
        2, 1, figsize=(10, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    warmups = set()
    for label, data in runs:
        samples = data["samples"]
        summary = data["summary"]
        warmups.add(summary["warmup_s"])
        t = [s["t"] for s in samples]
        rss = [s["rss_mb"] for s in samples]
        growth = summary["server"]["rss_growth_after_warmup_mb"]
        line = rss_axes.plot(t, rss, label=f"{label} (+{growth} MB after warm-up)")[0]
        if summary.get("aborted"):
            rss_axes.annotate(
                "aborted",
                (t[-1], rss[-1]),
                color=line.get_color(),
                xytext=(5, 0),
                textcoords="offset points",
            )
        lag = [
            (s["t"], s["lag_ms"]["slow"]["p99"] / 1000)
            for s in samples
            if s["lag_ms"]["slow"]["p99"] is not None
        ]
        lag_axes.plot([x for x, _ in lag], [y for _, y in lag], label=label, color=line.get_color())
    for warmup in warmups:
        for axes in (rss_axes, lag_axes):
            axes.axvline(warmup, color="grey", linestyle=":", linewidth=1)
    rss_axes.set_ylabel("server RSS (MB)")
    rss_axes.set_ylim(bottom=0)
    rss_axes.set_title(title)
    rss_axes.grid(True, alpha=0.3)
    rss_axes.legend(loc="upper left")
    lag_axes.set_yscale("log")
    lag_axes.set_ylabel("slow viewers' lag p99 (s)")
    lag_axes.set_xlabel("time since the publisher started (s); dotted: end of warm-up")
    lag_axes.grid(True, which="both", alpha=0.3)
    lag_axes.legend(loc="upper left")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def _interpreter() -> str:
    """This interpreter's path, relative to the working directory when inside it."""
    path = Path(sys.executable)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="bench/soak.py --out files")
    parser.add_argument(
        "--label", action="append", default=[], help="one per file, in order (default: its label)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/soak-rss.png"))
    parser.add_argument("--summary-out", type=Path, default=None, help="write summaries here")
    parser.add_argument("--title", default=None)
    options = parser.parse_args(argv)
    if options.label and len(options.label) != len(options.files):
        parser.error("give one --label per file, or none")
    runs = []
    for index, path in enumerate(options.files):
        data = load(path)
        label = options.label[index] if options.label else data["summary"]["label"]
        runs.append((label, data))
    first = runs[0][1]["summary"]
    title = options.title or (
        f"streamserver soak: {first['viewers']} viewers, {first['duration_s']} s, "
        f"{first['publisher']['nominal_kbps']:.0f} kbit/s stream"
    )
    plot(runs, options.out, title)
    if options.summary_out is not None:
        report = {
            "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "plot_command": shlex.join([_interpreter(), *sys.argv]),
            "runs": [
                {"label": label, "command": data["summary"]["command"], "summary": data["summary"]}
                for label, data in runs
            ],
        }
        options.summary_out.parent.mkdir(parents=True, exist_ok=True)
        options.summary_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
