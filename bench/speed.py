"""Fan-out speed matrix: streamserver's ``--merge-ms`` settings against nginx-rtmp, same run.

For every case ``N@KBPS`` and every reader mode of the load generator
(*batched*: fanout.py's default, the viewers other than the probes read with
``SO_RCVLOWAT``; *every-frame*: ``--rcvlowat 0 --probes all``, every viewer wakes
for each frame), this script runs nginx-rtmp once and streamserver once per
``--merge`` setting, each fresh on a free loopback port with ``bench/fanout.py``
as a separate process (``bench/compare.py``'s servers and runner), the order
rotating from one case and mode to the next.  It records the load average before
and after each run.

Writes ``speed-TAG.json`` (every run's fanout summary, labelled with its mode
and merge setting) and ``speed-TAG.md`` (every run, and per case and mode the
ratios to nginx-rtmp of CPU ms per delivered MB and the p99 latency difference)
into ``--out-dir`` (default ``bench/results``); ``--plot FILE.png`` also draws
latency p50/p99 and CPU per MB against the merge setting (needs matplotlib).

Example (the issue 16 matrix, about 15 minutes, then the latency sweep)::

    .venv/bin/python bench/speed.py --case 400@1000 --case 1000@1000 --merge 0 --merge 20
    .venv/bin/python bench/speed.py --case 400@1000 --mode batched \\
        --merge 0 --merge 20 --merge 50 --merge 100 --plot docs/benchmarks-merge.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # bench/compare.py, beside this script

MODES = {"batched": [], "every-frame": ["--rcvlowat", "0", "--probes", "all"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", type=compare.parse_case, default=None)
    parser.add_argument("--mode", action="append", choices=sorted(MODES), default=None)
    parser.add_argument("--merge", action="append", type=int, default=None, help="ms, repeatable")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--fanout-arg", action="append", default=[])
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument(
        "--rtmp-module",
        default=compare.DEFAULT_RTMP_MODULE if Path(compare.DEFAULT_RTMP_MODULE).exists() else None,
    )
    parser.add_argument("--out-dir", type=Path, default=compare.BENCH / "results")
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--plot", type=Path, default=None)
    options = parser.parse_args(argv)
    options.case = options.case or [(400, 1000.0)]
    options.mode = options.mode or ["batched", "every-frame"]
    options.merge = options.merge if options.merge is not None else [0]
    return options


def label(run: dict[str, Any]) -> str:
    if run["server"] == "nginx-rtmp":
        return "nginx-rtmp"
    return f"streamserver merge {run['merge_ms']}"


def tables(runs: list[dict[str, Any]]) -> str:
    head = (
        "| mode | viewers | kbit/s | server | CPU s/s | CPU ms per MB | x nginx | "
        "p50 / p99 ms | p99 - nginx ms | lost total | RSS KB per idle viewer | "
        "generator CPU s/s | other s/s | load before / after |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    nginx: dict[tuple[str, int, float], dict[str, Any]] = {
        (r["mode"], r["viewers"], r["bitrate_kbps"]): r for r in runs if r["server"] == "nginx-rtmp"
    }
    for run in runs:
        ref = nginx.get((run["mode"], run["viewers"], run["bitrate_kbps"]))
        ms = run["server_cpu_ms_per_mb"]
        ratio = ms / ref["server_cpu_ms_per_mb"] if ref and ms else None
        p99 = run["latency_ms"]["p99"]
        dp99 = p99 - ref["latency_ms"]["p99"] if ref and p99 is not None else None
        per_viewer = run["rss_bytes_per_idle_viewer"]
        lost = (run["frames_lost_per_viewer"] or {}).get("total")
        rows.append(
            f"| {run['mode']} | {run['viewers']} | {run['bitrate_kbps']:.0f} | {label(run)} "
            f"| {compare.fmt(run['server_cpu_s_per_s'], 3)} | {compare.fmt(ms, 2)} "
            f"| {compare.fmt(ratio, 2)} "
            f"| {compare.fmt(run['latency_ms']['p50'], 1)} / {compare.fmt(p99, 1)} "
            f"| {compare.fmt(dp99, 1)} | {compare.fmt(lost)} "
            f"| {compare.fmt(per_viewer / 1000 if per_viewer is not None else None)} "
            f"| {compare.fmt(run['generator']['cpu_s_per_s'], 3)} "
            f"| {compare.fmt(run['machine']['other_cpu_s_per_s'], 2)} "
            f"| {run['load_before'][0]:.2f} / {run['load_after'][0]:.2f} |"
        )
    return head + "\n".join(rows) + "\n"


def plot(runs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = sorted((r for r in runs if r["server"] == "streamserver"), key=lambda r: r["merge_ms"])
    theirs = [r for r in runs if r["server"] == "nginx-rtmp"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    merges = [r["merge_ms"] for r in ours]
    top.plot(merges, [r["latency_ms"]["p50"] for r in ours], "o-", label="streamserver p50")
    top.plot(merges, [r["latency_ms"]["p99"] for r in ours], "s-", label="streamserver p99")
    for ref in theirs[:1]:
        top.axhline(ref["latency_ms"]["p99"], color="grey", ls="--", label="nginx-rtmp p99")
        top.axhline(ref["latency_ms"]["p99"] + 50, color="red", ls=":", label="nginx p99 + 50")
        bottom.axhline(ref["server_cpu_ms_per_mb"], color="grey", ls="--", label="nginx-rtmp")
    top.set_ylabel("end-to-end latency, ms")
    top.legend(fontsize=8)
    bottom.plot(merges, [r["server_cpu_ms_per_mb"] for r in ours], "o-", label="streamserver")
    bottom.set_ylabel("server CPU ms per delivered MB")
    bottom.set_xlabel("--merge-ms")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=8)
    first = ours[0] if ours else theirs[0]
    fig.suptitle(
        f"{first['viewers']} viewers of {first['bitrate_kbps']:.0f} kbit/s, {first['mode']} "
        "readers, same run"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="speed-"))
    variants: list[tuple[str, int | None]] = [] if options.no_nginx else [("nginx-rtmp", None)]
    variants += [("streamserver", merge) for merge in options.merge]
    turn = 0
    for viewers, kbps in options.case:
        for mode in options.mode:
            order = variants[turn % len(variants) :] + variants[: turn % len(variants)]
            turn += 1
            for name, merge in order:
                server: compare.Server
                if name == "nginx-rtmp":
                    server = compare.NginxRTMP(workdir, options.nginx, options.rtmp_module)
                else:
                    extra = ["--merge-ms", str(merge), *options.server_arg]
                    server = compare.StreamServer(workdir, options.twistd, extra, http=False)
                run_options = argparse.Namespace(
                    duration=options.duration,
                    warmup=options.warmup,
                    fanout_arg=[*MODES[mode], *options.fanout_arg],
                )
                summary = compare.run_case(server, "rtmp", viewers, kbps, run_options, workdir, 0)
                summary["load_after"] = [round(x, 2) for x in os.getloadavg()]
                summary["mode"] = mode
                summary["merge_ms"] = merge
                runs.append(summary)
                compare.log(
                    f"{mode} {viewers}@{kbps:g} {label(summary)}: "
                    f"{summary['server_cpu_ms_per_mb']} ms/MB, p50 "
                    f"{summary['latency_ms']['p50']} p99 {summary['latency_ms']['p99']} ms, "
                    f"gen {summary['generator']['cpu_s_per_s']} s/s, load "
                    f"{summary['load_before'][0]} -> {summary['load_after'][0]}"
                )
    document = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": compare.machine(),
        "source": compare.source_state(None),
        "runs": runs,
    }
    stem = options.out_dir / f"speed-{options.tag}"
    stem.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    text = f"# Fan-out speed {options.tag}\n\n`{document['command']}`\n\n" + tables(runs)
    stem.with_suffix(".md").write_text(text)
    print(text)
    if options.plot is not None:
        plot(runs, options.plot)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
