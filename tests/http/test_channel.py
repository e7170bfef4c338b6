"""The HTTP connection's limits: headers, slowloris, bodies, connections per address."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address

from streamserver.config import ServerConfig
from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer, FakeTransport
from tests.fuzz_support import no_failures_logged
from tests.http.support import SiteClient, parse_response

REMOTE = "203.0.113.9"


def _factory(clock: task.Clock, **settings: Any) -> RTMPServerFactory:
    return RTMPServerFactory(ServerConfig.from_settings(settings), reactor=clock)


def _connect(client: SiteClient, host: str = "127.0.0.1", port: int = 40000) -> FakeTransport:
    transport = FakeTransport(IPv4Address("TCP", host, port), auto_drain=True)
    channel = client.site.buildProtocol(transport.getPeer())
    transport.protocol = channel
    channel.makeConnection(transport)
    return transport


def _status(transport: FakeTransport) -> int:
    return parse_response(transport.value()).status


@pytest.fixture
def small(clock: task.Clock) -> tuple[RTMPServerFactory, SiteClient]:
    factory = _factory(
        clock, http_max_header_bytes=2048, http_max_headers=10, http_max_body_bytes=1000
    )
    return factory, SiteClient(factory, clock)


def test_headers_over_the_byte_limit_get_431_and_the_connection_closes(small) -> None:
    factory, client = small
    transport = _connect(client)
    transport.protocol.dataReceived(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 1500 + b"\r\n")
    assert transport.value() == b""  # still under the bound
    transport.protocol.dataReceived(b"X-B: " + b"b" * 1500 + b"\r\n\r\n")
    response = parse_response(transport.value())
    assert response.status == 431
    assert b"over 2048 bytes" in response.body
    assert transport.disconnecting
    assert factory.refusals["http-headers"] == 1


def test_one_overlong_line_gets_431_before_it_is_all_read(small) -> None:
    _, client = small
    transport = _connect(client)
    transport.protocol.dataReceived(b"GET /" + b"x" * 5000)  # no line end yet
    assert _status(transport) == 431
    assert transport.disconnecting


def test_too_many_headers_get_431(small) -> None:
    _, client = small
    transport = _connect(client)
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(11))
    transport.protocol.dataReceived(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert _status(transport) == 431
    ten = _connect(client)
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(10))
    ten.protocol.dataReceived(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert _status(ten) == 200


def test_garbage_request_lines_get_400(small) -> None:
    _, client = small
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", b"GET\r\n\r\n", b"\0\0\0\r\n\r\n"):
        transport = _connect(client)
        transport.protocol.dataReceived(garbage)
        assert _status(transport) == 400, garbage
        assert transport.disconnecting


def test_a_request_target_that_is_not_printable_ascii_gets_400(small) -> None:
    """Browsers percent-encode; raw UTF-8 or control bytes in the target are refused
    before Twisted's error page (which cannot show them) is reached (bench/fuzz.py)."""
    factory, client = small
    for target in (b"/caf\xc3\xa9.flv", b"/\x81", b"/a\x7fb"):
        transport = _connect(client)
        transport.protocol.dataReceived(b"BREW " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        assert _status(transport) == 400, target
    assert factory.refusals["http-request"] >= 2  # Twisted's line parser takes some itself
    encoded = _connect(client)
    encoded.protocol.dataReceived(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert _status(encoded) == 404


def test_a_header_with_a_control_character_gets_400(small) -> None:
    """RFC 9110 5.5: no CTL but HTAB in a field value; Twisted's Content-Type parser
    raised on a vertical tab inside the request (tests/http/test_fuzz_http.py)."""
    factory, client = small
    for value in (b"applicat\x0bon/json", b"a\x00b", b"x\x7f"):
        transport = _connect(client)
        with no_failures_logged():
            transport.protocol.dataReceived(
                b"POST /api/reload HTTP/1.1\r\nHost: h\r\nContent-Type: "
                + value
                + b"\r\nContent-Length: 2\r\n\r\n{}"
            )
        assert _status(transport) == 400, value
        assert transport.disconnecting
    tab = _connect(client)
    tab.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\n\r\n")
    assert _status(tab) == 200
    assert factory.refusals["http-request"] == 3


def test_slowloris_headers_get_408_after_the_header_timeout(clock: task.Clock) -> None:
    factory = _factory(clock, http_header_timeout=10.0)
    client = SiteClient(factory, clock)
    transport = _connect(client)
    transport.protocol.dataReceived(b"GET / HTTP/1.1\r\n")
    for i in range(3):
        clock.advance(3)
        transport.protocol.dataReceived(
            b"X-%d: trickle\r\n" % i
        )  # each byte resets Twisted's idle timer
    assert transport.value() == b""
    clock.advance(1.5)
    assert _status(transport) == 408
    assert transport.disconnecting
    assert factory.refusals["http-header-timeout"] == 1


def test_the_header_timeout_is_per_request_and_never_cuts_a_response(clock: task.Clock) -> None:
    """Keep-alive requests each get the full time; a long FLV response is not a slow header."""
    factory = _factory(clock, http_header_timeout=10.0)
    client = SiteClient(factory, clock)
    transport = _connect(client)
    for _ in range(3):
        transport.protocol.dataReceived(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(8)
    assert transport.value().count(b"HTTP/1.1 200") == 3
    assert not transport.disconnecting
    flv = client.play("/live/cam.flv")
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    clock.advance(30)
    assert flv.value().startswith(b"HTTP/1.1 200")
    assert not flv.disconnecting


def test_a_body_over_the_limit_gets_413(small) -> None:
    _, client = small
    announced = _connect(client)
    announced.protocol.dataReceived(b"POST /api/streams HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
    assert _status(announced) == 413
    chunked = _connect(client)
    chunked.protocol.dataReceived(
        b"POST /api/streams HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(4):
        if chunked.disconnecting:
            break
        chunked.protocol.dataReceived(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
    assert _status(chunked) == 413
    fits = _connect(client)
    fits.protocol.dataReceived(b"POST /api/streams HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
    fits.protocol.dataReceived(b"{" * 1000)
    assert _status(fits) != 413


def test_http_connections_count_against_the_address_limit_with_rtmp(clock: task.Clock) -> None:
    """One RTMP connection and one HTTP connection fill a limit of 2; the third gets 503."""
    factory = _factory(clock, max_connections_per_ip=2)
    client = SiteClient(factory, clock)
    rtmp = FakePeer(factory, peer=IPv4Address("TCP", REMOTE, 1000))
    first = _connect(client, REMOTE, 1001)
    assert factory.connections_from(REMOTE) == 2
    third = _connect(client, REMOTE, 1002)
    assert _status(third) == 503
    assert third.disconnecting
    assert factory.connections_from(REMOTE) == 2
    assert factory.refusals["limit"] == 1
    first.protocol.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    assert _status(first) == 200
    first.loseConnection()
    assert factory.connections_from(REMOTE) == 1
    rtmp.transport.loseConnection()
    assert factory.connections_from(REMOTE) == 0
    for port in range(2000, 2010):  # loopback is exempt
        assert not _connect(client, "127.0.0.1", port).disconnecting


def test_an_flv_viewer_counts_once_for_its_address(clock: task.Clock) -> None:
    factory = _factory(clock, max_connections_per_ip=1)
    client = SiteClient(factory, clock)
    transport = _connect(client, REMOTE, 1001)
    transport.protocol.dataReceived(b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    assert factory.connections_from(REMOTE) == 1
    assert not transport.disconnecting
    assert len(factory.connections) == 1
    transport.loseConnection()
    assert factory.connections_from(REMOTE) == 0
    assert factory.connections == {}


def test_a_websocket_connection_releases_its_address_when_it_closes(clock: task.Clock) -> None:
    """The upgrade hands connectionLost to the WebSocket; the count still goes."""
    factory = _factory(clock, max_connections_per_ip=5)
    client = SiteClient(factory, clock)
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    transport = _connect(client, REMOTE, 1001)
    transport.protocol.dataReceived(
        b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 101")
    assert factory.connections_from(REMOTE) == 1
    transport.loseConnection()
    assert factory.connections_from(REMOTE) == 0
    assert len(factory.connections) == 1  # the publisher


def _websocket(
    client: SiteClient, factory: RTMPServerFactory, path: str = "/live/cam.flv"
) -> FakeTransport:
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    transport = _connect(client, REMOTE, 1001)
    transport.protocol.dataReceived(
        b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % path.encode()
    )
    assert transport.value().startswith(b"HTTP/1.1 101")
    return transport


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    key = b"abcd"
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_a_websocket_client_sending_past_its_input_budget_is_cut(clock: task.Clock) -> None:
    """An endless fragmented message (Twisted would buffer it all) or a ping flood:
    past WS_INPUT_BYTES in WS_INPUT_SECONDS the connection is aborted; a client within
    the refill rate never is."""
    factory = _factory(clock)
    client = SiteClient(factory, clock)
    patient = _websocket(client, factory)
    for i in range(20):  # 4 KiB every second, one long message: under the refill rate
        patient.protocol.dataReceived(_masked(0x0 if i else 0x1, b"x" * 4000, fin=False))
        clock.advance(1)
    assert not patient.disconnecting
    flood = _websocket(client, factory)
    flood.protocol.dataReceived(_masked(0x1, b"y", fin=False))
    chunk = _masked(0x0, b"y" * 16000, fin=False)
    for _ in range(6):
        if flood.disconnecting:
            break
        flood.protocol.dataReceived(chunk)
    assert flood.aborted
    assert factory.refusals["websocket-input"] == 1
    assert factory.connections_from(REMOTE) == 1  # the patient one


@pytest.mark.parametrize("path", ["/live/cam/chat", "/live/cam.flv"])
def test_a_ping_after_the_server_s_close_closes_the_connection_without_an_error(
    clock: task.Clock, path: str
) -> None:
    """The server closed (a chat message too big, an unknown opcode); the client's ping
    crossing that close cannot be answered: the connection closes, nothing is raised or
    logged, the address is released."""
    factory = _factory(clock)
    client = SiteClient(factory, clock)
    transport = _websocket(client, factory, path)
    ping = _masked(0x9, b"ping")
    with no_failures_logged():
        transport.protocol.dataReceived(_masked(0x1, b"x" * 5000) + ping)
        transport.protocol.dataReceived(_masked(0x3, b"?") + ping)
        transport.protocol.dataReceived(ping)
    assert transport.value().count(b"\x88") == 1  # one close frame
    assert transport.disconnecting
    transport.loseConnection()
    assert factory.connections_from(REMOTE) == 0


def test_frames_wsproto_refuses_close_the_websocket(clock: task.Clock) -> None:
    """An unknown opcode is a protocol error: close 1002, the connection goes."""
    factory = _factory(clock)
    client = SiteClient(factory, clock)
    transport = _websocket(client, factory)
    before = len(transport.value())
    transport.protocol.dataReceived(_masked(0x3, b"?"))
    closing = transport.value()[before:]
    assert closing[:1] == b"\x88" and closing[2:4] == (1002).to_bytes(2, "big")
