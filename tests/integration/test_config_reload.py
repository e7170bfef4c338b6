"""A real ``twistd -n streamserver --config FILE``: per-app access, SIGHUP reload, --check.

ffmpeg publishes to ``test`` (open to loopback) while a keyless publish to
``studio`` (publish keys) is refused; an ffmpeg viewer of ``test`` decodes 8 s
while the file is edited (a second HTTP port, a new keys file for ``studio``)
and ``kill -HUP`` reloads it: the new port answers, the new key publishes, the
old one is refused, and the viewer's frames stay continuous (every frame's pts
one after the last, no reconnect).  ``--check`` is run on every mistake and on
``examples/streamserver.toml``, which then serves as written (its ports aside).
A missing binary skips, or fails under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from tests.integration.hardening_support import find_twistd
from tests.integration.support import (
    CollectingProcess,
    accepts_connections,
    free_port,
    get_reactor,
    run,
    sleep,
    wait_until,
    within,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
[server]
rtmp = ["tcp:{rtmp}:interface=127.0.0.1"]
http = [{http}]
api-token = "tok"

[app.studio]
publish-keys = "{keys}"

[app.test]
publish-from = ["127.0.0.0/8"]
"""


def _config(rtmp: int, http: list[int], keys: str) -> str:
    endpoints = ", ".join(f'"tcp:{port}:interface=127.0.0.1"' for port in http)
    return CONFIG.format(rtmp=rtmp, http=endpoints, keys=keys)


def _publish_argv(ffmpeg: str, url: str, seconds: float) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", url,
    ]  # fmt: skip


def _view_argv(ffmpeg: str, url: str, seconds: int) -> list[str]:
    """ffmpeg decoding *seconds* of *url*'s video, one framecrc line per decoded frame."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url,
        "-t", str(seconds), "-map", "0:v", "-fps_mode", "passthrough", "-f", "framecrc", "-",
    ]  # fmt: skip


def _frame_pts(framecrc: bytes) -> list[int]:
    """The pts of every decoded video frame (``#tb 0: 1/30``: one per frame)."""
    return [
        int(line.split(",")[2])
        for line in framecrc.decode(errors="replace").splitlines()
        if line.startswith("0,")
    ]


async def _start(
    processes: ProcessPool, interop: Interop, cwd: Path, path: Path, port: int
) -> CollectingProcess:
    """``twistd -n streamserver --config PATH`` in *cwd*, once it accepts RTMP on *port*."""
    twistd = await find_twistd(interop, cwd)
    argv = [str(twistd), "-n", "--pidfile=", "--logfile=-", "streamserver", "--config", str(path)]
    process = processes.spawn(argv, cwd=cwd)
    reactor = get_reactor()
    deadline = reactor.seconds() + 20
    while not await accepts_connections(port):
        assert process.running, process.result.describe() if process.result else ""
        assert reactor.seconds() < deadline, "twistd never accepted connections"
        await sleep(0.1)
    return process


async def _request(method: bytes, url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = Headers({b"authorization": [f"Bearer {token}".encode()]} if token else {})
    agent = Agent(get_reactor(), connectTimeout=2)
    response = await within(agent.request(method, url.encode(), headers), 10, url)
    body = await within(readBody(response), 10, url)
    return int(response.code), body


async def _ended(process: CollectingProcess, seconds: float, what: str) -> int | None:
    result = await within(process.ended, seconds, what)
    return result.exit_code


@pytest.mark.timeout(150)
@pytest_twisted.ensureDeferred
async def test_hup_adds_a_listener_and_changes_a_key_while_another_app_plays_on(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """Per-app access at start; kill -HUP adds an HTTP port and a studio key, and the test
    viewer's frames stay continuous."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    (tmp_path / "keys-old").write_text("cam oldkey\n")
    (tmp_path / "keys-new").write_text("cam newkey\n")
    rtmp, http, http2 = free_port(), free_port(), free_port()
    path = tmp_path / "streamserver.toml"
    path.write_text(_config(rtmp, [http], "keys-old"))
    twistd = await _start(processes, interop, tmp_path, path, rtmp)
    base = f"rtmp://127.0.0.1:{rtmp}"

    keyless = processes.spawn(_publish_argv(ffmpeg, f"{base}/studio/cam", 2))
    assert await _ended(keyless, 30, "the keyless publish to studio") != 0
    assert b"key" in bytes(keyless.stderr), bytes(keyless.stderr)

    publisher = processes.spawn(_publish_argv(ffmpeg, f"{base}/test/cam", 30))
    reactor = get_reactor()
    deadline = reactor.seconds() + 20
    while (await _request(b"HEAD", f"http://127.0.0.1:{http}/test/cam.flv"))[0] != 200:
        assert publisher.running, publisher.result.describe() if publisher.result else ""
        assert reactor.seconds() < deadline, "test/cam was never published"
        await sleep(0.1)
    viewer = processes.spawn(_view_argv(ffmpeg, f"{base}/test/cam", 8))
    await wait_until(lambda: len(_frame_pts(bytes(viewer.stdout))) >= 45, 20, "the viewer's frames")
    assert not (await accepts_connections(http2))

    path.write_text(_config(rtmp, [http, http2], "keys-new"))
    twistd.send_signal("HUP")
    await wait_until(lambda: b"reload of" in bytes(twistd.stdout), 20, "the reload's log line")
    assert await accepts_connections(http2)
    status, body = await _request(b"GET", f"http://127.0.0.1:{http2}/api/server")
    assert status == 200 and b'"uptime"' in body
    framed_during_reload = len(_frame_pts(bytes(viewer.stdout)))

    new_key = processes.spawn(_publish_argv(ffmpeg, f"{base}/studio/cam?key=newkey", 2))
    assert await _ended(new_key, 30, "the publish with the new key") == 0, bytes(new_key.stderr)
    old_key = processes.spawn(_publish_argv(ffmpeg, f"{base}/studio/cam?key=oldkey", 2))
    assert await _ended(old_key, 30, "the publish with the old key") != 0

    assert await _ended(viewer, 60, "the test viewer") == 0, bytes(viewer.stderr)
    pts = _frame_pts(bytes(viewer.stdout))
    assert len(pts) >= 200 > framed_during_reload, len(pts)
    gaps = [(a, b) for a, b in itertools.pairwise(pts) if b - a != 1]
    assert not gaps, gaps[:5]
    assert not bytes(viewer.stderr).strip(), bytes(viewer.stderr)
    log = bytes(twistd.stdout).decode(errors="replace")
    assert "app studio: publish-keys" in log and f"listener http:tcp:{http2}" in log
    assert twistd.running
    publisher.send_signal("TERM")


MISTAKES = [
    ("[server]\nmax-conections = 5\n", "2: server.max-conections: unknown key; did you mean"),
    ("[server]\nmax-streams = 'x'\n", "2: server.max-streams: expected an integer"),
    ("[server]\n\nchunk-size = 64\n", "3: server.chunk-size: --chunk-size must be between"),
    ("[server]\nrtmp = ['tcp:nope']\n", "2: server.rtmp: bad endpoint"),
    ("[app.studio]\ndrop-lo = 1\n", "2: app.studio.drop-lo: unknown key; did you mean 'drop-low'"),
    ("[app.studio]\nmax-streams = 1\n", "2: app.studio.max-streams: a server-wide key"),
    ("[app.studio]\nmax-queue = 10\n", "2: app.studio.max-queue: need 0 <"),
]


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_check_catches_every_mistake(interop: Interop, tmp_path: Path) -> None:
    """twistd streamserver --config FILE --check exits 1 naming FILE:LINE: KEY for each mistake."""
    twistd = await find_twistd(interop, tmp_path)
    for number, (text, expected) in enumerate(MISTAKES):
        path = tmp_path / f"bad{number}.toml"
        path.write_text(text)
        argv = [str(twistd), "--pidfile=", "streamserver", "--config", str(path), "--check"]
        result = await run(argv, 60, cwd=tmp_path)
        assert result.exit_code == 1, result.describe()
        assert f"{path}:{expected}" in result.stderr.decode(), result.describe()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_the_example_configuration_checks_and_serves(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """examples/streamserver.toml passes --check as written and serves (on free ports)."""
    twistd = await find_twistd(interop, tmp_path)
    (tmp_path / "publish-keys").write_text("cam secret\n")
    (tmp_path / "api-token").write_text("example-token\n")
    example = (ROOT / "examples" / "streamserver.toml").read_text()
    shutil.copy(ROOT / "examples" / "streamserver.toml", tmp_path / "streamserver.toml")
    argv = [str(twistd), "--pidfile=", "streamserver", "--config", "streamserver.toml", "--check"]
    checked = await run(argv, 60, cwd=tmp_path)
    assert checked.exit_code == 0, checked.describe()
    assert b'api-token = "***"' in checked.stdout and b"example-token" not in checked.stdout
    rtmp, http = free_port(), free_port()
    assert '"tcp:1935"' in example and '"tcp:8080"' in example
    served = tmp_path / "served.toml"
    served.write_text(
        example.replace('"tcp:1935"', f'"tcp:{rtmp}:interface=127.0.0.1"').replace(
            '"tcp:8080"', f'"tcp:{http}:interface=127.0.0.1"'
        )
    )
    await _start(processes, interop, tmp_path, served, rtmp)
    status, body = await _request(b"POST", f"http://127.0.0.1:{http}/api/reload", "example-token")
    assert status == 200 and json.loads(body) == {
        "ok": True, "error": None, "changed": [], "listeners": [], "needs_restart": [],
        "every_process": False,
    }  # fmt: skip
    unit = (ROOT / "examples" / "streamserver.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert (
        "User=streamserver" in unit
        and "twistd -n --pidfile= --logfile=- streamserver --config" in unit
    )
