"""Timeouts on the factory's clock: handshake, connect, idle publisher, ping; shutdown.

The factory's watchdog runs every second of a ``task.Clock``; each test
advances the clock past a timeout and checks who was closed, and that a
healthy connection never is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import task

from streamserver.codec import messages
from streamserver.codec.handshake import ClientHandshake
from streamserver.codec.messages import MessageType, UserControlEvent
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


def _started(clock: task.Clock, **config: Any) -> Iterator[RTMPServerFactory]:
    factory = RTMPServerFactory(ServerConfig(**config), reactor=clock)
    factory.startFactory()
    try:
        yield factory
    finally:
        factory.stopFactory()


@pytest.fixture
def factory(clock: task.Clock) -> Iterator[RTMPServerFactory]:
    yield from _started(clock)


def _advance(clock: task.Clock, seconds: float) -> None:
    for _ in range(round(seconds * 10)):
        clock.advance(0.1)


def _pings(peer: FakePeer) -> list[int]:
    return [
        messages.parse_user_control(m)[1][0]
        for m in peer.read()
        if m.type_id == MessageType.USER_CONTROL
        and messages.parse_user_control(m)[0] == UserControlEvent.PING_REQUEST
    ]


# --- handshake and connect -------------------------------------------------------------


def test_no_handshake_within_the_timeout_closes(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """A connection that never completes the handshake is closed after 10 s."""
    silent = FakePeer(factory, handshake=False)
    slow = FakePeer(factory, handshake=False)
    slow.send_bytes(ClientHandshake().initial_bytes()[:700])  # C0 and part of C1 only
    _advance(clock, 9.5)
    assert not silent.transport.disconnecting and not slow.transport.disconnecting
    _advance(clock, 1.0)
    assert silent.transport.aborted and slow.transport.aborted
    assert factory.refusals["handshake-timeout"] == 2
    assert factory.connections == {}


def test_no_connect_after_the_handshake_closes(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """Handshake done but no connect within 10 s: closed; a connected peer stays."""
    idle = FakePeer(factory)
    talker = FakePeer(factory)
    _advance(clock, 5)
    talker.connect("live")
    _advance(clock, 5.5)
    assert idle.transport.aborted
    assert factory.refusals["connect-timeout"] == 1
    assert not talker.transport.disconnecting


def test_timeouts_of_zero_are_disabled(clock: task.Clock) -> None:
    """0 disables the handshake and connect timeouts."""
    for factory in _started(clock, handshake_timeout=0, connect_timeout=0):
        silent = FakePeer(factory, handshake=False)
        idle = FakePeer(factory)
        _advance(clock, 120)
        assert not silent.transport.disconnecting and not idle.transport.disconnecting


# --- idle publisher ------------------------------------------------------------------------


def _publisher(factory: RTMPServerFactory) -> tuple[FakePeer, int]:
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    return publisher, sid


def test_idle_publisher_is_disconnected(factory: RTMPServerFactory, clock: task.Clock) -> None:
    """A publisher that sends no media for 30 s is disconnected; viewers get UnpublishNotify."""
    publisher, sid = _publisher(factory)
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("cam", viewer.create_stream())
    for message in media.headers(sid) + media.gop_frames(sid, 0, 4):
        publisher.send(message)
    _advance(clock, 29)
    publisher.send_bytes(b"")  # nothing
    publisher.call("ping")  # commands are not media: they do not count
    assert not publisher.transport.disconnecting
    _advance(clock, 2)
    assert publisher.transport.aborted
    assert factory.refusals["publisher-idle"] == 1
    assert "NetStream.Play.UnpublishNotify" in viewer.statuses()
    assert not viewer.transport.disconnecting


def test_a_publisher_sending_media_is_never_idle(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """Media every second keeps a publisher for minutes."""
    publisher, sid = _publisher(factory)
    for second in range(300):
        publisher.send(media.audio(sid, second * 1000))
        _advance(clock, 1)
    assert not publisher.transport.disconnecting
    assert factory.refusals == {}


# --- ping ------------------------------------------------------------------------------------


def test_a_silent_peer_is_pinged_and_dropped_if_it_never_answers(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """30 s of silence: Ping Request; 30 s more without a byte: dropped."""
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("nobody-publishes", viewer.create_stream())
    viewer.read()
    _advance(clock, 29.5)
    assert _pings(viewer) == []
    _advance(clock, 1)
    assert len(_pings(viewer)) == 1
    _advance(clock, 29)
    assert not viewer.transport.disconnecting
    _advance(clock, 1)
    assert viewer.transport.aborted
    assert factory.refusals["ping-timeout"] == 1


def test_a_peer_answering_pings_stays(factory: RTMPServerFactory, clock: task.Clock) -> None:
    """A Ping Response (or any byte) keeps an otherwise silent viewer for good."""
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("nobody-publishes", viewer.create_stream())
    answered = 0
    for _ in range(20):
        _advance(clock, 5)
        for stamp in _pings(viewer):
            viewer.send(messages.ping_response(stamp))
            answered += 1
    assert answered >= 3
    assert not viewer.transport.disconnecting


def test_a_viewer_that_only_reads_is_never_dropped(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """A viewer that never sends a byte but takes its media is alive: no ping timeout."""
    publisher, sid = _publisher(factory)
    viewer = FakePeer(factory)  # drains everything at once, never answers pings
    viewer.connect("live")
    viewer.play("cam", viewer.create_stream())
    for second in range(300):
        publisher.send(media.video(sid, second * 1000, key=second % 2 == 0))
        _advance(clock, 1)
    assert not viewer.transport.disconnecting
    assert factory.refusals == {}
    assert len(viewer.media()) == 300


def test_a_viewer_that_stops_reading_and_talking_is_dropped(clock: task.Clock) -> None:
    """No byte and no drained media: the ping timeout ends it (with stalls out of the way)."""
    for factory in _started(clock, limits=ServerConfig().limits.updated(stall_timeout=10_000)):
        publisher, sid = _publisher(factory)
        viewer = FakePeer(factory, auto_drain=False)
        viewer.connect("live")
        viewer.play("cam", viewer.create_stream())
        for second in range(70):
            publisher.send(media.audio(sid, second * 1000))
            _advance(clock, 1)
        assert viewer.transport.aborted
        assert factory.refusals["ping-timeout"] == 1
        assert not publisher.transport.disconnecting


# --- shutdown ---------------------------------------------------------------------------------


def test_shutdown_tells_viewers_and_closes_everyone(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """On stop: viewers get UnpublishNotify, then every connection closes cleanly."""
    publisher, _ = _publisher(factory)
    viewers = []
    for _ in range(3):
        viewer = FakePeer(factory)
        viewer.connect("live")
        viewer.play("cam", viewer.create_stream())
        viewers.append(viewer)
    done: list[Any] = []
    factory.shutdown().addBoth(done.append)
    for viewer in viewers:
        assert "NetStream.Play.UnpublishNotify" in viewer.statuses()
        assert viewer.transport.disconnecting and not viewer.transport.aborted
    assert publisher.transport.disconnecting
    assert done == [None]
    assert factory.connections == {} and factory.streams() == []
    late = FakePeer(factory, handshake=False)
    assert late.transport.aborted  # no new connections while shutting down


def test_shutdown_aborts_what_does_not_close_within_the_grace(clock: task.Clock) -> None:
    """A connection that cannot flush is aborted after the grace period."""
    for factory in _started(clock, shutdown_grace=2.0):
        viewer = FakePeer(factory, clock=clock)
        viewer.connect("live")
        viewer.transport.loseConnection = lambda: None  # type: ignore[method-assign]
        done: list[Any] = []
        factory.shutdown().addBoth(done.append)
        clock.advance(1.9)
        assert done == [] and not viewer.transport.aborted
        clock.advance(0.2)
        assert viewer.transport.aborted and done == [None]
