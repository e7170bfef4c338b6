"""Backpressure on real sockets: a viewer that stops reading costs only itself.

One publisher (our client) sends a ~2 Mbit/s synthetic stream at real-time pace;
three viewers read normally and one stops reading.  With TCP_NOTSENT_LOWAT the
stopped viewer's backlog reaches user space within a few hundred KB, the policy
drops it to keyframes, then stops sending it anything, and the watchdog
disconnects it at the stall timeout.  The others lose nothing.
"""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, connect_client, pace_tags
from streamserver.codec.flv import FLVTag
from streamserver.codec.messages import MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.policy import PolicyLimits
from tests.integration.support import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    get_reactor,
    wait_until,
    within,
)

pytestmark = pytest.mark.integration

STALL_TIMEOUT = 3.0
LIMITS = PolicyLimits(
    drop_low=48 * 1024, drop_high=160 * 1024, max_queue=4 * 1024 * 1024,
    stall_timeout=STALL_TIMEOUT, max_lag_ms=3000,
)  # fmt: skip


def heavy_tags(seconds: float) -> list[FLVTag]:
    """A ~2 Mbit/s stream: 60 KB keyframes every second, 6 KB inter frames, audio."""
    tags = [
        FLVTag(MessageType.VIDEO, 0, AVC_SEQUENCE_HEADER),
        FLVTag(MessageType.AUDIO, 0, AAC_SEQUENCE_HEADER),
    ]
    for index in range(int(seconds * 30)):
        timestamp = index * 1000 // 30
        key = index % 30 == 0
        body = (b"\x17\x01" if key else b"\x27\x01") + b"\x00\x00\x00" + index.to_bytes(4, "big")
        body += b"\x55" * ((60_000 if key else 6_000) - len(body))
        tags.append(FLVTag(MessageType.VIDEO, timestamp, body))
        tags.append(FLVTag(MessageType.AUDIO, timestamp, b"\xaf\x01" + b"\x21" * 200))
    return tags


async def heavy_viewer(port: int) -> RTMPClientProtocol:
    """Our client playing live/heavy on 127.0.0.1:*port*, keeping no media."""
    client = await within(
        connect_client(get_reactor(), f"rtmp://127.0.0.1:{port}/live", keep_media=False),
        10,
        "connect",
    )
    stream_id = await within(client.create_stream(), 10, "createStream")
    await within(client.play("heavy", stream_id), 10, "play")
    return client


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_stopped_viewer_is_dropped_then_disconnected_and_others_lose_nothing() -> None:
    """Normal viewers get every frame; the stopped one is cut to keyframes, then dropped."""
    reactor = get_reactor()
    factory = RTMPServerFactory(ServerConfig(limits=LIMITS), reactor=reactor)
    factory.startFactory()
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = listening.getHost().port
    clients: list[RTMPClientProtocol] = []
    try:
        publisher = await within(
            connect_client(reactor, f"rtmp://127.0.0.1:{port}/live"), 10, "connect publisher"
        )
        clients.append(publisher)
        publish_id = await within(publisher.create_stream(), 10, "createStream")
        await within(publisher.publish("heavy", publish_id), 10, "publish")

        normal = [await heavy_viewer(port) for _ in range(3)]
        stopped = await heavy_viewer(port)
        clients.extend([*normal, stopped])
        handle = stopped.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stopped.transport.pauseProducing()  # stop reading from the socket
        stopped_at = reactor.seconds()
        server_side = max(
            (p for p in factory.connections.values() if p.play_stream is not None),
            key=lambda p: p.conn_id,
        )
        viewer = server_side.viewer

        tags = heavy_tags(8.0)
        sent = await within(pace_tags(reactor, publisher, tags, publish_id), 30, "publish")
        media = sum(t.tag_type in (MessageType.AUDIO, MessageType.VIDEO) for t in tags)
        assert sent == media

        await wait_until(lambda: all(c.media_count >= media for c in normal), 10, "normal viewers")
        for client in normal:
            assert client.media_count == media, "a normal viewer lost frames"
        # the normal viewers rode their group's fast lane; the stopped one, in the same
        # group, left it when its kernel was full, and the policy decided for it
        normal_links = [
            p.link
            for p in factory.connections.values()
            if p.play_stream is not None and p is not server_side
        ]
        assert len(normal_links) == 3 and all(link.lane is not None for link in normal_links)
        assert server_side.link.lane is None

        await wait_until(lambda: server_side.closing, STALL_TIMEOUT + 10, "stall disconnect")
        disconnected_after = reactor.seconds() - stopped_at
        assert viewer.disconnect_reason == "stalled"
        assert viewer.dropped["inter"] > 0, "the stopped viewer was never cut to keyframes"
        assert viewer.peak_queued <= LIMITS.max_queue
        assert STALL_TIMEOUT <= disconnected_after <= 8.0 + STALL_TIMEOUT + 2
        assert factory.disconnects["stalled"] == 1
        for client in normal:
            assert client.connected
    finally:
        for client in clients:
            client.close()
        factory.stopFactory()
        await defer.maybeDeferred(listening.stopListening)
        for protocol in list(factory.connections.values()):
            protocol.transport.abortConnection()
