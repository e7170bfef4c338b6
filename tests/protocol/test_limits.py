"""Input and connection limits: each refusal closes only the offending connection, logged.

A good publisher and viewer share every factory; after the offender is dropped
the viewer still receives every frame.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address

from streamserver.codec import messages
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media


@pytest.fixture
def events(log_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log events of the test (the shared ``log_events`` fixture)."""
    return log_events


def _factory(**config: Any) -> RTMPServerFactory:
    return RTMPServerFactory(ServerConfig(**config), reactor=task.Clock())


def _bystanders(factory: RTMPServerFactory) -> tuple[FakePeer, int, FakePeer]:
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("good", sid)
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("good", viewer.create_stream())
    return publisher, sid, viewer


def _still_served(publisher: FakePeer, sid: int, viewer: FakePeer) -> None:
    before = len(viewer.media())
    sent = media.gop_frames(sid, 10_000, 6)
    for message in sent:
        publisher.send(message)
    assert len(viewer.media()) - before == len(sent)
    assert not viewer.transport.disconnecting and not publisher.transport.disconnecting


def _dropped_for(events: list[dict[str, Any]], text: str) -> bool:
    return any(
        e.get("log_format", "").startswith("dropping {peer}") and text in e.get("error", "")
        for e in events
    )


def _connected(factory: RTMPServerFactory, **kwargs: Any) -> FakePeer:
    peer = FakePeer(factory, **kwargs)
    peer.connect("live")
    return peer


# --- input limits ------------------------------------------------------------------------


def test_message_over_max_message_bytes_drops_the_peer(events: list[dict[str, Any]]) -> None:
    """A message longer than --max-message-bytes is refused at its header."""
    factory = _factory(max_message_bytes=100_000)
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)
    offender.send(media.video(1, 0, key=True, size=99_000))  # under the limit: fine
    assert not offender.transport.disconnecting
    offender.send(media.video(1, 0, key=True, size=100_001))
    assert offender.transport.disconnecting
    assert _dropped_for(events, "exceeds the limit of 100000 bytes")
    _still_served(publisher, sid, viewer)


def test_default_max_message_lets_a_4k_keyframe_through() -> None:
    """The 16 MiB default takes a 6 MB keyframe from the publisher (nginx-rtmp's 1 MiB
    would drop it) and relays a 3 MB one (the drop policy's max_queue bounds a viewer)."""
    factory = _factory()
    publisher, sid, viewer = _bystanders(factory)
    publisher.send(media.video(sid, 0, key=True, size=3_000_000))
    assert len(viewer.media()[-1].payload) > 3_000_000
    publisher.send(media.video(sid, 40, key=True, size=6_000_000))
    assert not publisher.transport.disconnecting
    stream = factory.find_stream("live", "good")
    assert stream is not None and stream.bytes_in > 9_000_000


@pytest.mark.parametrize(("size", "allowed"), [(1, False), (127, False), (128, True)])
def test_chunk_size_below_the_minimum_drops_the_peer(size: int, allowed: bool) -> None:
    """Set Chunk Size under --min-peer-chunk-size (128) drops the peer."""
    factory = _factory()
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)
    offender.send(messages.set_chunk_size(size))
    assert offender.transport.disconnecting is not allowed
    _still_served(publisher, sid, viewer)


def test_chunk_size_above_the_maximum_drops_the_peer(events: list[dict[str, Any]]) -> None:
    """Set Chunk Size over --max-peer-chunk-size drops the peer; the maximum itself is fine."""
    factory = _factory(max_peer_chunk_size=65536)
    publisher, sid, viewer = _bystanders(factory)
    fine = _connected(factory)
    fine.send(messages.set_chunk_size(65536))
    assert not fine.transport.disconnecting
    offender = _connected(factory)
    offender.send(messages.set_chunk_size(65537))
    assert offender.transport.disconnecting
    assert _dropped_for(events, "Set Chunk Size 65537 outside 128..65536")
    _still_served(publisher, sid, viewer)


def _chunk(csid: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    header = bytes([0, csid - 64]) + b"\x00\x00\x00" + size.to_bytes(3, "big") + b"\x09"
    return header + struct.pack("<I", 1) + payload


def test_too_many_chunk_streams_drops_the_peer(events: list[dict[str, Any]]) -> None:
    """Opening more than --max-chunk-streams chunk streams drops the peer."""
    factory = _factory(max_chunk_streams=8)
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)  # has used chunk stream 3 for its commands
    for csid in range(64, 71):
        offender.send_bytes(_chunk(csid, b"\x27\x01\x00"))
    assert not offender.transport.disconnecting
    offender.send_bytes(_chunk(71, b"\x27\x01\x00"))
    assert offender.transport.disconnecting
    assert _dropped_for(events, "limit of 8 chunk streams")
    _still_served(publisher, sid, viewer)


def test_many_partial_messages_cannot_pile_up(events: list[dict[str, Any]]) -> None:
    """Half-sent messages on many chunk streams are bounded in total, not per stream."""
    factory = _factory(max_message_bytes=1_000_000, max_chunk_streams=64)
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)
    offender.send(messages.set_chunk_size(600_000))
    for csid in range(64, 100):
        offender.send_bytes(_chunk(csid, b"\x27" * 600_000, length=900_000))
        if offender.transport.disconnecting:
            break
    assert offender.transport.disconnecting
    assert offender.protocol._chunk_decoder.pending_bytes <= 1_000_000 + 1024 * 1024
    assert _dropped_for(events, "incomplete messages would hold")
    _still_served(publisher, sid, viewer)


def test_command_over_max_command_bytes_drops_the_peer(events: list[dict[str, Any]]) -> None:
    """An AMF command larger than --max-command-bytes is never decoded."""
    factory = _factory(max_command_bytes=4096)
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)
    offender.call("FCPublish", None, "x" * 3000)
    assert not offender.transport.disconnecting
    offender.call("FCPublish", None, "x" * 5000)
    assert offender.transport.disconnecting
    assert _dropped_for(events, "exceeds the limit of 4096 bytes (--max-command-bytes)")
    _still_served(publisher, sid, viewer)


def test_long_command_name_drops_the_peer(events: list[dict[str, Any]]) -> None:
    """A command name over 64 UTF-8 bytes drops the peer; an unknown short one gets _error."""
    factory = _factory()
    publisher, sid, viewer = _bystanders(factory)
    offender = _connected(factory)
    txn = offender.call("noSuchCommand")
    assert offender.result_of(txn).name == "_error"
    assert not offender.transport.disconnecting
    offender.call("é" * 33)  # 33 characters, 66 bytes
    assert offender.transport.disconnecting
    assert _dropped_for(events, "command name")
    _still_served(publisher, sid, viewer)


# --- connection limits --------------------------------------------------------------------


def _remote(host: str, port: int = 50000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def test_max_connections(events: list[dict[str, Any]]) -> None:
    """The connection past --max-connections is closed at once; a slot frees on close."""
    factory = _factory(max_connections=3)
    publisher, sid, viewer = _bystanders(factory)
    third = FakePeer(factory)
    assert not third.transport.disconnecting
    fourth = FakePeer(factory, handshake=False)
    assert fourth.transport.aborted
    assert len(factory.connections) == 3
    assert factory.refusals["limit"] == 1
    assert any("server connection limit (3) reached" in e.get("reason", "") for e in events)
    third.transport.loseConnection()
    fifth = FakePeer(factory)
    assert not fifth.transport.disconnecting
    _still_served(publisher, sid, viewer)


def test_max_connections_per_ip() -> None:
    """One remote address holds at most --max-connections-per-ip; others are unaffected."""
    factory = _factory(max_connections_per_ip=2)
    first = FakePeer(factory, peer=_remote("198.51.100.1", 1))
    second = FakePeer(factory, peer=_remote("198.51.100.1", 2))
    third = FakePeer(factory, peer=_remote("198.51.100.1", 3), handshake=False)
    other = FakePeer(factory, peer=_remote("198.51.100.2", 4))
    assert not first.transport.disconnecting and not second.transport.disconnecting
    assert third.transport.aborted
    assert not other.transport.disconnecting
    assert factory.connections_from("198.51.100.1") == 2
    second.transport.loseConnection()
    assert factory.connections_from("198.51.100.1") == 1
    again = FakePeer(factory, peer=_remote("198.51.100.1", 5))
    assert not again.transport.disconnecting


def test_loopback_is_exempt_from_the_per_ip_limit() -> None:
    """Local peers (a proxy, a load generator) are not limited per address."""
    factory = _factory(max_connections_per_ip=2)
    peers = [FakePeer(factory) for _ in range(5)]
    assert not any(p.transport.disconnecting for p in peers)
    assert factory.connections_from("127.0.0.1") == 0


def test_refusals_are_logged_at_most_once_a_second(events: list[dict[str, Any]]) -> None:
    """A flood of refused connections logs one line a second with a count, not one each."""
    clock = task.Clock()
    factory = RTMPServerFactory(ServerConfig(max_connections=1), reactor=clock)
    FakePeer(factory)
    for _ in range(50):
        FakePeer(factory, handshake=False)
    clock.advance(1.5)
    FakePeer(factory, handshake=False)
    lines = [e for e in events if e.get("log_format", "").startswith("closing {peer}")]
    assert len(lines) == 2
    assert "49 more limit refusals" in lines[1]["also"]
    assert factory.refusals["limit"] == 51


# --- streams ------------------------------------------------------------------------------


def test_max_streams_refuses_new_names_with_a_clear_code() -> None:
    """Past --max-streams a new name is refused (Publish.Rejected / Play.Rejected)."""
    factory = _factory(max_streams=2)
    publisher, sid, viewer = _bystanders(factory)  # stream 1: good
    other = _connected(factory)
    other.play("second", other.create_stream())  # stream 2
    late = _connected(factory)
    late_sid = late.create_stream()
    late.publish("third", late_sid)
    assert "NetStream.Publish.Rejected" in late.statuses(new=False)
    late.play("third", late_sid)
    assert "NetStream.Play.Rejected" in late.statuses(new=False)
    assert late.protocol.play_stream is None
    late.play("good", late_sid)  # an existing name is fine
    assert "NetStream.Play.Start" in late.statuses(new=False)
    assert factory.stream_count() == 2
    other.transport.loseConnection()  # frees "second"
    late.publish("third", late.create_stream())
    assert "NetStream.Publish.Start" in late.statuses(new=False)
    _still_served(publisher, sid, viewer)


def test_random_app_names_leave_no_registries_behind() -> None:
    """Playing names in ever new applications keeps no empty registry per application."""
    factory = _factory()
    for index in range(50):
        peer = FakePeer(factory)
        peer.connect(f"app{index}")
        peer.play("x", peer.create_stream())
        peer.transport.loseConnection()
    assert factory.registries == {}


def test_an_abort_message_releases_the_partial_message_accounting() -> None:
    """Abort (spec 5.4.2) gives back the bytes of the message it discards."""
    factory = _factory()
    peer = _connected(factory)
    peer.send_bytes(_chunk(64, b"\x27" * 128, length=1000))
    decoder = peer.protocol._chunk_decoder
    assert decoder.pending_bytes == 128
    peer.send(Message(MessageType.ABORT, 0, 0, struct.pack(">I", 64)))
    assert decoder.pending_bytes == 0
