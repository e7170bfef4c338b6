"""BackpressureMixin: the drop-frames policy applied at the viewer's transport.

Hooks overridden: ``connectionMade`` (registers the protocol as its transport's
streaming producer; sets ``TCP_NOTSENT_LOWAT``/``SO_SNDBUF`` on real sockets),
``pauseProducing``/``resumeProducing`` (record congestion), ``admit_frame`` (asks
the factory's :class:`~streamserver.policy.IDropPolicy` about every media frame,
after the rest of the chain), ``session_closed``.

The queue the policy sees is the transport's user-space write buffer, read
through :func:`transport_queued_bytes` only.  Without ``TCP_NOTSENT_LOWAT`` the
kernel would take ~3 MB per socket before user space saw anything
(TWISTED-FACTS §4), and the policy would act 50 s late at 0.5 Mbit/s.

This is the check the story's bug silenced: when a mixin in front of this one
overrides ``admit_frame`` without calling ``super()``, nothing here runs and a
slow viewer's buffer grows without bound (``tests/protocol/test_backpressure.py``
rebuilds exactly that).
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger
from typing_extensions import override

from streamserver.policy import NEVER_DROPPED, Verdict, ViewerQueue
from streamserver.protocol.base import ProtocolRoot
from streamserver.streams import Frame, Stream

_log = Logger()

#: Linux's TCP_NOTSENT_LOWAT (include/uapi/linux/tcp.h); not in the socket module.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def transport_queued_bytes(transport: Any) -> int:
    """Bytes written to *transport* and not yet handed to the kernel.

    Reads the private buffer of ``twisted.internet.abstract.FileDescriptor``
    (``len(dataBuffer) - offset + _tempDataLen``), with defaults so that any
    transport without them (``StringTransport``) reads as empty.  Over TLS the
    wrapper forwards these names to the TCP transport, so this counts ciphertext.
    The one place that touches those names.
    """
    return (
        len(getattr(transport, "dataBuffer", b""))
        - getattr(transport, "offset", 0)
        + getattr(transport, "_tempDataLen", 0)
    )


def _socket_of(transport: Any) -> socket.socket | None:
    """The socket under *transport*, looking through protocol wrappers such as TLS.

    Over TLS ``getHandle()`` is the OpenSSL connection, not the socket; the TCP
    transport is the wrapper's own ``transport``.
    """
    for _ in range(4):  # TLS over TCP is two levels; a few more cost nothing
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            return handle
        inner = getattr(transport, "transport", None)
        if inner is None or inner is transport:
            return None
        transport = inner
    return None


def configure_socket(transport: Any, notsent_lowat: int, send_buffer: int) -> bool:
    """Set TCP_NOTSENT_LOWAT and SO_SNDBUF on *transport*'s socket, where it has one.

    :returns: whether a socket was configured.
    """
    try:
        handle = _socket_of(transport)
        if handle is None or handle.family == socket.AF_UNIX:
            return False
        if notsent_lowat:
            handle.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, notsent_lowat)
        if send_buffer:
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    except (OSError, AttributeError):
        return False
    return True


def plain_tcp_socket(transport: Any) -> socket.socket | None:
    """The socket under *transport* if it is a plain (not TLS) TCP connection."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    handle = getattr(transport, "socket", None)
    return handle if isinstance(handle, socket.socket) else None


class BackpressureMixin(ProtocolRoot):
    """Keeps each viewer's queue bounded with the factory's drop policy.

    :ivar congested: the transport paused us (its buffer passed 64 KiB) and has
        not resumed us yet.
    :ivar pauses: how many times the transport paused us.
    :ivar peak_queued: the most bytes seen queued in the transport.
    :ivar _queued_frames: ``(bytes_sent after the frame, timestamp)`` of the
        frames written and possibly still queued, oldest first.

    Bytes handed to the kernel so far are ``bytes_sent - queued``: ``bytes_sent``
    is counted by :meth:`SubscribeMixin.deliver_frame` for every write, whatever
    the chain decided, so stall detection keeps working even if the chain in
    front of this mixin is broken.
    """

    congested = False
    pauses = 0
    peak_queued = 0
    _queued_frames: deque[tuple[int, int, float]]
    _last_video_ts: int | None = None
    _eager_socket: socket.socket | None = None

    @override
    def connectionMade(self) -> None:
        self._queued_frames = deque()
        config = self.factory.config
        configure_socket(self.transport, config.notsent_lowat, config.send_buffer)
        self._eager_socket = plain_tcp_socket(self.transport) if config.eager_writes else None
        if getattr(self.transport, "producer", None) is None:
            self.transport.registerProducer(self, True)
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
        return transport_queued_bytes(self.transport)

    def _oldest_queued(self, queued: int) -> tuple[int, int, float] | None:
        """``(bytes_sent after it, timestamp, written at)`` of the oldest queued frame.

        Non-media bytes (commands) in the queue are counted as media, so the
        oldest frame is found a little early: the estimate errs towards lag.
        """
        frames = self._queued_frames
        drained = self.bytes_sent - queued
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
        self._queued_frames.append((self.bytes_sent + size, timestamp, now))
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
        """Write media *data*: straight to the socket when nothing is queued before it.

        Twisted's ``transport.write`` always buffers, then registers the socket
        for writing with epoll and unregisters it once flushed: two ``epoll_ctl``
        calls and a reactor turn per frame per viewer, which profiling showed to
        cost more than the rest of the fan-out.  When the transport holds nothing,
        sending at once keeps order and skips all of that (asyncio does the
        same); whatever the kernel does not take goes through the transport as
        before, so pause/resume and the policy's view of the queue are unchanged.
        """
        sock = self._eager_socket
        if sock is not None and not transport_queued_bytes(self.transport):
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the transport meets the same error and closes cleanly
            if sent == len(data):
                return
            data = data[sent:]
        self.transport.write(data)

    def check_stalled(self, now: float) -> bool:
        """Disconnect this viewer if it made no write progress for the stall timeout."""
        viewer = self.viewer
        if self.play_stream is None or self.closing:
            return False
        queued = self.queued_bytes()
        if self.factory.policy.stalled(viewer, queued, self.bytes_sent - queued, now):
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
