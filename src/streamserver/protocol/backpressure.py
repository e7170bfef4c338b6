"""BackpressureMixin: the drop-frames policy applied at the viewer's transport.

Hooks overridden: ``connectionMade`` (registers the protocol as its transport's
streaming producer; sets ``TCP_NOTSENT_LOWAT``/``SO_SNDBUF`` on real sockets),
``pauseProducing``/``resumeProducing`` (record congestion), ``admit_frame`` (asks
the factory's :class:`~streamserver.policy.IDropPolicy` about every media frame,
after the rest of the chain), ``session_closed``.

The queue the policy sees is the transport's user-space write buffer, read
through the connection's :class:`~streamserver.transport.TransportAdapter`.
Without ``TCP_NOTSENT_LOWAT`` the kernel would take ~3 MB per socket before user space saw anything
(TWISTED-FACTS §4), and the policy would act 50 s late at 0.5 Mbit/s.

This is the check the story's bug silenced: when a mixin in front of this one
overrides ``admit_frame`` without calling ``super()``, nothing here runs and a
slow viewer's buffer grows without bound (``tests/protocol/test_backpressure.py``
rebuilds exactly that).
"""

from __future__ import annotations

from collections import deque

from twisted.logger import Logger
from typing_extensions import override

from streamserver.media.stream import Frame, Stream
from streamserver.policy import NEVER_DROPPED, Verdict, ViewerQueue
from streamserver.protocol.base import ProtocolRoot

_log = Logger()


class BackpressureMixin(ProtocolRoot):
    """Keeps each viewer's queue bounded with the factory's drop policy.

    :ivar congested: the transport paused us (its buffer passed 64 KiB) and has
        not resumed us yet.
    :ivar pauses: how many times the transport paused us.
    :ivar peak_queued: the most bytes seen queued in the transport.
    :ivar _queued_frames: ``(link.written after the frame, timestamp, written at)`` of the
        frames written and possibly still queued, oldest first.

    Bytes handed to the kernel so far are ``link.written - queued``: the adapter
    counts every byte written, whatever the chain decided, so stall detection
    keeps working even if the chain in front of this mixin is broken.
    """

    congested = False
    pauses = 0
    peak_queued = 0
    _queued_frames: deque[tuple[int, int, float]]
    _last_video_ts: int | None = None

    @override
    def connectionMade(self) -> None:
        self._queued_frames = deque()
        config = self.factory.config
        self.link.configure_socket(config.notsent_lowat, config.send_buffer)
        if not config.eager_writes:
            self.link.disable_eager_writes()
        self.link.register_producer(self)
        super().connectionMade()

    @override
    def pauseProducing(self) -> None:
        if not self.congested:
            self.congested = True
            self.pauses += 1
        super().pauseProducing()

    @override
    def resumeProducing(self) -> None:
        self.congested = False
        super().resumeProducing()

    # --- measurements -----------------------------------------------------------

    def queued_bytes(self) -> int:
        """Bytes queued in our transport now."""
        return self.link.queued()

    def _oldest_queued(self, queued: int) -> tuple[int, int, float] | None:
        """``(link.written after it, timestamp, written at)`` of the oldest queued frame.

        Non-media bytes (commands) in the queue are counted as media, so the
        oldest frame is found a little early: the estimate errs towards lag.
        """
        frames = self._queued_frames
        drained = self.link.written - queued
        while frames and frames[0][0] <= drained:
            frames.popleft()
        return frames[0] if frames else None

    def queue_delay_ms(self, queued: int, now: float) -> int:
        """How long the oldest queued frame has waited in the transport, in ms.

        This is the "milliseconds queued" the policy's time watermarks apply to:
        at steady state it equals the media time queued, and unlike media
        timestamps it is immune to a publisher's timestamp jumps and to the
        intended burst of a GOP sent to a new viewer.
        """
        oldest = self._oldest_queued(queued)
        return int((now - oldest[2]) * 1000) if oldest is not None else 0

    def lag_ms(self) -> int:
        """How far behind live the media this viewer is receiving now is, in ms."""
        stream = self.play_stream
        if stream is None or stream.live_timestamp is None:
            return 0
        oldest = self._oldest_queued(self.queued_bytes())
        if oldest is not None:
            return max(0, stream.live_timestamp - oldest[1])
        if self.viewer.awaiting_keyframe and self._last_video_ts is not None:
            return max(0, stream.live_timestamp - self._last_video_ts)
        return 0

    # --- the decision -------------------------------------------------------------

    @override
    def admit_frame(self, frame: Frame, size: int) -> bool:
        admitted = super().admit_frame(frame, size)
        viewer: ViewerQueue = self.viewer
        queued = self.queued_bytes()
        if queued > self.peak_queued:
            self.peak_queued = queued
        now = self.factory.seconds()
        queued_ms = self.queue_delay_ms(queued, now)
        stream = self.play_stream
        verdict = self.factory.policy.decide(
            viewer,
            frame.kind,
            frame.is_video,
            queued,
            queued_ms,
            size,
            stream.catch_up if stream is not None else None,
        )
        if verdict is Verdict.SEND:
            if admitted:
                self._record_written(frame, size, now)
            return admitted
        if verdict is Verdict.CATCH_UP and admitted and stream is not None:
            self._jump_to_live(stream)
        elif verdict is Verdict.DISCONNECT:
            self.disconnect_viewer(viewer.disconnect_reason or "policy")
        return False

    def _record_written(self, frame: Frame, size: int, now: float) -> None:
        if frame.kind in NEVER_DROPPED:
            # cached headers keep their old timestamps: they say nothing of lag
            return
        timestamp = frame.message.timestamp
        self._queued_frames.append((self.link.written + size, timestamp, now))
        if frame.is_video:
            self._last_video_ts = timestamp

    def _jump_to_live(self, stream: Stream) -> None:
        """Send the cached GOP's video the viewer lacks, up to the current frame.

        If the viewer already has the GOP's keyframe and the frames after it up to
        the first one dropped, only the frames after those are sent, so its decoder
        sees an unbroken chain and no timestamp twice; otherwise the GOP's video
        from its keyframe.
        """
        chunk_size, stream_id = self.fanout_key
        now = self.factory.seconds()
        gop = stream.gop
        last = self._last_video_ts
        if last is None or not gop or last < gop[0].message.timestamp:
            last = -1  # the viewer lacks this GOP's keyframe: send from it
        for cached in gop:
            if cached.is_video and cached.message.timestamp > last:
                data = cached.wire(chunk_size, stream_id)
                self._record_written(cached, len(data), now)
                self.write_media(data)
                self.bytes_sent += len(data)
                self.frames_sent += 1
                self.viewer.frames_sent += 1

    def write_media(self, data: bytes) -> None:
        """Write media *data* through the adapter (eagerly if nothing is queued)."""
        self.link.write_media(data, self.link.queued())

    def check_stalled(self, now: float) -> bool:
        """Disconnect this viewer if it made no write progress for the stall timeout."""
        viewer = self.viewer
        if self.play_stream is None or self.closing:
            return False
        queued = self.queued_bytes()
        if self.factory.policy.stalled(viewer, queued, self.link.written - queued, now):
            self.disconnect_viewer(viewer.disconnect_reason or "stalled")
            return True
        return False

    def disconnect_viewer(self, reason: str) -> None:
        """Drop this viewer, logging why with its numbers."""
        if self.closing:
            return
        viewer: ViewerQueue = self.viewer
        viewer.disconnect_reason = reason
        stream = self.play_stream
        _log.warn(
            "disconnecting viewer {peer} of {stream}: {reason} (queued {queued} bytes, "
            "peak {peak}, lag {lag_ms} ms, sent {sent}, dropped {dropped})",
            peer=self.peer,
            stream=f"{stream.app}/{stream.name}" if stream else "-",
            reason=reason,
            queued=self.queued_bytes(),
            peak=self.peak_queued,
            lag_ms=self.lag_ms(),
            sent=viewer.frames_sent,
            dropped=dict(viewer.dropped),
        )
        self.factory.viewer_disconnected(self, reason)
        self.drop_connection()
