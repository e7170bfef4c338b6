"""The thin-link scenario against streamserver and nginx-rtmp: a slow viewer's frame ages.

The scenario of ``tests/integration/test_thin_link.py``, runnable against either
server and repeatable: two network namespaces joined by a veth pair with a
``tbf`` qdisc on the server's end (``tests/integration/netns.py``); in the server
namespace the server, a publisher (a stamped ~0.95 Mbit/s H.264 + AAC shaped
stream in real time) and 100 fast viewers on loopback; in the client namespace
one viewer reading over the link as fast as it can.  The peers are the test's
programs (``python -m tests.integration.thin_link_peers``).  Needs root and
iproute2.

- streamserver: ``twistd -n --pidfile= --logfile=FILE streamserver --rtmp
  tcp:1935:interface=0.0.0.0`` (plus ``--server-arg``);
- nginx-rtmp: ``nginx -p DIR -c DIR/nginx.conf``, one process (``master_process
  off``, ``daemon off``), ``load_module`` of the RTMP module, ``listen 1935;
  chunk_size 4096; application live { live on; publish_notify on; }``
  (``publish_notify`` so viewers are told ``UnpublishNotify`` at the end, as
  streamserver always does).

Per run: the slow viewer's largest frame age in its first 10 s, after them and in
its last 10 s (age = arrival - the publisher's send time, one clock), the frames
older than ``--budget-ms`` after its first 10 s, its video, keyframes, gaps and
starts at inter frames; the fast viewers' lost frames; the server's RSS (after
``--warmup`` s and its peak after that); the qdisc's counters.  Each run is one
JSON object in ``--out`` (default ``bench/results/thin-link-TAG.json``), a table
goes to stdout, progress to stderr.  Each run gets fresh namespaces.

Example (two runs of each, about five minutes)::

    sudo .venv/bin/python bench/thin_link.py --runs 2
    sudo .venv/bin/python bench/thin_link.py --servers streamserver --server-arg=--no-drop
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the test's helpers live in tests/integration

from tests.integration import netns  # noqa: E402

DEFAULT_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
#: Inside the server's own namespace nothing else listens.
PORT = 1935
STREAM_PATH = "live/thin"

NGINX_CONF = """\
{load_module}
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 8192; }}
rtmp {{
    server {{
        listen {port};
        chunk_size 4096;
        application live {{
            live on;
            publish_notify on;
        }}
    }}
}}
"""


def log(text: str) -> None:
    sys.stderr.write(f"[thin-link {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


class Child:
    """A child process whose stdout (JSON lines) and stderr go to files."""

    def __init__(self, argv: Sequence[str], workdir: Path, name: str, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.stdout = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        with contextlib.suppress(OSError):
            for line in self.stdout.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if record.get("event") == name:
                            found.append(record)
        return found

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr.read_text(errors="replace")[-1500:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def server_argv(kind: str, options: argparse.Namespace, workdir: Path) -> list[str]:
    if kind == "streamserver":
        return [
            options.twistd, "-n", "--pidfile=", f"--logfile={workdir / 'twistd.log'}",
            "streamserver", "--rtmp", f"tcp:{PORT}:interface=0.0.0.0", *options.server_arg,
        ]  # fmt: skip
    prefix = workdir / "nginx"
    prefix.mkdir()
    load = f"load_module {options.rtmp_module};" if options.rtmp_module else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(load_module=load, prefix=prefix, port=PORT))
    return [options.nginx, "-p", str(prefix), "-c", str(conf)]


class Run:
    """One run against one server on a fresh link."""

    def __init__(self, kind: str, link: netns.ThinLink, options: argparse.Namespace) -> None:
        self.kind = kind
        self.link = link
        self.options = options
        self.workdir = Path(tempfile.mkdtemp(prefix=f"thin-link-{kind}-"))
        self.children: list[Child] = []
        self.rss: list[tuple[float, int]] = []
        self.t0 = time.monotonic()

    def spawn(self, name: str, argv: Sequence[str], *, client_side: bool = False) -> Child:
        wrapped = self.link.in_client(argv) if client_side else self.link.in_server(argv)
        child = Child(wrapped, self.workdir, name, ROOT)
        self.children.append(child)
        return child

    def sample(self, server: Child) -> None:
        """Read the server's RSS, at most every half second."""
        now = time.monotonic() - self.t0
        if self.rss and now - self.rss[-1][0] < 0.5:
            return
        kib = rss_kib(server.pid)
        if kib is not None:
            self.rss.append((now, kib))

    def wait(self, until: Any, seconds: float, what: str, server: Child) -> None:
        deadline = time.monotonic() + seconds
        while not until():
            for child in self.children:
                if not child.running() and child.name in ("server", "publisher"):
                    if child.name == "publisher" and child.events("summary"):
                        continue
                    raise RuntimeError(f"{child.name} exited while waiting for {what}:\n"
                                       f"{child.tail()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
            self.sample(server)
            time.sleep(0.05)

    def run(self) -> dict[str, Any]:
        options = self.options
        peers = [sys.executable, "-m", "tests.integration.thin_link_peers"]
        local = f"rtmp://127.0.0.1:{PORT}/{STREAM_PATH}"
        remote = f"rtmp://{self.link.server_address}:{PORT}/{STREAM_PATH}"
        server = self.spawn("server", server_argv(self.kind, options, self.workdir))
        try:
            publisher = self.spawn(
                "publisher",
                [*peers, "publish", "--url", local, "--seconds", str(options.seconds),
                 "--kbps", str(options.kbps)],
            )  # fmt: skip
            self.wait(lambda: publisher.events("ready"), 30, "the publisher", server)
            self.t0 = time.monotonic()  # RSS is timed from the start of the stream
            self.rss.clear()
            fast = self.spawn(
                "fast", [*peers, "play", "--url", local, "--viewers", str(options.viewers)]
            )
            self.wait(lambda: fast.events("ready"), 60, "the fast viewers", server)
            slow = self.spawn(
                "slow",
                [
                    *peers,
                    "play",
                    "--url",
                    remote,
                    "--record",
                    "--budget-ms",
                    str(options.budget_ms),
                ],
                client_side=True,
            )
            self.wait(lambda: slow.events("ready"), 30, "the slow viewer", server)
            self.wait(lambda: not publisher.running(), options.seconds + 30, "the end", server)
            # viewers end at UnpublishNotify; one stuck behind a long queue is stopped
            with contextlib.suppress(RuntimeError):
                self.wait(
                    lambda: not fast.running() and not slow.running(),
                    options.drain,
                    "the viewers to end",
                    server,
                )
            for child in (fast, slow):
                child.stop()
            qdisc = self.link.qdisc_stats()
            congestion = self.link.sysctl("net.ipv4.tcp_congestion_control")
            server_alive = server.running()
        finally:
            for child in reversed(self.children):
                child.stop(grace=5)
        return self.summary(publisher, fast, slow, qdisc, congestion, server_alive)

    def summary(
        self,
        publisher: Child,
        fast: Child,
        slow: Child,
        qdisc: str,
        congestion: str,
        server_alive: bool,
    ) -> dict[str, Any]:
        published = (publisher.events("summary") or [{}])[-1]
        fast_summary = (fast.events("summary") or [{}])[-1]
        slow_summary = (slow.events("summary") or [{}])[-1]
        slow_viewer = (slow_summary.get("each") or [{}])[0]
        warm = [kib for t, kib in self.rss if t >= self.options.warmup]
        return {
            "server": self.kind,
            "server_alive_at_end": server_alive,
            "link": self.link.describe(),
            "congestion_control": congestion,
            "qdisc": qdisc,
            "rss_kib": {
                "start": self.rss[0][1] if self.rss else None,
                "after_warmup": warm[0] if warm else None,
                "end": warm[-1] if warm else None,
                "peak_after_warmup": max(warm) if warm else None,
                "growth": max(warm) - warm[0] if warm else None,
            },
            "publisher": published,
            "fast": {k: v for k, v in fast_summary.items() if k != "each"},
            "slow": slow_viewer,
            "slow_process": {k: v for k, v in slow_summary.items() if k != "each"},
            "workdir": str(self.workdir),
        }


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| server | run | slow: max age first 10 s / after 10 s / last 10 s (ms) | "
        "frames > budget after 10 s | slow: video (key) / gaps / bad starts | "
        "slow ended by | fast: lost frames | RSS growth after warm-up KiB | qdisc drops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        slow, fast = run["slow"], run["fast"]
        drops = run["qdisc"].partition("dropped ")[2].partition(",")[0] or "?"
        lines.append(
            f"| {run['server']} | {run['run']} | {slow.get('max_age_first_10s_ms')} / "
            f"{slow.get('max_age_after_10s_ms')} / {slow.get('max_age_last_10s_ms')} "
            f"| {slow.get('frames_over_budget_after_10s')} "
            f"| {slow.get('video')} ({slow.get('keyframes')}) / {slow.get('video_gaps')} / "
            f"{slow.get('bad_starts')} | {slow.get('ended_by')} | {fast.get('lost_frames')} "
            f"| {run['rss_kib']['growth']} | {drops} |"
        )
    return "\n".join(lines) + "\n"


def source_state() -> dict[str, Any]:
    """The commit measured and any uncommitted changes under ``src/``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_changes": git("status", "--porcelain", "--", "src").splitlines(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="streamserver,nginx-rtmp")
    parser.add_argument("--runs", type=int, default=1, help="runs per server")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of stream")
    parser.add_argument("--viewers", type=int, default=100, help="fast viewers")
    parser.add_argument("--kbps", type=float, default=950.0, help="stream bitrate")
    parser.add_argument("--budget-ms", type=float, default=3000.0, help="the age budget")
    parser.add_argument("--warmup", type=float, default=15.0, help="RSS baseline after this")
    parser.add_argument("--drain", type=float, default=30.0, help="viewers' time to end")
    parser.add_argument("--rate", default="300kbit")
    parser.add_argument("--burst", default="16kb")
    parser.add_argument("--latency", default="200ms")
    parser.add_argument(
        "--congestion", default=None, help="TCP congestion control in the server namespace"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="passed to 'twistd streamserver'"
    )
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument(
        "--rtmp-module",
        default=DEFAULT_RTMP_MODULE if Path(DEFAULT_RTMP_MODULE).exists() else None,
        help="the .so to load_module (none: rely on the nginx build)",
    )
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args(argv)
    if options.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        options.out = BENCH / "results" / f"thin-link-{stamp}.json"
    options.command = shlex.join([Path(sys.executable).name, *sys.argv])
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    reason = netns.missing_prerequisites()
    if reason is not None:
        raise SystemExit(f"cannot build the thin link: {reason}")
    kinds = []
    for name in options.servers.split(","):
        if name not in ("streamserver", "nginx-rtmp", "nginx"):
            raise SystemExit(f"unknown server {name!r}")
        kinds.append("nginx-rtmp" if name == "nginx" else name)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for index in range(options.runs):
        # alternate which server goes first, so a drift of the machine favours neither
        for kind in kinds if index % 2 == 0 else kinds[::-1]:
            with netns.open_link(options.rate, options.burst, options.latency) as link:
                if options.congestion:
                    link.set_sysctl("net.ipv4.tcp_congestion_control", options.congestion)
                log(f"{kind} run {index + 1}: {link.describe()}")
                summary = Run(kind, link, options).run()
            summary["run"] = index + 1
            runs.append(summary)
            slow = summary["slow"]
            log(
                f"{kind} run {index + 1}: slow max age first 10 s "
                f"{slow.get('max_age_first_10s_ms')} ms, after 10 s "
                f"{slow.get('max_age_after_10s_ms')} ms, last 10 s "
                f"{slow.get('max_age_last_10s_ms')} ms; fast lost "
                f"{summary['fast'].get('lost_frames')}; "
                f"RSS growth {summary['rss_kib']['growth']} KiB"
            )
    result = {"command": options.command, "source": source_state(), "runs": runs}
    options.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"written to {options.out}")
    sys.stdout.write(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
