"""The fast lane (``streamserver.media.lane``): viewers that keep up, sent to in one loop.

Over :class:`~streamserver.testing.FakePeer` with a :class:`FakeSocket` (a plain
TCP socket's eager sends), on the real protocol: its guarded chain, the factory's
flush list and drop policy.  A viewer joins its group's lane at a frame its
chain and policy decided to send with nothing queued; from then on it is sent
each publisher read's frames in one ``sendmsg``; it leaves whenever the slow
path would decide differently.  The property test at the end holds the lane to
the slow path: same bytes on the wire, same counters, same drops.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from streamserver.codec.messages import Message
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.media.lane import MAX_PIECES, ViewerGroup
from streamserver.media.viewer import Viewer
from streamserver.policy import ADMIT, PAUSED, Decision, PolicyLimits
from streamserver.protocol.base import ProtocolRoot
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.testing import FakePeer, FakeSocket
from streamserver.transport import IOV_MAX
from tests.protocol import media


def _publisher(factory: RTMPServerFactory) -> tuple[FakePeer, int]:
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    for message in media.headers(sid):
        publisher.send(message)
    return publisher, sid


def _viewer(factory: RTMPServerFactory, **kwargs: Any) -> FakePeer:
    peer = FakePeer(factory, **kwargs)
    peer.connect("live")
    peer.play("cam", peer.create_stream())
    return peer


def _read(publisher: FakePeer, messages: list[Message]) -> None:
    """*messages* arriving in one read of the publisher's connection."""
    publisher.send_bytes(
        b"".join(publisher._encoder.encode(m, 6 if m.type_id == 9 else 4) for m in messages)
    )


def _start(publisher: FakePeer, sid: int, size: int = 200) -> None:
    """A keyframe (which ends the viewers' wait for one), then an inter frame, with
    which a viewer that keeps up joins the lane."""
    _read(publisher, [media.video(sid, 0, key=True, size=size)])
    _read(publisher, [media.video(sid, 1, key=False, size=size)])


def _group(peer: FakePeer) -> ViewerGroup:
    group = peer.protocol.viewer.group
    assert group is not None
    return group


def _in_lane(peer: FakePeer) -> bool:
    return peer.protocol.link in _group(peer).lane


def _media(peer: FakePeer) -> list[tuple[int, int, bytes]]:
    return [(m.type_id, m.timestamp, m.payload) for m in peer.media()]


def test_a_viewer_that_keeps_up_joins_and_gets_what_the_slow_path_gets(factory) -> None:
    publisher, sid = _publisher(factory)
    fast = _viewer(factory, socket=True)
    slow = _viewer(factory)  # a fake transport without a socket: never in the lane
    assert not _in_lane(fast), "a new viewer waits for a keyframe: not in the lane"
    _read(publisher, [media.video(sid, 0, key=True, size=3000)])
    assert not _in_lane(fast), "the keyframe it waited for is decided by the chain"
    _read(publisher, [media.video(sid, 1, key=False, size=1700)])
    assert _in_lane(fast) and not _in_lane(slow)
    for index in range(1, 30):
        _read(publisher, [media.video(sid, index * 33, key=False, size=1700)])
        if index % 2:
            _read(publisher, [media.audio(sid, index * 33 + 5)])
    assert _in_lane(fast)
    assert _media(fast) == _media(slow) and len(_media(fast)) > 40
    a, b = fast.protocol.viewer, slow.protocol.viewer
    assert (a.frames_sent, a.bytes_sent) == (b.frames_sent, b.bytes_sent)
    assert a.link.media_written == b.link.media_written
    assert a.link.written == len(fast.transport.value()), "every byte counted as written"
    stream = a.stream
    assert stream.bytes_out == a.bytes_sent + b.bytes_sent


def test_one_read_s_frames_go_in_one_sendmsg_of_the_shared_bytes(factory) -> None:
    publisher, sid = _publisher(factory)
    peers = [_viewer(factory, socket=True) for _ in range(3)]
    _start(publisher, sid)
    sockets = [peer.socket for peer in peers]
    assert all(isinstance(sock, FakeSocket) for sock in sockets)
    for sock in sockets:
        sock.calls.clear()  # type: ignore[union-attr]
    _read(publisher, [media.video(sid, 33, key=False), media.audio(sid, 40)])
    calls = [sock.calls for sock in sockets]  # type: ignore[union-attr]
    assert all(len(c) == 1 and c[0][0] == "sendmsg" and len(c[0][1]) == 2 for c in calls)
    first = calls[0][0][1]
    for other in calls[1:]:
        assert all(x is y for x, y in zip(first, other[0][1], strict=True)), "shared bytes"
    for sock in sockets:
        sock.calls.clear()  # type: ignore[union-attr]
    _read(publisher, [media.video(sid, 66, key=False)])
    calls = [sock.calls for sock in sockets]  # type: ignore[union-attr]
    assert all([name for name, _ in c] == ["send"] for c in calls), "one frame: send()"


def test_a_short_send_leaves_the_rest_to_the_transport_and_the_policy(clock) -> None:
    limits = PolicyLimits(drop_low=20_000, drop_high=40_000, max_queue=2_000_000)
    factory = RTMPServerFactory(ServerConfig(limits=limits), reactor=clock)
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True, auto_drain=False)
    peer.transport.drain()
    _start(publisher, sid, size=3000)
    # its play's replies were queued when its first frames came: it is watched
    # until the watchdog's next check finds it keeping up
    assert not _in_lane(peer) and peer.protocol.viewer.watched
    clock.advance(factory.config.watchdog_interval)
    peer.protocol.viewer.check_progress(clock.seconds())  # the watchdog's check
    assert not peer.protocol.viewer.watched
    _read(publisher, [media.video(sid, 2, key=False, size=3000)])
    assert _in_lane(peer)
    sock = peer.socket
    assert sock is not None
    sock.room = 1000  # the kernel takes part of the next read's frames
    _read(publisher, [media.video(sid, 33, key=False, size=1700), media.audio(sid, 40)])
    assert not _in_lane(peer), "a short send takes the viewer out of the lane"
    viewer = peer.protocol.viewer
    queued = viewer.link.queued()
    assert 0 < queued < 1800, "the unsent tail waits in the transport, in order"
    # the slow path decides from here: a queue past drop_low drops inter frames
    for index in range(2, 40):
        _read(publisher, [media.video(sid, index * 33, key=False, size=1700)])
    assert viewer.dropped["inter"] > 0
    assert not _in_lane(peer)
    # the peer reads everything: the frames it got decode in order
    sock.room = None
    peer.transport.drain()
    timestamps = [m.timestamp for m in peer.media() if m.type_id == 9]
    assert timestamps == sorted(timestamps) and timestamps[1:5] == [0, 1, 2, 33]


def test_anything_else_written_goes_after_the_frames_held_for_the_viewer(factory) -> None:
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    _start(publisher, sid)
    assert _in_lane(peer)
    peer.read()
    flush_list = factory.flush_list
    flush_list.cork()  # a publisher read in progress: the lane holds its frames
    stream = peer.protocol.viewer.stream
    stream.broadcast(media.video(sid, 33, key=False, size=900))
    assert _group(peer).pending
    peer.protocol.send_status(peer.protocol.play_stream_id, "NetStream.Test", "in between")
    assert not _in_lane(peer), "a write of its own takes the viewer out of the lane"
    flush_list.uncork()
    fresh = peer.read()
    assert [m.type_id for m in fresh][:1] == [9], "the held frame first, then the status"
    assert any(m.type_id == 20 for m in fresh[1:])
    # and it comes back at its next frame that keeps up
    _read(publisher, [media.video(sid, 66, key=False)])
    assert _in_lane(peer)


def test_a_pause_takes_the_viewer_out_and_the_chain_refuses_its_frames(factory) -> None:
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    _start(publisher, sid)
    assert _in_lane(peer)
    peer.call("pause", None, True, 0, stream_id=peer.protocol.play_stream_id)
    assert not _in_lane(peer)
    before = len(peer.media())
    _read(publisher, [media.video(sid, 33, key=False), media.audio(sid, 40)])
    assert len(peer.media()) == before, "a paused viewer gets nothing"
    assert peer.protocol.viewer.dropped["paused"] == 2
    assert not peer.protocol.admits_every_frame(peer.protocol.viewer)
    peer.call("pause", None, False, 0, stream_id=peer.protocol.play_stream_id)
    _read(publisher, [media.video(sid, 66, key=True)])
    _read(publisher, [media.video(sid, 99, key=False)])
    assert _in_lane(peer)


def test_a_new_publisher_sends_what_is_held_and_waits_for_a_keyframe(factory) -> None:
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    _start(publisher, sid)
    assert _in_lane(peer)
    stream = peer.protocol.viewer.stream
    stream.unpublish(publisher.protocol)
    stream.publish(publisher.protocol)
    assert not _in_lane(peer) and peer.protocol.viewer.awaiting_keyframe


def test_a_frame_past_drop_low_is_decided_for_every_viewer(clock) -> None:
    limits = PolicyLimits(drop_low=5_000, drop_high=40_000, max_queue=2_000_000)
    factory = RTMPServerFactory(ServerConfig(limits=limits), reactor=clock)
    publisher, sid = _publisher(factory)
    peers = [_viewer(factory, socket=True) for _ in range(2)]
    _start(publisher, sid, size=1000)
    assert all(_in_lane(p) for p in peers)
    _read(publisher, [media.video(sid, 33, key=True, size=6000)])
    assert not any(_in_lane(p) for p in peers), "the lane cannot vouch for that frame"
    assert all(p.media()[-1].timestamp == 33 for p in peers), "the policy sent it"
    # frames that fit, with the held ones, are flushed before the lane passes drop_low
    _read(publisher, [media.video(sid, 66, key=False, size=1000)])
    assert all(_in_lane(p) for p in peers)
    sock = peers[0].socket
    assert sock is not None
    sock.calls.clear()
    _read(publisher, [media.video(sid, 99 + i, key=False, size=2000) for i in range(4)])
    assert [len(buffers) for _, buffers in sock.calls] == [2, 2], "flushed at drop_low"


def test_merge_ms_holds_the_lane_s_frames_under_the_flush_list_s_timer(clock) -> None:
    factory = RTMPServerFactory(ServerConfig(merge_ms=20), reactor=clock)
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    _start(publisher, sid)
    clock.advance(0.02)
    assert not _in_lane(peer), "its frames were held when the next one came"
    _read(publisher, [media.video(sid, 2, key=False)])
    clock.advance(0.02)
    assert _in_lane(peer), "it joined with the first frame after a flush"
    sock = peer.socket
    assert sock is not None
    sock.calls.clear()
    for index in range(1, 4):
        _read(publisher, [media.video(sid, index * 10, key=False)])
    assert sock.calls == [], "held until the merge timer"
    clock.advance(0.02)
    assert len(sock.calls) == 1 and len(sock.calls[0][1]) == 3


def test_an_aborted_viewer_is_sent_nothing_more(factory) -> None:
    publisher, sid = _publisher(factory)
    gone, kept = _viewer(factory, socket=True), _viewer(factory, socket=True)
    _start(publisher, sid)
    assert _in_lane(gone) and _in_lane(kept)
    factory.flush_list.cork()
    stream = gone.protocol.viewer.stream
    stream.broadcast(media.video(sid, 33, key=False))
    gone_socket, kept_socket = gone.socket, kept.socket
    assert gone_socket is not None and kept_socket is not None
    gone_socket.calls.clear()
    kept_socket.calls.clear()
    gone.protocol.drop_connection()
    factory.flush_list.uncork()
    assert gone_socket.calls == [] and len(kept_socket.calls) == 1
    assert gone.protocol.link not in _group(kept).lane


def test_flush_never_holds_more_than_one_sendmsg_takes() -> None:
    assert MAX_PIECES == IOV_MAX


# --- whose chain may use the lane ----------------------------------------------------------


class _AudioOnlyMixin(ProtocolRoot):
    """A step that refuses video, without saying so to the fast lane."""

    def admit_frame(self, viewer: Viewer, frame: Any, size: int) -> Decision:
        decision = super().admit_frame(viewer, frame, size)
        return PAUSED if frame.is_video else decision


class _AudioOnlyProtocol(_AudioOnlyMixin, RTMPServerProtocol):
    pass


class _Story(ProtocolRoot, unchecked_chain=True):
    def admit_frame(self, viewer: Viewer, frame: Any, size: int) -> Decision:
        return ADMIT


def test_a_chain_without_the_admits_every_frame_twin_never_uses_the_lane(clock) -> None:
    assert RTMPServerProtocol.fast_lane_safe
    assert not _AudioOnlyProtocol.fast_lane_safe
    assert not _Story.fast_lane_safe
    factory = RTMPServerFactory(ServerConfig(), reactor=clock)
    factory.protocol_class = _AudioOnlyProtocol
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    for index in range(5):
        _read(publisher, [media.video(sid, index * 33, key=index == 0), media.audio(sid, index)])
    assert not _in_lane(peer)
    assert [m.type_id for m in peer.media() if m.timestamp > 0] == [8] * 4, "audio only"


# --- the lane against the slow path ----------------------------------------------------------

_op = st.one_of(
    st.tuples(
        st.just("read"),
        st.lists(st.tuples(st.booleans(), st.integers(50, 9000)), min_size=1, max_size=3),
    ),
    st.tuples(st.just("room"), st.integers(0, 30_000)),
    st.tuples(st.just("status"), st.just(0)),
    st.tuples(st.just("tick"), st.integers(1, 1200)),
)


def _run(ops: list[tuple[str, Any]], *, lane: bool) -> tuple[Any, ...]:
    clock = task.Clock()
    limits = PolicyLimits(drop_low=12_000, drop_high=30_000, max_queue=200_000)
    factory = RTMPServerFactory(ServerConfig(limits=limits), reactor=clock)
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True, auto_drain=False)
    sock = peer.socket
    assert sock is not None
    if not lane:
        peer.protocol.link.lane_socket = None
    transport = peer.transport
    transport.drain()
    start = len(transport.value())  # after the handshake's random bytes
    sock.room = 0
    timestamp = 0
    joined = False
    for name, value in ops:
        if name == "read":
            messages = []
            for is_video, size in value:
                timestamp += 20
                messages.append(
                    media.video(sid, timestamp, key=size > 8000, size=size)
                    if is_video
                    else media.audio(sid, timestamp, size=min(size, 400))
                )
            _read(publisher, messages)
            joined = joined or _in_lane(peer)
        elif name == "room":
            # the kernel sent some: room for new bytes, the transport's first
            sock.room += value
            taken = transport.drain(min(sock.room, transport.queued))
            sock.room -= taken
        elif name == "status":
            peer.protocol.send_status(peer.protocol.play_stream_id, "NetStream.Test", "x")
        else:
            clock.advance(value / 1000)
            peer.protocol.viewer.check_progress(clock.seconds())  # the watchdog's check
    viewer = peer.protocol.viewer
    link = viewer.link
    return (
        transport.value()[start:],
        transport.queued,
        viewer.frames_sent,
        viewer.bytes_sent,
        dict(viewer.dropped),
        viewer.catch_ups,
        link.written,
        link.media_written,
        viewer.stream.bytes_out,
        viewer.awaiting_keyframe,
        joined if lane else None,
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(_op, min_size=1, max_size=60))
def test_the_lane_changes_nothing_on_the_wire_nor_in_the_numbers(ops) -> None:
    fast = _run(ops, lane=True)
    slow = _run(ops, lane=False)
    assert fast[:-1] == slow[:-1]


def test_the_property_s_runs_do_use_the_lane() -> None:
    ops: list[tuple[str, Any]] = [("room", 100_000), ("read", [(True, 9000)]), ("tick", 1000)]
    ops += [("read", [(True, 1700), (False, 200)]), ("room", 5000)] * 10
    fast = _run(ops, lane=True)
    assert fast[-1] is True
    assert fast[:-1] == _run(ops, lane=False)[:-1]


@pytest.mark.parametrize("failed", [False, True])
def test_release_all_sends_what_is_held_first(factory, failed: bool) -> None:
    publisher, sid = _publisher(factory)
    peer = _viewer(factory, socket=True)
    _start(publisher, sid)
    group = _group(peer)
    factory.flush_list.cork()
    peer.protocol.viewer.stream.broadcast(media.video(sid, 33, key=False))
    if failed:
        group.flush_failed(RuntimeError("never"))
        assert not group.pending and not group.lane
    else:
        group.release_all()
        assert not group.lane and peer.media()[-1].timestamp == 33
    factory.flush_list.uncork()


def test_once_the_last_viewer_left_nothing_stays_held_for_the_next(factory) -> None:
    publisher, sid = _publisher(factory)
    first = _viewer(factory, socket=True)
    _start(publisher, sid)
    group = _group(first)
    factory.flush_list.cork()
    first.protocol.viewer.stream.broadcast(media.video(sid, 33, key=False))
    first.protocol.send_status(first.protocol.play_stream_id, "NetStream.Test", "x")
    assert not group.lane and not group.pending, "its share went, nothing is left held"
    factory.flush_list.uncork()
    second = _viewer(factory, socket=True)
    _read(publisher, [media.video(sid, 66, key=True)])
    _read(publisher, [media.video(sid, 99, key=False)])
    assert _in_lane(first) and _in_lane(second)
    assert [m.timestamp for m in second.media() if m.type_id == 9][-2:] == [66, 99]
