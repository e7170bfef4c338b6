"""Backpressure: the story's scenario, the story's bug rebuilt, and the mixin's parts."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from streamserver.codec import messages
from streamserver.codec.flv import FrameKind, classify
from streamserver.codec.messages import MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.media.stream import Frame
from streamserver.media.viewer import Viewer
from streamserver.policy import ADMIT, PAUSED, Decision, Level, PolicyLimits, Verdict
from streamserver.protocol.backpressure import BackpressureMixin
from streamserver.protocol.base import ChainError, ProtocolRoot, check_class
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.testing import FakePeer
from tests.protocol import media, simulation

LIMITS = PolicyLimits()


# --- the story's scenario, deterministic ---------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["transports", "sockets"])
def story(request: pytest.FixtureRequest) -> simulation.Result:
    """200 viewers of a 0.5 Mbit/s stream for 30 simulated minutes: 40 slow, 10 stalled.

    Run twice: over fake transports alone, and with a socket under each (the eager
    sends, and the fast lane the viewers that keep up ride; a slow viewer's kernel
    holds 64 KiB).
    """
    return simulation.run(simulation.Scenario(minutes=30.0, sockets=request.param))


def _group(result: simulation.Result, prefix: str) -> list[simulation.ViewerRecord]:
    return [v for v in result.viewers if v.name.startswith(prefix)]


def test_story_no_viewer_exceeds_the_hard_limit(story: simulation.Result) -> None:
    """No viewer's queued bytes ever pass --max-queue."""
    assert max(v.peak_queued for v in story.viewers) <= LIMITS.max_queue


def test_story_fast_viewers_receive_every_frame(story: simulation.Result) -> None:
    """Viewers that keep up get every published frame (plus the two sequence headers)."""
    for viewer in _group(story, "fast"):
        assert viewer.media_frames == story.frames_published + 2, viewer.name
        assert viewer.undecodable == 0
    assert story.frames_published > 30 * 60 * 49


def test_story_slow_viewers_get_fewer_frames_and_always_decodable_video(
    story: simulation.Result,
) -> None:
    """Slow viewers stay connected, lose frames, and never get video that cannot decode."""
    for viewer in _group(story, "slow"):
        assert viewer.disconnected_at is None, viewer.name
        assert 0 < viewer.media_frames < story.frames_published
        assert viewer.keyframes > 0
        assert viewer.undecodable == 0, f"{viewer.name} got inter frames after a gap"
        assert viewer.peak_queued <= LIMITS.drop_high + 200_000
    protocol = _group(story, "slow")[0].peer.protocol  # type: ignore[union-attr]
    assert protocol.viewer.dropped["inter"] > 0


def test_story_stalled_viewers_are_disconnected_within_the_stall_timeout(
    story: simulation.Result,
) -> None:
    """Viewers that never read are dropped once the stall timeout passes (checked each second)."""
    interval = ServerConfig().watchdog_interval
    for viewer in _group(story, "stalled"):
        assert viewer.disconnected_at is not None, viewer.name
        assert viewer.first_write_at is not None
        waited = viewer.disconnected_at - viewer.first_write_at
        assert LIMITS.stall_timeout <= waited <= LIMITS.stall_timeout + interval
    assert story.factory.disconnects == {"stalled": 10}


def test_story_fast_viewers_ride_the_lane_and_slow_ones_do_not(story: simulation.Result) -> None:
    """With sockets, the viewers that keep up are in the fast lane at the end, and the
    slow and stalled ones -- whose kernel is full -- are decided by the chain."""
    sockets = all(v.peer.socket is not None for v in story.viewers)  # type: ignore[union-attr]
    fast = {v.name for v in _group(story, "fast")}
    assert story.in_lane == (fast if sockets else set())


def test_story_publisher_is_never_paused(story: simulation.Result) -> None:
    """Slow viewers never make the server stop reading from the publisher."""
    assert not story.publisher_paused


def test_story_total_bytes_held_stay_bounded(story: simulation.Result) -> None:
    """Bytes held in all transports stay under the slow viewers' share of drop_high."""
    bound = 40 * (LIMITS.drop_high + 200_000) + 10 * LIMITS.max_queue
    assert story.max_total_queued <= bound
    last_minutes = story.total_queued_samples[-600:]
    assert max(last_minutes) <= 40 * (LIMITS.drop_high + 200_000)


# --- the story's bug, rebuilt ----------------------------------------------------------


class PriorityChatMixin(ProtocolRoot, unchecked_chain=True):
    """The story's bug: an override meant to let chat through that lost its super() call."""

    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        return ADMIT


class StoryProtocol(PriorityChatMixin, RTMPServerProtocol, unchecked_chain=True):
    """The composed protocol with the broken mixin in front of the backpressure hook."""


def test_the_guard_rejects_the_story_mixin() -> None:
    """Without the deliberate bypass, the story's mixin does not even import."""
    with pytest.raises(ChainError, match="admit_frame"):
        check_class(PriorityChatMixin)


@pytest.mark.parametrize("sockets", [False, True], ids=["transports", "sockets"])
def test_story_bug_makes_buffers_grow_without_bound(sockets: bool) -> None:
    """With the chain broken in front of the backpressure hook, slow viewers' buffers only grow
    (with sockets too: the broken class is not fast-lane safe, and a slow viewer's full
    kernel would take it out of the lane anyway)."""
    result = simulation.run(
        simulation.Scenario(minutes=2.0, protocol_class=StoryProtocol, sockets=sockets)
    )
    slow = _group(result, "slow")
    assert min(v.peak_queued for v in slow) > LIMITS.max_queue / 2
    samples = result.total_queued_samples
    assert samples[-1] > 40 * LIMITS.max_queue / 2
    assert all(
        later > earlier for earlier, later in zip(samples[-60:], samples[-59:], strict=False)
    )
    # the same numbers with the intact chain stay far below
    intact = simulation.run(simulation.Scenario(minutes=2.0, sockets=sockets))
    assert intact.total_queued_samples[-1] < samples[-1] / 5


# --- the mixin's parts -------------------------------------------------------------------


def _setup(
    factory: RTMPServerFactory, *, viewers: int = 1, drain: bool = False
) -> tuple[FakePeer, int, list[FakePeer]]:
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    peers = []
    for _ in range(viewers):
        viewer = FakePeer(factory, auto_drain=drain)
        viewer.connect("live")
        viewer.play("cam", viewer.create_stream())
        peers.append(viewer)
    for message in media.headers(sid):
        publisher.send(message)
    return publisher, sid, peers


def test_protocol_registers_as_streaming_producer(factory: RTMPServerFactory) -> None:
    """Every connection's transport gets the protocol as its streaming producer."""
    peer = FakePeer(factory)
    assert peer.transport.producer is peer.protocol
    assert peer.transport.streaming


def test_pause_and_resume_mark_congestion(factory: RTMPServerFactory) -> None:
    """The transport pausing the producer marks the viewer congested until resumed."""
    publisher, sid, (viewer,) = _setup(factory)
    for index in range(20):
        publisher.send(media.video(sid, index * 33, key=True, size=5000))
    protocol = viewer.protocol
    assert protocol.congested and protocol.pauses == 1
    viewer.transport.drain()
    assert not protocol.congested


def test_slow_viewer_is_dropped_to_keyframes(factory: RTMPServerFactory) -> None:
    """A viewer over drop_low (and under drop_high) gets keyframes and audio, no inter frames."""
    factory.set_policy(drop_low=10_000, drop_high=200_000, max_lag_ms=100_000)
    publisher, sid, (viewer,) = _setup(factory)
    for message in media.gop_frames(sid, 0, 60) + media.gop_frames(sid, 2000, 60):
        publisher.send(message)
    protocol = viewer.protocol
    assert protocol.viewer.dropped["inter"] > 0
    assert protocol.viewer.dropped["audio"] == 0
    video = [
        classify(m.type_id, m.payload) for m in viewer.media() if m.type_id == MessageType.VIDEO
    ]
    first_gap = video.index(FrameKind.KEYFRAME, 2)  # the second GOP's keyframe
    assert set(video[first_gap:]) == {FrameKind.KEYFRAME}
    audio = [m for m in viewer.media() if m.type_id == MessageType.AUDIO]
    assert len(audio) == 1 + 120  # the sequence header and every audio frame


def test_set_policy_applies_to_existing_viewers(factory: RTMPServerFactory) -> None:
    """Changing a limit on the factory changes decisions for viewers already playing."""
    publisher, sid, (viewer,) = _setup(factory)
    publisher.send(media.video(sid, 0, key=True))
    queued = viewer.transport.queued
    factory.set_policy(drop_low=max(1, queued // 2), drop_high=queued * 10)
    publisher.send(media.video(sid, 33, key=False))
    assert viewer.protocol.viewer.dropped["inter"] == 1


def test_hard_limit_disconnects_with_a_log_line(factory: RTMPServerFactory) -> None:
    """A viewer pushed past max_queue is disconnected and the reason logged with numbers."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory.set_policy(drop_low=1000, drop_high=2000, max_queue=5000)
        publisher, sid, (viewer,) = _setup(factory)
        played = viewer.protocol.viewer
        for index in range(10):
            pad = {"n": index, "pad": "x" * 1000}
            publisher.send(messages.data("@setDataFrame", "onMetaData", pad, stream_id=sid))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert viewer.transport.aborted
    assert played.disconnect_reason == "max-queue"
    assert viewer.protocol.viewer is None, "the play ended with the connection"
    logged = [e for e in events if e.get("reason") == "max-queue"]
    assert logged and logged[0]["queued"] > 0 and "peak" in logged[0]


def test_stalled_viewer_is_disconnected_by_the_watchdog() -> None:
    """No write progress for the stall timeout: the watchdog disconnects the viewer."""
    clock = task.Clock()
    factory = RTMPServerFactory(ServerConfig(limits=PolicyLimits(stall_timeout=5)), reactor=clock)
    factory.startFactory()
    try:
        publisher, sid, (viewer,) = _setup(factory)
        publisher.send(media.video(sid, 0, key=True))
        clock.advance(4.0)
        assert not viewer.transport.disconnecting
        clock.advance(1.0)
        assert viewer.transport.aborted
        assert factory.disconnects["stalled"] == 1
    finally:
        factory.stopFactory()


def test_jump_to_live_sends_the_cached_gop_video(factory: RTMPServerFactory) -> None:
    """A viewer that fell behind resumes at the cached keyframe, not at the next one."""
    factory.set_policy(drop_low=3000, drop_high=100_000, max_lag_ms=20_000)
    publisher, sid, (viewer,) = _setup(factory)
    frames = media.gop_frames(sid, 0, 60)
    for message in frames[:10]:
        publisher.send(message)
    # congest: inter frames are dropped, the viewer waits for a keyframe
    for message in frames[10:20]:
        publisher.send(message)
    assert viewer.protocol.viewer.awaiting_keyframe
    viewer.protocol.viewer.drain_rate = 1e6  # as the watchdog would have measured it
    viewer.transport.drain()
    before = len(viewer.media())
    publisher.send(frames[20])  # next video: jump to live from the cached GOP
    assert viewer.protocol.viewer.catch_ups == 1
    got = viewer.media()[before:]
    videos = [m for m in got if m.type_id == 9]
    # the dropped frames of this GOP follow on from the last one the viewer has
    stamps = [m.timestamp for m in videos]
    assert stamps == sorted(stamps) and stamps[-1] == frames[20].timestamp
    assert len(videos) >= 2


def test_total_bytes_held_is_reported(factory: RTMPServerFactory) -> None:
    """The factory sums what every transport holds."""
    publisher, sid, viewers = _setup(factory, viewers=3)
    publisher.send(media.video(sid, 0, key=True, size=1000))
    assert factory.bytes_queued_total() == sum(v.transport.queued for v in viewers)
    assert factory.bytes_queued_total() > 3000


def test_lag_is_reported_per_viewer(factory: RTMPServerFactory) -> None:
    """lag_ms is the age of the oldest queued frame behind live."""
    publisher, sid, (viewer,) = _setup(factory)
    factory.set_policy(drop_low=10**6, drop_high=2 * 10**6, max_lag_ms=100_000)
    for message in media.gop_frames(sid, 0, 30):
        publisher.send(message)
    assert 900 <= viewer.protocol.viewer.lag_ms() <= 1000
    viewer.transport.drain()
    assert viewer.protocol.viewer.lag_ms() == 0


def test_no_drop_warns_loudly_at_start() -> None:
    """--no-drop logs a warning when the factory starts."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    factory = RTMPServerFactory(
        ServerConfig(limits=PolicyLimits(enabled=False)), reactor=task.Clock()
    )
    try:
        factory.startFactory()
    finally:
        factory.stopFactory()
        globalLogPublisher.removeObserver(events.append)
    assert any("DROP POLICY DISABLED" in e.get("log_format", "") for e in events)


def test_the_policy_step_lets_a_refusal_behind_it_stand_and_asks_for_the_rest() -> None:
    """BackpressureMixin.admit_frame: the root's ADMIT (checked by identity, the common
    case) and any other admitting decision behind it go to the viewer's policy
    decision; a refusal behind it (a pause) stands without asking."""

    class Behind(ProtocolRoot):
        answer: Decision | None = None

        def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
            decision = super().admit_frame(viewer, frame, size)
            return self.answer if self.answer is not None else decision

    class Step(BackpressureMixin, Behind):
        pass

    asked: list[int] = []
    verdict = Decision(Verdict.DROP, None, Level.DROP_INTER)

    class Played:
        def policy_decision(self, frame: Frame, size: int) -> Decision:
            asked.append(size)
            return verdict

    step, played = Step(), Played()
    frame = Frame(FrameKind.INTER, media.video(1, 0, key=False))
    assert step.admit_frame(played, frame, 1) is verdict  # type: ignore[arg-type]
    step.answer = Decision(Verdict.CATCH_UP, None, None)
    assert step.admit_frame(played, frame, 2) is verdict  # type: ignore[arg-type]
    step.answer = PAUSED
    assert step.admit_frame(played, frame, 3) is PAUSED  # type: ignore[arg-type]
    assert asked == [1, 2]
