"""The drop-frames policy: pure decisions from a viewer's queue and a frame's kind.

A viewer whose link is slower than the stream must get fewer frames, never an
ever-growing buffer.  This module decides, per frame and per viewer, whether to
send, drop, jump to live or disconnect, from numbers the caller measures:

- ``queued_bytes``: bytes waiting in the viewer's transport (user space);
- ``queued_ms``: how long the oldest of those bytes has been waiting.  For a live
  stream at steady state that is the media time queued; measured on the clock it
  cannot be fooled by a publisher's timestamp jumps (SRS #712) nor by the
  intended burst of a GOP sent to a new viewer.  For a viewer suspected of being
  slow the viewer counts what the kernel holds unacknowledged too, and times
  what is pending at its measured link rate (``streamserver.media.viewer``).

Levels, from both measures (whichever is worse):

``NORMAL``   queued_bytes <= drop_low and queued_ms <= max_lag_ms / 6: send everything.
``DROP_INTER`` above that: drop inter and disposable video frames; keyframes and audio pass.
``DROP_MEDIA`` queued_bytes > drop_high or queued_ms > max_lag_ms / 3: drop all audio and
           video, keyframes included.

Why a sixth and a third: what a viewer sees lags live by the age a frame already
had when written (a jump to live writes frames up to max_lag_ms / 6 old), plus
the time it waits before it goes out (under max_lag_ms / 3 before everything
stops), plus what the network does that no one can see: a retransmission
timeout on a lossy thin link stalls everything in flight for a second or two.
The thirds leave that room.

Rules that hold at every level:

- never dropped: metadata, sequence headers, video info/end frames, timed data
  (status and control messages and chat do not pass through the policy at all);
- after any video drop the viewer waits for a keyframe: an inter frame is never
  sent before one (a new viewer starts in that state too);
- a waiting viewer back at ``NORMAL`` jumps to live (``CATCH_UP``: the caller sends
  the cached GOP's video from its keyframe) instead of waiting for the next
  keyframe, when the GOP's age plus the time the viewer needs to take it (at its
  measured drain rate) stays under max_lag_ms / 6 and it fits under drop_high;
- a frame that would take a non-empty queue past ``max_queue`` bytes: dropped if
  droppable, else ``DISCONNECT`` (a lone frame bigger than the limit still goes to
  a viewer whose queue is empty); no
  write progress for ``stall_timeout`` seconds while bytes are queued:
  :meth:`DropFramesPolicy.stalled` says so and the caller disconnects.

The fast path: for a frame of *size* bytes to a viewer not waiting for a
keyframe whose queue delay is 0 (unwatched) and whose queue plus the frame
stays within ``drop_low``, :meth:`DropFramesPolicy.decide` always answers
:data:`ADMIT` (a kind never dropped) or :data:`SEND_NORMAL` (anything else): the
level is ``NORMAL`` (bytes <= drop_low, 0 ms) and the frame cannot pass
``max_queue`` (drop_low <= max_queue).  ``Viewer.policy_decision`` gives that
answer without the call, for this class exactly (a subclass or another provider
may decide differently); ``tests/media/test_viewer.py`` holds the two to the
same decision over random viewer states.

Nothing here does I/O, reads a clock or changes anything: :meth:`DropFramesPolicy.decide`
reads a viewer (:class:`PolicySubject`) and returns a shared :class:`Decision`, and
the viewer carries it out -- writes, counts, and applies :func:`awaiting_after`,
the keyframe rule -- in one place (``streamserver.media.viewer.Viewer``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple, Protocol

from zope.interface import Attribute, Interface, implementer

from streamserver.codec.flv import FrameKind

#: Kinds never dropped: without them a player cannot decode or display anything.
NEVER_DROPPED = frozenset(
    {
        FrameKind.METADATA,
        FrameKind.VIDEO_SEQUENCE_HEADER,
        FrameKind.AUDIO_SEQUENCE_HEADER,
        FrameKind.VIDEO_INFO,
        FrameKind.VIDEO_END,
        FrameKind.DATA,
    }
)

#: Video kinds that depend on the frames before them.
DEPENDENT_VIDEO = frozenset({FrameKind.INTER, FrameKind.DISPOSABLE, FrameKind.OTHER})


class Level(IntEnum):
    """How congested a viewer is."""

    NORMAL = 0
    DROP_INTER = 1
    DROP_MEDIA = 2


class Verdict(IntEnum):
    """What to do with one frame for one viewer."""

    SEND = 0
    DROP = 1
    CATCH_UP = 2
    DISCONNECT = 3


class DropReason(StrEnum):
    """Why a frame was not sent to a viewer (the keys of ``Viewer.dropped``)."""

    #: an inter frame while the viewer was congested
    INTER = "inter"
    #: a keyframe while the viewer was badly congested
    KEYFRAME = "keyframe"
    #: an audio frame while the viewer was badly congested
    AUDIO = "audio"
    #: an inter frame while the viewer waited for a keyframe
    CATCH_UP = "catch-up"
    #: the viewer paused the stream (not congestion: a chain refusal)
    PAUSED = "paused"


class DisconnectReason(StrEnum):
    """Why a viewer was disconnected (the keys of ``factory.disconnects``)."""

    MAX_QUEUE = "max-queue"
    STALLED = "stalled"


class Decision(NamedTuple):
    """The answer for one frame and one viewer: what to do, why, at what level.

    The policy returns shared instances and never mutates anything; the viewer
    carries the decision out (writes, counts, changes its state) in one place.

    :ivar verdict: send, drop, jump to live, or disconnect.
    :ivar reason: a :class:`DropReason` for a drop, a :class:`DisconnectReason`
        for a disconnect, else ``None``.
    :ivar level: the congestion level the decision was taken at; ``None`` for
        frames that never drop (their decision says nothing of congestion).
    """

    verdict: Verdict
    reason: str | None
    level: Level | None

    @property
    def admits(self) -> bool:
        """Whether the frame (or a jump to live) goes out."""
        return self.verdict is Verdict.SEND or self.verdict is Verdict.CATCH_UP


#: What the end of a decision chain answers: no objection.
ADMIT = Decision(Verdict.SEND, None, None)

#: A paused viewer's frames: refused by the chain, not by congestion.
PAUSED = Decision(Verdict.DROP, DropReason.PAUSED, None)

_SEND = {level: Decision(Verdict.SEND, None, level) for level in Level}
_DROP = {
    (reason, level): Decision(Verdict.DROP, reason, level)
    for reason in DropReason
    for level in Level
}
#: What the fast path answers for a frame that may be dropped (:func:`fast_decision`).
SEND_NORMAL = _SEND[Level.NORMAL]
_CATCH_UP = Decision(Verdict.CATCH_UP, None, Level.NORMAL)
_DISCONNECT_MAX_QUEUE = Decision(Verdict.DISCONNECT, DisconnectReason.MAX_QUEUE, None)


def awaiting_after(awaiting: bool, verdict: Verdict, kind: FrameKind, is_video: bool) -> bool:
    """Whether video waits for a keyframe once *verdict* is carried out for a frame.

    A video frame that is not sent breaks the decoder's reference chain; a sent
    keyframe or a jump to live (the cached GOP from its keyframe) restores it.
    Audio and the frames that are never dropped change nothing.
    """
    if not is_video or kind in NEVER_DROPPED:
        return awaiting
    if verdict is Verdict.SEND:
        return False if kind is FrameKind.KEYFRAME else awaiting
    return verdict is not Verdict.CATCH_UP


@dataclass
class PolicyLimits:
    """The watermarks; ``docs/backpressure.md`` justifies the defaults.

    :ivar drop_low: bytes queued above which inter frames are dropped.
    :ivar drop_high: bytes queued above which audio and keyframes are dropped too.
    :ivar max_queue: hard limit: a viewer with more bytes queued is disconnected.
    :ivar stall_timeout: seconds without write progress (with bytes queued) before
        the viewer is disconnected.
    :ivar max_lag_ms: the lag behind live the policy keeps a viewer under; the time
        watermarks are a sixth and a third of it (:attr:`low_ms`, :attr:`high_ms`).
    :ivar enabled: ``False`` (``--no-drop``) never drops for congestion and never
        disconnects: the failure the policy exists to prevent, for demonstration.
    """

    drop_low: int = 192 * 1024
    drop_high: int = 512 * 1024
    max_queue: int = 4 * 1024 * 1024
    stall_timeout: float = 10.0
    max_lag_ms: int = 3000
    enabled: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the limits make sense together.

        :raises ValueError: naming the offending limit.
        """
        if not 0 < self.drop_low <= self.drop_high <= self.max_queue:
            raise ValueError("need 0 < drop_low <= drop_high <= max_queue")
        if self.stall_timeout <= 0:
            raise ValueError("stall_timeout must be positive")
        if self.max_lag_ms <= 0:
            raise ValueError("max_lag_ms must be positive")

    @property
    def low_ms(self) -> int:
        """Queue delay above which inter frames are dropped; also the jump-to-live budget."""
        return self.max_lag_ms // 6

    @property
    def high_ms(self) -> int:
        """Queue delay above which audio and keyframes are dropped."""
        return self.max_lag_ms // 3

    def updated(self, **changes: Any) -> PolicyLimits:
        """A copy with *changes* applied and validated.

        :raises ValueError: an unknown name or an inconsistent value.
        """
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The limits as a plain dict."""
        return asdict(self)


class PolicySubject(Protocol):
    """What a decision reads of a viewer (``streamserver.media.viewer.Viewer``)."""

    #: video resumes only at a keyframe (or a jump to live)
    awaiting_keyframe: bool
    #: bytes per second the viewer took, smoothed (0 until measured); a lower
    #: bound on its link when it was not backlogged
    drain_rate: float
    #: bytes the kernel held for the viewer at the last reading (0: none or unread)
    kernel_queued: int


class IDropPolicy(Interface):
    """A per-frame, per-viewer admission policy (replaceable); pure, like the default."""

    limits = Attribute("The PolicyLimits in force")

    def decide(
        viewer: PolicySubject,
        kind: FrameKind,
        is_video: bool,
        queued_bytes: int,
        queued_ms: int,
        size: int,
        catch_up: tuple[int, int] | None,
    ) -> Decision:
        """Decide for one frame of *size* bytes; change nothing."""

    def stalled(queued_bytes: int, idle_seconds: float) -> bool:
        """Whether a viewer holding *queued_bytes* without progress for *idle_seconds* stalled."""


@implementer(IDropPolicy)
class DropFramesPolicy:
    """The default policy: byte and media-time watermarks, keyframe-safe drops.

    :ivar limits: the :class:`PolicyLimits`; replace it to change them for every
        viewer at once.
    """

    def __init__(self, limits: PolicyLimits | None = None) -> None:
        self.limits = limits or PolicyLimits()

    def level(self, queued_bytes: int, queued_ms: int) -> Level:
        """The congestion level for a queue of *queued_bytes* spanning *queued_ms*."""
        limits = self.limits
        if not limits.enabled:
            return Level.NORMAL
        if queued_bytes > limits.drop_high or queued_ms > limits.high_ms:
            return Level.DROP_MEDIA
        if queued_bytes > limits.drop_low or queued_ms > limits.low_ms:
            return Level.DROP_INTER
        return Level.NORMAL

    def decide(
        self,
        viewer: PolicySubject,
        kind: FrameKind,
        is_video: bool,
        queued_bytes: int,
        queued_ms: int,
        size: int,
        catch_up: tuple[int, int] | None,
    ) -> Decision:
        """Decide for one frame (see the module docstring for the rules).

        :param size: the frame's size on the wire.
        :param catch_up: ``(age_ms, size)`` of the video a jump to live would send
            (the cached GOP from its keyframe), or ``None`` when nothing is cached.
        """
        limits = self.limits
        # A frame that would take a non-empty queue past the hard limit is dropped
        # if it may be, else the viewer goes; a single frame bigger than the limit
        # (a 4K keyframe) still reaches a viewer with an empty queue.
        over = limits.enabled and queued_bytes > 0 and queued_bytes + size > limits.max_queue
        if kind in NEVER_DROPPED:
            return _DISCONNECT_MAX_QUEUE if over else ADMIT
        level = Level.DROP_MEDIA if over else self.level(queued_bytes, queued_ms)
        if not is_video:
            if level is Level.DROP_MEDIA:
                return _DROP[DropReason.AUDIO, level]
            return _SEND[level]
        if kind is FrameKind.KEYFRAME:
            if level is Level.DROP_MEDIA:
                return _DROP[DropReason.KEYFRAME, level]
            return _SEND[level]
        # an inter, disposable or unrecognised video frame: needs what came before
        if viewer.awaiting_keyframe:
            if (
                level is Level.NORMAL
                and catch_up is not None
                and viewer.drain_rate > 0
                and queued_bytes + catch_up[1] <= limits.drop_high
                and catch_up[0]
                + 1000 * (queued_bytes + viewer.kernel_queued + catch_up[1]) / viewer.drain_rate
                <= limits.low_ms
            ):
                return _CATCH_UP
            return _DROP[DropReason.CATCH_UP, level]
        if level is not Level.NORMAL:
            return _DROP[DropReason.INTER, level]
        return _SEND[level]

    def stalled(self, queued_bytes: int, idle_seconds: float) -> bool:
        """Whether a viewer stalled: bytes queued and no write progress for ``stall_timeout``.

        Progress (what the peer took, measured about once a second by the
        caller) resets *idle_seconds*; an empty queue is never a stall.
        """
        limits = self.limits
        return limits.enabled and queued_bytes > 0 and idle_seconds >= limits.stall_timeout
