"""HLS over a real loopback port, driven part by part: what a player gets and when.

The factory's HLS manager makes :class:`~tests.http.fake_segmenter.FakeSegmenter`
objects, so each part and segment appears when the test says: a playlist request
waiting for the first part, a blocking reload waiting for its part, the order
parked requests are answered in, the timeouts (the factory's clock is skewed
forward, the watchdog called by hand), the 400 cases, tokens on every URI, the
on-demand start and the idle stop.  The viewers are ``twisted.web`` Agents, one
connection per request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import m3u8
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamserver.auth import AccessConfig, AllOf, IAuthorizer
from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.http import build_site
from streamserver.http.hls import (
    ACCESS_CACHE_SECONDS,
    DirectiveError,
    HlsTarget,
    advance_part_limit,
    carried_query,
    is_hls_name,
    parse_directives,
    parse_hls_path,
)
from streamserver.http.hls_manager import FIRST_SEGMENTS, HlsManager
from streamserver.tokens import signed_query
from tests.http.fake_segmenter import FakeSegmenter, FakeSegmenters
from tests.integration.support import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    get_reactor,
    sleep,
    wait_until,
    within,
)
from tests.media.test_hls import AAC_FRAME, SAMPLE_RATE, audio_message, video_message
from tests.protocol import media

pytestmark = pytest.mark.integration


@dataclass
class Reply:
    """A response as the test sees it."""

    code: int
    headers: dict[str, str]
    body: bytes
    #: the Content-Length (the Agent takes it out of the headers)
    length: Any = None

    @property
    def text(self) -> str:
        return self.body.decode()

    def playlist(self) -> m3u8.M3U8:
        assert self.headers["content-type"] == "application/vnd.apple.mpegurl", self.headers
        return m3u8.loads(self.text)


class BodyCollector(Protocol):
    """Collects a response body; :attr:`done` fires with it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(bytes(self.data))
        else:
            self.done.errback(reason)


class HlsServer:
    """A factory with RTMP and HTTP on 127.0.0.1 whose segmenters the test drives."""

    def __init__(self, config: ServerConfig, *, fake: bool = True) -> None:
        reactor = get_reactor()
        self.factory = RTMPServerFactory(config, reactor=reactor)
        self.skew = 0.0
        self.factory.seconds = lambda: reactor.seconds() + self.skew  # type: ignore[method-assign]
        self.segmenters = FakeSegmenters(self.factory)
        if fake:
            self.factory.hls = HlsManager(self.factory, self.segmenters)
        self.rtmp = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.http = reactor.listenTCP(0, build_site(self.factory), interface="127.0.0.1")
        self.port: int = self.http.getHost().port
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def start(self, path: str, method: bytes = b"GET") -> defer.Deferred[Reply]:
        """Send *method* *path*; the Deferred fires with the whole response."""
        agent = Agent(get_reactor(), pool=self.pool)
        url = f"http://127.0.0.1:{self.port}{path}".encode()

        async def collect() -> Reply:
            headers = Headers({b"origin": [b"http://player.example"]})
            response = await agent.request(method, url, headers)
            body = b""
            if method != b"HEAD":
                collector = BodyCollector()
                response.deliverBody(collector)
                body = await collector.done
            found = {
                name.decode().lower(): values[0].decode()
                for name, values in response.headers.getAllRawHeaders()
            }
            return Reply(response.code, found, body, response.length)

        return defer.ensureDeferred(collect())

    async def get(self, path: str, method: bytes = b"GET") -> Reply:
        return await within(self.start(path, method), 10, f"{method.decode()} {path}")

    @property
    def fake(self) -> FakeSegmenter:
        return self.segmenters.last

    def later(self, seconds: float) -> None:
        """Move the factory's clock *seconds* on, and run the watchdog."""
        self.skew += seconds
        self.factory.check_viewers()

    async def close(self) -> None:
        await defer.maybeDeferred(self.rtmp.stopListening)
        await defer.maybeDeferred(self.http.stopListening)
        self.factory.hls.shutdown()
        await self.pool.closeCachedConnections()
        await sleep(0.05)


@pytest_twisted.async_yield_fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[HlsServer]:
    config = getattr(request, "param", None) or ServerConfig()
    running = HlsServer(config)
    try:
        yield running
    finally:
        await running.close()


@pytest_twisted.async_yield_fixture
async def real_server() -> AsyncIterator[HlsServer]:
    """A server whose segmenters are the real ones (``streamserver.media.hls``)."""
    running = HlsServer(ServerConfig(), fake=False)
    try:
        yield running
    finally:
        await running.close()


#: The segment being made once :func:`started` returns (0 and 1 are complete).
LIVE = FIRST_SEGMENTS["fmp4"]


async def started(server: HlsServer, parts: int = 1, path: str = "/live/x/index.m3u8") -> Reply:
    """A segmenter started by a playlist request, answered once segments 0 and 1 (one part
    each) are complete; then segment :data:`LIVE` is being made, with *parts* parts."""
    made = len(server.segmenters.made)
    waiting = server.start(path)
    await wait_until(lambda: len(server.segmenters.made) > made, 5, "the segmenter")
    for _ in range(LIVE):
        server.fake.add_part()
        server.fake.end_segment()
    reply = await within(waiting, 5, "the first playlist")
    for _ in range(parts):
        server.fake.add_part()
    return reply


async def parked(server: HlsServer, count: int) -> None:
    """Wait until *count* requests are parked on the (first) stream's segmenter."""
    await wait_until(lambda: server.factory.hls.streams[0].waiting == count, 5, f"{count} parked")


# --- paths and directives ---------------------------------------------------------------


def test_hls_paths_are_parsed_strictly() -> None:
    """``/APP.../NAME/FILE`` with the FLV rules for names; only the playlists and media names."""
    assert parse_hls_path([b"live", b"x", b"index.m3u8"]) == HlsTarget("live", "x", "playlist")
    assert parse_hls_path([b"a", b"b", b"x", b"ts.m3u8"]) == HlsTarget("a/b", "x", "playlist", "ts")
    assert parse_hls_path([b"live", b"x", b"seg-12.ts"]) == HlsTarget(
        "live", "x", "segment", "ts", 12
    )
    assert parse_hls_path([b"live", b"x", b"part-3-4.m4s"]) == HlsTarget(
        "live", "x", "part", "fmp4", 3, 4
    )
    assert parse_hls_path([b"live", b"x", b"init-1.mp4"]) == HlsTarget(
        "live", "x", "init", "fmp4", 1
    )
    for bad in (
        [b"x", b"index.m3u8"],
        [b"live", b"..", b"index.m3u8"],
        [b"live", b"x", b"seg-a.m4s"],
        [b"live", b"x", b"seg-1.mp4"],
        [b"live", b"x\n", b"index.m3u8"],
        [b"live", b"x", b"part-1.m4s"],
    ):
        assert parse_hls_path(bad) is None, bad
    assert is_hls_name(b"index.m3u8") and is_hls_name(b"seg-0.m4s")
    assert not is_hls_name(b"x.flv") and not is_hls_name(b"x.mp4")


def test_delivery_directives_are_read_and_refused_as_the_spec_says() -> None:
    """Decimal integers only; ``_HLS_part`` needs ``_HLS_msn``; skip is YES or v2."""
    assert parse_directives({}) == parse_directives({b"other": [b"1"]})
    found = parse_directives({b"_HLS_msn": [b"12"], b"_HLS_part": [b"3"], b"_HLS_skip": [b"YES"]})
    assert (found.msn, found.part, found.skip) == (12, 3, True)
    assert parse_directives({b"_HLS_skip": [b"v2"]}).skip
    assert not parse_directives({b"_HLS_skip": [b"NO"]}).skip
    for bad in (
        {b"_HLS_part": [b"1"]},
        {b"_HLS_msn": [b"-1"]},
        {b"_HLS_msn": [b""]},
        {b"_HLS_msn": [b"1e3"]},
        {b"_HLS_msn": [b"1"], b"_HLS_part": [b"x"]},
        {b"_HLS_msn": [b"9" * 16]},
    ):
        with pytest.raises(DirectiveError):
            parse_directives(bad)
    assert advance_part_limit(0.2) == pytest.approx(15)
    assert advance_part_limit(1.5) == 3


def test_the_query_carried_onto_uris_keeps_the_token_and_drops_the_directives() -> None:
    """Order and bytes kept (a signature stays valid), directives and sid gone, quotes escaped."""
    uri = b'/live/x/index.m3u8?expires=1&_HLS_msn=3&token=ab%2Fc&_HLS_part=1&sid=old&q="x"'
    assert carried_query(uri) == "expires=1&token=ab%2Fc&q=%22x%22"
    assert carried_query(b"/live/x/index.m3u8") == ""


# --- the responses ----------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_every_file_has_its_content_type_caching_and_cors(server: HlsServer) -> None:
    """Playlists: the HLS type, no-cache; init, parts, segments: their types, long-lived."""
    first = await started(server, parts=3)
    assert first.code == 200
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["access-control-allow-origin"] == "*"
    playlist = first.playlist()
    sid = server.factory.hls.streams[0].session
    assert playlist.segment_map[0].uri == f"init-0.mp4?sid={sid}"
    server.fake.end_segment()
    ts_waiting = server.start("/live/x/ts.m3u8")  # turns TS on: the next segments have some
    await wait_until(lambda: server.fake.ts_enabled, 5, "TS on")
    for _ in range(FIRST_SEGMENTS["ts"]):
        server.fake.add_part()
        server.fake.add_part()
        server.fake.end_segment()
    assert (await within(ts_waiting, 5, "the TS playlist")).code == 200
    files = {
        f"init-0.mp4?sid={sid}": "video/mp4",
        f"part-{LIVE}-1.m4s?sid={sid}": "video/mp4",
        f"seg-0.m4s?sid={sid}": "video/mp4",
        f"seg-{LIVE + 1}.ts?sid={sid}": "video/mp2t",
    }
    for name, content_type in files.items():
        reply = await server.get(f"/live/x/{name}")
        assert reply.code == 200, (name, reply)
        assert reply.headers["content-type"] == content_type, name
        assert reply.headers["cache-control"] == "public, max-age=3600, immutable", name
        assert reply.headers["access-control-allow-origin"] == "*", name
        assert reply.length == len(reply.body) > 0, name
    part = server.fake.part(LIVE, 1)
    assert (await server.get(f"/live/x/part-{LIVE}-1.m4s?sid={sid}")).body == part.data
    assert (await server.get(f"/live/x/seg-0.m4s?sid={sid}")).body == server.fake.segment(0).mp4()
    ts = await server.get("/live/x/ts.m3u8")
    assert ts.code == 200 and ts.headers["cache-control"] == "no-cache"
    assert [s.uri for s in ts.playlist().segments] == [
        f"seg-{LIVE + 1}.ts?sid={sid}",
        f"seg-{LIVE + 2}.ts?sid={sid}",
    ]
    preflight = await server.get("/live/x/index.m3u8", method=b"OPTIONS")
    assert preflight.code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    head = await server.get("/live/x/index.m3u8", method=b"HEAD")
    assert head.code == 200 and head.headers["content-type"] == "application/vnd.apple.mpegurl"


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_unknown_streams_files_and_sessions_are_short_404s(server: HlsServer) -> None:
    """No segmenter, no such segment, a part far ahead, another session: a one-line 404."""
    reply = await server.get("/live/nobody/seg-0.m4s")
    assert reply.code == 404 and reply.headers["content-type"].startswith("text/plain")
    assert reply.text.count("\n") == 1
    assert server.factory.find_stream("live", "nobody") is None, "a segment request made a stream"
    await started(server)
    server.fake.end_segment()  # without TS: nobody asked for ts.m3u8
    for path in (
        "/live/x/seg-9.m4s",
        f"/live/x/part-{LIVE}-9.m4s",
        f"/live/x/part-{LIVE + 3}-0.m4s",
        "/live/x/init-7.mp4",
        "/live/x/seg-0.ts",
        "/live/x/seg-0.m4s?sid=0ther",
        "/x/index.m3u8",
        "/live/x/other.m3u8",
    ):
        reply = await server.get(path)
        assert reply.code == 404, (path, reply)
        assert reply.text.count("\n") == 1, path


@pytest.mark.parametrize("server", [ServerConfig(hls="off")], indirect=True)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_hls_off_answers_404_and_starts_nothing(server: HlsServer) -> None:
    """With ``--hls off`` every HLS path is a 404; no segmenter, no stream."""
    reply = await server.get("/live/x/index.m3u8")
    assert (reply.code, reply.text) == (404, "HLS is off on this server\n")
    assert server.segmenters.made == [] and server.factory.streams() == []


# --- waiting --------------------------------------------------------------------------


@pytest.mark.parametrize("server", [ServerConfig(http_play_wait=2.0)], indirect=True)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_playlist_before_the_first_segment_waits_for_it_then_404s(
    server: HlsServer,
) -> None:
    """No answer while the segmenter has no complete segment (parts alone are nothing to
    ffmpeg); the end of the first segment answers it at once.  A second stream's request
    that gets nothing within --http-play-wait is a 404."""
    waiting = server.start("/live/x/index.m3u8")
    await wait_until(lambda: bool(server.segmenters.made), 5, "the segmenter")
    await sleep(0.3)
    assert not waiting.called
    server.fake.add_part()
    server.fake.add_part()
    await sleep(0.3)
    assert not waiting.called, "answered with parts only"
    server.fake.end_segment()
    await sleep(0.3)
    assert not waiting.called, "answered with the first segment only"
    server.fake.add_part()
    server.fake.end_segment()
    reply = await within(waiting, 5, "the playlist")
    assert reply.code == 200
    assert [s.uri.split("?")[0] for s in reply.playlist().segments] == ["seg-0.m4s", "seg-1.m4s"]
    assert "#EXT-X-PART:" in reply.text and "#EXT-X-PRELOAD-HINT" in reply.text

    late = server.start("/live/y/index.m3u8")
    await wait_until(lambda: len(server.segmenters.made) == 2, 5, "the second segmenter")
    server.later(1.0)
    await sleep(0.2)
    assert not late.called
    server.later(1.5)
    reply = await within(late, 5, "the 404")
    assert (reply.code, reply.text) == (404, "no HLS segment of live/y yet\n")


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_blocking_reload_is_answered_when_its_part_is_finished(server: HlsServer) -> None:
    """``_HLS_msn``/``_HLS_part`` park the request; other parts leave it parked; its own part
    answers it with a playlist holding that part; a part past a segment's last is the
    next segment's first (RFC 8216bis 6.2.5.2)."""
    await started(server, parts=2)
    fake = server.fake
    ready = await server.get(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=1")
    assert ready.code == 200, "a part that exists is answered at once"
    assert ready.headers["cache-control"].startswith("public, max-age=")
    blocked = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=3")
    await parked(server, 1)
    fake.add_part()  # part 2: not the one asked for
    await sleep(0.2)
    assert not blocked.called
    fake.add_part()  # part 3
    reply = await within(blocked, 5, "the reload")
    assert reply.code == 200
    assert f'URI="part-{LIVE}-3.m4s' in reply.text
    # past the last part of the segment: the first part of the next one
    beyond = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=7")
    await parked(server, 1)
    fake.end_segment()
    await sleep(0.2)
    assert not beyond.called
    fake.add_part()
    assert (await within(beyond, 5, "the reload")).code == 200
    assert server.factory.hls.streams[0].waiting == 0


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_parked_reloads_are_answered_in_the_order_their_parts_finish(
    server: HlsServer,
) -> None:
    """Three requests for parts 3, 2, 2 (in that order): part 2 answers both of its
    requests first, in the order they came; part 3 the other, after."""
    await started(server, parts=2)
    answered: list[str] = []
    requests = {}
    for label, part in (("p3", 3), ("p2a", 2), ("p2b", 2)):
        requests[label] = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part={part}")
        requests[label].addCallback(lambda reply, label=label: answered.append(label) or reply)
        # each request on the server before the next, so their order is known
        await parked(server, len(requests))
    server.fake.add_part()
    await wait_until(lambda: len(answered) == 2, 5, "part 2's requests")
    assert answered == ["p2a", "p2b"]
    server.fake.add_part()
    await wait_until(lambda: len(answered) == 3, 5, "part 3's request")
    assert answered == ["p2a", "p2b", "p3"]
    for deferred in requests.values():
        assert (await deferred).code == 200


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_blocking_reload_that_waits_three_target_durations_is_a_503(
    server: HlsServer,
) -> None:
    """Nothing comes for 3 target durations: 503 (RFC 8216bis 6.2.5.2), not before."""
    await started(server)
    blocked = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE + 1}&_HLS_part=0")
    await parked(server, 1)
    target = server.fake.target_duration
    server.later(3 * target - 0.5)
    await sleep(0.2)
    assert not blocked.called
    server.later(1.0)
    reply = await within(blocked, 5, "the 503")
    assert reply.code == 503 and reply.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("_HLS_part=1", "_HLS_part needs _HLS_msn"),
        ("_HLS_msn=abc", "_HLS_msn must be a decimal integer"),
        ("_HLS_msn=1&_HLS_part=-2", "_HLS_part must be a decimal integer"),
        (f"_HLS_msn={LIVE + 3}", f"more than two segments past the last one ({LIVE})"),
        (f"_HLS_msn={LIVE}&_HLS_part=17", "_HLS_part=17 is more than 15 parts past the last one"),
        (f"_HLS_msn={LIVE + 1}&_HLS_part=15", "_HLS_part=15 is more than 15 parts past the last"),
    ],
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_spec_s_400_cases(server: HlsServer, query: str, why: str) -> None:
    """Malformed directives, a part without a segment, too far ahead: 400 at once."""
    await started(server, parts=2)  # segment LIVE is being made: parts 0 and 1 exist
    reply = await server.get(f"/live/x/index.m3u8?{query}")
    assert reply.code == 400, reply
    assert why in reply.text
    assert server.factory.hls.streams[0].waiting == 0
    # the nearest that is not refused is parked
    near = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE + 2}")
    await parked(server, 1)
    near.cancel()
    await wait_until(lambda: server.factory.hls.streams[0].waiting == 0, 5, "cancelled")


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_skip_asks_for_a_delta_update_of_the_ll_playlist_only(server: HlsServer) -> None:
    """``_HLS_skip=YES`` reaches the segmenter as ``skip=True`` for index.m3u8; ts.m3u8
    ignores it (no CAN-SKIP-UNTIL there)."""
    await started(server)
    fake = server.fake
    ts_waiting = server.start("/live/x/ts.m3u8")
    await wait_until(lambda: fake.ts_enabled, 5, "TS on")
    for _ in range(4):
        fake.add_part()
        fake.end_segment()
    await within(ts_waiting, 5, "the TS playlist")
    fake.skips.clear()
    delta = await server.get("/live/x/index.m3u8?_HLS_skip=YES")
    assert delta.code == 200
    assert f"#EXT-X-SKIP:SKIPPED-SEGMENTS={len(fake.segments) - 2}" in delta.text
    full = await server.get("/live/x/index.m3u8")
    assert "#EXT-X-SKIP" not in full.text
    await server.get("/live/x/ts.m3u8?_HLS_skip=YES")
    assert fake.skips == [True, False, False]


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_part_named_by_the_preload_hint_waits_until_it_is_finished(
    server: HlsServer,
) -> None:
    """The next part (the preload hint's) and the next segment's first wait; each is
    answered with its bytes once made; a part the segment ended without is a 404."""
    first = await started(server, parts=0)
    sid = server.factory.hls.streams[0].session
    hint = first.playlist().preload_hint
    assert hint.uri == f"part-{LIVE}-0.m4s?sid={sid}"
    hinted = server.start(f"/live/x/{hint.uri}")
    never = server.start(f"/live/x/part-{LIVE}-2.m4s?sid={sid}")
    await parked(server, 2)
    part = server.fake.add_part()
    reply = await within(hinted, 5, "the hinted part")
    assert (reply.code, reply.body) == (200, part.data)
    assert reply.headers["cache-control"] == "public, max-age=3600, immutable"
    server.fake.end_segment()
    server.fake.add_part()  # the next segment begins: this one will never have a part 2
    reply = await within(never, 5, "the 404")
    assert reply.code == 404


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_player_that_leaves_while_parked_is_forgotten(server: HlsServer) -> None:
    """The connection closes while its reload waits: nothing is parked any more, and the
    part that comes later answers nobody."""
    await started(server)
    entry = server.factory.hls.streams[0]
    blocked = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=1")
    await wait_until(lambda: entry.waiting == 1, 5, "parked")
    blocked.addErrback(lambda _: None)
    blocked.cancel()
    await wait_until(lambda: entry.waiting == 0, 5, "forgotten")
    server.fake.add_part()
    assert entry.waiting == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "server", [ServerConfig(hls_max_waiting=2, hls_max_waiting_per_ip=0)], indirect=True
)
@pytest_twisted.ensureDeferred
async def test_requests_waiting_on_one_stream_are_capped_with_503(server: HlsServer) -> None:
    """Past ``--hls-max-waiting`` a request that would wait gets 503 at once; one that need
    not wait is served; when the parked ones are answered there is room again."""
    await started(server)
    entry = server.factory.hls.streams[0]
    blocked = [
        server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part={part}") for part in (1, 2)
    ]
    await parked(server, 2)
    refused = await server.get(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=1")
    assert refused.code == 503
    assert "2 requests wait on this stream already" in refused.text
    assert (await server.get(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=0")).code == 200
    assert server.factory.refusals["hls-waiting"] == 1
    server.fake.add_part()
    server.fake.add_part()
    for deferred in blocked:
        assert (await within(deferred, 5, "the reload")).code == 200
    assert entry.waiting == 0
    again = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=3")
    await parked(server, 1)
    server.fake.add_part()
    assert (await within(again, 5, "the reload")).code == 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", [ServerConfig(hls_max_waiting_per_ip=1)], indirect=True)
@pytest_twisted.ensureDeferred
async def test_requests_waiting_from_one_address_are_capped_over_every_stream(
    server: HlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One address past ``--hls-max-waiting-per-ip`` gets 503; the count goes when the
    request leaves.  (Loopback is exempt, so the test's address is counted as a remote one.)"""
    await started(server)
    monkeypatch.setattr("streamserver.http.hls.limited_host", lambda address: "198.51.100.7")
    by_host = server.factory.hls.waiting_by_host
    blocked = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=1")
    await parked(server, 1)
    assert by_host == {"198.51.100.7": 1}
    refused = await server.get(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=2")
    assert refused.code == 503
    assert "1 requests from 198.51.100.7 wait already" in refused.text
    blocked.addErrback(lambda _: None)
    blocked.cancel()
    await wait_until(lambda: not by_host, 5, "the count released")
    assert server.factory.hls.streams[0].waiting == 0


# --- tokens -------------------------------------------------------------------------------

SECRET = "s3cret"


@implementer(IAuthorizer)
class CountingAuthorizer:
    """Allows plays, counting how often it is asked."""

    name = "counting"

    def __init__(self) -> None:
        self.asked = 0

    def authorize_publish(self, request: Any) -> bool:
        return True

    def authorize_play(self, request: Any) -> bool:
        self.asked += 1
        return True


@pytest.mark.parametrize(
    "server", [ServerConfig(access=AccessConfig(play_token_secret=SECRET))], indirect=True
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_play_tokens_are_checked_on_every_request_and_carried_onto_every_uri(
    server: HlsServer,
) -> None:
    """Without a signed query: 403 for playlists and segments alike; with one, the
    playlist's every URI carries it after the session, and those URIs play."""
    refused = await server.get("/live/x/index.m3u8")
    assert (refused.code, refused.text) == (403, "play refused\n")
    assert server.segmenters.made == [], "a refused request started a segmenter"
    query = signed_query(SECRET, "play", "live", "x", int(time.time()) + 60)
    first = await started(server, parts=2, path=f"/live/x/index.m3u8?{query}")
    assert first.code == 200
    server.fake.end_segment()
    playlist = (await server.get(f"/live/x/index.m3u8?{query}")).playlist()
    sid = server.factory.hls.streams[0].session
    uris = [playlist.segment_map[0].uri, playlist.preload_hint.uri]
    uris += [s.uri for s in playlist.segments] + [p.uri for s in playlist.segments for p in s.parts]
    assert len(uris) == 8  # init, hint, 3 segments, the parts of the last 2 (1 + 2)
    for uri in uris:
        assert uri.endswith(f"?sid={sid}&{query}"), uri
        if f"part-{LIVE + 1}-0" not in uri:  # the preload hint's part is not made yet
            assert (await server.get(f"/live/x/{uri}")).code == 200, uri
        assert (await server.get(f"/live/x/{uri.split('?')[0]}?sid={sid}")).code == 403, uri
    other = signed_query(SECRET, "play", "live", "other", int(time.time()) + 60)
    assert (await server.get(f"/live/x/seg-0.m4s?sid={sid}&{other}")).code == 403
    expired = signed_query(SECRET, "play", "live", "x", int(time.time()) - 1)
    assert (await server.get(f"/live/x/seg-0.m4s?sid={sid}&{expired}")).code == 403


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_authorizers_are_asked_once_per_player_and_decision_lifetime(
    server: HlsServer,
) -> None:
    """A player's many requests cost one question every ACCESS_CACHE_SECONDS; another
    query (another token) is its own question."""
    counting = CountingAuthorizer()
    server.factory.authorizer = AllOf(counting)
    await started(server, parts=2, path="/live/x/index.m3u8?user=a")
    sid = server.factory.hls.streams[0].session
    for path in ("index.m3u8?user=a", f"part-0-0.m4s?sid={sid}&user=a", "init-0.mp4?user=a"):
        assert (await server.get(f"/live/x/{path}")).code == 200
    assert counting.asked == 1
    assert (await server.get("/live/x/index.m3u8?user=b")).code == 200
    assert counting.asked == 2
    server.skew += ACCESS_CACHE_SECONDS
    assert (await server.get("/live/x/index.m3u8?user=a")).code == 200
    assert counting.asked == 3


# --- the segmenters' life -------------------------------------------------------------------


@pytest.mark.parametrize("server", [ServerConfig(hls_idle_timeout=30)], indirect=True)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_on_demand_starts_on_the_first_playlist_and_stops_when_idle(
    server: HlsServer,
) -> None:
    """No segmenter until a playlist is asked for; it consumes the stream; requests keep it;
    30 s without one stop it (the watchdog), and the stream is released."""
    assert len(server.factory.hls) == 0
    await started(server)
    stream = server.factory.find_stream("live", "x")
    assert stream is not None and server.fake in stream.consumers
    assert server.fake.started and not server.fake.closed
    server.later(20)
    assert (await server.get("/live/x/init-0.mp4")).code == 200  # a request keeps it
    server.later(20)
    assert len(server.factory.hls) == 1
    server.later(10.5)
    assert len(server.factory.hls) == 0
    assert server.fake.closed and server.fake not in stream.consumers
    assert server.factory.find_stream("live", "x") is None, "the idle stream was kept"
    # a new session: new numbers may repeat, the sid does not
    old = server.fake
    reply = await started(server)
    assert server.fake is not old and reply.code == 200


@pytest.mark.parametrize("server", [ServerConfig(hls="always", hls_idle_timeout=5)], indirect=True)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_always_attaches_to_published_streams_and_keeps_them_while_published(
    server: HlsServer,
) -> None:
    """``--hls always``: the watchdog gives a published stream its segmenter, which stays
    however idle while the stream is published, and stops once it is not."""
    from streamserver.client import connect_client

    client = await within(
        connect_client(get_reactor(), f"rtmp://127.0.0.1:{server.rtmp.getHost().port}/live"),
        10,
        "connect",
    )
    try:
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.publish("x", stream_id), 10, "publish")
        await wait_until(lambda: server.factory.find_stream("live", "x") is not None, 5, "stream")
        assert server.segmenters.made == []
        server.factory.check_viewers()
        assert len(server.segmenters.made) == 1
        stream = server.factory.find_stream("live", "x")
        assert server.fake in stream.consumers
        server.later(60)
        assert len(server.factory.hls) == 1, "stopped while published"
        client.close()
        await wait_until(lambda: stream.publisher is None, 5, "unpublish")
        server.later(1)
        assert len(server.factory.hls) == 0
        assert server.factory.find_stream("live", "x") is None
    finally:
        client.close()


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_memory_each_segmenter_holds_is_reported(server: HlsServer) -> None:
    """``factory.hls.bytes_held(stream)`` is the stream's segmenter's; 0 without one."""
    await started(server, parts=3)
    stream = server.factory.find_stream("live", "x")
    server.fake.end_segment()
    assert server.fake.bytes_held > 0
    assert server.factory.hls.bytes_held(stream) == server.fake.bytes_held
    assert server.factory.hls.total_bytes_held() == server.fake.bytes_held
    server.factory.hls.stop(stream)
    assert server.factory.hls.bytes_held(stream) == 0


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_shutdown_answers_parked_requests_and_stops_every_segmenter(
    server: HlsServer,
) -> None:
    """The server stopping answers what waits (503) and closes the segmenters."""
    await started(server)
    blocked = server.start(f"/live/x/index.m3u8?_HLS_msn={LIVE}&_HLS_part=1")
    await parked(server, 1)
    await within(server.factory.shutdown(grace=1), 5, "shutdown")
    assert (await within(blocked, 5, "the answer")).code == 503
    assert len(server.factory.hls) == 0 and server.fake.closed


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_http_flv_still_routes_beside_hls(server: HlsServer) -> None:
    """``/live/x.flv`` is HTTP-FLV's (its 404 after --http-play-wait=0), not HLS's."""
    server.factory.config.http_play_wait = 0
    reply = await server.get("/live/x.flv")
    assert reply.code == 404 and "no stream live/x is being published" in reply.text
    assert server.segmenters.made == []


# --- the real segmenter, fed by an RTMP publisher ---------------------------------------------


class PacedMedia:
    """Our RTMP client publishing synthetic H.264 (a keyframe a second) and AAC in real time."""

    def __init__(self, client: RTMPClientProtocol, stream_id: int, fps: int = 30) -> None:
        self.client = client
        self.stream_id = stream_id
        self.fps = fps
        self.video = self.audio = 0
        self.loop = LoopingCall(self._tick)
        self.loop.clock = get_reactor()
        self.started = 0.0

    def _send(self, message: Message) -> None:
        self.client.send(
            Message(message.type_id, self.stream_id, message.timestamp, message.payload)
        )

    def start(self) -> None:
        self._send(media.metadata(self.stream_id))
        self._send(Message(MessageType.VIDEO, self.stream_id, 0, AVC_SEQUENCE_HEADER))
        self._send(Message(MessageType.AUDIO, self.stream_id, 0, AAC_SEQUENCE_HEADER))
        self.started = get_reactor().seconds()
        self.loop.start(1 / self.fps)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    def _tick(self) -> None:
        now_ms = (get_reactor().seconds() - self.started) * 1000
        while self.video * 1000 / self.fps <= now_ms:
            ts = self.video * 1000 // self.fps
            self._send(video_message(ts, key=self.video % self.fps == 0, index=self.video))
            self.video += 1
        while self.audio * AAC_FRAME * 1000 / SAMPLE_RATE <= now_ms:
            ts = self.audio * AAC_FRAME * 1000 // SAMPLE_RATE
            self._send(audio_message(ts, index=self.audio))
            self.audio += 1


async def publishing(server: HlsServer) -> tuple[RTMPClientProtocol, PacedMedia]:
    """A publisher of ``live/x`` sending paced media, once the stream has a keyframe cached."""
    port = server.rtmp.getHost().port
    client = await within(
        connect_client(get_reactor(), f"rtmp://127.0.0.1:{port}/live"), 10, "connect"
    )
    stream_id = await within(client.create_stream(), 10, "createStream")
    await within(client.publish("x", stream_id), 10, "publish")
    paced = PacedMedia(client, stream_id)
    paced.start()
    await wait_until(
        lambda: bool(getattr(server.factory.find_stream("live", "x"), "gop", None)), 5, "a GOP"
    )
    return client, paced


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_real_segmenter_s_files_are_served_as_made(real_server: HlsServer) -> None:
    """An RTMP publish played over HLS: the LL playlist parses, its init, parts and segments
    come with their types and are the bytes the segmenter holds; ts.m3u8 gets TS segments."""
    client, paced = await publishing(real_server)
    try:
        reply = await real_server.get("/live/x/index.m3u8")
        assert reply.code == 200, reply
        entry = real_server.factory.hls.streams[0]
        segmenter = entry.segmenter
        playlist = reply.playlist()
        assert playlist.version == 10 and playlist.part_inf.part_target == pytest.approx(0.2)
        assert playlist.server_control.can_block_reload == "YES"
        init = await real_server.get(f"/live/x/{playlist.segment_map[0].uri}")
        assert (init.code, init.headers["content-type"]) == (200, "video/mp4")
        assert init.body[4:8] == b"ftyp" and init.body == segmenter.init_segment(0)
        first = playlist.segments[0].parts[0]
        part = await real_server.get(f"/live/x/{first.uri}")
        assert (part.code, part.headers["content-type"]) == (200, "video/mp4")
        assert part.body[4:8] == b"moof" and part.body == segmenter.part(0, 0).data
        await wait_until(lambda: segmenter.next_msn >= 1, 10, "a complete segment")
        segment = await real_server.get(f"/live/x/seg-0.m4s?sid={entry.session}")
        assert segment.code == 200 and segment.body == segmenter.segment(0).mp4()
        ts = await within(real_server.start("/live/x/ts.m3u8"), 15, "the TS playlist")
        assert ts.code == 200, ts
        uri = ts.playlist().segments[0].uri
        data = await real_server.get(f"/live/x/{uri}")
        assert (data.code, data.headers["content-type"]) == (200, "video/mp2t")
        assert data.body[0] == 0x47 and len(data.body) % 188 == 0
        stream = real_server.factory.find_stream("live", "x")
        assert real_server.factory.hls.bytes_held(stream) == segmenter.bytes_held > 0
    finally:
        paced.stop()
        client.close()


async def blocking_reload(
    server: HlsServer, segmenter: Any, msn: int, index: int
) -> tuple[Reply, float | None, float]:
    """The reply to ``_HLS_msn=msn&_HLS_part=index``, when the segmenter had that part
    (``None`` if it had it before the request), and when the reply came."""
    waiting = server.start(f"/live/x/index.m3u8?_HLS_msn={msn}&_HLS_part={index}")
    finished: list[float] = []

    def heard() -> None:
        if not finished and segmenter.has(msn, index):
            finished.append(get_reactor().seconds())

    segmenter.add_listener(heard)
    try:
        reply = await within(waiting, 5, f"part {msn}.{index}")
    finally:
        segmenter.remove_listener(heard)
    return reply, (finished[0] if finished else None), get_reactor().seconds()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_blocking_reload_on_the_real_segmenter_answers_as_the_part_finishes(
    real_server: HlsServer,
) -> None:
    """Asking for the part the preload hint names: no answer before it is finished, an
    answer listing it within 100 ms of it, five times in a row as hls.js asks."""
    client, paced = await publishing(real_server)
    try:
        reply = await real_server.get("/live/x/index.m3u8")
        segmenter = real_server.factory.hls.streams[0].segmenter
        delays = []
        for _ in range(5):
            hint = reply.playlist().preload_hint.uri
            msn, index = (int(n) for n in hint.split("?")[0][5:-4].split("-"))
            asked = get_reactor().seconds()
            reply, finished, answered = await blocking_reload(real_server, segmenter, msn, index)
            assert reply.code == 200, reply
            assert f"part-{msn}-{index}.m4s" in reply.text
            assert finished is not None, "answered before the part was finished"
            delays.append(answered - finished)
            assert answered - asked < 1.0
        print(
            f"\nblocking reloads answered {[round(d * 1000, 1) for d in delays]} ms after the part"
        )
        assert max(delays) < 0.1
    finally:
        paced.stop()
        client.close()
