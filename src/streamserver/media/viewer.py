"""Viewer: one play of a stream, whatever wire protocol carries it.

A :class:`Viewer` is what a :class:`~streamserver.media.stream.Stream` fans out
to.  It owns everything that is per play and per viewer: the drop policy's view
of it (waiting for a keyframe, the drain rate), the frames written and possibly
still queued (for the queue delay and the lag), and the counters.  For every
frame it:

1. measures its queue through its owner's transport adapter (``owner.link``):
   the bytes in user space, and for a viewer suspected of being slow also what
   the kernel holds for it (see "What the kernel holds" below);
2. asks for a :class:`~streamserver.policy.Decision` -- through the owner's
   guarded decision chain (``gate.admit_frame``, the RTMP protocol's mixins,
   whose backpressure mixin asks the policy), or, for a viewer without a gate,
   from the policy directly;
3. carries the decision out, in one place: writes the frame (or the cached GOP
   on a jump to live), counts it, applies the keyframe rule, or disconnects.

Each group of viewers that share a :class:`WireFormat` (for RTMP: outgoing
chunk size and message stream id) shares the serialized bytes of a frame; the
stream serializes once per group.  A viewer that keeps up is moved to its
group's *fast lane* (:mod:`streamserver.media.lane`) at a frame this path
decided to send with nothing queued: while the policy's fast path and its
chain's ``admits_every_frame`` hold, the verdict for each of its frames is
known, so the lane sends them without asking; it comes back here whenever
that could change.

A failure while delivering to a viewer -- in its chain, its format, its
transport -- is the viewer's alone: the viewer leaves the stream and its owner
is told (:meth:`ViewerOwner.viewer_failed`), and the stream's loop goes on to
the next viewer.  The publisher never sees it.

What the kernel holds: on a real link the bytes in flight and in a qdisc are
invisible to ``TCP_NOTSENT_LOWAT``; a viewer behind a 300 kbit/s link can be
seconds late while its user-space queue looks short.  So a viewer is *watched*
while it is suspect -- bytes wait in its user-space queue, it lost frames since
the watchdog's last check, its link rate is known (below), or the watchdog found
its kernel share worth more than :data:`KERNEL_WATCH_MS` -- and for each of its
frames the kernel's share (``link.kernel_queued()``, one ``ioctl``) is read:
the queue delay the policy sees is then the age of the oldest frame the peer
has not acknowledged, and at least what is pending at the viewer's *link rate*.
That rate is measured by the watchdog over intervals in which the viewer lost
frames and held more than :data:`BACKLOG_BYTES` at both ends -- when its link,
not the stream, set the pace -- and forgotten after :data:`CALM_CHECKS` checks
of keeping up.  It is what makes a burst count: a keyframe written a moment ago
is young, but a second of link long.  A viewer that keeps up is read once a
second by the watchdog and costs nothing more per frame.  The byte watermarks
and the hard limit stay on user-space bytes: they bound the memory *we* hold,
and a fast viewer on a long fat pipe legitimately has a lot in flight.

``Viewer`` is final: the one code path that applies the drop policy cannot be
overridden by a subclass.  What a wire protocol may add is a guarded chain in
front of the policy (``docs/architecture.md``, "The cooperative chain").

Nothing here imports Twisted; the clock and the policy come from the server
object the viewer is given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, final

from streamserver.policy import (
    ADMIT,
    NEVER_DROPPED,
    SEND_NORMAL,
    Decision,
    DisconnectReason,
    DropFramesPolicy,
    DropReason,
    IDropPolicy,
    Level,
    Verdict,
    awaiting_after,
)
from streamserver.stats import ViewerState, ViewerStats

if TYPE_CHECKING:
    from streamserver.media.lane import ViewerGroup
    from streamserver.media.stream import Frame, Stream

#: The verdict of the hot path's common case, a module global (one lookup).
_SEND_VERDICT = Verdict.SEND

#: A viewer whose oldest unacknowledged frame the watchdog finds older than this
#: is watched per frame (its kernel share read with each decision).  100 ms is a
#: long round trip plus a little queue; well under the policy's first time
#: watermark (max_lag_ms / 6: 500 ms at the default), so a viewer turning slow is
#: watched before the policy would have to act on it.
KERNEL_WATCH_MS = 100

#: Pending bytes (user space and kernel) above which a watched viewer counts as
#: backlogged for the link-rate measurement: the kernel's unsent allowance
#: (``TCP_NOTSENT_LOWAT``, 16 KiB by default) is routinely that full even on a
#: link that keeps up.
BACKLOG_BYTES = 16 * 1024

#: Watchdog checks in a row without a backlog and without a frame dropped after
#: which a viewer's link rate is forgotten and it is no longer watched for it: 30 s
#: of keeping up.
CALM_CHECKS = 30

#: Frames remembered per viewer for the queue delay and the lag: 70 s of video at
#: 30 fps with audio.  Beyond that the oldest are forgotten (a backstop: the drop
#: policy keeps a queue far shorter).
MAX_SENT_FRAMES = 4096


class WireFormat(Hashable, Protocol):
    """How a group of viewers serializes a frame; equal formats share the bytes."""

    def encode(self, frame: Frame) -> bytes:
        """*frame* as this format's bytes (called once per group, see ``Frame.serialized``)."""
        ...


class ViewerLink(Protocol):
    """What a viewer needs of its transport (:class:`~streamserver.transport.TransportAdapter`)."""

    @property
    def written(self) -> int:
        """Every byte written to the transport, by anyone."""
        ...

    def queued(self) -> int:
        """Bytes written and not yet handed to the kernel."""
        ...

    def kernel_queued(self) -> int:
        """Bytes handed to the kernel and not yet acknowledged by the peer (0 if unknown)."""
        ...

    @property
    def has_kernel_view(self) -> bool:
        """Whether :meth:`kernel_queued` can see anything."""
        ...

    @property
    def held_bytes(self) -> int:
        """The bytes of frames held to go out together (part of :meth:`queued`)."""
        ...

    @property
    def flushed_from(self) -> int:
        """:attr:`written` before the last flush of held frames (later bytes left then or after)."""
        ...

    @property
    def flushed_at(self) -> float:
        """When a merging flush last sent held frames, by the server's clock (0: never)."""
        ...

    def write_media(self, data: bytes, queued: int) -> None:
        """Write a stream's bytes, *queued* being :meth:`queued` read just before."""
        ...

    def write_frame(self, data: bytes, queued: int) -> None:
        """Write a frame's bytes, possibly held to go out with the next ones."""
        ...

    on_failure: Any
    """Told of an error met sending held frames later (the viewer's :meth:`Viewer._fail`)."""

    lane: Any
    """The fast lane its viewer is in (a ``ViewerGroup``), or ``None``."""

    lane_socket: Any
    """The socket a fast lane may send its frames to, or ``None`` (not this link)."""


class ViewerOwner(Protocol):
    """The connection or request a viewer plays on (the RTMP protocol provides it)."""

    @property
    def peer(self) -> str:
        """The peer's address, for logs."""
        ...

    @property
    def link(self) -> ViewerLink:
        """The transport the viewer's frames are written to."""
        ...

    @property
    def protocol_name(self) -> str:
        """The wire protocol the viewer plays over (``rtmp``, ``http-flv``, ``ws-flv``)."""
        ...

    def stream_published(self, stream: Stream) -> None:
        """The played stream got a publisher."""
        ...

    def stream_unpublished(self, stream: Stream) -> None:
        """The played stream lost its publisher."""
        ...

    def disconnect_viewer(self, reason: str) -> bool:
        """The policy decided this viewer must go: close it, logged with *reason*.

        :returns: whether it closed the connection now (``False``: it was closing
            already, for another reason).
        """
        ...

    def viewer_failed(self, viewer: Viewer, error: BaseException) -> None:
        """Delivering to *viewer* raised *error*; it has left its stream already."""
        ...


class AdmissionGate(Protocol):
    """A guarded decision chain in front of the policy (the RTMP protocol's mixins)."""

    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        """Decide for *frame*; the chain's backpressure step asks ``viewer.policy_decision``."""
        ...

    def admits_every_frame(self, viewer: Viewer) -> bool:
        """Whether every step would admit every frame as things stand (the fast lane)."""
        ...


class ViewerServer(Protocol):
    """What a viewer needs of the server: the policy in force, the clock, the tally."""

    @property
    def policy(self) -> IDropPolicy:
        """The drop policy every viewer consults."""
        ...

    def seconds(self) -> float:
        """Now, by the server's clock."""
        ...

    def viewer_disconnected(self, viewer: Viewer, reason: str) -> None:
        """Count a disconnect decided for *viewer*."""
        ...


@final
class Viewer:
    """One play of one stream by one peer.

    :ivar stream: the stream played.
    :ivar owner: the connection it plays on.
    :ivar format: the :class:`WireFormat` of its group.
    :ivar awaiting_keyframe: video resumes only at a keyframe (or a jump to live);
        a new viewer starts waiting.
    :ivar level: the congestion level of the last decision taken at a level.
    :ivar drain_rate: bytes per second the viewer took, smoothed over the checks
        (0 until measured).
    :ivar link_rate: bytes per second the peer acknowledged between two checks
        at which it was backlogged (losing frames, over :data:`BACKLOG_BYTES`
        pending): what its link carries (0 until measured, and again after
        :data:`CALM_CHECKS` checks of keeping up).
    :ivar frames_sent: frames written (media, headers, metadata, jumps to live).
    :ivar bytes_sent: their bytes.
    :ivar dropped: frames not sent, by :class:`~streamserver.policy.DropReason`.
    :ivar catch_ups: jumps to live.
    :ivar peak_queued: the most bytes seen queued in its transport.
    :ivar disconnect_reason: why the policy disconnected it, once it did.
    :ivar closed: it left the stream (stopped, disconnected or failed).
    :ivar last_progress: when it last took bytes (or held none), by the server's clock.
    :ivar kernel_queued: what the kernel held for it at the last reading (per
        frame when watched, else the watchdog's); the policy adds it to the
        user-space queue when it estimates how long a jump to live would take.
    :ivar watched: its kernel share is read with every decision.
    :ivar _sent_frames: ``(link.written after the frame, timestamp, written at)``
        of the frames written and possibly still queued, oldest first.
    """

    __slots__ = (
        "_calm_checks",
        "_drained_seen",
        "_dropped_seen",
        "_gate",
        "_lane_serial",
        "_last_video_ts",
        "_queued",
        "_queued_ms",
        "_rate_at",
        "_rate_backlogged",
        "_rate_drained",
        "_sent_frames",
        "_server",
        "awaiting_keyframe",
        "bytes_sent",
        "catch_ups",
        "closed",
        "disconnect_reason",
        "drain_rate",
        "dropped",
        "format",
        "frames_sent",
        "group",
        "kernel_queued",
        "last_progress",
        "level",
        "link",
        "link_rate",
        "owner",
        "peak_queued",
        "stream",
        "watched",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError(
            "Viewer is final: the policy is applied in one place; add a guarded chain "
            "step in front of it instead (docs/architecture.md)"
        )

    def __init__(
        self,
        stream: Stream,
        owner: ViewerOwner,
        wire_format: WireFormat,
        server: ViewerServer,
        gate: AdmissionGate | None = None,
    ) -> None:
        self.stream = stream
        self.owner = owner
        self.link = owner.link
        # held frames are sent after deliver() returned: a failure then is ours too
        self.link.on_failure = self._fail
        self.format = wire_format
        self._server = server
        self._gate = gate
        self.awaiting_keyframe = True
        self.level = Level.NORMAL
        self.drain_rate = 0.0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.dropped: dict[str, int] = dict.fromkeys(DropReason, 0)
        self.catch_ups = 0
        self.peak_queued = 0
        self.disconnect_reason: str | None = None
        self.closed = False
        self.last_progress = server.seconds()
        self._drained_seen = 0
        self._rate_at: float | None = None
        self._rate_drained = 0
        self._rate_backlogged = False
        self._calm_checks = 0
        self._dropped_seen = 0
        self.link_rate = 0.0
        self._sent_frames: deque[tuple[int, int, float]] = deque(maxlen=MAX_SENT_FRAMES)
        self.kernel_queued = 0
        self.watched = False
        self._last_video_ts: int | None = None
        self._queued = 0
        self._queued_ms = 0
        #: the group of the stream it is in (set by ``Stream.subscribe``)
        self.group: ViewerGroup | None = None
        self._lane_serial = 0

    def __repr__(self) -> str:
        return (
            f"<Viewer {self.owner.peer} of {self.stream.app}/{self.stream.name} "
            f"sent={self.frames_sent} dropped={sum(self.dropped.values())}>"
        )

    # --- the hot path ----------------------------------------------------------------

    def deliver(self, frame: Frame, data: bytes) -> None:
        """Decide for *frame* (whose bytes in this viewer's format are *data*) and act.

        Never raises: a failure is this viewer's, and ends it
        (:meth:`ViewerOwner.viewer_failed`).
        """
        if self.closed:
            return
        try:
            link = self.link
            if link.lane is not None:
                link.lane.release(link)  # a frame outside the fan-out (a catch-up)
            queued = link.queued()
            now = self._server.seconds()
            # held frames leave within the read (or --merge-ms): no suspicion
            if queued != link.held_bytes or self.watched:
                if queued > self.peak_queued:
                    self.peak_queued = queued
                if link.has_kernel_view:
                    # suspect (bytes wait in user space, or watched): see the kernel's too
                    self.watched = True
                    self.kernel_queued = kernel = link.kernel_queued()
                    pending = queued + kernel
                    delay = self._queue_delay(pending, now)
                    if self.link_rate:
                        # what a frame written now waits: everything before it, at the
                        # link's rate (a burst written a moment ago is young but long)
                        delay = max(delay, int(pending * 1000 / self.link_rate))
                    self._queued_ms = delay
                else:
                    self._queued_ms = self._queue_delay(queued, now)
            else:
                self._queued_ms = 0
                if self._sent_frames:
                    # an unwatched viewer with nothing in user space: forget what was
                    # written (the watchdog times its kernel share without it)
                    self._sent_frames.clear()
            self._queued = queued
            size = len(data)
            gate = self._gate
            decision = (
                gate.admit_frame(self, frame, size)
                if gate is not None
                else self.policy_decision(frame, size)
            )
            if decision.verdict is not _SEND_VERDICT or self.awaiting_keyframe:
                self._carry_out(frame, data, decision, queued, now)
                return
            # the common case, _carry_out's SEND and _write inline (two calls fewer
            # per frame per viewer): sent to a viewer not waiting for a keyframe
            level = decision.level
            if level is not None:
                self.level = level
            # (a watched viewer cannot join: it is not asked until the watchdog clears it)
            if not queued and not self.watched and link.lane_socket is not None:
                group = self.group
                if group is not None and group.delivering and group.join(self, size):
                    return  # its fast lane sends the frame, and the ones after it
            link.write_frame(data, queued)
            self.frames_sent += 1
            self.bytes_sent += size
            self.stream.bytes_out += size
            if frame.kind not in NEVER_DROPPED:
                timestamp = frame.message.timestamp
                self._sent_frames.append((link.written, timestamp, now))
                if frame.is_video:
                    self._last_video_ts = timestamp
        except Exception as error:
            self._fail(error)

    # --- the fast lane (streamserver.media.lane) ----------------------------------------

    @property
    def server(self) -> ViewerServer:
        """The server whose policy and clock the viewer uses."""
        return self._server

    def lane_ready(self) -> bool:
        """Whether every frame within ``drop_low`` may go by the fast lane: the viewer
        is not watched, its level is ``NORMAL``, and its chain admits every frame
        as things stand (``admits_every_frame``, in a chain that declares it)."""
        if self.watched or self.level is not Level.NORMAL or self.awaiting_keyframe:
            return False
        gate = self._gate
        if gate is None:
            return True
        return bool(getattr(type(gate), "fast_lane_safe", False)) and gate.admits_every_frame(self)

    def joined_lane(self, serial: int) -> None:
        """It joined its group's fast lane, which had taken *serial* video frames."""
        self._lane_serial = serial
        self._sent_frames.clear()
        self._queued = 0
        self._queued_ms = 0

    def left_lane(self, serial: int, video_ts: int | None) -> None:
        """It left the lane, which had taken *serial* video frames, the last at *video_ts*."""
        if serial != self._lane_serial:
            self._last_video_ts = video_ts

    def spilled(self, frames: list[Frame], pieces: list[bytes], total: int) -> None:
        """The lane's last flush to it, *frames* as *pieces* (*total* bytes), was not all
        taken by the kernel: remember them for the queue delay, from now."""
        now = self._server.seconds()
        end = self.link.written - total
        sent_frames = self._sent_frames
        for frame, piece in zip(frames, pieces, strict=True):
            end += len(piece)
            if frame.kind not in NEVER_DROPPED:
                sent_frames.append((end, frame.message.timestamp, now))

    def reconsider(self) -> None:
        """Its chain's answer may change (a pause): decide its next frame through it,
        not in the fast lane."""
        link = self.link
        if link.lane is not None:
            link.lane.release(link)

    def fail(self, error: BaseException) -> None:
        """Delivering to it raised *error*: it leaves the stream; its owner is told."""
        self._fail(error)

    def policy_decision(self, frame: Frame, size: int) -> Decision:
        """The drop policy's decision for *frame* at the queue measured for it (pure).

        The default policy's answer for a viewer that keeps up (not waiting for
        a keyframe, 0 ms queued, queue and frame within ``drop_low``) is known
        without asking it: the fast path of ``streamserver.policy``.
        """
        policy = self._server.policy
        queued = self._queued
        if (
            not self.awaiting_keyframe
            and not self._queued_ms
            and type(policy) is DropFramesPolicy
            and queued + size <= policy.limits.drop_low
        ):
            return ADMIT if frame.kind in NEVER_DROPPED else SEND_NORMAL
        return policy.decide(
            self,
            frame.kind,
            frame.is_video,
            queued,
            self._queued_ms,
            size,
            self.stream.catch_up,
        )

    def _carry_out(
        self, frame: Frame, data: bytes, decision: Decision, queued: int, now: float
    ) -> None:
        verdict = decision.verdict
        if decision.level is not None:
            self.level = decision.level
        if self.awaiting_keyframe or verdict is not Verdict.SEND:
            # (a frame sent to a viewer not waiting leaves it not waiting: no call)
            self.awaiting_keyframe = awaiting_after(
                self.awaiting_keyframe, verdict, frame.kind, frame.is_video
            )
        if verdict is Verdict.SEND:
            self._write(frame, data, queued, now)
        elif verdict is Verdict.DROP:
            self.dropped[decision.reason or DropReason.INTER] += 1
        elif verdict is Verdict.CATCH_UP:
            self.catch_ups += 1
            self._jump_to_live(now)
        else:
            self.disconnect(decision.reason or "policy")

    def _write(self, frame: Frame, data: bytes, queued: int, now: float) -> None:
        # Viewer.deliver has this inline for its common case: keep the two alike
        self.link.write_frame(data, queued)
        size = len(data)
        self.frames_sent += 1
        self.bytes_sent += size
        self.stream.bytes_out += size
        if frame.kind not in NEVER_DROPPED:
            # cached headers keep their old timestamps: they say nothing of lag
            timestamp = frame.message.timestamp
            self._sent_frames.append((self.link.written, timestamp, now))
            if frame.is_video:
                self._last_video_ts = timestamp

    def _jump_to_live(self, now: float) -> None:
        """Send the cached GOP's video the viewer lacks, up to the current frame.

        If the viewer already has the GOP's keyframe and the frames after it up to
        the first one dropped, only the frames after those are sent, so its decoder
        sees an unbroken chain and no timestamp twice; otherwise the GOP's video
        from its keyframe.
        """
        gop = self.stream.gop
        last = self._last_video_ts
        if last is None or not gop or last < gop[0].message.timestamp:
            last = -1  # the viewer lacks this GOP's keyframe: send from it
        wire_format = self.format
        for cached in gop:
            if cached.is_video and cached.message.timestamp > last:
                self._write(cached, cached.serialized(wire_format), self.link.queued(), now)

    # --- measurements ------------------------------------------------------------------

    def _oldest_queued(self, pending: int) -> tuple[int, int, float] | None:
        """``(link.written after it, timestamp, written at)`` of the oldest pending frame.

        *pending* is what is not gone yet: the user-space queue, plus the
        kernel's unacknowledged bytes when they were read.  Non-media bytes
        (commands) among them are counted as media, so the oldest frame is found
        a little early: the estimate errs towards lag.
        """
        frames = self._sent_frames
        drained = self.link.written - pending
        while frames and frames[0][0] <= drained:
            frames.popleft()
        return frames[0] if frames else None

    def _queue_delay(self, pending: int, now: float) -> int:
        """How long the oldest pending frame has waited, in ms.

        This is the "milliseconds queued" the policy's time watermarks apply to:
        at steady state it equals the media time queued, and unlike media
        timestamps it is immune to a publisher's timestamp jumps and to the
        intended burst of a GOP sent to a new viewer.

        Held frames (``--merge-ms``, or a publisher read's) are not the
        viewer's delay: they have not reached its link, and a merge timer fired
        late by a busy reactor would otherwise age every watched viewer's frames
        alike, and make the policy drop for the server's lateness (round 1's
        loss at 2,000 viewers).  So a held oldest frame counts 0 ms, and a frame
        of the batch flushed last counts from that flush: the queue the policy
        would have seen had the frame been written at once.
        """
        oldest = self._oldest_queued(pending)
        if oldest is None:
            return 0
        end, _, at = oldest
        link = self.link
        if end > link.flushed_from:
            if end > link.written - link.held_bytes:
                return 0  # still held: everything before it is gone
            flushed_at = link.flushed_at
            if flushed_at > at:
                at = flushed_at
        return int((now - at) * 1000)

    def _pending(self) -> int:
        """User-space queue plus the kernel's unacknowledged bytes, read now."""
        link = self.link
        return link.queued() + link.kernel_queued()

    def lag_ms(self) -> int:
        """How far behind live the media this viewer is receiving now is, in ms.

        Counts what the kernel holds too: the oldest frame the peer has not
        acknowledged is what it is about to see.
        """
        live = self.stream.live_timestamp
        if live is None:
            return 0
        oldest = self._oldest_queued(self._pending())
        if oldest is not None:
            return max(0, live - oldest[1])
        if self.awaiting_keyframe and self._last_video_ts is not None:
            return max(0, live - self._last_video_ts)
        return 0

    def check_progress(self, now: float) -> bool:
        """Measure what the viewer took since the last check; disconnect it if it stalled.

        Called about once a second by the server's watchdog.  It reads what the
        kernel holds for the viewer, decides whether to watch it per frame
        (:data:`KERNEL_WATCH_MS`), and measures the drain rate from the bytes the
        peer acknowledged, smoothed over the checks.  Progress means the bytes
        handed to the kernel grew, or nothing is queued in user space.

        :returns: whether the viewer was disconnected.
        """
        if self.closed:
            return False
        link = self.link
        queued = link.queued()
        kernel = link.kernel_queued()
        self.kernel_queued = kernel
        # frames lost to congestion since the last check (a pause is no congestion)
        congestion_drops = self.frames_dropped - self.dropped[DropReason.PAUSED]
        dropping = congestion_drops != self._dropped_seen
        if not link.has_kernel_view:
            self.watched = False
        elif queued != link.held_bytes or dropping or self.link_rate:
            # bytes wait in user space (not just held frames, which leave within
            # --merge-ms), it lost frames since the last check, or its link has been
            # the limit lately: a slow viewer stays watched, or the
            # next keyframe would fill the kernel unseen
            self.watched = True
        elif self.watched:
            # watched frames are remembered: the oldest unacknowledged one says it
            self.watched = self._queue_delay(queued + kernel, now) > KERNEL_WATCH_MS
        else:
            # unwatched frames are not remembered: time the kernel share at the rate
            self.watched = kernel * 1000 > KERNEL_WATCH_MS * max(self.drain_rate, 1.0)
        acknowledged = link.written - queued - kernel
        # backlogged: losing frames, with more pending than the kernel's unsent
        # allowance, at both ends of the interval: its link, not the stream, set
        # the pace (a viewer that keeps up never drops, whatever it has in flight)
        backlogged = dropping and queued + kernel > BACKLOG_BYTES
        if self._rate_at is not None and now > self._rate_at:
            rate = (acknowledged - self._rate_drained) / (now - self._rate_at)
            self.drain_rate = rate if not self.drain_rate else (self.drain_rate + rate) / 2
            if backlogged and self._rate_backlogged and rate > 0:
                # kept between backlogs: a viewer that caught up sends little, and a
                # burst (a keyframe) then waits at the link's rate again
                self.link_rate = rate if not self.link_rate else (self.link_rate + rate) / 2
                self._calm_checks = 0
            elif not backlogged and not dropping:
                # no backlog and nothing dropped since the last check: it keeps up
                self._calm_checks += 1
                if self._calm_checks >= CALM_CHECKS:
                    self.link_rate = 0.0  # it has kept up for a while: its link is fine
            else:
                self._calm_checks = 0  # dropping frames is not keeping up
        if self.watched:
            self.reconsider()  # a watched viewer's frames are decided one by one
        self._dropped_seen = congestion_drops
        self._rate_at = now
        self._rate_drained = acknowledged
        self._rate_backlogged = backlogged
        drained = link.written - queued
        if queued == 0 or drained > self._drained_seen:
            self._drained_seen = drained
            self.last_progress = now
            return False
        if self._server.policy.stalled(queued, now - self.last_progress):
            self.disconnect(DisconnectReason.STALLED)
            return True
        return False

    # --- stream events and the end -------------------------------------------------

    def send_catch_up(self, frames: Iterable[Frame]) -> None:
        """Deliver cached metadata, sequence headers and the GOP, as the stream lists them."""
        wire_format = self.format
        for frame in frames:
            self.deliver(frame, frame.serialized(wire_format))

    def stream_published(self, stream: Stream) -> None:
        """The stream got a publisher: video restarts at a keyframe; tell the owner."""
        self.reconsider()
        self.awaiting_keyframe = True
        self._notify(self.owner.stream_published, stream)

    def stream_unpublished(self, stream: Stream) -> None:
        """The stream lost its publisher; tell the owner."""
        self._notify(self.owner.stream_unpublished, stream)

    def _notify(self, hook: Any, stream: Stream) -> None:
        if self.closed:
            return
        try:
            hook(stream)
        except Exception as error:
            self._fail(error)

    def disconnect(self, reason: str) -> None:
        """The policy's verdict: this viewer goes (the owner closes it, then it is counted).

        A viewer whose connection is closing already for another reason (a
        timeout, a kick) is not counted as disconnected by the policy.
        """
        if self.disconnect_reason is not None or self.closed:
            return
        if self.owner.disconnect_viewer(reason):
            self.disconnect_reason = reason
            self._server.viewer_disconnected(self, reason)

    def leave(self) -> None:
        """Stop playing: leave the stream (idempotent)."""
        if not self.closed:
            self.closed = True
            self.stream.unsubscribe(self)

    def _fail(self, error: BaseException) -> None:
        if self.closed:
            return
        self.leave()
        self.owner.viewer_failed(self, error)

    # --- for people ------------------------------------------------------------------

    def log_fields(self) -> dict[str, Any]:
        """The numbers a disconnect's log line gives: ``queued``, ``peak``, ``lag_ms``,
        ``sent`` and ``dropped`` (by reason)."""
        return {
            "queued": self.link.queued(),
            "peak": self.peak_queued,
            "lag_ms": self.lag_ms(),
            "sent": self.frames_sent,
            "dropped": {str(reason): count for reason, count in self.dropped.items()},
        }

    @property
    def frames_dropped(self) -> int:
        """Frames not sent, for any reason."""
        return sum(self.dropped.values())

    def stats(self, *, congested: bool = False, closing: bool = False) -> ViewerStats:
        """A snapshot of this viewer's numbers now.

        :param congested: the owner's transport paused it (its buffer is full).
        :param closing: the owner is closing.
        """
        if closing or self.closed or self.disconnect_reason is not None:
            state = ViewerState.CLOSING
        elif congested or self.level is not Level.NORMAL:
            state = ViewerState.CONGESTED
        elif self.awaiting_keyframe:
            state = ViewerState.AWAITING_KEYFRAME
        else:
            state = ViewerState.OK
        stream = self.stream
        return ViewerStats(
            stream=f"{stream.app}/{stream.name}",
            peer=self.owner.peer,
            protocol=self.owner.protocol_name,
            queued=self.link.queued(),
            kernel_queued=self.link.kernel_queued(),
            peak_queued=self.peak_queued,
            bytes_sent=self.bytes_sent,
            frames_sent=self.frames_sent,
            dropped={DropReason(reason): count for reason, count in self.dropped.items()},
            catch_ups=self.catch_ups,
            lag_ms=self.lag_ms(),
            level=self.level,
            state=state,
            watched=self.watched,
            link_rate=self.link_rate,
        )
