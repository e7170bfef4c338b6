"""The drop-frames policy on its own: levels, keyframe safety, limits."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from streamserver.codec.flv import FrameKind
from streamserver.policy import (
    NEVER_DROPPED,
    DisconnectReason,
    DropFramesPolicy,
    DropReason,
    IDropPolicy,
    Level,
    PolicyLimits,
    Verdict,
    awaiting_after,
)

LIMITS = PolicyLimits(drop_low=1000, drop_high=5000, max_queue=20_000, max_lag_ms=6000)


@dataclass
class ViewerQueue:
    """A viewer as the policy reads it, with the bookkeeping ``Viewer`` does around it."""

    awaiting_keyframe: bool = True
    drain_rate: float = 0.0
    kernel_queued: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    catch_ups: int = 0
    disconnect_reason: str | None = None

    def carry_out(
        self, kind: FrameKind, is_video: bool, verdict: Verdict, reason: str | None
    ) -> None:
        """Apply a decision as ``streamserver.media.viewer.Viewer`` does."""
        self.awaiting_keyframe = awaiting_after(self.awaiting_keyframe, verdict, kind, is_video)
        if verdict is Verdict.DROP:
            self.dropped[reason or ""] += 1
        elif verdict is Verdict.CATCH_UP:
            self.catch_ups += 1
        elif verdict is Verdict.DISCONNECT:
            self.disconnect_reason = reason


def _decide(
    policy: DropFramesPolicy,
    viewer: ViewerQueue,
    kind: FrameKind,
    queued: int = 0,
    queued_ms: int = 0,
    size: int = 100,
    catch_up: tuple[int, int] | None = None,
) -> Verdict:
    is_video = kind not in (FrameKind.AUDIO, FrameKind.AUDIO_SEQUENCE_HEADER, FrameKind.METADATA)
    decision = policy.decide(viewer, kind, is_video, queued, queued_ms, size, catch_up)
    viewer.carry_out(kind, is_video, decision.verdict, decision.reason)
    return decision.verdict


def test_policy_provides_the_interface() -> None:
    """DropFramesPolicy is an IDropPolicy, so it can be replaced by another provider."""
    assert IDropPolicy.providedBy(DropFramesPolicy())


@pytest.mark.parametrize(
    ("queued", "queued_ms", "level"),
    [
        (0, 0, Level.NORMAL),
        (1000, 1000, Level.NORMAL),
        (1001, 0, Level.DROP_INTER),
        (0, 1001, Level.DROP_INTER),
        (5001, 0, Level.DROP_MEDIA),
        (0, 2001, Level.DROP_MEDIA),
        (0, 2000, Level.DROP_INTER),
    ],
)
def test_levels_from_bytes_and_media_time(queued: int, queued_ms: int, level: Level) -> None:
    """Both bytes and media milliseconds queued raise the level; the worse one wins."""
    assert DropFramesPolicy(LIMITS).level(queued, queued_ms) is level


def test_new_viewer_starts_at_a_keyframe() -> None:
    """Inter frames before the first keyframe are dropped as catch-up."""
    policy, viewer = DropFramesPolicy(LIMITS), ViewerQueue()
    assert _decide(policy, viewer, FrameKind.INTER) is Verdict.DROP
    assert viewer.dropped[DropReason.CATCH_UP] == 1
    assert _decide(policy, viewer, FrameKind.KEYFRAME) is Verdict.SEND
    assert _decide(policy, viewer, FrameKind.INTER) is Verdict.SEND


def test_above_low_inter_frames_drop_and_video_resumes_at_a_keyframe() -> None:
    """Above drop_low inter frames go; after that only a keyframe restarts video."""
    policy, viewer = DropFramesPolicy(LIMITS), ViewerQueue(awaiting_keyframe=False)
    assert _decide(policy, viewer, FrameKind.INTER, queued=2000) is Verdict.DROP
    assert viewer.dropped[DropReason.INTER] == 1
    assert _decide(policy, viewer, FrameKind.AUDIO, queued=2000) is Verdict.SEND
    assert _decide(policy, viewer, FrameKind.INTER, queued=0) is Verdict.DROP
    assert _decide(policy, viewer, FrameKind.KEYFRAME, queued=2000) is Verdict.SEND
    assert _decide(policy, viewer, FrameKind.INTER, queued=0) is Verdict.SEND


def test_above_high_audio_and_keyframes_drop() -> None:
    """Above drop_high everything droppable goes, keyframes and audio included."""
    policy, viewer = DropFramesPolicy(LIMITS), ViewerQueue(awaiting_keyframe=False)
    assert _decide(policy, viewer, FrameKind.AUDIO, queued=6000) is Verdict.DROP
    assert _decide(policy, viewer, FrameKind.KEYFRAME, queued=6000) is Verdict.DROP
    assert viewer.dropped == {"keyframe": 1, "audio": 1}


@pytest.mark.parametrize("kind", sorted(NEVER_DROPPED))
def test_headers_and_metadata_are_never_dropped(kind: FrameKind) -> None:
    """Metadata, sequence headers and timed data pass at any level below the hard limit."""
    policy, viewer = DropFramesPolicy(LIMITS), ViewerQueue()
    assert _decide(policy, viewer, kind, queued=19_000, queued_ms=10**6) is Verdict.SEND


def test_hard_limit_disconnects() -> None:
    """A header that would take the queue past max_queue disconnects the viewer."""
    policy, viewer = DropFramesPolicy(LIMITS), ViewerQueue()
    verdict = _decide(policy, viewer, FrameKind.VIDEO_SEQUENCE_HEADER, queued=19_950, size=100)
    assert verdict is Verdict.DISCONNECT
    assert viewer.disconnect_reason == DisconnectReason.MAX_QUEUE


def test_hard_limit_drops_what_may_be_dropped_and_passes_a_lone_giant() -> None:
    """Over the limit a keyframe is dropped, not the viewer; alone it is sent."""
    policy = DropFramesPolicy(LIMITS)
    busy = ViewerQueue(awaiting_keyframe=False)
    assert _decide(policy, busy, FrameKind.KEYFRAME, queued=100, size=25_000) is Verdict.DROP
    assert busy.disconnect_reason is None and busy.awaiting_keyframe
    idle = ViewerQueue()
    assert _decide(policy, idle, FrameKind.KEYFRAME, queued=0, size=25_000) is Verdict.SEND
    header = ViewerQueue()
    verdict = _decide(policy, header, FrameKind.VIDEO_SEQUENCE_HEADER, queued=0, size=25_000)
    assert verdict is Verdict.SEND


def test_catch_up_jumps_to_live_when_the_viewer_can_take_the_gop_in_time() -> None:
    """A waiting viewer back at normal jumps to the cached keyframe if age + drain time fit."""
    policy = DropFramesPolicy(LIMITS)  # jump-to-live budget: 6000 / 6 = 1000 ms

    def waiting(rate: float) -> ViewerQueue:
        return ViewerQueue(awaiting_keyframe=True, drain_rate=rate)

    viewer = waiting(10_000)
    assert _decide(policy, viewer, FrameKind.INTER, catch_up=(500, 3000)) is Verdict.CATCH_UP
    assert not viewer.awaiting_keyframe and viewer.catch_ups == 1
    # too old, too slow to take it, too big, already busy, or drain rate not yet known
    for state, queued, catch_up in [
        (waiting(10_000), 0, (1100, 100)),
        (waiting(4000), 0, (500, 3000)),
        (waiting(10**6), 900, (100, 4500)),
        (waiting(10**6), 1500, (100, 10)),
        (waiting(0), 0, (100, 10)),
    ]:
        verdict = _decide(policy, state, FrameKind.INTER, queued=queued, catch_up=catch_up)
        assert verdict is Verdict.DROP
        assert state.awaiting_keyframe


def test_decisions_change_nothing() -> None:
    """decide() only reads the viewer: the same question gets the same answer, twice."""
    policy = DropFramesPolicy(LIMITS)
    viewer = ViewerQueue(awaiting_keyframe=True, drain_rate=10_000)
    before = (viewer.awaiting_keyframe, viewer.drain_rate)
    first = policy.decide(viewer, FrameKind.INTER, True, 0, 0, 100, (500, 3000))
    second = policy.decide(viewer, FrameKind.INTER, True, 0, 0, 100, (500, 3000))
    assert first == second and first.verdict is Verdict.CATCH_UP
    assert (viewer.awaiting_keyframe, viewer.drain_rate) == before


def test_keyframe_rule_after_each_verdict() -> None:
    """A video frame not sent makes the viewer wait; a keyframe sent or a jump ends the wait."""
    assert awaiting_after(False, Verdict.DROP, FrameKind.INTER, True)
    assert awaiting_after(False, Verdict.DROP, FrameKind.KEYFRAME, True)
    assert not awaiting_after(True, Verdict.SEND, FrameKind.KEYFRAME, True)
    assert awaiting_after(True, Verdict.SEND, FrameKind.INTER, True)
    assert not awaiting_after(True, Verdict.CATCH_UP, FrameKind.INTER, True)
    assert not awaiting_after(False, Verdict.DROP, FrameKind.AUDIO, False)
    assert awaiting_after(True, Verdict.DROP, FrameKind.VIDEO_SEQUENCE_HEADER, True)
    assert not awaiting_after(False, Verdict.DROP, FrameKind.VIDEO_SEQUENCE_HEADER, True)


def test_no_drop_never_drops_or_disconnects() -> None:
    """With the policy disabled every frame is sent, past every watermark."""
    policy = DropFramesPolicy(PolicyLimits(enabled=False))
    viewer = ViewerQueue(awaiting_keyframe=False)
    for kind in (FrameKind.INTER, FrameKind.AUDIO, FrameKind.KEYFRAME):
        assert _decide(policy, viewer, kind, queued=10**9, queued_ms=10**6) is Verdict.SEND
    assert not policy.stalled(10**9, 10**6)


def test_stall_needs_queued_bytes_and_no_progress_for_the_timeout() -> None:
    """A viewer stalls only with bytes queued and no drain progress for the timeout."""
    policy = DropFramesPolicy(PolicyLimits(stall_timeout=10))
    assert not policy.stalled(100, 9.9)
    assert policy.stalled(100, 10.0)
    assert not policy.stalled(0, 1000.0)


def test_limits_validate_and_update() -> None:
    """Inconsistent or unknown limits are refused."""
    with pytest.raises(ValueError):
        PolicyLimits(drop_low=10, drop_high=5)
    with pytest.raises(ValueError, match="unknown"):
        LIMITS.updated(nonsense=1)
    assert LIMITS.updated(drop_low=2000).drop_low == 2000


_KINDS = st.sampled_from(list(FrameKind))


class PolicyMachine(RuleBasedStateMachine):
    """Random frames at random queue levels: the policy's safety properties hold."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = DropFramesPolicy(LIMITS)
        self.viewer = ViewerQueue(drain_rate=50_000)
        # the viewer's decoder: does it hold a reference chain up to now?
        self.decodable = False

    @rule(
        kind=_KINDS,
        queued=st.integers(0, 25_000),
        queued_ms=st.integers(0, 5000),
        size=st.integers(0, 3000),
        catch_up=st.none() | st.tuples(st.integers(0, 5000), st.integers(0, 10_000)),
    )
    def frame(
        self,
        kind: FrameKind,
        queued: int,
        queued_ms: int,
        size: int,
        catch_up: tuple[int, int] | None,
    ) -> None:
        verdict = _decide(self.policy, self.viewer, kind, queued, queued_ms, size, catch_up)
        over = queued > 0 and queued + size > LIMITS.max_queue
        if over and kind in NEVER_DROPPED:
            assert verdict is Verdict.DISCONNECT
            return
        assert verdict is not Verdict.DISCONNECT
        if over:
            assert verdict is Verdict.DROP, "a droppable frame over the hard limit is dropped"
        if kind in NEVER_DROPPED:
            assert verdict is Verdict.SEND, "never drops a sequence header or metadata"
            return
        video = kind not in (FrameKind.AUDIO,)
        if not video:
            return
        if kind is FrameKind.KEYFRAME:
            self.decodable = verdict is Verdict.SEND
        elif verdict is Verdict.SEND:
            assert self.decodable, "forwarded an inter frame before a keyframe after a drop"
        elif verdict is Verdict.CATCH_UP:
            self.decodable = True  # the caller sends the GOP from its keyframe
        else:
            self.decodable = False

    @invariant()
    def awaiting_matches_decodable(self) -> None:
        assert self.viewer.awaiting_keyframe == (not self.decodable)


def test_policy_state_machine() -> None:
    """Never an inter frame before a keyframe after a drop; never a dropped header."""
    run_state_machine_as_test(
        PolicyMachine,
        settings=settings(max_examples=300, stateful_step_count=60, deadline=None, database=None),
    )


def test_state_machine_catches_a_policy_that_forgets_the_keyframe_rule() -> None:
    """The state machine fails for a policy that sends inter frames while waiting."""

    class Forgetful(DropFramesPolicy):
        def decide(self, viewer, kind, is_video, queued, queued_ms, size, catch_up):  # type: ignore[no-untyped-def]
            decision = super().decide(viewer, kind, is_video, queued, queued_ms, size, catch_up)
            forget = kind is FrameKind.INTER and decision.verdict is Verdict.DROP
            if forget and queued < LIMITS.drop_low:
                return decision._replace(verdict=Verdict.SEND, reason=None)
            return decision

    class Machine(PolicyMachine):
        def __init__(self) -> None:
            super().__init__()
            self.policy = Forgetful(LIMITS)

    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=300, stateful_step_count=60, deadline=None, database=None
            ),
        )
