"""The drop-frames policy: pure decisions from a viewer's queue and a frame's kind.

A viewer whose link is slower than the stream must get fewer frames, never an
ever-growing buffer.  This module decides, per frame and per viewer, whether to
send, drop, jump to live or disconnect, from numbers the caller measures:

- ``queued_bytes``: bytes waiting in the viewer's transport (user space);
- ``queued_ms``: how long the oldest of those bytes has been waiting.  For a live
  stream at steady state that is the media time queued; measured on the clock it
  cannot be fooled by a publisher's timestamp jumps (SRS #712) nor by the
  intended burst of a GOP sent to a new viewer.

Levels, from both measures (whichever is worse):

``NORMAL``   queued_bytes <= drop_low and queued_ms <= max_lag_ms / 6: send everything.
``DROP_INTER`` above that: drop inter and disposable video frames; keyframes and audio pass.
``DROP_MEDIA`` queued_bytes > drop_high or queued_ms > max_lag_ms / 3: drop all audio and
           video, keyframes included.

Why a sixth and a third: what a viewer sees lags live by the age a frame already
had when written (a jump to live writes frames up to max_lag_ms / 6 old), plus
the time it waits in our buffer (under max_lag_ms / 3 before everything stops),
plus what the kernel and the network hold, which we cannot see (about 50 KB with
TCP_NOTSENT_LOWAT at 16 KiB: 1.3 s at 0.3 Mbit/s).  The thirds leave that room.

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

Nothing here does I/O or reads a clock; the state a decision depends on is a
:class:`ViewerQueue` the caller keeps per viewer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from enum import IntEnum
from typing import Any

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


class DropReason:
    """Reasons counted per viewer (the keys of :attr:`ViewerQueue.dropped`)."""

    INTER = "inter"
    KEYFRAME = "keyframe"
    AUDIO = "audio"
    CATCH_UP = "catch-up"

    ALL = (INTER, KEYFRAME, AUDIO, CATCH_UP)


class DisconnectReason:
    """Why a viewer was disconnected."""

    MAX_QUEUE = "max-queue"
    STALLED = "stalled"


@dataclass
class PolicyLimits:
    """The watermarks; ``docs/backpressure.md`` justifies the defaults.

    :ivar drop_low: bytes queued above which inter frames are dropped.
    :ivar drop_high: bytes queued above which audio and keyframes are dropped too.
    :ivar max_queue: hard limit: a viewer with more bytes queued is disconnected.
    :ivar stall_timeout: seconds without write progress (with bytes queued) before
        the viewer is disconnected.
    :ivar max_lag_ms: the lag behind live the policy keeps a viewer under; the media
        time watermarks are a quarter and a half of it.
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


@dataclass
class ViewerQueue:
    """Per-viewer policy state and accounting; the policy reads and updates it.

    :ivar awaiting_keyframe: video resumes only at a keyframe (or a catch-up).
    :ivar level: the level of the last decision.
    :ivar frames_sent: media frames admitted.
    :ivar dropped: frames dropped, by :class:`DropReason`.
    :ivar catch_ups: jumps to live.
    :ivar disconnect_reason: set when the policy decided to disconnect.
    :ivar last_progress: clock time of the last observed write progress.
    :ivar drained_seen: the drained byte count at the last progress check.
    :ivar drain_rate: bytes per second the viewer took, smoothed over the checks
        (0 until measured); a lower bound on its link when it was not backlogged.
    :ivar rate_checked_at: clock time of the last rate sample (``None``: none yet).
    :ivar rate_drained: the drained byte count at that sample.
    """

    awaiting_keyframe: bool = True
    level: Level = Level.NORMAL
    frames_sent: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DropReason.ALL, 0))
    catch_ups: int = 0
    disconnect_reason: str | None = None
    last_progress: float = 0.0
    drained_seen: int = 0
    drain_rate: float = 0.0
    rate_checked_at: float | None = None
    rate_drained: int = 0

    @property
    def frames_dropped(self) -> int:
        """Frames dropped for any reason."""
        return sum(self.dropped.values())


class IDropPolicy(Interface):
    """A per-frame, per-viewer admission policy (replaceable)."""

    limits = Attribute("The PolicyLimits in force")

    def decide(
        viewer: ViewerQueue,
        kind: FrameKind,
        is_video: bool,
        queued_bytes: int,
        queued_ms: int,
        size: int,
        catch_up: tuple[int, int] | None,
    ) -> Verdict:
        """Decide for one frame of *size* bytes; update *viewer*'s state and counters."""

    def stalled(viewer: ViewerQueue, queued_bytes: int, drained: int, now: float) -> bool:
        """Whether the viewer made no write progress for too long (updates progress)."""


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
        viewer: ViewerQueue,
        kind: FrameKind,
        is_video: bool,
        queued_bytes: int,
        queued_ms: int,
        size: int,
        catch_up: tuple[int, int] | None,
    ) -> Verdict:
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
            if over:
                viewer.disconnect_reason = DisconnectReason.MAX_QUEUE
                return Verdict.DISCONNECT
            return Verdict.SEND
        level = Level.DROP_MEDIA if over else self.level(queued_bytes, queued_ms)
        viewer.level = level
        if not is_video:
            if level is Level.DROP_MEDIA:
                viewer.dropped[DropReason.AUDIO] += 1
                return Verdict.DROP
            viewer.frames_sent += 1
            return Verdict.SEND
        if kind is FrameKind.KEYFRAME:
            if level is Level.DROP_MEDIA:
                viewer.awaiting_keyframe = True
                viewer.dropped[DropReason.KEYFRAME] += 1
                return Verdict.DROP
            viewer.awaiting_keyframe = False
            viewer.frames_sent += 1
            return Verdict.SEND
        # an inter, disposable or unrecognised video frame: needs what came before
        if viewer.awaiting_keyframe:
            if (
                level is Level.NORMAL
                and catch_up is not None
                and viewer.drain_rate > 0
                and queued_bytes + catch_up[1] <= limits.drop_high
                and catch_up[0] + 1000 * (queued_bytes + catch_up[1]) / viewer.drain_rate
                <= limits.low_ms
            ):
                viewer.awaiting_keyframe = False
                viewer.catch_ups += 1
                return Verdict.CATCH_UP
            viewer.dropped[DropReason.CATCH_UP] += 1
            return Verdict.DROP
        if level is not Level.NORMAL:
            viewer.awaiting_keyframe = True
            viewer.dropped[DropReason.INTER] += 1
            return Verdict.DROP
        viewer.frames_sent += 1
        return Verdict.SEND

    def stalled(self, viewer: ViewerQueue, queued_bytes: int, drained: int, now: float) -> bool:
        """Record write progress and the drain rate; say whether the viewer has stalled.

        Progress means *drained* (bytes handed to the kernel so far) grew, or the
        queue is empty.  Called about once a second per viewer.
        """
        if viewer.rate_checked_at is not None and now > viewer.rate_checked_at:
            rate = (drained - viewer.rate_drained) / (now - viewer.rate_checked_at)
            viewer.drain_rate = rate if not viewer.drain_rate else (viewer.drain_rate + rate) / 2
        viewer.rate_checked_at = now
        viewer.rate_drained = drained
        if queued_bytes == 0 or drained > viewer.drained_seen:
            viewer.drained_seen = drained
            viewer.last_progress = now
            return False
        if not self.limits.enabled:
            return False
        if now - viewer.last_progress >= self.limits.stall_timeout:
            viewer.disconnect_reason = DisconnectReason.STALLED
            return True
        return False
