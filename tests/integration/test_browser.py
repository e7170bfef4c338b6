"""A real browser plays a stream: headless Chromium and mpegts.js, over HTTP-FLV and WebSocket-FLV.

ffmpeg publishes the session's sample over RTMP to a server running in this
process (its RTMP port and its HTTP site, each on a free loopback port).  The
test runs a second, small ``twisted.web`` site of its own that serves the page
``browser/player.html``, the package's bundled ``mpegts.min.js``, and takes the
page's reports.  The page plays ``/live/x.flv`` from the server's port, so the
FLV comes cross-origin (the server's ``Access-Control-Allow-Origin: *``), and
reports what its ``<video>`` element did once a second.  No WebDriver: Chromium
is only started and killed.

The server runs in this process so each report can be set beside what the
server knows of that browser's viewer at the same moment: its lag behind the
stream's live timestamp, and the stream position the browser's timeline starts from.

Chromium missing skips, or fails under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from streamserver.codec.messages import MessageType
from streamserver.http import build_site
from streamserver.http.flv import FlvSession
from tests.integration.support import get_reactor, run, sleep, wait_until
from tests.integration.test_interop import _publish_sample

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from tests.integration.conftest import Interop, LoopbackServer, ProcessPool
    from tests.integration.support import CollectingProcess

pytestmark = pytest.mark.integration

#: The page the browser opens.
PAGE = Path(__file__).resolve().parent / "browser" / "player.html"

#: Seconds of playing the test watches, and how far ``currentTime`` must advance in them.
WATCH_SECONDS = 8.0
MIN_ADVANCE = 5.0

#: Seconds from starting Chromium to the end of the watch, at most.
BROWSER_DEADLINE = 18.0

#: The kinds of the page's notes that are errors (warnings are printed, not failures).
PAGE_ERRORS = frozenset(
    {"setup", "play", "window.error", "rejection", "video.error", "mpegts.ERROR", "mpegts.error"}
)

#: Chromium's executable names, in the order tried.
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_argv(env: str, chromium: str, base: Path, url: str) -> list[str]:
    """Headless Chromium opening *url*, everything it writes kept under *base*.

    ``env`` gives it a home, XDG and temporary directories of its own under
    *base* (its crash reporter and audio client write there, whatever the
    profile), and the flags keep it off the network but for *url*.
    """
    dirs = {name: base / name for name in ("profile", "home", "run", "tmp")}
    for path in dirs.values():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    home = dirs["home"]
    return [
        env,
        f"HOME={home}",
        f"XDG_CONFIG_HOME={home / '.config'}",
        f"XDG_CACHE_HOME={home / '.cache'}",
        f"XDG_RUNTIME_DIR={dirs['run']}",
        f"TMPDIR={dirs['tmp']}",
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={dirs['profile']}",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--metrics-recording-only",
        "--no-pings",
        "--mute-audio",
        "--window-size=640,480",
        url,
    ]


# --- the server under test, with its HTTP site ------------------------------------------


@dataclass
class FlvSite:
    """The in-process server's HTTP site on 127.0.0.1, and the catch-up start of each viewer.

    :ivar port: the HTTP port.
    :ivar starts: per HTTP connection id, the timestamp of the first audio or video
        frame of the catch-up it got (where mpegts.js's timeline starts: it
        rebases timestamps to the first sample).
    """

    server: LoopbackServer
    port: int
    starts: dict[int, int] = field(default_factory=dict)

    @property
    def factory(self) -> RTMPServerFactory:
        return self.server.factory

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def sessions(self) -> list[FlvSession]:
        return [c for c in self.factory.connections.values() if isinstance(c, FlvSession)]


@pytest_twisted.async_yield_fixture
async def flv_site(rtmp_server: LoopbackServer) -> AsyncIterator[FlvSite]:
    """The ``rtmp_server`` fixture's factory, also serving its HTTP site on a free port."""
    reactor = get_reactor()
    factory = rtmp_server.factory
    listening = reactor.listenTCP(0, build_site(factory), interface="127.0.0.1")
    site = FlvSite(rtmp_server, listening.getHost().port)
    opened = factory.connection_opened

    def connection_opened(connection: Any, **kwargs: Any) -> None:
        # Called as the request is admitted, in the reactor turn that subscribes it
        # (no authorizer is configured), so the GOP cache is the catch-up it gets.
        if isinstance(connection, FlvSession):
            stream = factory.find_stream(connection.app, connection.name)
            media = [
                f.message.timestamp
                for f in (stream.gop if stream is not None else ())
                if f.message.type_id in (MessageType.AUDIO, MessageType.VIDEO)
            ]
            if media:
                site.starts[connection.conn_id] = min(media)
        opened(connection, **kwargs)

    factory.connection_opened = connection_opened  # type: ignore[method-assign,assignment]
    try:
        yield site
    finally:
        await defer.maybeDeferred(listening.stopListening)
        for session in site.sessions():
            session.drop_connection()
        await wait_until(lambda: not site.sessions(), 10, "the HTTP viewers to close")


# --- the test's own site: the page, mpegts.js, the reports ---------------------------------


class _Bytes(Resource):
    """``GET``: fixed bytes with their content type."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-store")
        return self.body


class _PageRoot(Resource):
    """The test site's root: its children, and a plain 404 for anything else (the favicon)."""

    def getChild(self, path: bytes, request: Any) -> IResource:
        return pages.notFound()


class _Reports(Resource):
    """``POST /report``: one JSON report of the page, kept with what *sample* adds to it."""

    isLeaf = True

    def __init__(self, sample: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        super().__init__()
        self.sample = sample
        self.received: list[dict[str, Any]] = []

    def render_POST(self, request: Any) -> bytes:
        report = json.loads(request.content.read())
        report["server"] = self.sample(report)
        self.received.append(report)
        request.setResponseCode(204)
        return b""


@dataclass
class Figures:
    """What one browser run measured over its watch (from the page's reports)."""

    transport: str
    advanced: float
    watched: float
    frames: int
    dropped: int
    width: int
    height: int
    buffer_behind: float
    buffer_behind_max: float
    server_lag_ms: int
    behind_live: float | None
    audio_bytes: int

    def line(self) -> str:
        behind = f"{self.behind_live:.2f} s" if self.behind_live is not None else "unknown"
        return (
            f"{self.transport}: currentTime advanced {self.advanced:.2f} s in {self.watched:.2f} s "
            f"of playing; {self.frames} frames decoded, {self.dropped} dropped, "
            f"{self.width}x{self.height}; buffer behind live {self.buffer_behind:.2f} s "
            f"(max {self.buffer_behind_max:.2f} s); server lag {self.server_lag_ms} ms; "
            f"behind the stream's live timestamp {behind}; audio decoded {self.audio_bytes} bytes"
        )


def _played(reports: list[dict[str, Any]]) -> float:
    """Seconds of playing the page has reported so far (0 before it played)."""
    return max(
        (r["t"] - r["playing"]["t"] for r in reports if r.get("playing") is not None), default=0.0
    )


def _figures(transport: str, reports: list[dict[str, Any]]) -> Figures | None:
    """The figures at the last report within the watch, or ``None`` before any played."""
    watched = [
        r
        for r in reports
        if r.get("playing") is not None and r["t"] - r["playing"]["t"] <= WATCH_SECONDS
    ]
    if not watched:
        return None
    last = watched[-1]
    behind = [
        r["bufferedEnd"] - r["currentTime"] for r in watched if r.get("bufferedEnd") is not None
    ]
    server = last.get("server") or {}
    return Figures(
        transport=transport,
        advanced=last["currentTime"] - last["playing"]["currentTime"],
        watched=last["t"] - last["playing"]["t"],
        frames=int(last["totalVideoFrames"]),
        dropped=int(last["droppedVideoFrames"]),
        width=int(last["videoWidth"]),
        height=int(last["videoHeight"]),
        buffer_behind=behind[-1] if behind else float("nan"),
        buffer_behind_max=max(behind) if behind else float("nan"),
        server_lag_ms=int(server.get("lag_ms", -1)),
        behind_live=server.get("behind_live"),
        audio_bytes=int(last.get("audioDecodedBytes") or 0),
    )


def _describe(reports: list[dict[str, Any]], chromium: CollectingProcess | None) -> str:
    """The last reports and Chromium's output, for a failure message."""
    earlier = [{k: v for k, v in r.items() if k != "notes"} for r in reports[-3:-1]]
    lines = [json.dumps(r, sort_keys=True)[:1000] for r in earlier]
    lines += [json.dumps(r, sort_keys=True)[:6000] for r in reports[-1:]]
    if chromium is not None:
        lines.append("--- chromium stderr (tail) ---")
        lines.append(bytes(chromium.stderr[-3000:]).decode(errors="replace"))
    return "\n".join(lines) if lines else "no report"


def _processes_under(base: Path) -> list[int]:
    """The ids of processes whose command line or environment names *base* (Chromium's)."""
    needle = str(base).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if any(needle in (entry / part).read_bytes() for part in ("cmdline", "environ")):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _stop_chromium(chromium: CollectingProcess, base: Path) -> None:
    """End Chromium (SIGTERM, then SIGKILL) and any of its processes left, then remove *base*."""
    if chromium.running:
        await chromium.stop("TERM", grace=3.0)
    deadline = get_reactor().seconds() + 5
    while leftovers := _processes_under(base):
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert get_reactor().seconds() < deadline, f"Chromium processes left: {leftovers}"
        await sleep(0.1)
    shutil.rmtree(base, ignore_errors=True)
    assert not base.exists(), f"could not remove {base}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", ["http-flv", "ws-flv"])
@pytest_twisted.ensureDeferred
async def test_chromium_plays_the_stream_with_mpegts_js(
    transport: str,
    flv_site: FlvSite,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """Chromium's ``<video>`` plays ≥ 5 s in 8 s of ``/live/x.flv``, frames decoded, picture sized.

    Printed: seconds advanced, frames decoded and dropped, the buffer behind live
    (``buffered.end - currentTime``), the server's lag for that viewer, and how far
    the picture is behind the stream's live timestamp.
    """
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "env")
    await _publish_sample(flv_site.server, processes, tools["ffmpeg"], sample_flv, "x")

    def sample(report: dict[str, Any]) -> dict[str, Any]:
        """What the server knows of the browser's viewer as a report arrives."""
        sessions = [s for s in flv_site.sessions() if s.protocol_name == transport]
        if len(sessions) != 1 or sessions[0].viewer is None:
            return {"sessions": len(sessions)}
        session = sessions[0]
        viewer = session.viewer
        assert viewer is not None
        live = viewer.stream.live_timestamp
        start = flv_site.starts.get(session.conn_id)
        behind = None
        if live is not None and start is not None and report.get("playing") is not None:
            behind = (live - start) / 1000 - report["currentTime"]
        return {
            "lag_ms": viewer.lag_ms(),
            "live_timestamp": live,
            "timeline_start": start,
            "behind_live": behind,
            "frames_sent": viewer.frames_sent,
            "dropped": sum(viewer.dropped.values()),
        }

    reports = _Reports(sample)
    root = _PageRoot()
    player_js = (files("streamserver.http") / "static" / "mpegts.min.js").read_bytes()
    root.putChild(b"player.html", _Bytes(PAGE.read_bytes(), b"text/html; charset=utf-8"))
    root.putChild(b"mpegts.min.js", _Bytes(player_js, b"text/javascript; charset=utf-8"))
    root.putChild(b"report", reports)
    reactor = get_reactor()
    page_site = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    scheme = "ws" if transport == "ws-flv" else "http"
    query = urlencode({"url": flv_site.url(scheme, "live/x.flv"), "report": "/report"})
    page = f"http://127.0.0.1:{page_site.getHost().port}/player.html?{query}"

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
                BROWSER_DEADLINE,
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

    figures = _figures(transport, reports.received)
    detail = _describe(reports.received, chromium)
    assert figures is not None, detail
    notes = reports.received[-1]["notes"] if reports.received else []
    print(f"\nbrowser figures, {figures.line()}; {elapsed:.1f} s in Chromium")
    for entry in notes:
        print(f"  page note at {entry['t']:.2f} s: {entry['kind']} {entry['detail']}")
    assert figures.advanced >= MIN_ADVANCE, f"{figures.line()}\n{detail}"
    assert figures.frames > 0, f"{figures.line()}\n{detail}"
    assert figures.width > 0, f"{figures.line()}\n{detail}"
    errors = [entry for entry in notes if entry["kind"] in PAGE_ERRORS]
    assert errors == [], f"{figures.line()}\n{detail}"


# --- the server's own player page, driven over the DevTools protocol ----------------------


class _DevTools:
    """One DevTools (CDP) connection to a page target: ``evaluate`` JavaScript in it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.answers: dict[int, defer.Deferred[Any]] = {}
        self.next_id = 1

    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        answer = json.loads(message)
        waiting = self.answers.pop(answer.get("id", 0), None)
        if waiting is not None:
            waiting.callback(answer)

    def connectionLost(self, reason: Any) -> None:
        for waiting in self.answers.values():
            waiting.errback(reason)
        self.answers.clear()

    async def evaluate(self, expression: str) -> Any:
        """The value of *expression* in the page (JSON-serializable)."""
        ident = self.next_id
        self.next_id += 1
        self.answers[ident] = answer = defer.Deferred()
        params = {"expression": expression, "returnByValue": True}
        self.transport.sendTextMessage(
            json.dumps({"id": ident, "method": "Runtime.evaluate", "params": params})
        )
        result = await answer
        if "exceptionDetails" in result.get("result", {}):
            return None  # the page's script is not there yet
        return result["result"]["result"].get("value")


async def _devtools_page(curl: str, profile: Path, url_part: str) -> _DevTools:
    """A DevTools connection to the page whose URL contains *url_part* (Chromium writes
    its DevTools port into ``DevToolsActivePort`` in the profile)."""
    from twisted.web.websocket import WebSocketClientEndpoint

    reactor = get_reactor()
    active = profile / "DevToolsActivePort"
    await wait_until(active.exists, 10, "Chromium's DevTools port")
    await wait_until(lambda: bool(active.read_text().split()), 5, "the port written")
    port = int(active.read_text().split()[0])
    targets: list[dict[str, Any]] = []

    async def find() -> bool:
        nonlocal targets
        listing = await run(
            [curl, "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/json/list"], 10
        )
        targets = json.loads(listing.stdout or b"[]")
        return any(url_part in t.get("url", "") for t in targets)

    deadline = reactor.seconds() + 10
    while not await find():
        assert reactor.seconds() < deadline, f"no page target with {url_part}: {targets}"
        await sleep(0.2)
    target = next(t for t in targets if url_part in t.get("url", ""))
    endpoint = WebSocketClientEndpoint.new(reactor, target["webSocketDebuggerUrl"])

    class _Factory:
        def buildProtocol(self, url: str) -> _DevTools:
            return _DevTools()

    devtools: _DevTools = await defer.ensureDeferred(endpoint.connect(_Factory()))
    return devtools


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_the_servers_own_player_page_plays_the_stream(
    flv_site: FlvSite,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """What a newcomer clicks: ``/play/live/x`` from the server itself, with the mpegts.js
    it serves at ``/static/``, plays the stream (``currentTime`` advances ≥ 5 s in 8 s)."""
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "env", "curl")
    await _publish_sample(flv_site.server, processes, tools["ffmpeg"], sample_flv, "x")
    base = Path(tempfile.mkdtemp(prefix="chromium-"))
    page = flv_site.url("http", "play/live/x")
    argv = chromium_argv(tools["env"], chromium_path, base, page)
    argv.insert(argv.index(page), "--remote-debugging-port=0")
    chromium = processes.spawn(argv, cwd=tmp_path)
    try:
        devtools = await _devtools_page(tools["curl"], base / "profile", "/play/live/x")
        expression = (
            "(() => { const v = document.getElementById('video');"
            " return {t: v.currentTime, w: v.videoWidth,"
            " frames: v.getVideoPlaybackQuality().totalVideoFrames,"
            " status: document.getElementById('status').textContent}; })()"
        )
        reactor = get_reactor()
        first = None
        deadline = reactor.seconds() + BROWSER_DEADLINE
        while True:
            state = await devtools.evaluate(expression) or {"t": 0}
            if first is None and state["t"] > 0:
                first = (reactor.seconds(), state["t"])
            if first is not None and reactor.seconds() - first[0] >= WATCH_SECONDS:
                break
            assert reactor.seconds() < deadline, f"the page never played 8 s: {state}"
            await sleep(0.5)
        devtools.transport.loseConnection()
    finally:
        await _stop_chromium(chromium, base)
    advanced = state["t"] - first[1]
    print(f"\nthe server's player page: advanced {advanced:.2f} s in {WATCH_SECONDS} s, {state}")
    assert advanced >= MIN_ADVANCE, state
    assert state["frames"] > 0 and state["w"] > 0, state
    assert state["status"] == "Live", state
