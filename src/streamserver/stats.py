"""Typed snapshots of what the server holds, for people and tools.

The console (and whatever reports on the server: an API, metrics) reads these
instead of probing objects with ``getattr``: each is a frozen copy of one
object's numbers at one moment, produced by the object that owns them --
:meth:`streamserver.media.viewer.Viewer.stats`,
:meth:`streamserver.media.stream.Stream.stats` and the RTMP protocol's
``stats()`` (:class:`ConnectionStats`).

Plain data, no Twisted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from streamserver.codec.mediainfo import MediaInfo
from streamserver.policy import DropReason, Level

#: The wire protocols a connection or viewer reports (``ConnectionStats.protocol``):
#: counts by protocol list each, at 0 when nobody uses it.
WIRE_PROTOCOLS = ("rtmp", "http-flv", "ws-flv")


class ViewerState(StrEnum):
    """How a viewer is doing, in one word (the console's ``state`` column)."""

    #: it gets every frame
    OK = "ok"
    #: its transport paused us (the write buffer passed 64 KiB), or the policy drops
    CONGESTED = "congested"
    #: its video waits for a keyframe (a new viewer, or after a drop)
    AWAITING_KEYFRAME = "awaiting-keyframe"
    #: it is being disconnected
    CLOSING = "closing"


@dataclass(frozen=True, slots=True)
class ViewerStats:
    """One viewer (one play) at one moment.

    :ivar stream: the stream played, ``app/name``.
    :ivar peer: the viewer's address.
    :ivar protocol: the wire protocol it plays over (``rtmp``, ``http-flv``, ``ws-flv``).
    :ivar queued: bytes in its transport's user-space queue now.
    :ivar kernel_queued: bytes the kernel holds for it unacknowledged now (0 unknown).
    :ivar peak_queued: the most bytes seen queued in user space.
    :ivar bytes_sent: bytes of frames written to it.
    :ivar frames_sent: frames written to it.
    :ivar dropped: frames not sent, by reason.
    :ivar catch_ups: jumps to live.
    :ivar lag_ms: how far behind live what it receives now is.
    :ivar level: the congestion level of the last decision.
    :ivar state: the one-word summary.
    :ivar watched: its kernel share is read with every decision (suspected slow).
    :ivar link_rate: bytes per second its link carried while backlogged (0 unknown).
    """

    stream: str
    peer: str
    protocol: str
    queued: int
    kernel_queued: int
    peak_queued: int
    bytes_sent: int
    frames_sent: int
    dropped: Mapping[DropReason, int]
    catch_ups: int
    lag_ms: int
    level: Level
    state: ViewerState
    watched: bool
    link_rate: float


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """One connection at one moment.

    :ivar conn_id: the connection's id (what ``kick()`` takes).
    :ivar peer: its address.
    :ivar protocol: its wire protocol (``rtmp``, ``http-flv``, ``ws-flv``).
    :ivar role: ``play app/name``, ``publish app/name[,app/name]``, ``connected app``
        or ``handshake``.
    :ivar queued: bytes in its transport's user-space queue now.
    :ivar bytes_sent: bytes of streams (media and chat) written to it.
    :ivar viewer: its play, if it plays.
    :ivar publishing: the streams it publishes, ``app/name``.
    """

    conn_id: int
    peer: str
    protocol: str
    role: str
    queued: int
    bytes_sent: int
    viewer: ViewerStats | None
    publishing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream at one moment.

    :ivar app: its application.
    :ivar name: its name.
    :ivar publisher: the publisher's address, or ``None``.
    :ivar viewers: how many viewers play it.
    :ivar viewers_by_protocol: how many play it over each wire protocol (``rtmp``,
        ``http-flv``, ``ws-flv``; protocols without a viewer are absent).
    :ivar bytes_in: payload bytes received from publishers.
    :ivar bytes_out: bytes written to viewers.
    :ivar bitrate_in: bits per second received over the last few seconds
        (``None`` until measured).
    :ivar published_at: when the current publisher started, by the server's clock.
    :ivar gop_frames: frames in its GOP cache.
    :ivar gop_bytes: their payload bytes.
    :ivar chat_participants: seats in its chat room.
    :ivar chat_messages: messages in the room's history.
    :ivar chat_bytes: their encoded size.
    :ivar chat_posted: messages posted to the room since the stream was created.
    :ivar dropped: frames not sent to its viewers, by reason, summed over every
        viewer it has had (those gone included, so each count only grows).
    :ivar media: what it carries (codecs, size, rates), from its cached headers.
    """

    app: str
    name: str
    publisher: str | None
    viewers: int
    viewers_by_protocol: Mapping[str, int]
    bytes_in: int
    bytes_out: int
    bitrate_in: float | None
    published_at: float | None
    gop_frames: int
    gop_bytes: int
    chat_participants: int
    chat_messages: int
    chat_bytes: int
    chat_posted: int
    dropped: Mapping[DropReason, int]
    media: MediaInfo

    @property
    def key(self) -> str:
        """``app/name``."""
        return f"{self.app}/{self.name}"
