"""Streams and their registries: publisher, subscribers, cached headers, GOP cache.

Plain Python, no Twisted: a :class:`Stream` is what one ``rtmp://host/APP/NAME``
names.  It holds the publisher (at most one), the viewers
(:class:`~streamserver.media.viewer.Viewer`) grouped by wire format, the cached
``onMetaData`` and audio/video sequence headers, and a GOP cache bounded by
bytes so that a new viewer starts at once at the last keyframe.

Fan-out (:meth:`Stream.broadcast`): each media message is serialized once per
group of viewers sharing a wire format (for RTMP: outgoing chunk size and
message stream id), and the same ``bytes`` object is handed to each viewer of
that group, which decides for itself (its queue, the drop policy) and never
raises: a failing viewer leaves the stream, the loop goes on.

Timestamps are passed through unchanged for a stream's first publisher.  When a
publisher returns after leaving, its timestamps are shifted to continue where
the last session ended, so viewers that stayed connected never see time run
backwards; the shift is fixed by the session's first media frame (its headers
before it follow on), so headers stamped long before the media -- a relay's
catch-up of cached headers -- do not move the media hours ahead.

Each stream has a :class:`~streamserver.media.rooms.ChatRoom` (``Stream.chat``).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from streamserver.codec.flv import FrameKind, classify
from streamserver.codec.mediainfo import MediaInfo, media_info, metadata_title
from streamserver.codec.messages import Message, MessageType
from streamserver.errors import BadNameError
from streamserver.media.lane import ViewerGroup
from streamserver.media.rooms import (
    DEFAULT_CHAT_HISTORY,
    DEFAULT_CHAT_HISTORY_BYTES,
    ChatMessage,
    ChatParticipant,
    ChatRoom,
)
from streamserver.policy import DropReason
from streamserver.stats import StreamStats

if TYPE_CHECKING:
    from streamserver.media.viewer import Viewer, WireFormat


class Publisher(Protocol):
    """What a :class:`Stream` needs of its publisher: a name for people."""

    @property
    def peer(self) -> str:
        """The publisher's address."""
        ...


class Consumer(Protocol):
    """Something fed every frame of a stream, never dropped: not a network viewer.

    An HLS segmenter, a recorder, a push relay: it keeps everything (or bounds
    itself), so the drop policy does not apply and there is no queue to measure.
    It must not block: a consumer with slow work to do (a disk) queues it.

    A consumer that raises is detached from the stream at once and told once
    (:meth:`consumer_failed`); the stream, its publisher and its viewers go on.
    """

    def consume(self, frame: Frame) -> None:
        """One frame as relayed (metadata, sequence headers and media alike)."""
        ...

    def stream_published(self, stream: Stream) -> None:
        """The stream got a publisher (a new session: new headers follow)."""
        ...

    def stream_unpublished(self, stream: Stream) -> None:
        """The stream lost its publisher."""
        ...

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        """A call above raised *error*; the consumer has been detached already."""
        ...


class ChatRelay(Protocol):
    """Where a pulled stream's chat goes upstream (``relay/pull.py``; docs/chat.md)."""

    def chat_posted(self, message: ChatMessage) -> None:
        """A local participant posted *message* in the room."""
        ...


#: AMF0 encoding of the string "@setDataFrame": marker 0x02, u16 length 13, bytes.
_SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"

#: Gap inserted between the last timestamp of one publishing session and the
#: first of the next, so a returning publisher's media follows on (one frame at
#: 25 fps).
_REPUBLISH_GAP_MS = 40

#: Default GOP cache bound.  A 2 s GOP of a 6 Mbit/s stream is 1.5 MB; 4 MiB
#: keeps instant start for anything an encoder sends at 1080p with room to spare.
DEFAULT_GOP_CACHE_BYTES = 4 * 1024 * 1024

#: Seconds of input the measured bit rate averages over.  An encoder's bytes come
#: in bursts (a keyframe is many inter frames' worth, every 1-4 s): 5 s holds at
#: least one whole GOP of common encoders, so the rate does not swing with them.
BITRATE_WINDOW = 5.0

#: Samples kept at most, whatever the watchdog's interval (a bound, not a tuning).
_MAX_RATE_SAMPLES = 64

#: GOP frames looked through for an audio frame, for an audio codec without a
#: sequence header (MP3): audio comes within the first few frames after a keyframe.
_AUDIO_PROBE_FRAMES = 16

#: What a publisher sends before its media: a returning session's offset is fixed
#: by its first frame that is none of these.
_SESSION_HEADERS = frozenset(
    {FrameKind.METADATA, FrameKind.VIDEO_SEQUENCE_HEADER, FrameKind.AUDIO_SEQUENCE_HEADER}
)

#: Frames kept in the GOP cache after its keyframe.
_GOP_KINDS = frozenset({FrameKind.INTER, FrameKind.DISPOSABLE, FrameKind.AUDIO})


class Frame:
    """One published message as relayed: its kind, and its bytes in the last format asked for.

    The message's stream id is 0; a wire format puts its own in the bytes.  The
    bytes of the last :class:`~streamserver.media.viewer.WireFormat` asked for are
    kept, so a frame held in the GOP cache is serialized once for the common case
    of one group of viewers.

    :ivar kind: the :class:`~streamserver.codec.flv.FrameKind` of the message.
    :ivar message: the message with the stream's (rebased) timestamp.
    :ivar is_video: whether the message is a video message.
    """

    __slots__ = ("_wire", "_wire_format", "is_video", "kind", "message")

    def __init__(self, kind: FrameKind, message: Message) -> None:
        self.kind = kind
        self.message = message
        self.is_video = message.type_id == MessageType.VIDEO
        self._wire_format: WireFormat | None = None
        self._wire = b""

    @property
    def timestamp(self) -> int:
        """The frame's timestamp in milliseconds."""
        return self.message.timestamp

    def serialized(self, wire_format: WireFormat) -> bytes:
        """The frame's bytes in *wire_format* (encoded once per format in a row)."""
        if wire_format is not self._wire_format and wire_format != self._wire_format:
            self._wire = wire_format.encode(self)
            self._wire_format = wire_format
        return self._wire


def metadata_message(type_id: int, payload: bytes) -> bytes | None:
    """Return the ``onMetaData`` payload of a data message, or ``None``.

    ``@setDataFrame onMetaData {...}`` from a publisher is cached and replayed as
    ``onMetaData {...}``: strip the leading ``@setDataFrame`` string.
    """
    if type_id == MessageType.DATA_AMF3 and payload[:1] == b"\x00":
        payload = payload[1:]
    if payload.startswith(_SET_DATA_FRAME):
        return payload[len(_SET_DATA_FRAME) :]
    return payload


class ChatBridge(Protocol):
    """Carries chat rooms elsewhere (a cluster: :mod:`streamserver.cluster.chat`).

    Set on a registry, it is told of each stream created and forgotten, and it
    gets every message posted instead of the room assigning its id.
    """

    def send_chat(
        self, stream: Stream, nick: str, text: str, time_ms: int, sender: ChatParticipant | None
    ) -> None:
        """Post *text* from *nick* to *stream*'s room everywhere (back via ``receive_chat``,
        not to *sender* when given)."""
        ...

    def room_opened(self, stream: Stream) -> None:
        """*stream* (and its room) was created here."""
        ...

    def room_closed(self, stream: Stream) -> None:
        """*stream* was forgotten here."""
        ...


class Stream:
    """One live stream: publisher, subscribers, cached headers and GOP.

    :ivar app: the application name (first path segment of the URL).
    :ivar name: the stream name (without query string).
    :ivar publisher: the publishing connection, or ``None``.
    :ivar metadata: the cached ``onMetaData`` frame of the current session.
    :ivar video_header: the cached video sequence header frame.
    :ivar audio_header: the cached audio sequence header frame.
    :ivar gop: frames since the last keyframe (the first is that keyframe).
    :ivar gop_bytes: payload bytes held in :attr:`gop`.
    :ivar frames_in: media and data messages received from publishers.
    :ivar bytes_in: payload bytes received from publishers.
    :ivar bytes_out: bytes written to viewers (counted by each viewer's writes).
    :ivar bitrate_in: bits per second received from publishers over the last
        :data:`BITRATE_WINDOW` seconds (:meth:`sample_rate`), ``None`` until two
        samples exist.
    :ivar chat: the stream's :class:`ChatRoom`.
    :ivar chat_relay: where messages posted here go upstream too (a pull sets it).
    """

    def __init__(
        self,
        app: str,
        name: str,
        *,
        gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        chat_history: int = DEFAULT_CHAT_HISTORY,
        chat_history_bytes: int = DEFAULT_CHAT_HISTORY_BYTES,
    ) -> None:
        self.app = app
        self.name = name
        self.chat = ChatRoom(history_count=chat_history, history_bytes=chat_history_bytes)
        #: Where posted chat goes instead of this room alone (a cluster), or ``None``.
        self.chat_bridge: ChatBridge | None = None
        self.gop_cache_bytes = gop_cache_bytes
        self._clock = clock
        self.publisher: Publisher | None = None
        self._groups: dict[WireFormat, ViewerGroup] = {}
        self._consumers: list[Consumer] = []
        self.metadata: Frame | None = None
        self.video_header: Frame | None = None
        self.audio_header: Frame | None = None
        self.gop: list[Frame] = []
        self.gop_bytes = 0
        self.gop_video_bytes = 0
        self.catch_up: tuple[int, int] | None = None
        self._gop_open = False
        self._last_timestamp: int | None = None
        self._offset = 0
        self._session_started = False
        self.frames_in = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.created_at = clock()
        self.published_at: float | None = None
        self.bitrate_in: float | None = None
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=_MAX_RATE_SAMPLES)
        self._departed_drops: Counter[str] = Counter()
        self._media: tuple[tuple[Frame | None, ...], MediaInfo] | None = None
        self.chat_relay: ChatRelay | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.app}/{self.name} viewers={self.subscriber_count}>"

    # --- membership ----------------------------------------------------------

    @property
    def subscribers(self) -> list[Viewer]:
        """Every subscriber, across groups."""
        return [sub for group in self._groups.values() for sub in group]

    @property
    def subscriber_count(self) -> int:
        """How many viewers are subscribed."""
        return sum(len(group) for group in self._groups.values())

    @property
    def group_count(self) -> int:
        """How many distinct serializations each frame needs."""
        return len(self._groups)

    @property
    def consumers(self) -> list[Consumer]:
        """The consumers attached (:meth:`attach`)."""
        return list(self._consumers)

    @property
    def is_idle(self) -> bool:
        """Whether nobody publishes, plays, consumes or sits in the stream's chat room."""
        return (
            self.publisher is None
            and not self._groups
            and not self._consumers
            and not self.chat.participants
        )

    def publish(self, publisher: Publisher) -> None:
        """Make *publisher* the stream's publisher and tell the viewers.

        :raises BadNameError: someone is already publishing this name.
        """
        if self.publisher is not None:
            raise BadNameError(f"{self.app}/{self.name} is already being published")
        self.publisher = publisher
        self.published_at = self._clock()
        self._session_started = False
        for subscriber in self.subscribers:
            subscriber.stream_published(self)
        for consumer in tuple(self._consumers):
            self._feed(consumer, consumer.stream_published, self)

    def unpublish(self, publisher: Publisher) -> None:
        """End *publisher*'s session: drop cached state and tell the viewers."""
        if self.publisher is not publisher:
            return
        self.publisher = None
        self.published_at = None
        self.metadata = self.video_header = self.audio_header = None
        self._clear_gop()
        for subscriber in self.subscribers:
            subscriber.stream_unpublished(self)
        for consumer in tuple(self._consumers):
            self._feed(consumer, consumer.stream_unpublished, self)

    def subscribe(self, subscriber: Viewer) -> list[Frame]:
        """Add *subscriber*; return the frames that bring it up to live.

        Those are the cached metadata, the sequence headers and the GOP cache,
        whose first frame is a keyframe.
        """
        group = self._groups.get(subscriber.format)
        if group is None:
            group = self._groups[subscriber.format] = ViewerGroup(self, subscriber.format)
        group.add(subscriber)
        subscriber.group = group
        return self.catch_up_frames()

    def catch_up_frames(self) -> list[Frame]:
        """Cached metadata and sequence headers, then the GOP from its keyframe."""
        frames = [f for f in (self.metadata, self.video_header, self.audio_header) if f]
        frames.extend(self.gop)
        return frames

    def unsubscribe(self, subscriber: Viewer) -> None:
        """Remove *subscriber* (no error if it is not subscribed).

        Its dropped frames stay counted in the stream's :meth:`stats`.
        """
        group = self._groups.get(subscriber.format)
        if group is None or subscriber not in group:
            return
        group.remove(subscriber)
        self._departed_drops.update(subscriber.dropped)
        if not group:
            del self._groups[subscriber.format]

    def attach(self, consumer: Consumer) -> list[Frame]:
        """Feed *consumer* every frame from now on; return the frames that bring it up to live.

        Those are :meth:`catch_up_frames` (metadata, sequence headers, the GOP from
        its keyframe), for the caller to hand to it while the stream is published.
        Attaching twice is attaching once.
        """
        if consumer not in self._consumers:
            self._consumers.append(consumer)
        return self.catch_up_frames()

    def detach(self, consumer: Consumer) -> None:
        """Stop feeding *consumer* (no error if it is not attached)."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    def _feed(self, consumer: Consumer, call: Callable[[Any], None], value: Any) -> None:
        """``call(value)`` for *consumer*; a failure detaches it and is its own."""
        try:
            call(value)
        except Exception as error:
            self.detach(consumer)
            # a bug in the consumer's own failure handling must not reach the publisher either
            with contextlib.suppress(Exception):
                consumer.consumer_failed(self, error)

    # --- media -----------------------------------------------------------------

    def _rebase(self, timestamp: int, kind: FrameKind) -> int:
        if not self._session_started:
            last = self._last_timestamp
            if last is None:
                self._session_started = True
                self._offset = 0
            elif kind in _SESSION_HEADERS:
                # Headers before a returning session's first media follow on without
                # fixing the offset: a relay's catch-up sends cached headers with the
                # stamps of their time (0), hours before the GOP that follows them.
                return (last + _REPUBLISH_GAP_MS) & 0xFFFFFFFF
            else:
                self._session_started = True
                self._offset = last + _REPUBLISH_GAP_MS - timestamp
        out = (timestamp + self._offset) & 0xFFFFFFFF
        self._last_timestamp = out
        return out

    @property
    def live_timestamp(self) -> int | None:
        """The timestamp of the newest frame relayed (the live edge)."""
        return self._last_timestamp

    def _clear_gop(self) -> None:
        self.gop = []
        self.gop_bytes = self.gop_video_bytes = 0
        self.catch_up = None
        self._gop_open = False

    def _cache(self, frame: Frame) -> None:
        kind = frame.kind
        if kind is FrameKind.METADATA:
            self.metadata = frame
        elif kind is FrameKind.VIDEO_SEQUENCE_HEADER:
            self.video_header = frame
            self._clear_gop()
        elif kind is FrameKind.AUDIO_SEQUENCE_HEADER:
            self.audio_header = frame
        elif kind is FrameKind.KEYFRAME:
            size = len(frame.message.payload)
            if size > self.gop_cache_bytes:
                self._clear_gop()
            else:
                self.gop = [frame]
                self.gop_bytes = self.gop_video_bytes = size
                self._gop_open = True
        elif self._gop_open and kind in _GOP_KINDS:
            size = len(frame.message.payload)
            if self.gop_bytes + size > self.gop_cache_bytes:
                # Over budget: drop the whole GOP; the next keyframe starts a new one.
                self._clear_gop()
            else:
                self.gop.append(frame)
                self.gop_bytes += size
                if kind is not FrameKind.AUDIO:
                    self.gop_video_bytes += size
        if self._gop_open:
            self.catch_up = (
                frame.message.timestamp - self.gop[0].message.timestamp,
                self.gop_video_bytes,
            )

    def frame_from_message(self, message: Message) -> Frame:
        """Classify a publisher's message and rebase its timestamp."""
        type_id = message.type_id
        payload = message.payload
        kind = classify(type_id, payload)
        if kind is FrameKind.METADATA:
            payload = metadata_message(type_id, payload) or payload
            type_id = MessageType.DATA_AMF0
        elif type_id == MessageType.DATA_AMF3:
            payload = payload[1:] if payload[:1] == b"\x00" else payload
            type_id = MessageType.DATA_AMF0
        timestamp = self._rebase(message.timestamp, kind)
        return Frame(kind, Message(type_id, 0, timestamp, payload))

    def sample_rate(self, now: float) -> None:
        """Measure :attr:`bitrate_in` from the bytes received since the window's start.

        Called by the server's watchdog (about once a second), never per frame:
        the hot path only adds to :attr:`bytes_in`.  The rate is the bytes received
        between the oldest sample within :data:`BITRATE_WINDOW` seconds and now.
        """
        samples = self._rate_samples
        samples.append((now, self.bytes_in))
        while len(samples) > 2 and now - samples[1][0] >= BITRATE_WINDOW:
            samples.popleft()
        start, count = samples[0]
        if now > start:
            self.bitrate_in = max(0, self.bytes_in - count) * 8 / (now - start)

    @property
    def title(self) -> str | None:
        """The ``title`` of the publisher's ``onMetaData``, if it set one."""
        metadata = self.metadata
        return metadata_title(metadata.message.payload) if metadata is not None else None

    def media_info(self) -> MediaInfo:
        """What the stream carries: codecs, picture size, frame rate, audio rate.

        Read from the cached metadata and sequence headers (and, for codecs
        without a sequence header, the GOP's keyframe and first audio frame);
        computed again only when one of them changed.
        """
        gop = self.gop
        key = (self.metadata, self.video_header, self.audio_header, gop[0] if gop else None)
        cached = self._media
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        audio_frame = None
        if self.audio_header is None:
            audio_frame = next(
                (f for f in gop[:_AUDIO_PROBE_FRAMES] if f.kind is FrameKind.AUDIO), None
            )
        info = media_info(
            metadata=self.metadata.message.payload if self.metadata else None,
            video_header=self.video_header.message.payload if self.video_header else None,
            audio_header=self.audio_header.message.payload if self.audio_header else None,
            video_frame=gop[0].message.payload if gop else None,
            audio_frame=audio_frame.message.payload if audio_frame else None,
        )
        self._media = (key, info)
        return info

    def stats(self) -> StreamStats:
        """A snapshot of this stream's numbers now."""
        chat = self.chat
        publisher = self.publisher
        subscribers = self.subscribers
        protocols = Counter(viewer.owner.protocol_name for viewer in subscribers)
        dropped = Counter(self._departed_drops)
        for viewer in subscribers:
            dropped.update(viewer.dropped)
        return StreamStats(
            app=self.app,
            name=self.name,
            publisher=publisher.peer if publisher is not None else None,
            viewers=len(subscribers),
            viewers_by_protocol=dict(protocols),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            bitrate_in=self.bitrate_in,
            published_at=self.published_at,
            gop_frames=len(self.gop),
            gop_bytes=self.gop_bytes,
            chat_participants=len(chat.participants),
            chat_messages=len(chat.history),
            chat_bytes=chat.history_bytes,
            chat_posted=chat.messages_posted,
            dropped={reason: dropped[reason] for reason in DropReason},
            media=self.media_info(),
        )

    def post_chat(
        self, nick: str, text: str, time_ms: int, sender: ChatParticipant | None = None
    ) -> ChatMessage | None:
        """Post a chat message to the room and send it to every participant.

        Its RTMP timestamp is the stream's live edge, so players that treat data
        messages as timed see it in line with the media they are receiving.  With a
        :attr:`chat_relay` (a pulled stream) it is sent upstream too.

        With a :attr:`chat_bridge` (a cluster) the message goes to it instead, never
        upstream over a pull (the cluster's Redis is the one path between nodes), and
        ``None`` is returned: it comes back with its id through :meth:`receive_chat`,
        on every node in the same order, except to *sender* (a participant that is
        not shown its own messages: IRC).
        """
        if self.chat_bridge is not None:
            self.chat_bridge.send_chat(self, nick, text, time_ms, sender)
            return None
        message = self.relay_chat(nick, text, time_ms)
        if self.chat_relay is not None:
            self.chat_relay.chat_posted(message)
        return message

    def relay_chat(self, nick: str, text: str, time_ms: int) -> ChatMessage:
        """Post a message to the room and its participants, never upstream (what a
        pull posts of the origin's room)."""
        message = self.chat.post(nick, text, time_ms)
        self.chat.broadcast(message, self.live_timestamp or 0)
        return message

    def receive_chat(self, message: ChatMessage, exclude: ChatParticipant | None = None) -> bool:
        """A message of the room from :attr:`chat_bridge`, its id given there: record
        and send it, not to *exclude* (``False``: a repeat, dropped)."""
        if not self.chat.accept(message):
            return False
        self.chat.broadcast(message, self.live_timestamp or 0, exclude)
        return True

    def merge_chat_history(self, messages: list[ChatMessage]) -> None:
        """The room's shared history from :attr:`chat_bridge` (oldest first): kept before
        the room's own, and sent to the participants who joined before it came."""
        for message in self.chat.merge_history(messages):
            self.chat.broadcast(message, self.live_timestamp or 0)

    def broadcast(self, message: Message) -> Frame:
        """Relay one message from the publisher to every subscriber.

        The message is serialized once per group and the same bytes object is
        handed to each subscriber of the group (:class:`ViewerGroup`, whose fast
        lane sends it to the viewers known to take it).
        """
        frame = self.frame_from_message(message)
        self.frames_in += 1
        self.bytes_in += len(message.payload)
        self._cache(frame)
        for group in list(self._groups.values()):
            group.deliver(frame, frame.serialized(group.format))
        if self._consumers:
            for consumer in tuple(self._consumers):
                self._feed(consumer, consumer.consume, frame)
        return frame


class StreamRegistry:
    """The streams of one application, by name, created on first use.

    :ivar app: the application name.
    """

    def __init__(
        self,
        app: str,
        *,
        gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        chat_history: int = DEFAULT_CHAT_HISTORY,
        chat_history_bytes: int = DEFAULT_CHAT_HISTORY_BYTES,
        chat_bridge: ChatBridge | None = None,
    ) -> None:
        self.app = app
        self.chat_bridge = chat_bridge
        self.gop_cache_bytes = gop_cache_bytes
        self.chat_history = chat_history
        self.chat_history_bytes = chat_history_bytes
        self._clock = clock
        self._streams: dict[str, Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def get(self, name: str) -> Stream | None:
        """The stream called *name*, or ``None``."""
        return self._streams.get(name)

    def get_or_create(self, name: str) -> Stream:
        """The stream called *name*, created if needed."""
        stream = self._streams.get(name)
        if stream is None:
            stream = Stream(
                self.app,
                name,
                gop_cache_bytes=self.gop_cache_bytes,
                clock=self._clock,
                chat_history=self.chat_history,
                chat_history_bytes=self.chat_history_bytes,
            )
            self._streams[name] = stream
            if self.chat_bridge is not None:
                stream.chat_bridge = self.chat_bridge
                self.chat_bridge.room_opened(stream)
        return stream

    def release(self, stream: Stream) -> None:
        """Forget *stream* if nobody publishes, plays or chats in it any more."""
        if stream.is_idle and self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
            if stream.chat_bridge is not None:
                stream.chat_bridge.room_closed(stream)

    @property
    def streams(self) -> list[Stream]:
        """Every stream of the application."""
        return list(self._streams.values())
