"""Fixtures of the HTTP tests: the site in memory, and a stream watched three ways."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from twisted.internet import task

from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer, FakeTransport
from tests.http.support import SiteClient
from tests.protocol import media


@pytest.fixture
def client(factory: RTMPServerFactory, clock: task.Clock) -> SiteClient:
    return SiteClient(factory, clock)


@dataclass
class Scene:
    """``live/cam`` published over RTMP, played over RTMP, HTTP-FLV (slow) and WebSocket-FLV.

    :ivar publisher: the RTMP publisher (nick ``host``), on message stream :attr:`sid`.
    :ivar rtmp: an RTMP viewer that keeps up (nick ``fan``).
    :ivar http: an HTTP-FLV viewer that reads nothing: it holds bytes and drops frames.
    :ivar ws: a WebSocket-FLV viewer that keeps up.
    """

    publisher: FakePeer
    sid: int
    rtmp: FakePeer
    http: FakeTransport
    ws: FakeTransport

    def send_gop(self, start_ms: int, frames: int = 60) -> None:
        """One more GOP from the publisher."""
        for message in media.gop_frames(self.sid, start_ms, frames):
            self.publisher.send(message)


def publish(
    factory: RTMPServerFactory, app: str = "live", name: str = "cam"
) -> tuple[FakePeer, int]:
    """An RTMP publisher of *app*/*name* that sent metadata and both sequence headers."""
    publisher = FakePeer(factory)
    publisher.connect(app, nick="host")
    sid = publisher.create_stream()
    publisher.publish(name, sid)
    for message in media.headers(sid):
        publisher.send(message)
    return publisher, sid


@pytest.fixture
def scene(factory: RTMPServerFactory, client: SiteClient, clock: task.Clock) -> Scene:
    # drop inter frames past 3000 bytes queued; keep everyone connected
    factory.set_policy(drop_low=3000, drop_high=100_000, max_lag_ms=100_000)
    factory.startFactory()
    publisher, sid = publish(factory)
    rtmp = FakePeer(factory)
    rtmp.connect("live", nick="fan")
    rtmp.play("cam", rtmp.create_stream())
    http = client.play("/live/cam.flv", auto_drain=False)
    ws = client.play("/live/cam.flv", websocket=True)
    built = Scene(publisher, sid, rtmp, http, ws)
    built.send_gop(0)
    clock.advance(1)
    built.send_gop(2000)
    clock.advance(1)
    return built
