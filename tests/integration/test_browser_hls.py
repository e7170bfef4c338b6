"""A real browser plays HLS: headless Chromium and the bundled hls.js in low-latency mode.

The machinery is :mod:`tests.integration.test_browser`'s: ffmpeg publishes the
session's sample over RTMP to a server in this process, whose HTTP site is on a
free loopback port; the test's own small site serves the page
``browser/hls_player.html``, the package's ``hls.min.js``, and takes the page's
reports.  The page plays ``/live/x/index.m3u8`` (LL-HLS: parts, blocking reloads)
or ``/live/x/ts.m3u8`` cross-origin, and reports once a second what its
``<video>`` element did and hls.js's latency figures (``hls.latency``: how far
the picture is behind the live edge of the playlist it last loaded).
``STREAMSERVER_HLS_JS_DEBUG=1`` adds hls.js's own log to the printed notes.

Chromium missing skips, or fails under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.server import Site

from tests.integration.support import get_reactor, wait_until
from tests.integration.test_browser import (
    BROWSER_DEADLINE,
    CHROMIUM_NAMES,
    MIN_ADVANCE,
    PAGE_ERRORS,
    WATCH_SECONDS,
    Figures,
    FlvSite,
    _Bytes,
    _describe,
    _figures,
    _PageRoot,
    _played,
    _Reports,
    _stop_chromium,
    chromium_argv,
    flv_site,  # noqa: F401 (a fixture)
)
from tests.integration.test_interop import _publish_sample

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool
    from tests.integration.support import CollectingProcess

pytestmark = pytest.mark.integration

#: The page the browser opens.
PAGE = Path(__file__).resolve().parent / "browser" / "hls_player.html"

#: The page's notes that are errors: those of the FLV page, and hls.js's fatal ones
#: (a non-fatal hls.js error, which it recovers from by itself, is printed).
HLS_PAGE_ERRORS = PAGE_ERRORS | {"hls.fatal"}

#: Set to 1 to have hls.js's own log in the page's notes (printed), up to 600 lines.
DEBUG_VARIABLE = "STREAMSERVER_HLS_JS_DEBUG"

#: Seconds from starting Chromium to the end of the watch, at most: the segmenter
#: starts on the page's first request and a playlist waits for its first segments.
HLS_DEADLINE = BROWSER_DEADLINE + 6


@dataclass
class HlsFigures:
    """What one HLS run measured: the element's figures, and hls.js's latency."""

    figures: Figures
    latency: float | None
    latency_median: float | None
    latency_max: float | None
    target_latency: float | None
    playback_rate: float
    parts: int
    fragments: int
    playlists: int

    def line(self) -> str:
        def seconds(value: float | None) -> str:
            return f"{value:.2f} s" if value is not None else "unknown"

        f = self.figures
        return (
            f"{f.transport}: currentTime advanced {f.advanced:.2f} s in {f.watched:.2f} s "
            f"of playing; {f.frames} frames decoded, {f.dropped} dropped, "
            f"{f.width}x{f.height}; buffer behind live {f.buffer_behind:.2f} s "
            f"(max {f.buffer_behind_max:.2f} s); audio decoded {f.audio_bytes} bytes; "
            f"hls.latency {seconds(self.latency)} at the end "
            f"(median {seconds(self.latency_median)}, max {seconds(self.latency_max)} over "
            f"the watch; target {seconds(self.target_latency)}); playback rate "
            f"{self.playback_rate:g}; loaded {self.parts} parts, {self.fragments} whole "
            f"segments, {self.playlists} playlists"
        )


def _hls_figures(variant: str, reports: list[dict[str, Any]]) -> HlsFigures | None:
    """The figures at the last report within the watch, or ``None`` before any played."""
    figures = _figures(variant, reports)
    if figures is None:
        return None
    watched = [
        r
        for r in reports
        if r.get("playing") is not None and r["t"] - r["playing"]["t"] <= WATCH_SECONDS
    ]
    last = watched[-1]
    state = last.get("hls") or {}
    latencies = [
        (r.get("hls") or {}).get("latency")
        for r in watched
        if (r.get("hls") or {}).get("latency") is not None
    ]
    return HlsFigures(
        figures=figures,
        latency=state.get("latency"),
        latency_median=statistics.median(latencies) if latencies else None,
        latency_max=max(latencies) if latencies else None,
        target_latency=state.get("targetLatency"),
        playback_rate=float(last.get("playbackRate") or 1.0),
        parts=int(state.get("parts") or 0),
        fragments=int(state.get("fragments") or 0),
        playlists=int(state.get("playlists") or 0),
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", ["index.m3u8", "ts.m3u8"])
@pytest_twisted.ensureDeferred
async def test_chromium_plays_hls_with_hls_js_in_low_latency_mode(
    variant: str,
    flv_site: FlvSite,  # noqa: F811 (the fixture imported above)
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """Chromium's ``<video>`` plays ≥ 5 s in 8 s of ``/live/x/VARIANT`` with hls.js
    (``lowLatencyMode: true``), frames decoded, picture sized, no fatal hls.js error.

    Printed: seconds advanced, frames decoded and dropped, the buffer behind live
    (``buffered.end - currentTime``), ``hls.latency`` (at the end, median and max
    over the watch, and hls.js's target), and what hls.js loaded: for index.m3u8,
    parts (LL-HLS), for ts.m3u8, whole segments.
    """
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "env")
    await _publish_sample(flv_site.server, processes, tools["ffmpeg"], sample_flv, "x")
    factory = flv_site.factory

    def sample(report: dict[str, Any]) -> dict[str, Any]:
        """What the server knows of the stream's segmenter as a report arrives."""
        stream = factory.find_stream("live", "x")
        entry = factory.hls.get(stream) if stream is not None else None
        if entry is None:
            return {"segmenter": None}
        segmenter = entry.segmenter
        return {
            "next": f"{segmenter.next_msn}.{segmenter.next_part}",
            "parked": entry.waiting,
            "bytes_held": segmenter.bytes_held,
            "live_timestamp": stream.live_timestamp if stream is not None else None,
        }

    reports = _Reports(sample)
    root = _PageRoot()
    player_js = (files("streamserver.http") / "static" / "hls.min.js").read_bytes()
    root.putChild(b"hls_player.html", _Bytes(PAGE.read_bytes(), b"text/html; charset=utf-8"))
    root.putChild(b"hls.min.js", _Bytes(player_js, b"text/javascript; charset=utf-8"))
    root.putChild(b"report", reports)
    reactor = get_reactor()
    page_site = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    arguments = {"url": flv_site.url("http", f"live/x/{variant}"), "report": "/report"}
    if os.environ.get(DEBUG_VARIABLE) == "1":
        arguments["debug"] = "1"
    query = urlencode(arguments)
    page = f"http://127.0.0.1:{page_site.getHost().port}/hls_player.html?{query}"

    # Short: Chromium's singleton socket is a Unix socket under TMPDIR (108 bytes at most).
    base = Path(tempfile.mkdtemp(prefix="chromium-"))
    chromium: CollectingProcess | None = None
    try:
        argv = chromium_argv(tools["env"], chromium_path, base, page)
        chromium = processes.spawn(argv, cwd=tmp_path)
        started = reactor.seconds()
        browser = chromium
        try:
            await wait_until(
                lambda: not browser.running or _played(reports.received) >= WATCH_SECONDS,
                HLS_DEADLINE,
                f"{WATCH_SECONDS} s of playing",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{_describe(reports.received, chromium)}") from None
        elapsed = reactor.seconds() - started
    finally:
        if chromium is not None:
            await _stop_chromium(chromium, base)
        shutil.rmtree(base, ignore_errors=True)
        await defer.maybeDeferred(page_site.stopListening)

    found = _hls_figures(variant, reports.received)
    detail = _describe(reports.received, chromium)
    assert found is not None, detail
    figures = found.figures
    notes = reports.received[-1]["notes"] if reports.received else []
    print(f"\nbrowser figures, {found.line()}; {elapsed:.1f} s in Chromium")
    for entry in notes:
        print(f"  page note at {entry['t']:.2f} s: {entry['kind']} {entry['detail']}")
    assert figures.advanced >= MIN_ADVANCE, f"{found.line()}\n{detail}"
    assert figures.frames > 0, f"{found.line()}\n{detail}"
    assert figures.width > 0, f"{found.line()}\n{detail}"
    assert found.latency is not None, f"{found.line()}\n{detail}"
    if variant == "index.m3u8":
        assert found.parts > 0, f"hls.js loaded no part: {found.line()}\n{detail}"
    errors = [entry for entry in notes if entry["kind"] in HLS_PAGE_ERRORS]
    assert errors == [], f"{found.line()}\n{detail}"
