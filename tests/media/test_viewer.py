"""The Viewer on its own: one code path that asks the policy and carries the verdict out.

These viewers have no RTMP connection and no decision chain (no gate): a fake
owner on a :class:`~streamserver.testing.FakeTransport`, a wire format that
writes payloads as they are, and the real policy.  This is how a viewer of
another protocol (HTTP-FLV, WebSocket-FLV) plays a stream.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from streamserver.codec.flv import FrameKind
from streamserver.media.stream import Frame, Stream
from streamserver.media.viewer import CALM_CHECKS, Viewer
from streamserver.policy import (
    Decision,
    DropFramesPolicy,
    DropReason,
    IDropPolicy,
    Level,
    PolicyLimits,
)
from streamserver.stats import ViewerState
from streamserver.testing import FakeTransport
from streamserver.transport import FlushList, TransportAdapter
from tests.protocol import media

LIMITS = PolicyLimits(drop_low=3000, drop_high=50_000, max_queue=200_000, max_lag_ms=60_000)


@dataclass(frozen=True)
class Payloads:
    """A wire format that writes a frame's payload as it is."""

    name: str = "payloads"

    def encode(self, frame: Frame) -> bytes:
        return frame.message.payload


class Owner:
    """What a connection does for its viewer, recorded."""

    def __init__(self, *, auto_drain: bool) -> None:
        self.transport = FakeTransport(auto_drain=auto_drain)
        self.link = TransportAdapter(self.transport)
        self.peer = "192.0.2.1:5000"
        self.protocol_name = "test"
        self.closing = False
        self.events: list[tuple[str, object]] = []

    def stream_published(self, stream: Stream) -> None:
        self.events.append(("published", stream.name))

    def stream_unpublished(self, stream: Stream) -> None:
        self.events.append(("unpublished", stream.name))

    def disconnect_viewer(self, reason: str) -> bool:
        if self.closing:
            return False
        self.events.append(("disconnect", reason))
        return True

    def viewer_failed(self, viewer: Viewer, error: BaseException) -> None:
        self.events.append(("failed", error))


class Server:
    """The policy, the clock and the disconnect tally, as the factory keeps them."""

    def __init__(self, limits: PolicyLimits = LIMITS) -> None:
        self.clock = task.Clock()
        self.policy: IDropPolicy = DropFramesPolicy(limits)
        self.disconnects: Counter[str] = Counter()

    def seconds(self) -> float:
        return self.clock.seconds()

    def viewer_disconnected(self, viewer: Viewer | None, reason: str) -> None:
        self.disconnects[reason] += 1


def _play(server: Server, *, auto_drain: bool = True) -> tuple[Stream, Viewer, Owner]:
    stream = Stream("live", "cam", clock=server.seconds)
    stream.publish(object())
    owner = Owner(auto_drain=auto_drain)
    viewer = Viewer(stream, owner, Payloads(), server)
    stream.subscribe(viewer)
    for message in media.headers(1):
        stream.broadcast(message)
    return stream, viewer, owner


def test_a_viewer_cannot_be_subclassed() -> None:
    """The one code path applying the policy cannot be overridden."""
    with pytest.raises(TypeError, match="final"):

        class Sneaky(Viewer):  # type: ignore[misc]
            pass


def test_without_a_gate_the_policy_decides_and_counts_in_one_place() -> None:
    """A slow gateless viewer is cut to keyframes by the policy; every frame is counted once."""
    server = Server()
    stream, viewer, owner = _play(server, auto_drain=False)
    frames = media.gop_frames(1, 0, 30) + media.gop_frames(1, 1000, 30)
    for message in frames:
        stream.broadcast(message)
    assert viewer.dropped[DropReason.INTER] > 0
    assert viewer.dropped[DropReason.AUDIO] == 0
    # headers, the first keyframe's run up to drop_low, audio, the second keyframe
    assert viewer.frames_sent + viewer.frames_dropped == 3 + len(frames)
    assert viewer.bytes_sent == owner.link.written == owner.transport.total_written
    assert stream.bytes_out == viewer.bytes_sent
    assert viewer.awaiting_keyframe


def test_a_fast_gateless_viewer_gets_everything() -> None:
    """A viewer that takes every byte at once is sent every frame, nothing dropped."""
    server = Server()
    stream, viewer, _ = _play(server)
    frames = media.gop_frames(1, 0, 60)
    for message in frames:
        stream.broadcast(message)
    assert viewer.frames_dropped == 0
    assert viewer.frames_sent == 3 + len(frames)


def test_drain_rate_and_stall_are_measured_at_each_check() -> None:
    """check_progress keeps a smoothed drain rate and disconnects after the stall timeout."""
    server = Server(PolicyLimits(stall_timeout=5))
    stream, viewer, owner = _play(server, auto_drain=False)
    stream.broadcast(media.video(1, 0, key=True, size=40_000))
    viewer.check_progress(server.seconds())
    server.clock.advance(1)
    owner.transport.drain(10_000)
    assert not viewer.check_progress(server.seconds())
    assert viewer.drain_rate == 10_000
    server.clock.advance(1)
    owner.transport.drain(20_000)
    assert not viewer.check_progress(server.seconds())
    assert viewer.drain_rate == 15_000
    for _ in range(4):
        server.clock.advance(1)
        assert not viewer.check_progress(server.seconds())
    server.clock.advance(1)
    assert viewer.check_progress(server.seconds())
    assert owner.events[-1] == ("disconnect", "stalled")
    assert server.disconnects == {"stalled": 1}
    assert viewer.disconnect_reason == "stalled"


def test_a_viewer_whose_connection_closes_anyway_is_not_counted() -> None:
    """A stall found while the connection is closing for another reason is no policy disconnect."""
    server = Server(PolicyLimits(stall_timeout=2))
    stream, viewer, owner = _play(server, auto_drain=False)
    stream.broadcast(media.video(1, 0, key=True, size=20_000))
    owner.closing = True  # a timeout or a kick closed it first
    for _ in range(4):
        server.clock.advance(1)
        viewer.check_progress(server.seconds())
    assert server.disconnects == {}
    assert viewer.disconnect_reason is None and ("disconnect", "stalled") not in owner.events


def test_a_jump_to_live_counts_what_it_writes() -> None:
    """Frames a jump to live writes from the GOP cache are counted as sent, with their bytes."""
    server = Server(PolicyLimits(drop_low=1500, drop_high=100_000, max_lag_ms=20_000))
    stream, viewer, owner = _play(server, auto_drain=False)
    frames = media.gop_frames(1, 0, 60)
    for message in frames[:20]:
        stream.broadcast(message)
    assert viewer.awaiting_keyframe
    viewer.drain_rate = 1e6
    owner.transport.drain()
    sent_before, bytes_before = viewer.frames_sent, viewer.bytes_sent
    stream.broadcast(frames[20])
    assert viewer.catch_ups == 1 and not viewer.awaiting_keyframe
    written = owner.transport.total_written - owner.transport.queued
    assert viewer.frames_sent > sent_before + 1
    assert viewer.bytes_sent - bytes_before == owner.transport.queued
    assert written + owner.transport.queued == viewer.bytes_sent


def test_publish_events_reach_the_owner_and_reset_the_keyframe_wait() -> None:
    """A republish makes video wait for a keyframe; the owner hears of both events."""
    server = Server()
    stream, viewer, owner = _play(server)
    stream.broadcast(media.video(1, 0, key=True))
    assert not viewer.awaiting_keyframe
    publisher = stream.publisher
    stream.unpublish(publisher)
    stream.publish(object())
    assert viewer.awaiting_keyframe
    assert owner.events == [("unpublished", "cam"), ("published", "cam")]


# --- what the kernel holds ----------------------------------------------------------------


def _second_of_stream(stream: Stream, server: Server, start_ms: int, *, frame_bytes: int) -> None:
    """One second of 30 fps video (a keyframe every 2 s) with audio, in real time."""
    for index in range(30):
        timestamp = start_ms + index * 33
        key = timestamp % 2000 < 33
        stream.broadcast(media.video(1, timestamp, key=key, size=frame_bytes))
        stream.broadcast(media.audio(1, timestamp))
        server.clock.advance(1 / 30)


def _counting_kernel_reads(owner: Owner) -> list[int]:
    calls: list[int] = []
    real = owner.transport.kernel_queued_bytes

    def counted() -> int:
        calls.append(1)
        return real()

    owner.transport.kernel_queued_bytes = counted  # type: ignore[method-assign]
    return calls


def test_a_viewer_that_keeps_up_costs_one_kernel_reading_a_second() -> None:
    """A fast viewer is not watched: its kernel share is read by the check, never per frame."""
    server = Server(PolicyLimits())
    stream, viewer, owner = _play(server)
    reads = _counting_kernel_reads(owner)
    for second in range(5):
        _second_of_stream(stream, server, second * 1000, frame_bytes=2000)
        viewer.check_progress(server.seconds())
    assert not viewer.watched
    assert len(reads) == 5, "one reading per check, none per frame"
    assert viewer.frames_dropped == 0


def _over_a_thin_link(
    stream: Stream, server: Server, owner: Owner, viewer: Viewer, seconds: int
) -> None:
    """*seconds* of stream to a viewer whose kernel takes every write at once and whose
    link then carries 10 kB/s: its user-space queue is empty between frames."""
    start = round(server.seconds() * 1000)
    for second in range(seconds):
        for index in range(30):
            timestamp = start + second * 1000 + index * 33
            key = timestamp % 2000 < 33
            for message in (
                media.video(1, timestamp, key=key, size=2000),
                media.audio(1, timestamp),
            ):
                stream.broadcast(message)
                owner.transport.drain(hold=True)
            server.clock.advance(1 / 30)
        owner.transport.acknowledge(10_000)
        viewer.check_progress(server.seconds())


def test_the_policy_sees_what_the_kernel_holds_for_a_slow_viewer() -> None:
    """Bytes stuck in the kernel (in flight, in a qdisc) make a viewer drop, though
    its user-space queue is always empty."""
    server = Server(PolicyLimits())
    stream, viewer, owner = _play(server, auto_drain=False)
    owner.transport.drain(hold=True)
    _over_a_thin_link(stream, server, owner, viewer, 8)
    # only the stream's headers, written before the kernel took anything, ever waited
    assert owner.transport.queued == 0 and viewer.peak_queued < 100
    assert viewer.watched
    assert viewer.dropped[DropReason.AUDIO] > 0 and viewer.dropped[DropReason.KEYFRAME] > 0
    assert viewer.frames_sent < viewer.frames_dropped
    # it was dropping, not hoarding: the kernel never held more than ~2 s of its link
    assert owner.transport.in_kernel < 25_000


def test_a_viewer_that_keeps_up_again_is_forgotten() -> None:
    """A slow viewer whose link recovers is no longer watched after keeping up for a while."""
    server = Server(PolicyLimits())
    stream, viewer, owner = _play(server, auto_drain=False)
    _over_a_thin_link(stream, server, owner, viewer, 8)
    assert viewer.watched
    owner.transport.auto_drain = True
    owner.transport.drain()
    owner.transport.acknowledge()
    for second in range(8, 8 + CALM_CHECKS + 4):
        _second_of_stream(stream, server, second * 1000, frame_bytes=2000)
        viewer.check_progress(server.seconds())
    assert viewer.link_rate == 0 and not viewer.watched


def test_a_backlogged_viewer_s_link_rate_times_what_it_holds() -> None:
    """Losing frames with a backlog across checks, a viewer's link rate is measured, and
    the policy's queue delay is then at least what it holds at that rate."""
    server = Server(PolicyLimits(drop_low=10**6, drop_high=2 * 10**6, max_queue=4 * 10**6))
    stream, viewer, owner = _play(server, auto_drain=False)
    stream.broadcast(media.video(1, 0, key=True, size=150_000))
    for second in range(3):
        for index in range(30):
            timestamp = 33 + second * 1000 + index * 33
            stream.broadcast(media.video(1, timestamp, key=False, size=3000))
            stream.broadcast(media.audio(1, timestamp))
            server.clock.advance(1 / 30)
            owner.transport.drain(1000)  # a link of 30 kB/s
        viewer.check_progress(server.seconds())
    assert viewer.frames_dropped > 0 and owner.transport.queued > 16 * 1024
    assert viewer.link_rate == pytest.approx(30_000, rel=0.05)
    stream.broadcast(media.audio(1, 3100))
    pending = owner.transport.queued
    assert viewer._queued_ms >= pending * 1000 // 31_500


def test_a_fast_viewer_with_much_in_flight_loses_nothing() -> None:
    """A viewer on a long fat pipe (20 kB always in flight, a third of a second of
    stream) keeps every frame and is never timed by a link rate."""
    server = Server(PolicyLimits())
    stream, viewer, owner = _play(server, auto_drain=False)
    owner.transport.drain(hold=True)
    for second in range(6):
        for index in range(30):
            timestamp = second * 1000 + index * 33
            key = timestamp % 2000 < 33
            for message in (
                media.video(1, timestamp, key=key, size=2000),
                media.audio(1, timestamp),
            ):
                stream.broadcast(message)
                owner.transport.drain(hold=True)
            server.clock.advance(1 / 30)
            owner.transport.acknowledge(max(0, owner.transport.in_kernel - 20_000))
        viewer.check_progress(server.seconds())
    assert owner.transport.in_kernel >= 19_000
    assert viewer.frames_dropped == 0
    assert viewer.link_rate == 0


# --- the fast path ----------------------------------------------------------------


class CountingPolicy(DropFramesPolicy):
    """The default policy, counting its calls (a subclass: never fast-pathed)."""

    calls = 0

    def decide(self, *args: object) -> Decision:  # type: ignore[override]
        CountingPolicy.calls += 1
        return super().decide(*args)  # type: ignore[arg-type]


_AUDIO_KINDS = (FrameKind.AUDIO, FrameKind.AUDIO_SEQUENCE_HEADER, FrameKind.METADATA)


@st.composite
def _limits(draw: st.DrawFn) -> PolicyLimits:
    low = draw(st.integers(1, 10_000))
    high = draw(st.integers(low, 20_000))
    return PolicyLimits(
        drop_low=low,
        drop_high=high,
        max_queue=draw(st.integers(high, 40_000)),
        max_lag_ms=draw(st.integers(1, 10_000)),
        enabled=draw(st.booleans()),
    )


@settings(max_examples=500, deadline=None)
@given(
    limits=_limits(),
    kind=st.sampled_from(FrameKind),
    awaiting=st.booleans(),
    queued=st.integers(0, 45_000),
    queued_ms=st.one_of(st.just(0), st.integers(0, 20_000)),
    size=st.integers(1, 45_000),
    drain_rate=st.one_of(st.just(0.0), st.floats(1.0, 1e7)),
    kernel=st.integers(0, 100_000),
    gop=st.booleans(),
)
def test_the_fast_path_gives_the_policys_own_decision(
    limits: PolicyLimits,
    kind: FrameKind,
    awaiting: bool,
    queued: int,
    queued_ms: int,
    size: int,
    drain_rate: float,
    kernel: int,
    gop: bool,
) -> None:
    """Viewer.policy_decision, fast path or not, equals DropFramesPolicy.decide for any state."""
    server = Server(limits)
    stream, viewer, _ = _play(server)
    if gop:
        for message in media.gop_frames(1, 0, 5):
            stream.broadcast(message)
    viewer.awaiting_keyframe = awaiting
    viewer.drain_rate = drain_rate
    viewer.kernel_queued = kernel
    viewer._queued = queued
    viewer._queued_ms = queued_ms
    message = media.audio(1, 0) if kind in _AUDIO_KINDS else media.video(1, 0, key=True)
    frame = Frame(kind, message)
    reference = DropFramesPolicy(limits).decide(
        viewer, kind, frame.is_video, queued, queued_ms, size, stream.catch_up
    )
    assert viewer.policy_decision(frame, size) == reference


def test_the_fast_path_skips_the_call_for_a_viewer_that_keeps_up_only() -> None:
    """A keeping-up viewer of the default policy is not asked; a subclass always is."""
    server = Server()
    stream, viewer, _ = _play(server)
    calls: list[object] = []
    policy = server.policy
    original = policy.decide

    def spy(*args: object) -> Decision:
        calls.append(args)
        return original(*args)  # type: ignore[arg-type]

    policy.decide = spy  # type: ignore[method-assign]
    stream.broadcast(media.video(1, 0, key=True))  # awaiting a keyframe: asked
    assert len(calls) == 1 and not viewer.awaiting_keyframe
    for message in media.gop_frames(1, 40, 10)[1:]:
        stream.broadcast(message)
    assert len(calls) == 1, "kept up: the fast path answered"
    server.policy = CountingPolicy(LIMITS)
    CountingPolicy.calls = 0
    stream.broadcast(media.audio(1, 500))
    assert CountingPolicy.calls == 1, "another policy is always asked"


def test_frames_held_for_merging_do_not_make_a_viewer_suspect() -> None:
    """Held frames count as queued for the policy, but leave within --merge-ms: the
    watchdog does not watch a viewer for them (that would cost an ioctl per frame)."""
    server = Server()
    stream, viewer, owner = _play(server)
    owner.link.flush_list = FlushList(server.clock, merge_ms=50)
    for message in media.gop_frames(1, 0, 3):
        stream.broadcast(message)
    assert owner.link.held_bytes > 0 and owner.link.queued() == owner.link.held_bytes
    assert not viewer.check_progress(server.seconds())
    assert not viewer.watched
    stream.broadcast(media.video(1, 200, key=False))
    assert not viewer.watched
    server.clock.advance(0.05)
    assert owner.link.held_bytes == 0
    assert owner.transport.total_written == owner.link.written


def _late_merging_reactor(stream: Stream, server: Server, transport: FakeTransport) -> None:
    """Six seconds of stream while the merge timer fires 600 ms late (every 18th tick),
    to a peer whose link carries three times the stream (200 kB/s: the kernel takes
    6.7 kB a tick, and the peer acknowledges them 50 ms later): a late batch of
    ~40 kB waits in user space for a few ticks, which makes the viewer suspect."""
    reached: deque[tuple[float, int]] = deque()  # (when, bytes) handed to the kernel
    for second in range(6):
        for index in range(30):
            timestamp = second * 1000 + index * 33
            key = timestamp % 2000 < 33
            for message in (
                media.video(1, timestamp, key=key, size=2000),
                media.audio(1, timestamp),
            ):
                stream.broadcast(message)
            server.clock.rightNow += 1 / 30  # time passes; the timer waits
            if index % 18 == 17:
                server.clock.advance(0)  # the late timer fires at last
            now = server.seconds()
            reached.append((now, transport.drain(6_700, hold=True)))
            while reached and reached[0][0] <= now - 0.05 + 1e-9:
                transport.acknowledge(reached.popleft()[1])
        server.viewer.check_progress(now)  # type: ignore[attr-defined]


def test_a_late_merge_timer_does_not_age_a_viewer_s_frames() -> None:
    """Round 1's loss at 2,000 viewers with ``--merge-ms 20``: an overloaded reactor
    fires the merge timer late.  A viewer whose link keeps up must not be charged with
    the time its frames waited for the timer: held frames have not reached its link
    yet, and a batch just flushed is as young as the flush.  Without that its first
    frame held counts 600 ms old, the policy drops, and it stays watched."""
    server = Server(PolicyLimits())
    stream, viewer, owner = _play(server, auto_drain=False)
    owner.transport.drain()
    owner.link.flush_list = FlushList(server.clock, merge_ms=20)
    server.viewer = viewer  # type: ignore[attr-defined]
    _late_merging_reactor(stream, server, owner.transport)
    assert viewer.frames_dropped == 0, viewer.dropped
    assert viewer.peak_queued > 30_000, "late batches waited in user space: watched"
    assert owner.transport.total_written > 300_000


def test_a_congested_viewer_s_level_returns_to_normal_with_the_next_frame_sent() -> None:
    """The hot path's common case (a frame sent to a viewer not waiting for a
    keyframe) records the decision's level as the full path does: a viewer that drained
    its queue is NORMAL again, not left CONGESTED in its stats."""
    server = Server()
    stream, viewer, owner = _play(server, auto_drain=False)
    owner.transport.drain()
    stream.broadcast(media.video(1, 0, key=True, size=4000))  # over drop_low, queued
    stream.broadcast(media.audio(1, 10))  # audio still goes out at DROP_INTER
    assert not viewer.awaiting_keyframe and viewer.frames_dropped == 0
    assert viewer.level is Level.DROP_INTER
    assert viewer.stats().state is ViewerState.CONGESTED
    owner.transport.drain()
    stream.broadcast(media.audio(1, 20))
    assert viewer.level is Level.NORMAL
    assert viewer.stats().state is ViewerState.OK
