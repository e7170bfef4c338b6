"""streamserver with N LL-HLS clients next to N HTTP-FLV viewers, alternating, in one go.

Each run starts a fresh streamserver on free loopback ports (``twistd -n --pidfile=
--logfile=FILE streamserver --rtmp tcp:PORT:interface=127.0.0.1 --http
tcp:HTTP_PORT:interface=127.0.0.1 --hls-segment-seconds 2 --hls-part-ms 200``, plus
``--hls always`` for LL-HLS runs and ``--http-play-wait 60`` for HTTP-FLV runs,
whose viewers ask before anyone publishes), runs one load generator as its own
process with ``--server-pid``, and stops the server:

- ``hls@N``: ``bench/hls_clients.py --clients N`` (N hls.js-like LL-HLS clients,
  publishing the synthetic stream itself);
- ``flv@N``: ``bench/fanout.py --protocol http-flv --viewers N`` (``--fanout``
  names another fanout.py, e.g. one exported from another branch).

Both publish fanout.py's synthetic ``--bitrate`` kbit/s stream (a keyframe every
2 s).  Rounds (``--rounds``) run the cases in turn, the order reversed every other
round.  Before each run it waits until no other benchmark runs (``soak.py``,
``fanout.py``, ``compare.py``, ``hls_clients.py``, ``hls_compare.py``) and
records the 1-minute load average.  Every generator's JSON, the loads and the
server's log size go to ``OUT_DIR/hls-compare-TAG.json``, a table to
``OUT_DIR/hls-compare-TAG.md``, logs to ``OUT_DIR/hls-compare-TAG-logs/``.

    .venv/bin/python bench/hls_compare.py --case hls@500 --case flv@500 --case hls@250 \\
        --rounds 2 --tag a
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compare import _ancestors, free_port, machine, source_state, stop, wait_for_port

BENCH = Path(__file__).resolve().parent
_OTHERS = re.compile(r"bench/(soak|fanout|compare|hls_clients|hls_compare)\.py")


def log(text: str) -> None:
    print(f"[hls_compare {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def other_benchmarks() -> list[str]:
    """Benchmark processes other than this one and its ancestors (their command lines)."""
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if _OTHERS.search(line):
            found.append(f"{entry.name} {line}")
    return found


def wait_until_quiet(limit_s: float) -> list[str]:
    """Wait (at most *limit_s*) until no other benchmark runs; what still runs."""
    deadline = time.monotonic() + limit_s
    while (others := other_benchmarks()) and time.monotonic() < deadline:
        log(f"waiting for {len(others)} other benchmark(s): {others[0][:120]}")
        time.sleep(10)
    return others


def run_case(case: str, options: argparse.Namespace, logs: Path, n: int) -> dict[str, Any]:
    kind, _, count = case.partition("@")
    port, http_port = free_port(), free_port()
    stem = f"{n:02d}-{kind}-{count}"
    server_log = logs / f"{stem}-server.log"
    # a Python script (an instrumented twistd) runs with this interpreter
    launcher = (
        [sys.executable, options.twistd] if options.twistd.endswith(".py") else [options.twistd]
    )
    args = [
        *launcher,
        "-n",
        "--pidfile=",
        f"--logfile={server_log}",
        "streamserver",
        "--rtmp",
        f"tcp:{port}:interface=127.0.0.1",
        "--http",
        f"tcp:{http_port}:interface=127.0.0.1",
        "--hls-segment-seconds",
        "2",
        "--hls-part-ms",
        "200",
        *(["--hls", "always"] if kind == "hls" else ["--http-play-wait", "60"]),
        *options.server_arg,
    ]
    server = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(server, port, "twistd")
        wait_for_port(server, http_port, "twistd http")
        url = f"rtmp://127.0.0.1:{port}/live/bench"
        common = ["--url", url, "--server-pid", str(server.pid), "--bitrate", str(options.bitrate)]
        common += ["--duration", str(options.duration), "--warmup", str(options.warmup)]
        common += ["--out", str(logs / f"{stem}.json")]
        if kind == "hls":
            gen = [sys.executable, str(BENCH / "hls_clients.py"), "--clients", count]
            gen += ["--http-port", str(http_port), *common, *options.hls_arg]
        elif kind == "flv":
            gen = [sys.executable, str(options.fanout), "--protocol", "http-flv"]
            gen += ["--http-port", str(http_port), "--viewers", count, *common]
        else:
            raise SystemExit(f"unknown case {case!r}: hls@N or flv@N")
        with open(logs / f"{stem}-generator.log", "wb") as stderr:
            done = subprocess.run(gen, stdout=subprocess.PIPE, stderr=stderr, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{case}: generator exited {done.returncode}")
        summary: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    finally:
        stop(server)
    # twistd rotates its log every MB: FILE, FILE.1, FILE.2...
    lines = access = errors = size = 0
    for part in server_log.parent.glob(server_log.name + "*"):
        text = part.read_text(errors="replace")
        size += part.stat().st_size
        lines += text.count("\n")
        access += text.count('"GET ')
        errors += sum(1 for line in text.splitlines() if "Traceback" in line or "#error]" in line)
    summary["server_log"] = {
        "mb": round(size / 1e6, 1),
        "lines": lines,
        "access_log_lines": access,
        "errors": errors,
    }
    return summary


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| run | case | load 1 min | server CPU s/s | CPU ms/MB | requests/s | RSS peak MB "
        "| errors | part delay p50/p99 ms | kbit/s per client | generator CPU s/s "
        "| other CPU s/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for run in runs:
        s = run["summary"]
        if run["case"].startswith("hls"):
            requests = s["requests_per_s"]
            errors = s["error_count"]
            delay = f"{fmt(s['part_delay_ms']['p50'])} / {fmt(s['part_delay_ms']['p99'])}"
            kbps = s["media_kbps_per_client"]
        else:
            requests = "-"
            lost = s.get("frames_lost_per_viewer", {}).get("total")
            failures = s.get("connect", {}).get("failures")
            errors = f"{failures} (frames lost {lost})"
            delay = "-"
            kbps = s.get("delivered_kbps_per_viewer", {}).get("median")
        rows.append(
            f"| {run['n']} | {run['case']} | {fmt(run['load_1min'], 2)} "
            f"| {fmt(s['server_cpu_s_per_s'], 3)} | {fmt(s['server_cpu_ms_per_mb'])} "
            f"| {fmt(requests)} | {fmt(s['rss_mb']['peak'])} | {errors} | {delay} "
            f"| {fmt(kbps)} | {fmt(s['generator']['cpu_s_per_s'], 3)} "
            f"| {fmt(s['machine']['other_cpu_s_per_s'], 3)} |"
        )
    return "\n".join(rows) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--case", action="append", default=[], help="hls@N or flv@N")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bitrate", type=float, default=1000.0)
    parser.add_argument("--duration", type=int, default=45)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--tag", default="hls")
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--fanout", type=Path, default=BENCH / "fanout.py")
    parser.add_argument("--hls-arg", action="append", default=[], help="for hls_clients.py")
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    parser.add_argument("--max-wait", type=float, default=600, help="for other benchmarks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    cases = options.case or ["hls@500", "flv@500"]
    logs = options.out_dir / f"hls-compare-{options.tag}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    result = {
        "machine": machine(),
        "code": source_state(None),
        "argv": sys.argv[1:],
        "runs": runs,
    }
    n = 0
    for round_ in range(options.rounds):
        for case in cases if round_ % 2 == 0 else list(reversed(cases)):
            n += 1
            busy = wait_until_quiet(options.max_wait)
            load = os.getloadavg()[0]
            log(f"run {n}: {case} (load {load:.2f}{', BUSY' if busy else ''})")
            summary = run_case(case, options, logs, n)
            runs.append(
                {
                    "n": n,
                    "round": round_ + 1,
                    "case": case,
                    "load_1min": load,
                    "twistd": Path(options.twistd).name,
                    "other_benchmarks": busy,
                    "summary": summary,
                }
            )
            log(
                f"run {n}: {case}: server {summary['server_cpu_s_per_s']} CPU s/s, "
                f"{summary['server_cpu_ms_per_mb']} ms/MB"
            )
            out = options.out_dir / f"hls-compare-{options.tag}.json"
            out.write_text(json.dumps(result, indent=1) + "\n")
    md = options.out_dir / f"hls-compare-{options.tag}.md"
    md.write_text(table(runs))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
