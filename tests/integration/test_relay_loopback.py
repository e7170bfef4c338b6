"""Relays between two of our servers on the real reactor over loopback TCP.

An ``--on-play`` callback (a twisted.web server) answering 302 with
``Location: rtmp://127.0.0.1:ORIGIN/live/cam`` makes the edge pull from the
origin; a ``--push`` publishes to the origin; both through the Twisted endpoint
descriptions the relay URLs become.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from streamserver.auth import AccessConfig
from streamserver.client import connect_client, pace_tags
from streamserver.codec.messages import MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.integration.support import get_reactor, synthetic_tags, wait_until, within

pytestmark = pytest.mark.integration


class Redirect(Resource):
    """Answers every POST with 302 and the Location it was given."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.location = b""
        self.calls = 0

    def render_POST(self, request: Request) -> bytes:
        self.calls += 1
        request.setResponseCode(302)
        request.setHeader(b"Location", self.location)
        return b""


class Servers:
    """Listening factories and clients to clean up."""

    def __init__(self) -> None:
        self.listening: list[tuple[Any, RTMPServerFactory | None]] = []
        self.clients: list[Any] = []

    def serve(self, config: ServerConfig) -> tuple[RTMPServerFactory, int]:
        reactor = get_reactor()
        factory = RTMPServerFactory(config, reactor=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        factory.startFactory()
        self.listening.append((port, factory))
        return factory, port.getHost().port


@pytest_twisted.async_yield_fixture
async def servers() -> AsyncIterator[Servers]:
    made = Servers()
    try:
        yield made
    finally:
        for client in made.clients:
            client.close()
        for port, factory in made.listening:
            await defer.maybeDeferred(port.stopListening)
            if factory is not None:
                factory.pushes.stop_all()
                factory.pulls.stop_all()
                factory.stopFactory()
                for protocol in list(factory.connections.values()):
                    protocol.link.abort()


async def _publish(servers: Servers, port: int, name: str) -> defer.Deferred[int]:
    reactor = get_reactor()
    client = await within(connect_client(reactor, f"rtmp://127.0.0.1:{port}/live"), 10, "connect")
    servers.clients.append(client)
    stream_id = await within(client.create_stream(), 10, "createStream")
    await within(client.publish(name, stream_id), 10, "publish")
    return pace_tags(reactor, client, synthetic_tags(b"relay", seconds=8.0), stream_id)


async def _play(servers: Servers, port: int, name: str) -> Any:
    reactor = get_reactor()
    client = await within(connect_client(reactor, f"rtmp://127.0.0.1:{port}/live"), 10, "connect")
    servers.clients.append(client)
    stream_id = await within(client.create_stream(), 10, "createStream")
    await within(client.play(name, stream_id), 10, "play")
    return client


def _keyframes(client: Any) -> int:
    return sum(
        1 for m in client.media if m.type_id == MessageType.VIDEO and m.payload[:2] == b"\x17\x01"
    )


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_on_play_302_pulls_from_the_location(servers: Servers) -> None:
    """The edge asks its play callback, gets 302 rtmp://origin/live/cam, and relays it."""
    reactor = get_reactor()
    redirect = Redirect()
    web = reactor.listenTCP(0, Site(redirect), interface="127.0.0.1")
    servers.listening.append((web, None))
    origin, origin_port = servers.serve(ServerConfig())
    redirect.location = f"rtmp://127.0.0.1:{origin_port}/live/cam".encode()
    hook = f"http://127.0.0.1:{web.getHost().port}/on_play"
    _edge, edge_port = servers.serve(ServerConfig(access=AccessConfig(on_play=hook)))
    await _publish(servers, origin_port, "cam")
    watcher = await _play(servers, edge_port, "elsewhere")
    await wait_until(lambda: _keyframes(watcher) >= 2, 20, "two keyframes through the edge")
    assert redirect.calls == 1
    assert origin.find_stream("live", "cam").subscriber_count == 1


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_push_and_pull_over_tcp(servers: Servers) -> None:
    """publisher -> A --push-> origin --pull-> B -> viewer, with the relay URLs' TCP endpoints."""
    origin, origin_port = servers.serve(ServerConfig())
    _a, a_port = servers.serve(ServerConfig(push=(f"rtmp://127.0.0.1:{origin_port}/live",)))
    _b, b_port = servers.serve(ServerConfig(pull=(f"rtmp://127.0.0.1:{origin_port}/live",)))
    watcher = await _play(servers, b_port, "cam")
    done = await _publish(servers, a_port, "cam")
    await wait_until(lambda: _keyframes(watcher) >= 2, 20, "two keyframes through both relays")
    await within(done, 20, "the publisher's last tag")
    stamps = [m.timestamp for m in watcher.media if m.type_id == MessageType.VIDEO]
    assert stamps == sorted(stamps)
    assert origin.find_stream("live", "cam").subscriber_count == 1
