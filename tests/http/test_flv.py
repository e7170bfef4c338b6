"""HTTP-FLV and WebSocket-FLV on a real loopback port: what a player gets, byte by byte.

The publisher is our RTMP client; the viewers are :class:`FlvClient`s writing
their own requests and parsing the responses, so headers, framing, the FLV
header's flags and the order of the first tags are checked as a player sees
them.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.auth import AccessConfig
from streamserver.client import RTMPClientProtocol, connect_client, pace_tags
from streamserver.codec import amf0
from streamserver.codec.flv import FLVTag
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.http import build_site
from streamserver.http.flv import FlvSession, parse_stream_path
from streamserver.policy import PolicyLimits
from streamserver.tokens import signed_query
from tests.http.flv_client import FlvClient, get_request, open_flv, websocket_request
from tests.integration.support import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    get_reactor,
    sleep,
    wait_until,
    within,
)
from tests.integration.test_backpressure_sockets import heavy_tags
from tests.integration.test_callbacks import HookServer, hook_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


class HttpServer:
    """A factory with RTMP and HTTP listening on 127.0.0.1, and its clients."""

    def __init__(self, config: ServerConfig) -> None:
        reactor = get_reactor()
        self.factory = RTMPServerFactory(config, reactor=reactor)
        self.rtmp = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.http = reactor.listenTCP(0, build_site(self.factory), interface="127.0.0.1")
        self.http_port: int = self.http.getHost().port
        self.rtmp_port: int = self.rtmp.getHost().port
        self.clients: list[Any] = []

    async def publisher(self, name: str = "x") -> tuple[RTMPClientProtocol, int]:
        client = await within(
            connect_client(get_reactor(), f"rtmp://127.0.0.1:{self.rtmp_port}/live"), 10, "connect"
        )
        self.clients.append(client)
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.publish(name, stream_id), 10, "publish")
        await wait_until(lambda: self.factory.find_stream("live", name) is not None, 5, "stream")
        return client, stream_id

    async def get(self, path: str, **kwargs: Any) -> FlvClient:
        request = kwargs.pop("request", None) or get_request(path)
        client = await open_flv(self.http_port, request, **kwargs)
        self.clients.append(client)
        return client

    def sessions(self) -> list[FlvSession]:
        return [c for c in self.factory.connections.values() if isinstance(c, FlvSession)]

    async def close(self) -> None:
        for client in self.clients:
            if isinstance(client, RTMPClientProtocol):
                client.close()
            elif client.transport is not None:
                client.transport.abortConnection()
        await defer.maybeDeferred(self.rtmp.stopListening)
        await defer.maybeDeferred(self.http.stopListening)
        for connection in list(self.factory.connections.values()):
            connection.link.abort()
        await sleep(0.05)


@pytest_twisted.async_yield_fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[HttpServer]:
    config = getattr(request, "param", None) or ServerConfig()
    running = HttpServer(config)
    try:
        yield running
    finally:
        await running.close()


def metadata(stream_id: int, **fields: Any) -> Message:
    body = {"width": 320.0, "height": 240.0, **fields}
    payload = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(body))
    return Message(MessageType.DATA_AMF0, stream_id, 0, payload)


def video(timestamp: int, *, key: bool, index: int = 0) -> bytes:
    return (b"\x17\x01" if key else b"\x27\x01") + b"\x00\x00\x00" + index.to_bytes(4, "big") * 8


def send_headers(publisher: RTMPClientProtocol, stream_id: int, **meta: Any) -> None:
    publisher.send(metadata(stream_id, **meta))
    publisher.send(Message(MessageType.VIDEO, stream_id, 0, AVC_SEQUENCE_HEADER))
    publisher.send(Message(MessageType.AUDIO, stream_id, 0, AAC_SEQUENCE_HEADER))


def send_gop(publisher: RTMPClientProtocol, stream_id: int, start: int, frames: int = 10) -> None:
    for index in range(frames):
        ts = start + index * 33
        publisher.send(Message(MessageType.VIDEO, stream_id, ts, video(ts, key=index == 0)))
        publisher.send(Message(MessageType.AUDIO, stream_id, ts, b"\xaf\x01" + b"\x21" * 20))


def kinds(tags: list[FLVTag]) -> list[str]:
    """Each tag as one word: meta, avc-header, aac-header, key, inter, audio, data."""
    out = []
    for tag in tags:
        if tag.tag_type == MessageType.DATA_AMF0:
            out.append("meta" if amf0.decode_all(tag.payload)[0] == "onMetaData" else "data")
        elif tag.tag_type == MessageType.VIDEO:
            key = tag.payload[0] >> 4 == 1
            out.append("avc-header" if tag.payload[1] == 0 else "key" if key else "inter")
        else:
            out.append("aac-header" if tag.payload[1] == 0 else "audio")
    return out


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_late_viewer_gets_headers_then_metadata_headers_gop_and_live(
    server: HttpServer,
) -> None:
    """Status, headers, FLV header flags, then onMetaData, both sequence headers, the
    cached GOP from its keyframe, then live tags; nothing before a keyframe."""
    publisher, sid = await server.publisher()
    send_headers(publisher, sid, videocodecid=7.0, audiocodecid=10.0)
    send_gop(publisher, sid, 0)
    send_gop(publisher, sid, 330, frames=5)  # the cache now holds this GOP only
    await wait_until(lambda: len(server.factory.find_stream("live", "x").gop) == 10, 5, "GOP")
    viewer = await server.get("/live/x.flv")
    await wait_until(lambda: len(viewer.tags) >= 13, 5, "catch-up tags")
    assert viewer.status == 200
    assert viewer.headers["content-type"] == "video/x-flv"
    assert "no-cache" in viewer.headers["cache-control"]
    assert viewer.headers["access-control-allow-origin"] == "*"
    assert viewer.headers["transfer-encoding"] == "chunked"
    assert (viewer.reader.has_audio, viewer.reader.has_video) == (True, True)
    assert kinds(viewer.tags[:4]) == ["meta", "avc-header", "aac-header", "key"]
    assert viewer.tags[3].timestamp == 330
    assert amf0.decode_all(viewer.tags[0].payload)[1]["width"] == 320.0
    send_gop(publisher, sid, 500, frames=3)
    await wait_until(lambda: len(viewer.tags) >= 13 + 6, 5, "live tags")
    assert [t.timestamp for t in viewer.tags[13:19:2]] == [500, 533, 566]
    (session,) = server.sessions()
    stats = session.stats()
    assert (stats.protocol, stats.role) == ("http-flv", "play live/x")
    # Nagle stays on for the stream, as for RTMP (twisted.web turns it off for HTTP)
    sock = session.link.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    assert stats.viewer is not None and stats.viewer.protocol == "http-flv"
    # a viewer that keeps up rides its group's fast lane, its tags framed as before
    # (it may be watched, and decided frame by frame, until the watchdog's next check)
    for index in range(40):
        if session.link.lane is not None:
            break
        send_gop(publisher, sid, 600 + index * 66, frames=2)
        await sleep(0.1)
    assert session.link.lane is not None
    received = len(viewer.tags)
    send_gop(publisher, sid, 4000, frames=3)
    await wait_until(lambda: len(viewer.tags) >= received + 6, 5, "tags by the lane")
    assert [t.timestamp for t in viewer.tags[received::2]][:3] == [4000, 4033, 4066]
    assert session.link.lane is not None


@pytest.mark.parametrize(
    ("meta", "header_types", "expected"),
    [
        ({"videocodecid": 7.0, "audiocodecid": 10.0}, (9, 8), (True, True)),
        ({"audiocodecid": 10.0}, (8,), (True, False)),
        ({"videocodecid": 7.0}, (9,), (False, True)),
        ({"hasAudio": False, "hasVideo": True, "audiocodecid": 10.0}, (9,), (False, True)),
        (None, (8,), (True, False)),
        (None, (9,), (False, True)),
        (None, (9, 8), (True, True)),
    ],
    ids=[
        "both",
        "audio-only",
        "video-only",
        "has-flags",
        "no-meta-audio",
        "no-meta-video",
        "no-meta-both",
    ],
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_flv_header_announces_the_tracks_the_stream_has(
    server: HttpServer,
    meta: dict[str, Any] | None,
    header_types: tuple[int, ...],
    expected: tuple[bool, bool],
) -> None:
    """The header's audio/video flags follow onMetaData, or the sequence headers seen."""
    publisher, sid = await server.publisher()
    if meta is not None:
        publisher.send(metadata(sid, **meta))
    for type_id in header_types:
        header = AVC_SEQUENCE_HEADER if type_id == MessageType.VIDEO else AAC_SEQUENCE_HEADER
        publisher.send(Message(type_id, sid, 0, header))
    stream = server.factory.find_stream("live", "x")
    await wait_until(
        lambda: (
            (stream.video_header is not None) + (stream.audio_header is not None)
            == len(header_types)
        ),
        5,
        "headers cached",
    )
    viewer = await server.get("/live/x.flv")
    await wait_until(lambda: viewer.reader.has_audio is not None, 5, "the FLV header")
    assert (viewer.reader.has_audio, viewer.reader.has_video) == expected


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_request_before_the_publisher_waits_and_unpublish_ends_the_response(
    server: HttpServer,
) -> None:
    """No status line before the publisher comes; its headers come first; when it
    leaves, the chunked body ends with its last chunk and the connection stays usable."""
    viewer = await server.get("/live/x.flv")
    await sleep(0.3)
    assert viewer.status is None and [s.state for s in server.sessions()] == ["waiting"]
    publisher, sid = await server.publisher()
    send_headers(publisher, sid, videocodecid=7.0, audiocodecid=10.0)
    send_gop(publisher, sid, 0, frames=4)
    await wait_until(lambda: len(viewer.tags) >= 11, 5, "the stream")
    assert kinds(viewer.tags[:4]) == ["meta", "avc-header", "aac-header", "key"]
    publisher.close()
    await wait_until(lambda: viewer.complete, 5, "the body's last chunk")
    assert viewer.status == 200 and viewer.connected
    await wait_until(lambda: not server.sessions(), 5, "the session to go")
    assert server.factory.find_stream("live", "x") is None


@pytest.mark.parametrize(
    "server", [ServerConfig(http_play_wait=0.2, watchdog_interval=0.1)], indirect=True
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_stream_nobody_publishes_is_a_404_after_the_wait(server: HttpServer) -> None:
    """After --http-play-wait, a short text 404; the stream is forgotten."""
    server.factory.startFactory()
    try:
        started = time.monotonic()
        viewer = await server.get("/live/nobody.flv")
        await wait_until(lambda: viewer.status is not None, 5, "the 404")
        assert viewer.status == 404
        assert "live/nobody" in viewer.text
        assert 0.15 <= time.monotonic() - started < 3
        assert server.factory.find_stream("live", "nobody") is None
        await wait_until(lambda: not server.factory.connections, 5, "the session to go")
    finally:
        server.factory.stopFactory()


@pytest.mark.parametrize(
    "path", ["/x.flv", "/live/.flv", "/live/x.mp4", "/live/%00.flv", "/live/../x.flv", "/a//b.flv"]
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_path_that_names_no_stream_is_a_404(server: HttpServer, path: str) -> None:
    """Only ``/APP/NAME.flv`` with sane segments plays; the rest is a short 404."""
    viewer = await server.get(path)
    await wait_until(lambda: viewer.status is not None, 5, "an answer")
    assert viewer.status == 404
    assert server.factory.streams() == []


def test_stream_paths_are_parsed_strictly() -> None:
    """Several app segments are one app; control characters, dot segments, empties refused."""
    assert parse_stream_path([b"live", b"cam.flv"]) == ("live", "cam")
    assert parse_stream_path([b"a", b"b", b"cam.flv"]) == ("a/b", "cam")
    assert parse_stream_path([b"live", "caméra.flv".encode()]) == ("live", "caméra")
    for bad in ([b"cam.flv"], [b"live", b"\xff.flv"], [b"live", b"a\nb.flv"], [b"..", b"x.flv"]):
        assert parse_stream_path(bad) is None
    assert parse_stream_path([b"live", b"x" * 300 + b".flv"]) is None


SECRET = "s3cret"


@pytest.mark.parametrize(
    "server", [ServerConfig(access=AccessConfig(play_token_secret=SECRET))], indirect=True
)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_play_token_is_needed_when_a_secret_is_set(server: HttpServer) -> None:
    """Without a signed URL: 403; with one (in the query string): the stream."""
    publisher, sid = await server.publisher()
    send_headers(publisher, sid)
    send_gop(publisher, sid, 0, frames=2)
    refused = await server.get("/live/x.flv")
    await wait_until(lambda: refused.status is not None, 5, "the 403")
    assert refused.status == 403
    query = signed_query(SECRET, "play", "live", "x", int(time.time()) + 60)
    allowed = await server.get(f"/live/x.flv?{query}")
    await wait_until(lambda: len(allowed.tags) >= 4, 5, "the stream")
    assert allowed.status == 200


@pytest.mark.parametrize("server", [ServerConfig(max_connections=1)], indirect=True)
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_http_viewers_count_toward_the_connection_limit(server: HttpServer) -> None:
    """The publisher holds the one connection allowed: an HTTP viewer gets a 503."""
    await server.publisher()
    viewer = await server.get("/live/x.flv")
    await within(viewer.lost, 5, "the 503")
    assert viewer.status == 503
    assert server.factory.refusals["limit"] == 1
    assert len(server.factory.connections) == 1


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_websocket_flv_carries_the_same_tags_one_per_message(server: HttpServer) -> None:
    """101, then the FLV header and one tag per binary message; unpublish closes with 1000."""
    publisher, sid = await server.publisher()
    send_headers(publisher, sid, videocodecid=7.0, audiocodecid=10.0)
    send_gop(publisher, sid, 0, frames=3)
    viewer = await server.get("/live/x.flv", request=websocket_request("/live/x.flv"))
    await wait_until(lambda: len(viewer.tags) >= 9, 5, "catch-up tags")
    assert viewer.status == 101
    assert viewer.headers["upgrade"].lower() == "websocket"
    assert kinds(viewer.tags[:4]) == ["meta", "avc-header", "aac-header", "key"]
    assert viewer.messages == 1 + len(viewer.tags)  # the FLV header, then one tag each
    (session,) = server.sessions()
    assert session.stats().protocol == "ws-flv"
    publisher.close()
    await wait_until(lambda: viewer.complete, 5, "the close frame")
    assert viewer.close_code == 1000
    await within(viewer.lost, 5, "the connection to close")


def method_request(method: str) -> bytes:
    return get_request("/live/x.flv").replace(b"GET", method.encode(), 1)


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_broken_websocket_handshake_is_a_400(server: HttpServer) -> None:
    """An upgrade without a Sec-WebSocket-Key gets wsproto's 400, and the session ends."""
    publisher, sid = await server.publisher()
    send_headers(publisher, sid)
    request = get_request("/live/x.flv", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n")
    viewer = await server.get("", request=request)
    await wait_until(lambda: viewer.status is not None, 5, "an answer")
    assert viewer.status == 400
    await wait_until(lambda: not server.sessions(), 5, "the session to go")


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_websocket_handshake_wsproto_cannot_parse_is_a_400(
    server: HttpServer, log_events: list[dict[str, Any]]
) -> None:
    """wsproto raises on a non-ASCII Connection header, h11 on a second Host: a 400,
    nothing logged as a failure (found by bench/fuzz.py --target http)."""
    publisher, sid = await server.publisher()
    send_headers(publisher, sid)
    request = get_request(
        "/live/x.flv",
        extra="Upgrade: websocket\r\nConnection: \x88Upgrade\r\n"
        "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n",
    )
    viewer = await server.get("", request=request)
    await wait_until(lambda: viewer.status is not None, 5, "an answer")
    assert viewer.status == 400
    await wait_until(lambda: not server.sessions(), 5, "the session to go")
    assert not [e for e in log_events if "log_failure" in e]
    twice = get_request(  # h11 refuses a repeated Host
        "/live/x.flv",
        extra="Host: again\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n",
    )
    viewer = await server.get("", request=twice)
    await wait_until(lambda: viewer.status is not None, 5, "an answer")
    assert viewer.status == 400
    assert not [e for e in log_events if "log_failure" in e]


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_cors_preflight_and_head_are_answered(server: HttpServer) -> None:
    """OPTIONS gets the allowed methods; HEAD says whether the stream is live."""
    preflight = await server.get("", request=method_request("OPTIONS"))
    await wait_until(lambda: preflight.status is not None, 5, "the preflight")
    assert preflight.status == 204
    assert "GET" in preflight.headers["access-control-allow-methods"]
    head = await server.get("", request=method_request("HEAD"))
    await wait_until(lambda: head.status is not None, 5, "HEAD")
    assert head.status == 404
    await server.publisher()
    head = await server.get("", request=method_request("HEAD"))
    await wait_until(lambda: head.status is not None, 5, "HEAD")
    assert head.status == 200 and head.headers["content-type"] == "video/x-flv"


STALL_TIMEOUT = 3.0
LIMITS = PolicyLimits(
    drop_low=48 * 1024, drop_high=160 * 1024, max_queue=4 * 1024 * 1024,
    stall_timeout=STALL_TIMEOUT, max_lag_ms=3000,
)  # fmt: skip


@pytest.mark.parametrize("server", [ServerConfig(limits=LIMITS)], indirect=True)
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_slow_http_reader_is_cut_to_keyframes_then_closed_while_a_fast_one_loses_nothing(
    server: HttpServer,
) -> None:
    """The drop policy applies to HTTP viewers as to RTMP ones: the reader that stopped
    loses inter frames, then is disconnected at the stall timeout; HTTP-FLV and
    WebSocket-FLV readers that keep up get every tag."""
    reactor = get_reactor()
    factory = server.factory
    factory.startFactory()
    try:
        publisher, sid = await server.publisher("heavy")
        fast = await server.get("/live/heavy.flv", keep_body=False)
        fast_ws = await server.get(
            "", request=websocket_request("/live/heavy.flv"), keep_body=False
        )
        slow = await server.get("/live/heavy.flv", keep_body=False)
        await wait_until(lambda: len(server.sessions()) == 3, 5, "three sessions")
        slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.transport.pauseProducing()  # stop reading
        session = max(server.sessions(), key=lambda s: s.conn_id)
        viewer = session.viewer
        assert viewer is not None
        stopped_at = reactor.seconds()

        tags = heavy_tags(8.0)
        await within(pace_tags(reactor, publisher, tags, sid), 30, "publish")
        await wait_until(
            lambda: (
                fast.reader.has_video is not None
                and len(fast.tags) >= len(tags)
                and len(fast_ws.tags) >= len(tags)
            ),
            10,
            "the fast viewers",
        )
        assert len(fast.tags) == len(fast_ws.tags) == len(tags), "a fast viewer lost tags"
        await wait_until(lambda: session.closing, STALL_TIMEOUT + 10, "the stall disconnect")
        assert viewer.disconnect_reason == "stalled"
        assert viewer.dropped["inter"] > 0, "the stopped reader was never cut to keyframes"
        assert viewer.peak_queued <= LIMITS.max_queue
        assert reactor.seconds() - stopped_at >= STALL_TIMEOUT
        assert factory.disconnects["stalled"] == 1
        assert fast.connected and fast_ws.connected
    finally:
        factory.stopFactory()


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_enhanced_rtmp_hevc_is_served_as_enhanced_flv_tags(server: HttpServer) -> None:
    """FourCC (Enhanced RTMP) video comes out as the same tag bodies: enhanced FLV."""
    publisher, sid = await server.publisher()
    hevc_start = b"\x90hvc1" + b"\x01hvcC-record"
    frames = [b"\x93hvc1" + b"\x11" * 300, b"\xa3hvc1" + b"\x22" * 100, b"\xa3hvc1" + b"\x33" * 90]
    publisher.send(Message(MessageType.VIDEO, sid, 0, hevc_start))
    publisher.send(Message(MessageType.AUDIO, sid, 0, AAC_SEQUENCE_HEADER))
    for index, body in enumerate(frames):
        publisher.send(Message(MessageType.VIDEO, sid, index * 33, body))
    viewer = await server.get("/live/x.flv")
    await wait_until(lambda: len(viewer.tags) >= 5, 5, "the tags")
    assert (viewer.reader.has_audio, viewer.reader.has_video) == (True, True)
    video_tags = [t.payload for t in viewer.tags if t.tag_type == MessageType.VIDEO]
    assert video_tags == [hevc_start, *frames]


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_on_play_decides_for_http_viewers(hook_server: HookServer) -> None:  # noqa: F811
    """--on-play is asked about HTTP plays too (with the query's arguments): 403 when it refuses."""
    for path, expected in (("/deny", 403), ("/ok", 200)):
        config = ServerConfig(access=AccessConfig(on_play=hook_server.url(path)))
        running = HttpServer(config)
        try:
            publisher, sid = await running.publisher()
            send_headers(publisher, sid)
            send_gop(publisher, sid, 0, frames=2)
            viewer = await running.get("/live/x.flv?user=ann")
            await wait_until(lambda v=viewer: v.status is not None, 5, "an answer")
            assert viewer.status == expected
        finally:
            await running.close()
    plays = [form for form in hook_server.hook.forms if form.get("call") == "play"]
    assert [(f["app"], f["name"], f["user"]) for f in plays] == [("live", "x", "ann")] * 2
