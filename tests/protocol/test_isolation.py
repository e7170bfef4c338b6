"""Fault isolation: what fails on behalf of one viewer costs that viewer only.

A stream's fan-out, its publish notices and a chat room's broadcast all run
inside the publisher's (or the sender's) ``dataReceived``.  A bug met while
delivering to one viewer -- its transport, its decision chain, its status
messages -- must end that viewer alone, be logged once with its peer, and let
the loop go on to the others; the publisher must not notice.
"""

from __future__ import annotations

from typing import Any

from streamserver.codec.messages import Command
from streamserver.factory import RTMPServerFactory
from streamserver.media.stream import Frame
from streamserver.media.viewer import Viewer
from streamserver.policy import Decision
from streamserver.protocol.base import ProtocolRoot
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.testing import FakePeer
from tests.protocol import media


class PlantedError(RuntimeError):
    """The bug a test plants."""


def _failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "failed; disconnecting" in e.get("log_format", "")]


def _publisher(factory: RTMPServerFactory) -> tuple[FakePeer, int]:
    peer = FakePeer(factory)
    peer.connect("live")
    stream_id = peer.create_stream()
    peer.publish("cam", stream_id)
    return peer, stream_id


def _viewers(factory: RTMPServerFactory, count: int) -> list[FakePeer]:
    peers = []
    for _ in range(count):
        peer = FakePeer(factory)
        peer.connect("live")
        peer.play("cam", peer.create_stream())
        peers.append(peer)
    return peers


def _fail_writes(peer: FakePeer) -> None:
    def write(data: bytes) -> None:
        raise PlantedError("the transport broke")

    peer.transport.write = write  # type: ignore[method-assign]


def test_a_failing_viewer_leaves_the_publisher_and_the_others_untouched(
    factory: RTMPServerFactory, log_events: list[dict[str, Any]]
) -> None:
    """A viewer whose writes raise is dropped and logged once; everyone else keeps every frame."""
    publisher, sid = _publisher(factory)
    first, bad, last = _viewers(factory, 3)
    for message in media.headers(sid):
        publisher.send(message)
    _fail_writes(bad)
    frames = media.gop_frames(sid, 0, 30)
    for message in frames:
        publisher.send(message)
    assert not publisher.transport.disconnecting, "the publisher paid for a viewer's bug"
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is publisher.protocol
    for peer in (first, last):
        assert len(peer.media()) == 3 + len(frames)
        assert not peer.transport.disconnecting
    assert bad.transport.aborted
    assert stream.subscriber_count == 2
    failures = _failures(log_events)
    assert len(failures) == 1, "logged once, not once per frame"
    assert failures[0]["peer"] == bad.protocol.peer
    assert failures[0]["log_failure"].check(PlantedError)


class FaultyChainMixin(ProtocolRoot):
    """A chain step with a bug that shows for one connection only."""

    faulty = False

    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        decision = super().admit_frame(viewer, frame, size)
        if self.faulty and frame.is_video:
            raise PlantedError("a chain step broke")
        return decision


class FaultyProtocol(FaultyChainMixin, RTMPServerProtocol):
    """The composed protocol with the faulty step in front."""


def test_a_failing_chain_step_costs_only_its_viewer(
    factory: RTMPServerFactory, log_events: list[dict[str, Any]]
) -> None:
    """An exception in one viewer's decision chain ends that viewer; the fan-out goes on."""
    factory.protocol_class = FaultyProtocol
    publisher, sid = _publisher(factory)
    good, bad = _viewers(factory, 2)
    bad.protocol.faulty = True
    frames = media.headers(sid) + media.gop_frames(sid, 0, 10)
    for message in frames:
        publisher.send(message)
    assert not publisher.transport.disconnecting
    assert len(good.media()) == len(frames)
    assert bad.transport.aborted
    assert len(_failures(log_events)) == 1


def test_a_failing_publish_notice_costs_only_its_viewer(
    factory: RTMPServerFactory, log_events: list[dict[str, Any]]
) -> None:
    """A viewer that breaks on PublishNotify is dropped; the republish and the others go on."""
    publisher, sid = _publisher(factory)
    good, bad = _viewers(factory, 2)
    publisher.call("deleteStream", None, float(sid))
    _fail_writes(bad)
    again = publisher.create_stream()
    statuses = [c.args[0]["code"] for c in publisher.publish("cam", again) if c.name == "onStatus"]
    assert "NetStream.Publish.Start" in statuses
    assert "NetStream.Play.PublishNotify" in good.statuses()
    assert bad.transport.aborted
    assert len(_failures(log_events)) == 1


def test_a_failing_chat_participant_costs_only_itself(
    factory: RTMPServerFactory, log_events: list[dict[str, Any]]
) -> None:
    """A room member whose writes raise is dropped; the sender and the others get the message."""
    publisher, sid = _publisher(factory)
    good, bad = _viewers(factory, 2)
    _fail_writes(bad)
    txn = publisher.call("sendChatMessage", None, "hello", stream_id=sid)
    reply: Command = publisher.result_of(txn)
    assert reply.name == "_result"
    assert [fields["text"] for _, fields in good.chat()] == ["hello"]
    assert bad.transport.aborted
    assert not publisher.transport.disconnecting
    chat_failures = [e for e in log_events if "delivering chat" in e.get("log_format", "")]
    assert len(chat_failures) == 1 and chat_failures[0]["peer"] == bad.protocol.peer
