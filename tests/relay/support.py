"""Relay tests' loopback: servers on one Clock, connected in memory by twisted.test.iosim.

A :class:`Net` maps endpoint descriptions (``mem:origin``) to server factories;
its :meth:`Net.connect` is a relay ``Connector``.  :meth:`Net.flush` moves the
bytes of every connection until nothing moves.  :meth:`Net.cut` drops a
connection as a network failure would.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.test import iosim

from streamserver.client import RTMPClientProtocol
from streamserver.config import ServerConfig
from streamserver.factory import RTMPServerFactory
from streamserver.relay.target import RelayTarget
from streamserver.testing import FakePeer
from tests.protocol import media

_ports = iter(range(20000, 10**9))


def target(endpoint: str, app: str = "live", name: str | None = None) -> RelayTarget:
    """A target on the in-memory *endpoint*."""
    url = f"rtmp://{endpoint}/{app}" + (f"/{name}" if name else "")
    return RelayTarget(endpoint, app, name, f"rtmp://{endpoint}/{app}", url)


class Net:
    """Server factories by endpoint, and the in-memory connections to them.

    :ivar clock: the one clock of every factory and connection.
    :ivar servers: factories by endpoint description; a missing one refuses.
    :ivar pumps: every connection made, with its client.
    """

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.servers: dict[str, RTMPServerFactory] = {}
        self.pumps: list[tuple[iosim.IOPump, RTMPClientProtocol]] = []
        self.connects: list[str] = []

    def server(self, endpoint: str, **settings: Any) -> RTMPServerFactory:
        """A new server factory on the clock, reached at *endpoint*."""
        factory = RTMPServerFactory(ServerConfig(**settings), reactor=self.clock)
        factory.pushes.connector = self.connect
        factory.pulls.connector = self.connect
        self.servers[endpoint] = factory
        return factory

    def connect(self, target: RelayTarget, client: RTMPClientProtocol) -> defer.Deferred[Any]:
        """The relay ``Connector``: *client* to the server at ``target.endpoint``."""
        self.connects.append(target.endpoint)
        factory = self.servers.get(target.endpoint)
        if factory is None:
            return defer.fail(ConnectionRefusedError(target.endpoint))
        port = next(_ports)
        address = IPv4Address("TCP", "127.0.0.1", port)
        server = factory.buildProtocol(address)
        server_io = iosim.FakeTransport(server, isServer=True, peerAddress=address)
        client_io = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(server, server_io, client, client_io, greet=False, clock=self.clock)
        self.pumps.append((pump, client))
        return defer.succeed(client)

    def flush(self, rounds: int = 50) -> None:
        """Move bytes on every connection until none moves (and run due calls)."""
        for _ in range(rounds):
            moved = False
            for pump, _client in list(self.pumps):
                moved = pump.pump() or moved
            if not moved:
                return

    def advance(self, seconds: float) -> None:
        """Advance the clock by *seconds*, flushing at each step of a tenth of a second."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(0.1, end - self.clock.seconds()))
            self.flush()

    def cut(self, client: RTMPClientProtocol) -> None:
        """Lose *client*'s connection at both ends."""
        for pump, each in self.pumps:
            if each is client:
                pump.clientIO.loseConnection()
        self.flush()


def publisher(factory: RTMPServerFactory, name: str = "cam", *, app: str = "live") -> FakePeer:
    """A FakePeer publishing *name* on *factory*, its headers sent."""
    peer = FakePeer(factory)
    peer.connect(app)
    stream_id = peer.create_stream()
    peer.publish(name, stream_id)
    for message in media.headers(stream_id):
        peer.send(message)
    peer.stream_id = stream_id  # type: ignore[attr-defined]
    return peer


def viewer(factory: RTMPServerFactory, name: str = "cam", *, app: str = "live") -> FakePeer:
    """A FakePeer playing *name* on *factory*."""
    peer = FakePeer(factory)
    peer.connect(app)
    stream_id = peer.create_stream()
    peer.play(name, stream_id)
    return peer


def send_gop(peer: FakePeer, start_ms: int, frames: int = 10) -> None:
    """One GOP from *peer* on its publishing stream."""
    for message in media.gop_frames(peer.stream_id, start_ms, frames):  # type: ignore[attr-defined]
        peer.send(message)


def video_timestamps(peer: FakePeer) -> list[int]:
    """The timestamps of the video messages *peer* received (headers included)."""
    return [m.timestamp for m in peer.media() if m.type_id == 9]
