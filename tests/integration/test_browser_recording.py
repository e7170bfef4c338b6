"""A recording plays and seeks in headless Chromium: ``<video src="/recordings/...">``.

ffmpeg makes 12 s of H.264 + AAC as fragmented MP4 (``frag_keyframe+empty_moov+
default_base_moof``, what the recorder writes) at the layout's path under the
``--record`` directory of a ``twistd -n streamserver``.  A page holding only a
``<video>`` whose ``src`` is the file's ``/recordings/...`` URL is opened in
Chromium, driven over the DevTools protocol (:mod:`tests.integration.test_browser`'s
machinery): the video loads, plays, is seeked to the middle (``currentTime =
6``), and the test sees ``seeked`` with ``currentTime >= 6`` and, in the server's
``--http-access-log``, the 206 answers to Chromium's range requests.  curl's
range request gets a 206 with the exact bytes.  A missing binary skips, or fails
under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamserver.recording.listing import recording_url
from streamserver.recording.paths import recording_name, stream_dir
from tests.integration.hardening_support import start_twistd
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

#: Seconds the browser has to load, play and seek.
BROWSER_DEADLINE = 30.0

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


async def _make_recording(ffmpeg: str, root: Path) -> Path:
    """12 s of testsrc + sine as the recorder's fMP4, at the layout's path for live/vod."""
    directory = stream_dir(root, "live", "vod")
    directory.mkdir(parents=True)
    path = directory / recording_name("vod", time.time(), "mp4")
    argv = [
        ffmpeg, "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(DURATION),
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
        str(path),
    ]  # fmt: skip
    result = await run(argv, 60)
    assert result.exit_code == 0, result.describe()
    return path


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_chromium_plays_and_seeks_a_recording(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """<video src> of /recordings/... plays, seeks to 6 s (seeked, currentTime >= 6) over 206s."""
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "env", "curl")
    root = tmp_path / "rec"
    path = await _make_recording(tools["ffmpeg"], root)
    access_log = tmp_path / "access.log"
    twistd = await start_twistd(
        processes, interop, tmp_path, "--record", str(root), "--http-access-log", str(access_log)
    )
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
    assert float(state["seeked"]) >= SEEK_TO, state  # type: ignore[arg-type]
    assert float(state["t"]) >= SEEK_TO, state  # type: ignore[arg-type]
    assert abs(float(state["d"]) - DURATION) < 0.5, state  # type: ignore[arg-type]
    assert int(state["w"]) == 320, state  # type: ignore[call-overload]
