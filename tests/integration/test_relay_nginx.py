"""Relays with a real nginx-rtmp (Debian ``nginx`` + ``libnginx-mod-rtmp``) on loopback.

(a) nginx as an edge pulling from us (``pull rtmp://127.0.0.1:PORT/live``), (b) nginx
as an origin we ``--pull`` from, (c) we ``--push`` to nginx.  In each case ffmpeg
publishes the sample file (looped, in real time), ffmpeg decodes the relayed stream
at the far end (``-v error``: no error printed, N frames) and ffprobe sees h264 and
aac.  Our server is ``twistd -n streamserver`` (:func:`start_twistd`); nginx runs with
its own config, prefix and free port.  Missing binaries skip, or fail under
``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from tests.integration.conftest import Interop, ProcessPool
from tests.integration.hardening_support import start_twistd
from tests.integration.support import accepts_connections, free_port, get_reactor, run, sleep

pytestmark = pytest.mark.integration

#: Where Debian's libnginx-mod-rtmp installs the module.
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

#: Frames the far end must decode: 3 s of the 30 fps sample, a GOP and a half.
FRAMES = 90

NGINX_CONF = """\
{load_module}
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log info;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            {extra}
        }}
    }}
}}
"""


class Nginx:
    """nginx-rtmp on a free loopback port, in its own prefix."""

    def __init__(self, port: int, prefix: Path) -> None:
        self.port = port
        self.prefix = prefix

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{path}"

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


async def start_nginx(processes: ProcessPool, interop: Interop, tmp: Path, extra: str) -> Nginx:
    """nginx with an ``application live`` holding *extra* directives."""
    nginx = interop.tools("nginx")["nginx"]
    load = ""
    if RTMP_MODULE.exists():
        load = f"load_module {RTMP_MODULE};"
    else:
        probe = await run([nginx, "-V"], 30)
        if b"rtmp" not in probe.stderr:
            interop.unavailable(f"no nginx-rtmp: {RTMP_MODULE} missing (libnginx-mod-rtmp)")
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(load_module=load, prefix=prefix, port=port, extra=extra))
    process = processes.spawn([nginx, "-p", str(prefix), "-c", str(conf)], cwd=tmp)
    server = Nginx(port, prefix)
    deadline = get_reactor().seconds() + 20
    while not await accepts_connections(port):
        assert process.running, (process.result.describe() if process.result else "") + (
            server.log()
        )
        assert get_reactor().seconds() < deadline, "nginx never accepted connections"
        await sleep(0.1)
    return server


def publish(processes: ProcessPool, ffmpeg: str, sample: Path, url: str) -> None:
    """ffmpeg publishing *sample* to *url* in real time, looped (killed at the test's end)."""
    processes.spawn(
        [
            ffmpeg,
            "-nostdin",
            "-v",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(sample),
            "-c",
            "copy",
            "-f",
            "flv",
            url,
        ]
    )


async def decode(ffmpeg: str, ffprobe: str, url: str, what: str) -> None:
    """ffmpeg decodes FRAMES frames of *url* without an error; ffprobe sees h264 + aac.

    Retried for a while: the relay needs a moment to connect after the publisher.
    """
    reactor = get_reactor()
    deadline = reactor.seconds() + 40
    last = ""
    while reactor.seconds() < deadline:
        result = await run(
            [
                ffmpeg,
                "-nostdin",
                "-v",
                "error",
                "-rw_timeout",
                "10000000",
                "-i",
                url,
                "-frames:v",
                str(FRAMES),
                "-f",
                "null",
                "-",
            ],
            40,
        )
        errors = result.stderr.decode(errors="replace").strip()
        if result.exit_code == 0 and not errors:
            break
        last = result.describe()
        await sleep(1.0)
    else:
        raise AssertionError(f"{what}: ffmpeg never decoded {FRAMES} frames cleanly\n{last}")
    probe = await run(
        [
            ffprobe,
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv",
            url,
        ],
        40,
    )
    assert probe.exit_code == 0, probe.describe()
    codecs = sorted(
        line.split(",")[-1].strip()
        for line in probe.stdout.decode().splitlines()
        if line.startswith("stream,")
    )
    assert codecs == ["aac", "h264"], f"{what}: {codecs}"


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_nginx_edge_pulls_from_us(
    processes: ProcessPool, interop: Interop, tmp_path: Path, sample_flv: Path
) -> None:
    """nginx with ``pull rtmp://127.0.0.1:OURS/live`` relays our stream to ffmpeg."""
    tools = interop.tools("ffmpeg", "ffprobe")
    ours = await start_twistd(processes, interop, tmp_path)
    nginx = await start_nginx(
        processes, interop, tmp_path, f"pull rtmp://127.0.0.1:{ours.port}/live;"
    )
    publish(processes, tools["ffmpeg"], sample_flv, ours.url("live/cam"))
    await decode(tools["ffmpeg"], tools["ffprobe"], nginx.url("live/cam"), "nginx edge")


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_we_pull_from_an_nginx_origin(
    processes: ProcessPool, interop: Interop, tmp_path: Path, sample_flv: Path
) -> None:
    """``--pull rtmp://127.0.0.1:NGINX/live``: a play here pulls the stream from nginx."""
    tools = interop.tools("ffmpeg", "ffprobe")
    nginx = await start_nginx(processes, interop, tmp_path, "")
    ours = await start_twistd(processes, interop, tmp_path, "--pull", nginx.url("live"))
    publish(processes, tools["ffmpeg"], sample_flv, nginx.url("live/cam"))
    await decode(tools["ffmpeg"], tools["ffprobe"], ours.url("live/cam"), "our edge")


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_we_push_to_nginx(
    processes: ProcessPool, interop: Interop, tmp_path: Path, sample_flv: Path
) -> None:
    """``--push rtmp://127.0.0.1:NGINX/live``: what is published here plays from nginx."""
    tools = interop.tools("ffmpeg", "ffprobe")
    nginx = await start_nginx(processes, interop, tmp_path, "")
    ours = await start_twistd(processes, interop, tmp_path, "--push", nginx.url("live"))
    publish(processes, tools["ffmpeg"], sample_flv, ours.url("live/cam"))
    await decode(tools["ffmpeg"], tools["ffprobe"], nginx.url("live/cam"), "push to nginx")
