"""The server's recording plays and seeks in headless Chromium: ``<video src="/recordings/...">``.

ffmpeg publishes 12 s of ``lavfi`` testsrc + sine (H.264 320x240 at 25 fps with a
keyframe every 2 s, AAC, ``-re``) over RTMP to ``live/vod`` on a ``twistd -n
streamserver --record DIR --record-reconnect-grace 0``; the test waits (with a
deadline) for the finished ``DIR/live/vod/*.mp4`` (no ``.part`` left) and prints
what ffprobe says of it.  curl's range request of its ``/recordings/...`` URL gets
a 206 with exactly those bytes.  A page holding only a ``<video>`` whose ``src``
is that URL is opened in Chromium, driven over the DevTools protocol
(:mod:`tests.integration.test_browser`'s machinery): the video loads with the
recording's duration (within 0.5 s of 12 s), plays from the start (the first
``currentTime`` seen playing is below 1 s), is seeked to the middle
(``currentTime = 6``), and the test sees ``seeked`` with ``currentTime >= 6``
and, in the server's ``--http-access-log``, a 206 answer to Chromium's range
requests.  A missing binary skips, or fails under
``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamserver.recording.listing import recording_url
from streamserver.recording.paths import PART_SUFFIX
from tests.integration.hardening_support import TwistdServer, start_twistd
from tests.integration.support import get_reactor, run, sleep
from tests.integration.test_browser import (
    CHROMIUM_NAMES,
    _devtools_page,
    _stop_chromium,
    chromium_argv,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

#: Seconds of media in the file, and where the test seeks to.
DURATION = 12
SEEK_TO = 6.0

#: Frames per second and the GOP of the published video (a keyframe every 2 s).
FPS, GOP = 25, 50

#: Seconds the browser has to load, play and seek.
BROWSER_DEADLINE = 20.0

#: Seconds after ffmpeg's exit within which the finished ``.mp4`` must be there.
FINISH_DEADLINE = 10.0

#: Where playback must start: the first ``currentTime`` seen playing is below this.
START_WITHIN = 1.0

_STATE = (
    "(() => { const v = document.getElementById('v');"
    " return {t: v.currentTime, d: v.duration, ready: v.readyState, paused: v.paused,"
    " error: v.error && v.error.message, seeked: window.seekedAt === undefined ? null"
    " : window.seekedAt, w: v.videoWidth,"
    " seekable: v.seekable.length ? v.seekable.end(0) : 0}; })()"
)

_SEEK = (
    "(() => { const v = document.getElementById('v');"
    " v.addEventListener('seeked', () => { window.seekedAt = v.currentTime; }, {once: true});"
    f" v.currentTime = {SEEK_TO}; return true; }})()"
)


def _publish_argv(ffmpeg: str, url: str) -> list[str]:
    """ffmpeg publishing DURATION s of testsrc + sine over RTMP, live (``-re``)."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(DURATION), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-g", str(GOP), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", url,
    ]  # fmt: skip


async def _record(processes: ProcessPool, ffmpeg: str, twistd: TwistdServer, root: Path) -> Path:
    """Publish to live/vod and return the finished ``.mp4`` the server wrote for it."""
    publisher = await processes.spawn(_publish_argv(ffmpeg, twistd.url("live/vod"))).wait(
        DURATION + 15
    )
    assert publisher.exit_code == 0, publisher.describe()
    directory = root / "live" / "vod"
    reactor = get_reactor()
    deadline = reactor.seconds() + FINISH_DEADLINE
    while not (finished := sorted(directory.glob("*.mp4"))):
        assert reactor.seconds() < deadline, (
            f"no finished .mp4 in {directory} {FINISH_DEADLINE} s after the unpublish: "
            f"{sorted(p.name for p in root.rglob('*'))}"
        )
        await sleep(0.1)
    assert list(directory.glob(f"*{PART_SUFFIX}")) == [], sorted(directory.iterdir())
    [path] = finished
    return path


async def _log_probe(ffprobe: str, path: Path) -> None:
    """Print what ffprobe says of the file's format and streams (the figures of the report)."""
    result = await run(
        [
            ffprobe, "-v", "error", "-show_entries",
            "format=format_name,duration,start_time,size"
            ":stream=codec_name,codec_type,start_time,duration,width,height",
            "-of", "json", str(path),
        ],
        30,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    print(f"\nffprobe {path.name}: {json.dumps(json.loads(result.stdout))}")


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_chromium_plays_and_seeks_a_recording(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """The file of a 12 s publish plays from 0 and seeks to 6 s in <video src> via 206s."""
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "ffprobe", "env", "curl")
    root = tmp_path / "rec"
    access_log = tmp_path / "access.log"
    twistd = await start_twistd(
        processes, interop, tmp_path,
        "--record", str(root), "--record-reconnect-grace", "0",
        "--http-access-log", str(access_log),
    )  # fmt: skip
    path = await _record(processes, tools["ffmpeg"], twistd, root)
    await _log_probe(tools["ffprobe"], path)
    url = twistd.http_url(recording_url("live", "vod", path.name).lstrip("/"))

    # curl first: a range in the middle of the file is a 206 with exactly those bytes
    headers, body = tmp_path / "headers.txt", tmp_path / "range.bin"
    ranged = await run(
        [tools["curl"], "-sS", "--fail", "-r", "1000-4999", "-D", str(headers),
         "-o", str(body), url],
        20,
    )  # fmt: skip
    assert ranged.exit_code == 0, ranged.describe()
    lines = headers.read_text().splitlines()
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 206"), lines
    assert fields["content-range"] == f"bytes 1000-4999/{path.stat().st_size}", lines
    assert fields["content-type"] == "video/mp4" and fields["accept-ranges"] == "bytes", lines
    assert body.read_bytes() == path.read_bytes()[1000:5000]

    html = (
        f'<!doctype html><title>recording</title><video id="v" src="{url}" muted autoplay '
        'preload="auto"></video>'
    ).encode()
    page_site = Site(_Page(html))
    page_site.noisy = False
    listening = get_reactor().listenTCP(0, page_site, interface="127.0.0.1")
    try:
        await _watch(tools, chromium_path, processes, tmp_path, listening.getHost().port)
    finally:
        await defer.maybeDeferred(listening.stopListening)
    served = [
        line for line in access_log.read_text().splitlines()
        if f"/recordings/live/vod/{path.name}" in line and "Chrome" in line
    ]  # fmt: skip
    statuses = [
        found[1] for line in served if (found := re.search(r'HTTP/1\.[01]" (\d{3}) ', line))
    ]
    print(f"Chromium's requests of the recording: {statuses}")
    assert "206" in statuses, served
    assert twistd.process.running


class _Page(Resource):
    """The page: only the ``<video>``, served from loopback like the recording."""

    isLeaf = True

    def __init__(self, html: bytes) -> None:
        super().__init__()
        self.html = html

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.html


async def _watch(
    tools: dict[str, str], chromium_path: str, processes: ProcessPool, tmp_path: Path, port: int
) -> None:
    """Chromium opens the page; the video plays, is seeked to the middle and says seeked."""
    page = f"http://127.0.0.1:{port}/recording.html"
    base = Path(tempfile.mkdtemp(prefix="chromium-"))
    argv = chromium_argv(tools["env"], chromium_path, base, page)
    argv.insert(argv.index(page), "--remote-debugging-port=0")
    chromium = processes.spawn(argv, cwd=tmp_path)
    reactor = get_reactor()
    try:
        devtools = await _devtools_page(tools["curl"], base / "profile", "/recording.html")
        deadline = reactor.seconds() + BROWSER_DEADLINE
        state: dict[str, object] = {}
        while not (state.get("ready", 0) >= 1 and state.get("t", 0) > 0):  # type: ignore[operator]
            state = await devtools.evaluate(_STATE) or {}
            assert not state.get("error"), state
            assert reactor.seconds() < deadline, f"the video never started: {state}"
            await sleep(0.2)
        before = state
        assert await devtools.evaluate(_SEEK) is True
        while state.get("seeked") is None:
            state = await devtools.evaluate(_STATE) or {}
            assert not state.get("error"), state
            assert reactor.seconds() < deadline, f"no seeked event: {state}"
            await sleep(0.2)
        devtools.transport.loseConnection()
    finally:
        await _stop_chromium(chromium, base)
    print(f"\nrecording in Chromium: before the seek {before}, after {state}")
    started = float(before["t"])  # type: ignore[arg-type]
    assert started < START_WITHIN, f"playback did not start at 0: {before}"
    assert float(state["seeked"]) >= SEEK_TO, state  # type: ignore[arg-type]
    assert float(state["t"]) >= SEEK_TO, state  # type: ignore[arg-type]
    assert abs(float(state["d"]) - DURATION) < 0.5, state  # type: ignore[arg-type]
    assert int(state["w"]) == 320, state  # type: ignore[call-overload]
