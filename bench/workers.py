"""Workers benchmark: the viewers one server holds with every frame delivered, for
``--workers 1`` and ``--workers 2`` (docs/scaling.md, "Every core: --workers").

For each worker count it starts ``twistd -n streamserver`` (with ``--workers N``
when N > 1) on free loopback ports and runs ``bench/fanout.py`` against it at a
ladder of viewer counts (``--ladder``, each step ``--duration`` s after
``--warmup`` s, a ``--bitrate`` kbit/s synthetic stream).  A step *holds* when
every viewer got every frame (``frames_lost.total == 0``, nobody disconnected,
everyone got media); the ladder stops at the first step that does not.  The
server's CPU is the sum over its process tree (the supervisor, the origin and
every worker: ``utime + stime`` from ``/proc``), read around each step; the load
generator (fanout.py, one process) reports its own CPU, since it shares the
machine's cores with the server.

Prints one JSON line (per worker count: each step's viewers, held, server CPU,
generator CPU, frames lost, latency p50/p99, RSS per process) and writes it to
``--out``.  Example::

    .venv/bin/python bench/workers.py --ladder 200,400,800,1200,1600 \\
        --out bench/results/workers.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """*pid* and its descendants, from ``/proc/PID/task/*/children``."""
    found = [pid]
    index = 0
    while index < len(found):
        base = Path(f"/proc/{found[index]}/task")
        index += 1
        try:
            tasks = list(base.iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """``utime + stime`` of *pids*, in seconds (gone processes count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mb(pids: list[int]) -> list[float]:
    values = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    values.append(round(int(line.split()[1]) / 1024, 1))
        except OSError:
            pass
    return values


class Server:
    """``twistd -n streamserver`` with *workers* on free loopback ports."""

    def __init__(self, twistd: str, workers: int, directory: Path) -> None:
        self.port = free_port()
        self.http_port = free_port()
        argv = [
            twistd, "-n", "--pidfile=", "--logfile", str(directory / f"twistd-{workers}.log"),
            "streamserver", "--rtmp", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
            "--http", f"tcp:{self.http_port}:interface=127.0.0.1:backlog=1024",
        ]  # fmt: skip
        if workers > 1:
            argv += ["--workers", str(workers), "--workers-dir", str(directory / "run")]
        self.process = subprocess.Popen(argv, cwd=directory)
        self.workers = workers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._accepts() and len(tree(self.process.pid)) >= (
                workers + 2 if workers > 1 else 1
            ):
                time.sleep(1.0)
                return
            time.sleep(0.2)
        raise RuntimeError("the server never accepted connections")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_step(
    server: Server, viewers: int, options: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """fanout.py with *viewers* against *server*; its summary and the tree's CPU."""
    pids = tree(server.process.pid)
    argv = [
        sys.executable, str(HERE / "fanout.py"),
        "--url", f"rtmp://127.0.0.1:{server.port}/live/bench",
        "--viewers", str(viewers), "--bitrate", str(options.bitrate),
        "--duration", str(options.duration), "--warmup", str(options.warmup),
        "--out", str(out),
    ]  # fmt: skip
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    span = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"fanout.py failed: {result.stderr[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    lost = summary["frames_lost_per_viewer"] or {}
    fast = summary["fast"]
    held = (
        lost.get("total") == 0
        and fast.get("disconnected") == 0
        and fast.get("got_media") == viewers
    )
    return {
        "viewers": viewers,
        "held": held,
        "server_cpu_s_per_s": round(cpu / span, 3),
        "generator_cpu_s_per_s": summary["generator"]["cpu_s_per_s"],
        "machine_busy_s_per_s": summary["machine"]["busy_s_per_s"],
        "frames_lost": lost,
        "disconnected": fast.get("disconnected"),
        "latency_ms": {k: summary["latency_ms"].get(k) for k in ("p50", "p99", "max")},
        "delivered_mb_per_s": summary["delivered_mb_per_s"],
        "rss_mb": rss_mb(tree(server.process.pid)),
        "loadavg": summary["machine"]["loadavg"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--ladder", default="200,400,800,1200,1600", help="viewer counts")
    parser.add_argument("--bitrate", type=int, default=1000, help="kbit/s of the stream")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "bitrate_kbps": options.bitrate}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        directory = Path(tmp)
        for workers in (int(n) for n in options.workers.split(",")):
            server = Server(options.twistd, workers, directory)
            steps = []
            try:
                for viewers in (int(n) for n in options.ladder.split(",")):
                    log(f"--workers {workers}: {viewers} viewers")
                    step = run_step(
                        server, viewers, options, directory / f"{workers}-{viewers}.json"
                    )
                    log(json.dumps(step))
                    steps.append(step)
                    if not step["held"]:
                        break
            finally:
                server.stop()
            held = [step["viewers"] for step in steps if step["held"]]
            results[f"workers_{workers}"] = {"held": max(held, default=0), "steps": steps}
    line = json.dumps(results, separators=(",", ":"))
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(results, indent=1) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
