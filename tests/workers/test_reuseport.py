"""Shared listening sockets: parsing, port selection, SO_REUSEPORT binding."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import MemoryReactor

from streamserver.workers.reuseport import (
    DEFAULT_BACKLOG,
    ReusePortService,
    TcpListener,
    parse_tcp,
    resolve_port,
    reuseport_socket,
)


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:1935", TcpListener(socket.AF_INET, 1935, "")),
        ("tcp:port=1935:interface=127.0.0.1", TcpListener(socket.AF_INET, 1935, "127.0.0.1")),
        ("tcp:0:interface=127.0.0.1:backlog=500", TcpListener(socket.AF_INET, 0, "127.0.0.1", 500)),
        ("tcp6:8080:interface=\\:\\:1", TcpListener(socket.AF_INET6, 8080, "::1")),
    ],
)
def test_parse_tcp(description: str, expected: TcpListener) -> None:
    """tcp: and tcp6: descriptions parse to their family, port, interface and backlog."""
    assert parse_tcp(description) == expected


@pytest.mark.parametrize("description", ["unix:/tmp/x.sock", "ssl:1936:privateKey=k.pem"])
def test_parse_tcp_other_kinds(description: str) -> None:
    """Other endpoint kinds are no TCP listener."""
    assert parse_tcp(description) is None


@pytest.mark.parametrize("description", ["tcp:http", "tcp:70000", "tcp:1935:nonsense=1"])
def test_parse_tcp_refuses(description: str) -> None:
    """A bad port or an argument that cannot be shared is refused."""
    with pytest.raises(ValueError, match="tcp:"):
        parse_tcp(description)


def test_describe_round_trips() -> None:
    """A listener's description parses back to it (escaped IPv6 colons included)."""
    for listener in (
        TcpListener(socket.AF_INET6, 8080, "::1", 128),
        TcpListener(socket.AF_INET, 1935, "", DEFAULT_BACKLOG),
    ):
        assert parse_tcp(listener.describe()) == listener


def test_resolve_port_picks_a_bindable_port() -> None:
    """Port 0 becomes a concrete free port; other descriptions are unchanged."""
    resolved = resolve_port("tcp:0:interface=127.0.0.1:backlog=200")
    listener = parse_tcp(resolved)
    assert listener is not None
    assert listener.port != 0
    assert (listener.interface, listener.backlog) == ("127.0.0.1", 200)
    reuseport_socket(listener).close()
    assert resolve_port("tcp:1935") == "tcp:1935"
    assert resolve_port("unix:/tmp/x.sock") == "unix:/tmp/x.sock"


def test_two_sockets_share_a_port() -> None:
    """Two SO_REUSEPORT sockets listen on one port; a socket without it cannot join."""
    first = reuseport_socket(TcpListener(socket.AF_INET, 0, "127.0.0.1"))
    port = first.getsockname()[1]
    second = reuseport_socket(TcpListener(socket.AF_INET, port, "127.0.0.1"))
    plain = socket.socket()
    try:
        assert second.getsockname()[1] == port
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    finally:
        for sock in (first, second, plain):
            sock.close()


def test_a_port_held_without_reuseport_is_refused() -> None:
    """A port a socket without SO_REUSEPORT listens on cannot be shared."""
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen(1)
    try:
        with pytest.raises(OSError):
            reuseport_socket(TcpListener(socket.AF_INET, plain.getsockname()[1], "127.0.0.1"))
        service = ReusePortService(
            TcpListener(socket.AF_INET, plain.getsockname()[1], "127.0.0.1"),
            ServerFactory(),
            MemoryReactor(),
        )
        with pytest.raises(CannotListenError):
            service.startService()
    finally:
        plain.close()


def test_service_adopts_its_socket() -> None:
    """The service hands its listening socket's descriptor to adoptStreamPort."""
    reactor = MemoryReactor()
    factory = ServerFactory()
    service = ReusePortService(TcpListener(socket.AF_INET, 0, "127.0.0.1"), factory, reactor)
    service.startService()
    [(fileno, family, adopted)] = reactor.adoptedPorts
    assert (family, adopted) == (socket.AF_INET, factory)
    assert isinstance(fileno, int)
    assert service.port is not None
    service.stopService()
    assert service.port is None
