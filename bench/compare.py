"""Side-by-side fan-out benchmark: streamserver and nginx-rtmp under the same load.

For every case ``N@KBPS`` (N fast viewers of a synthetic H.264 + AAC stream at KBPS
kbit/s) and every server and viewer protocol, this script starts the server fresh
on a free loopback port, runs ``bench/fanout.py`` against it as a separate process
(so each run's load generator starts clean), stops the server and keeps fanout's
JSON line.  The runs alternate which goes first from one case (and one
``--repeat`` round) to the next, so a drift in the machine's state does not
always favour the same one.

``--protocol`` says how streamserver's viewers play: ``rtmp`` (the default),
``http-flv`` (``GET /live/NAME.flv``, chunked HTTP/1.1) or ``both`` (two runs of
streamserver per case and round, one per protocol).  nginx-rtmp plays RTMP only.

- streamserver: ``twistd -n --pidfile= --logfile=FILE streamserver --rtmp
  tcp:PORT:interface=127.0.0.1 --no-http`` (plus ``--server-arg``).  When
  HTTP-FLV viewers are measured, every streamserver run of the invocation (RTMP
  ones included: the same server, only the viewers differ) gets ``--http
  tcp:HTTP_PORT:interface=127.0.0.1 --http-play-wait 60`` instead of
  ``--no-http``; the wait keeps the requests made before anyone publishes from
  being answered 404 during the connect phase and the idle RSS sample;
- nginx-rtmp: ``nginx -p DIR -c DIR/nginx.conf`` with a generated config: one
  process (``master_process off``, ``daemon off``), ``load_module`` of the RTMP
  module, ``listen 127.0.0.1:PORT; chunk_size 4096; application live { live on; }``.

Writes ``compare-TAG.json`` (every run's summary, the machine, the commands, the
load average before each run) and ``compare-TAG.md`` (the tables: every run, the
ratios to nginx-rtmp, HTTP-FLV against RTMP per round) into ``--out-dir``
(default ``bench/results``), and prints the tables.

Other benchmark processes running at the same time make the numbers meaningless,
so the script refuses to start while ``soak.py`` or ``fanout.py`` processes it did
not start are running (``--allow-busy`` overrides; the runs are then marked).
Each run also reports the CPU the rest of the machine used during its
measurement window (``other s/s`` in the table).

Example (the full comparison, about 10 minutes; then HTTP-FLV against RTMP)::

    .venv/bin/python bench/compare.py --tag quiet
    .venv/bin/python bench/compare.py --case 400@1000 --protocol both --repeat 2 --tag http
    .venv/bin/python bench/plot_compare.py bench/results/compare-quiet.json \\
        --out docs/benchmarks-compare.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
DEFAULT_CASES = ("100@1000", "400@1000", "1000@1000", "1000@500")
DEFAULT_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

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
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{ live on; }}
    }}
}}
"""


def log(text: str) -> None:
    sys.stderr.write(f"[compare {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: port {port} not open after 30 s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> int:
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(10)


class Server:
    """A server under test: start on a port, its pid, stop, what its log says."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []
        self.logfile = workdir / f"{self.name}.log"

    #: the viewer protocols fanout.py can play it with
    protocols: tuple[str, ...] = ("rtmp",)
    #: whether it is started with an HTTP port
    http = False

    def start(self, port: int, http_port: int | None = None) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int | None:
        if self.process is None:
            return None
        status = stop(self.process)
        self.process = None
        return status

    def version(self) -> str:
        return self.name

    def log_problems(self) -> list[str]:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return []
        pattern = re.compile(r"Traceback|Unhandled|CRITICAL|\[(error|crit|alert|emerg)\]")
        return [line for line in lines if pattern.search(line)][:10]


class StreamServer(Server):
    name = "streamserver"
    protocols = ("rtmp", "http-flv")

    def __init__(self, workdir: Path, twistd: str, extra: Sequence[str], http: bool) -> None:
        super().__init__(workdir)
        self.twistd = twistd
        self.extra = list(extra)
        self.http = http

    def start(self, port: int, http_port: int | None = None) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.logfile.unlink()
        # a Python script (an instrumented twistd) runs with this interpreter
        launcher = [sys.executable, self.twistd] if self.twistd.endswith(".py") else [self.twistd]
        self.argv = [
            *launcher,
            "-n",
            "--pidfile=",
            f"--logfile={self.logfile}",
            "streamserver",
            "--rtmp",
            f"tcp:{port}:interface=127.0.0.1",
            *(
                ["--http", f"tcp:{http_port}:interface=127.0.0.1", "--http-play-wait", "60"]
                if http_port is not None
                else ["--no-http"]
            ),
            *self.extra,
        ]
        stdio = (self.workdir / "streamserver.stdio").open("wb")
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=stdio, stderr=subprocess.STDOUT
        )
        stdio.close()
        wait_for_port(self.process, port, "twistd")

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return f"streamserver {version('streamserver')}, Twisted {version('twisted')}"
        except Exception:  # only for the report
            return "streamserver"


class NginxRTMP(Server):
    name = "nginx-rtmp"

    def __init__(self, workdir: Path, nginx: str, module: str | None) -> None:
        super().__init__(workdir)
        self.nginx = nginx
        self.module = module
        self.prefix = workdir / "nginx"
        self.logfile = self.prefix / "error.log"

    def start(self, port: int, http_port: int | None = None) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.logfile.unlink()
        load = f"load_module {self.module};" if self.module else ""
        conf = self.prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(load_module=load, prefix=self.prefix, port=port))
        self.argv = [self.nginx, "-p", str(self.prefix), "-c", str(conf)]
        stdio = (self.prefix / "stdio").open("wb")
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=stdio, stderr=subprocess.STDOUT
        )
        stdio.close()
        wait_for_port(self.process, port, "nginx")

    def version(self) -> str:
        text = subprocess.run(
            [self.nginx, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        module = ""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            module = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-rtmp"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        return f"{text.replace('nginx version: ', '')}, libnginx-mod-rtmp {module or '?'}"


def _ancestors() -> set[int]:
    """This process and its parents (a ``timeout`` or shell wrapping us is not "other")."""
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return pids


def other_benchmarks() -> list[str]:
    """Benchmark processes not started by us (their command lines)."""
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
        if re.search(r"bench/(soak|fanout|compare)\.py", line):
            found.append(f"{entry.name} {line}")
    return found


def source_state(src: Path | None) -> dict[str, Any]:
    """Which code was measured: the working tree's commit and local changes, or --src."""
    if src is not None:
        return {"src": str(src.resolve())}
    root = BENCH.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    changed = git("status", "--porcelain", "--", "src").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "src_changes": changed}


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    meminfo = ""
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s*(\d+)", meminfo) if meminfo else None
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "lscpu_head": "\n".join(lscpu.splitlines()[:10]),
        "kernel": platform.release(),
        "memory_gb": round(int(total.group(1)) / 1024 / 1024, 1) if total else None,
        "python": platform.python_version(),
    }


def run_case(
    server: Server,
    protocol: str,
    viewers: int,
    kbps: float,
    options: argparse.Namespace,
    logdir: Path,
    round_: int,
) -> dict[str, Any]:
    port = free_port()
    http_port = free_port() if server.http else None
    load_before = os.getloadavg()
    server.start(port, http_port)
    label = f"{server.name} {protocol} {viewers}@{kbps:g}"
    stem = f"{server.name}-{protocol}-{viewers}-{kbps:g}-r{round_ + 1}"
    stderr_path = logdir / f"fanout-{stem}.stderr"
    via_http = ["--http-port", str(http_port)] if protocol == "http-flv" and http_port else []
    argv = [
        sys.executable,
        str(BENCH / "fanout.py"),
        "--url",
        f"rtmp://127.0.0.1:{port}/live/bench",
        "--viewers",
        str(viewers),
        "--bitrate",
        f"{kbps:g}",
        "--duration",
        str(options.duration),
        "--warmup",
        str(options.warmup),
        "--server-pid",
        str(server.pid),
        "--label",
        label,
        "--protocol",
        protocol,
        *via_http,
        *options.fanout_arg,
    ]
    log(f"{label}: {shlex.join(server.argv)}")
    try:
        with stderr_path.open("w") as stderr:
            result = subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=options.duration + options.warmup + 300,
                check=False,
            )
    finally:
        status = server.stop()
        with contextlib.suppress(OSError):
            shutil.copy(server.logfile, logdir / f"{stem}.log")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = stderr_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{label}: fanout.py exited {result.returncode}:\n{tail}")
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["server"] = server.name
    summary["protocol"] = protocol
    summary["round"] = round_ + 1
    summary["load_before"] = [round(x, 2) for x in load_before]
    summary["server_command"] = shlex.join(server.argv)
    summary["server_exit_status"] = status
    summary["server_log_problems"] = server.log_problems()
    return summary


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| server | viewers play | viewers | stream kbit/s | server CPU s/s | kernel share "
        "| CPU ms per MB | CPU µs per frame | RSS before / idle / peak MB | RSS per idle viewer KB "
        "| delivered kbit/s min / median | frames lost max / total | latency p50 / p99 ms | "
        "generator CPU s/s | other s/s | load 1 / 5 min before |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for run in runs:
        rss = run["rss_mb"]
        delivered = run["delivered_kbps_per_viewer"] or {}
        lost = run["frames_lost_per_viewer"] or {}
        latency = run["latency_ms"]
        per_viewer = run["rss_bytes_per_idle_viewer"]
        load = run.get("load_before") or [None, None]
        rows.append(
            f"| {run['server']} | {run.get('protocol', 'rtmp')} | {run['viewers']} "
            f"| {run['bitrate_kbps']:.0f} "
            f"| {fmt(run['server_cpu_s_per_s'], 3)} | {fmt(run.get('server_cpu_system_share'), 2)} "
            f"| {fmt(run['server_cpu_ms_per_mb'], 2)} "
            f"| {fmt(run.get('server_cpu_us_per_frame'), 2)} "
            f"| {fmt(rss['before'])} / {fmt(rss['idle_viewers'])} / {fmt(rss['peak'])} "
            f"| {fmt(per_viewer / 1000 if per_viewer is not None else None)} "
            f"| {fmt(delivered.get('min'))} / {fmt(delivered.get('median'))} "
            f"| {fmt(lost.get('max'))} / {fmt(lost.get('total'))} "
            f"| {fmt(latency['p50'], 2)} / {fmt(latency['p99'], 2)} "
            f"| {fmt(run['generator']['cpu_s_per_s'], 3)} "
            f"| {fmt(run['machine']['other_cpu_s_per_s'], 2)} "
            f"| {fmt(load[0], 2)} / {fmt(load[1], 2)} |"
        )
    return head + "\n".join(rows) + "\n"


def ratios(runs: list[dict[str, Any]]) -> str:
    """streamserver's RTMP viewers against nginx-rtmp, per case (the last round's runs)."""
    by_case: dict[tuple[int, float], dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run.get("protocol", "rtmp") == "rtmp":
            by_case.setdefault((run["viewers"], run["bitrate_kbps"]), {})[run["server"]] = run
    lines = [
        "| viewers | stream kbit/s | CPU per MB, streamserver / nginx | "
        "p99 latency, streamserver - nginx, ms | RSS per idle viewer KB, streamserver / nginx |",
        "|---|---|---|---|---|",
    ]
    for (viewers, kbps), pair in sorted(by_case.items()):
        ours, theirs = pair.get("streamserver"), pair.get("nginx-rtmp")
        if not ours or not theirs:
            continue
        a, b = ours["server_cpu_ms_per_mb"], theirs["server_cpu_ms_per_mb"]
        p, q = ours["latency_ms"]["p99"], theirs["latency_ms"]["p99"]
        m, n = ours["rss_bytes_per_idle_viewer"], theirs["rss_bytes_per_idle_viewer"]
        lines.append(
            f"| {viewers} | {kbps:.0f} | {fmt(a / b if a and b else None, 2)}x "
            f"| {fmt(p - q if p is not None and q is not None else None, 2)} "
            f"| {fmt(m / 1000 if m is not None else None)} / "
            f"{fmt(n / 1000 if n is not None else None)} |"
        )
    return "\n".join(lines) + "\n"


def protocol_ratios(runs: list[dict[str, Any]]) -> str:
    """streamserver's HTTP-FLV viewers against its RTMP viewers, per case and round."""
    pairs: dict[tuple[int, float, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run["server"] == "streamserver":
            key = (run["viewers"], run["bitrate_kbps"], run.get("round", 1))
            pairs.setdefault(key, {})[run.get("protocol", "rtmp")] = run
    lines = [
        "| viewers | stream kbit/s | round | CPU ms per MB, RTMP / HTTP-FLV | HTTP-FLV / RTMP "
        "| CPU µs per frame, RTMP / HTTP-FLV | HTTP-FLV / RTMP | p99 latency ms, RTMP / HTTP-FLV "
        "| TCP segments per frame, RTMP / HTTP-FLV | other s/s, RTMP / HTTP-FLV |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    found: dict[tuple[int, float], list[float]] = {}
    for (viewers, kbps, round_), pair in sorted(pairs.items()):
        rtmp, http = pair.get("rtmp"), pair.get("http-flv")
        if not rtmp or not http:
            continue
        a, b = rtmp["server_cpu_ms_per_mb"], http["server_cpu_ms_per_mb"]
        c, d = rtmp.get("server_cpu_us_per_frame"), http.get("server_cpu_us_per_frame")
        if a and b:
            found.setdefault((viewers, kbps), []).append(b / a)
        lines.append(
            f"| {viewers} | {kbps:.0f} | {round_} | {fmt(a, 2)} / {fmt(b, 2)} "
            f"| {fmt(b / a if a and b else None, 2)}x "
            f"| {fmt(c, 2)} / {fmt(d, 2)} | {fmt(d / c if c and d else None, 2)}x "
            f"| {fmt(rtmp['latency_ms']['p99'], 2)} / {fmt(http['latency_ms']['p99'], 2)} "
            f"| {fmt(rtmp['machine'].get('tcp_segments_per_frame'), 2)} / "
            f"{fmt(http['machine'].get('tcp_segments_per_frame'), 2)} "
            f"| {fmt(rtmp['machine']['other_cpu_s_per_s'], 2)} / "
            f"{fmt(http['machine']['other_cpu_s_per_s'], 2)} |"
        )
    if not found:
        return ""
    medians = ", ".join(
        f"{viewers}@{kbps:.0f}: {statistics.median(values):.2f}x ({len(values)} rounds)"
        for (viewers, kbps), values in sorted(found.items())
    )
    return "\n".join(lines) + f"\n\nHTTP-FLV / RTMP CPU per MB, median: {medians}\n"


def parse_case(text: str) -> tuple[int, float]:
    viewers, _, kbps = text.partition("@")
    return int(viewers), float(kbps or 1000)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        action="append",
        type=parse_case,
        default=None,
        help=f"N@KBPS, repeatable (default: {' '.join(DEFAULT_CASES)})",
    )
    parser.add_argument("--servers", default="streamserver,nginx-rtmp")
    parser.add_argument(
        "--protocol",
        choices=("rtmp", "http-flv", "both"),
        default="rtmp",
        help="how streamserver's viewers play (nginx-rtmp's always play RTMP); "
        "both: one run of each per case and round",
    )
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per case: one run per server and protocol each, the order alternating",
    )
    parser.add_argument(
        "--fanout-arg", action="append", default=[], help="passed to fanout.py (repeatable)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="passed to 'twistd streamserver'"
    )
    parser.add_argument(
        "--twistd",
        default=str(Path(sys.executable).parent / "twistd"),
        help="the twistd to run streamserver with (a .py script runs with this Python)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=None,
        help="run streamserver (and fanout's codecs) from this source tree (put first on "
        "PYTHONPATH), e.g. a 'git archive' export of one commit",
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument(
        "--rtmp-module",
        default=DEFAULT_RTMP_MODULE if Path(DEFAULT_RTMP_MODULE).exists() else None,
        help="the .so to load_module (none: rely on the nginx build)",
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH / "results")
    parser.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    parser.add_argument("--allow-busy", action="store_true")
    options = parser.parse_args(argv)
    if options.case is None:
        options.case = [parse_case(c) for c in DEFAULT_CASES]
    options.command = shlex.join([Path(sys.executable).name, *sys.argv])
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    busy = other_benchmarks()
    if busy:
        for line in busy:
            log(f"other benchmark running: {line}")
        if not options.allow_busy:
            log("refusing to measure on a busy machine (--allow-busy to override)")
            return 2
    if options.src is not None:
        src = options.src.resolve()
        if not (src / "streamserver" / "tap.py").exists():
            raise SystemExit(f"{src}: no streamserver package there")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p
        )
    options.out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="compare-"))
    protocols = ("rtmp", "http-flv") if options.protocol == "both" else (options.protocol,)
    servers: list[Server] = []
    for name in options.servers.split(","):
        if name == "streamserver":
            servers.append(
                StreamServer(
                    workdir, options.twistd, options.server_arg, http="http-flv" in protocols
                )
            )
        elif name in ("nginx", "nginx-rtmp"):
            servers.append(NginxRTMP(workdir, options.nginx, options.rtmp_module))
        else:
            raise SystemExit(f"unknown server {name!r}")
    logdir = options.out_dir / f"compare-{options.tag}-logs"
    logdir.mkdir(exist_ok=True)
    # nginx-rtmp plays RTMP whatever --protocol says: the reference
    variants = [
        (server, protocol)
        for server in servers
        for protocol in [p for p in protocols if p in server.protocols] or server.protocols[:1]
    ]
    runs: list[dict[str, Any]] = []
    started = time.time()
    turn = 0
    for viewers, kbps in options.case:
        for round_ in range(options.repeat):
            order = variants if turn % 2 == 0 else variants[::-1]
            turn += 1
            for server, protocol in order:
                summary = run_case(server, protocol, viewers, kbps, options, logdir, round_)
                summary["busy_at_start"] = busy
                runs.append(summary)
                lost = summary["frames_lost_per_viewer"] or {}
                log(
                    f"{server.name} {protocol} {viewers}@{kbps:g} round {round_ + 1}: "
                    f"cpu {summary['server_cpu_s_per_s']} s/s, "
                    f"{summary['server_cpu_ms_per_mb']} ms/MB, "
                    f"{summary['server_cpu_us_per_frame']} µs/frame, p99 "
                    f"{summary['latency_ms']['p99']} ms, lost {lost.get('total')}, "
                    f"gen {summary['generator']['cpu_s_per_s']} s/s, "
                    f"other {summary['machine']['other_cpu_s_per_s']} s/s, "
                    f"load before {summary['load_before']}"
                )
                time.sleep(3)
    result = {
        "command": options.command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "elapsed_s": round(time.time() - started),
        "machine": machine(),
        "source": source_state(options.src),
        "protocols": list(protocols),
        "versions": {server.name: server.version() for server in servers},
        "busy_at_start": busy,
        "runs": runs,
    }
    json_path = options.out_dir / f"compare-{options.tag}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    text = (
        f"# Fan-out comparison {options.tag}\n\n"
        f"`{options.command}`, {result['started']}, {result['machine']['nproc']} CPUs "
        f"({result['machine']['cpu']}), kernel {result['machine']['kernel']}.\n\n"
        + ("**Other benchmarks were running.**\n\n" if busy else "")
        + table(runs)
        + "\n"
        + ratios(runs)
        + ("\n" + protocol_ratios(runs) if "http-flv" in protocols else "")
    )
    md_path = options.out_dir / f"compare-{options.tag}.md"
    md_path.write_text(text)
    print(text)
    log(f"wrote {json_path} and {md_path}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
