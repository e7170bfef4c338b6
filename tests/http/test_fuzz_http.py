"""Hostile HTTP requests fed to the site: only the offending connection suffers.

Hypothesis mutates valid requests of every kind the site answers (the page, an
HTTP-FLV play, a WebSocket upgrade, an LL-HLS blocking reload, API reads and
writes with JSON bodies) -- bytes flipped, cut, duplicated, headers repeated or
inflated, bodies with lying lengths -- and adds random bytes, fed to one
connection at random read sizes while an RTMP publisher, an RTMP viewer and an
HTTP-FLV viewer share the factory.  Whatever happens to the hostile connection,
no exception may be logged as a failure, the good viewers must receive every
frame sent afterwards, and every connection the fuzzer opened is gone (counted
by address too) once it is closed.  ``bench/fuzz.py --target http`` runs many
more inputs.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer, FakeTransport
from tests.fuzz_support import mutate, no_failures_logged
from tests.http.support import SiteClient
from tests.protocol import media

HOSTILE_PEER = IPv4Address("TCP", "198.51.100.23", 40123)

#: Valid requests of every kind the site answers, as a client sends them.
VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /live/good.flv HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /live/good.flv?token=x HTTP/1.0\r\n\r\n",
    b"GET /live/good.flv HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    b"\x81\x85abcd\x09\x04\x0f\x08\x0e",
    b"GET /live/good/index.m3u8?_HLS_msn=5&_HLS_part=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /live/good/ts.m3u8 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /api/streams/live/good HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /api/streams/live/good/chat/mute HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n"
    b'Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{"nick":"ann"}',
    b"POST /api/streams HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /static/mpegts.min.js HTTP/1.1\r\nRange: bytes=0-10\r\n\r\n",
    b"GET /play/live/good HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    b"OPTIONS /api/streams HTTP/1.1\r\nOrigin: http://x\r\n\r\n",
]

#: Pieces a mutation inserts: what breaks parsers and what tests limits.
HOSTILE_PIECES = [
    b"\r\n",
    b"\n",
    b"\0",
    b"\xff\xfe",
    b"Content-Length: 99999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"X: " + b"a" * 20000 + b"\r\n",
    b"".join(b"H%d: v\r\n" % i for i in range(150)),
    b"/../../../etc/passwd",
    b"%2e%2e%2f",
    b"?_HLS_msn=99999999999&_HLS_part=-5",
    b"\x88\x82abcd",  # a WebSocket close frame
    b"\x81\xff" + b"\xff" * 8,  # a WebSocket frame claiming 2^64 bytes
    b"ffffffffffffffff\r\n",
]


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A valid request mutated a few times, and where the reads are cut."""
    data = mutate(draw, draw(st.sampled_from(VALID_REQUESTS)), HOSTILE_PIECES)
    cuts = draw(st.lists(st.integers(1, 400), max_size=6))
    return data, cuts


def _feed(transport: FakeTransport, data: bytes, cuts: list[int]) -> None:
    offset = 0
    for cut in [*cuts, len(data)]:
        if transport.disconnecting or offset >= len(data):
            return
        transport.protocol.dataReceived(data[offset : offset + cut])
        offset += cut


def check_isolation(data: bytes, cuts: list[int]) -> None:
    """Feed *data* to one HTTP connection; everyone else is undisturbed, nothing leaks."""
    with no_failures_logged():
        clock = task.Clock()
        factory = RTMPServerFactory(
            ServerConfig(api_token="t", http_max_header_bytes=8192), reactor=clock
        )
        client = SiteClient(factory, clock)
        publisher = FakePeer(factory)
        publisher.connect("live")
        sid = publisher.create_stream()
        publisher.publish("good", sid)
        viewer = FakePeer(factory)
        viewer.connect("live")
        viewer.play("good", viewer.create_stream())
        flv = client.play("/live/good.flv")

        hostile = FakeTransport(HOSTILE_PEER, auto_drain=True)
        channel = client.site.buildProtocol(hostile.getPeer())
        hostile.protocol = channel
        channel.makeConnection(hostile)
        _feed(hostile, data, cuts)
        for _ in range(3):
            clock.advance(5)  # header timeout, parked requests, the watchdog
            factory.check_viewers()

        before = len(flv.value())
        sent = media.headers(sid) + media.gop_frames(sid, 0, 10)
        for message in sent:
            publisher.send(message)
        got = viewer.media()
        assert [m.payload for m in got[-len(sent) + 1 :]] == [m.payload for m in sent[1:]]
        assert len(flv.value()) > before, "the HTTP-FLV viewer got the frames"
        assert not viewer.transport.disconnecting
        assert not publisher.transport.disconnecting
        assert not flv.disconnecting
        hostile.loseConnection()
        clock.advance(1)
        assert factory.connections_from(HOSTILE_PEER.host) == 0
        assert all(c.conn_id != 0 for c in factory.connections.values())
        assert len(factory.connections) == 3, factory.connections


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(hostile_requests())
def test_hostile_http_requests_cost_only_their_connection(case: tuple[bytes, list[int]]) -> None:
    check_isolation(*case)


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=5000), st.lists(st.integers(1, 300), max_size=6))
def test_random_bytes_to_the_http_port(data: bytes, cuts: list[int]) -> None:
    check_isolation(data, cuts)
