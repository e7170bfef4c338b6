"""An RTMP client on the same codec: publish an FLV file, play a stream, chat, collect.

Used by the tests, the benchmark and users' bots.  Everything returns Deferreds
and works on any reactor (a ``Clock`` too, for the pacing).

Example::

    client = yield connect_client(reactor, "rtmp://127.0.0.1:1935/live/cam")
    stream_id = yield client.create_stream()
    yield client.play("cam", stream_id)
    # client.media fills with the messages that arrive
    yield client.send_chat("hello", stream_id)
    # client.chat_messages fills with the room's onChatMessage (docs/chat.md)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from streamserver.codec import messages
from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
from streamserver.codec.flv import FLVTag, tag_to_message
from streamserver.codec.handshake import ClientHandshake
from streamserver.codec.messages import (
    CSID_AUDIO,
    CSID_COMMAND,
    CSID_CONTROL,
    CSID_DATA,
    CSID_VIDEO,
    PROTOCOL_CONTROL_TYPES,
    Command,
    Message,
    MessageType,
    UserControlEvent,
)
from streamserver.errors import StreamError

_MEDIA_CSID: dict[int, int] = {
    MessageType.AUDIO: CSID_AUDIO,
    MessageType.VIDEO: CSID_VIDEO,
    MessageType.DATA_AMF0: CSID_DATA,
}

_MEDIA_TYPES = frozenset({MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0})

#: The data message servers send after ``play`` (AMF0 string "|RtmpSampleAccess"):
#: it grants Flash access to the media and is not part of the stream.
_SAMPLE_ACCESS = b"\x02\x00\x11|RtmpSampleAccess"

#: The data message chat arrives in (AMF0 string "onChatMessage"); not media.
_CHAT_MESSAGE = b"\x02\x00\x0donChatMessage"


def parse_rtmp_url(url: str) -> tuple[str, int, str, str]:
    """Split ``rtmp://host[:port]/app/name`` into host, port, app and stream name.

    The stream name may contain slashes and a query string; the app is the
    first path segment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("rtmp", ""):
        raise ValueError(f"not an rtmp:// URL: {url!r}")
    path = parts.path.lstrip("/")
    app, _, name = path.partition("/")
    if parts.query:
        name = f"{name}?{parts.query}"
    return parts.hostname or "127.0.0.1", parts.port or 1935, app, name


class StatusError(StreamError):
    """The server answered with an error status; :attr:`code` tells which."""


@dataclass(frozen=True)
class ReceivedChatMessage:
    """An ``onChatMessage`` the server sent (fields as in ``docs/chat.md``).

    :ivar stream_id: the message stream it arrived on, which names the room.
    """

    id: int
    nick: str
    text: str
    time: float
    stream_id: int


class RTMPClientProtocol(Protocol):
    """The client side of one RTMP connection.

    :ivar media: audio, video and data messages received (when
        :attr:`keep_media` is true).
    :ivar statuses: ``onStatus`` info objects received, in order.
    :ivar media_count: audio/video/data messages received.
    :ivar media_bytes: payload bytes of those messages.
    :ivar on_media: if set, called with each media message as it arrives.
    :ivar chat_messages: the ``onChatMessage`` messages received, in order.
    :ivar on_chat: if set, called with each chat message as it arrives.
    :ivar on_status: if set, called with each ``onStatus`` info object as it arrives.
    """

    transport: Any

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        digest: bool = False,
        keep_media: bool = True,
    ) -> None:
        self._handshake: ClientHandshake | None = ClientHandshake(digest=digest)
        self._decoder = ChunkDecoder()
        self._encoder = ChunkEncoder(128)
        self._chunk_size = chunk_size
        self._next_txn = 1
        self._pending: dict[float, defer.Deferred[Command]] = {}
        self._status_waiters: list[
            tuple[Callable[[dict[str, Any]], bool], defer.Deferred[Any]]
        ] = []
        self._ack_window = 0
        self._acked = 0
        self.handshake_done: defer.Deferred[None] = defer.Deferred()
        self.disconnected: defer.Deferred[None] = defer.Deferred()
        self.keep_media = keep_media
        self.media: list[Message] = []
        self.statuses: list[dict[str, Any]] = []
        self.data_messages: list[list[Any]] = []
        self.media_count = 0
        self.media_bytes = 0
        self.on_media: Callable[[Message], None] | None = None
        self.on_data: Callable[[list[Any], Message], None] | None = None
        self.chat_messages: list[ReceivedChatMessage] = []
        self.on_chat: Callable[[ReceivedChatMessage], None] | None = None
        self.on_status: Callable[[dict[str, Any]], None] | None = None

    # --- Twisted -----------------------------------------------------------------

    def connectionMade(self) -> None:
        assert self._handshake is not None
        self.transport.write(self._handshake.initial_bytes())

    def dataReceived(self, data: bytes) -> None:
        if self._handshake is not None:
            reply = self._handshake.receive_data(data)
            if not self._handshake.complete:
                return
            self.transport.write(reply)
            data = self._handshake.leftover
            self._handshake = None
            if self._chunk_size != 128:
                self.send(messages.set_chunk_size(self._chunk_size))
                self._encoder.chunk_size = self._chunk_size
            self.handshake_done.callback(None)
        if data:
            for message in self._decoder.receive_data(data):
                self._message_received(message)
            self._maybe_acknowledge()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        pending = list(self._pending.values())
        self._pending.clear()
        for deferred in pending:
            deferred.errback(reason)
        for _, deferred in self._status_waiters:
            deferred.errback(reason)
        self._status_waiters.clear()
        if not self.handshake_done.called:
            self.handshake_done.errback(reason)
        self.disconnected.callback(None)

    # --- receiving -------------------------------------------------------------------

    def _maybe_acknowledge(self) -> None:
        received = self._decoder.bytes_received
        if self._ack_window and received - self._acked >= self._ack_window:
            self._acked = received
            self.send(messages.acknowledgement(received))

    def _message_received(self, message: Message) -> None:
        type_id = message.type_id
        if type_id == MessageType.AGGREGATE:
            # SRS and Wowza may send a play's media as aggregates (spec 7.1.6)
            from streamserver.protocol.publish import split_aggregate

            for sub_message in split_aggregate(message):
                if sub_message.type_id in _MEDIA_TYPES:
                    self._message_received(sub_message)
        elif type_id == MessageType.DATA_AMF0 and message.payload.startswith(_CHAT_MESSAGE):
            self._chat_received(message)
        elif type_id in _MEDIA_TYPES and not message.payload.startswith(_SAMPLE_ACCESS):
            self.media_count += 1
            self.media_bytes += len(message.payload)
            if self.keep_media:
                self.media.append(message)
            if type_id == MessageType.DATA_AMF0 and self.on_data is not None:
                self.on_data(messages.parse_data(message), message)
            if self.on_media is not None:
                self.on_media(message)
        elif type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            self._command_received(messages.parse_command(message))
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            self._ack_window = messages.parse_uint32(message)
        elif type_id == MessageType.USER_CONTROL:
            event, values = messages.parse_user_control(message)
            if event == UserControlEvent.PING_REQUEST and values:
                self.send(messages.ping_response(values[0]))

    def _chat_received(self, message: Message) -> None:
        values = messages.parse_data(message)
        fields = values[1] if len(values) > 1 and isinstance(values[1], dict) else {}
        chat = ReceivedChatMessage(
            id=int(fields.get("id", 0)),
            nick=str(fields.get("nick", "")),
            text=str(fields.get("text", "")),
            time=float(fields.get("time", 0)),
            stream_id=message.stream_id,
        )
        self.chat_messages.append(chat)
        if self.on_chat is not None:
            self.on_chat(chat)

    def _command_received(self, command: Command) -> None:
        if command.name in ("_result", "_error"):
            deferred = self._pending.pop(command.transaction_id, None)
            if deferred is None:
                return
            if command.name == "_result":
                deferred.callback(command)
            else:
                info = command.args[0] if command.args and isinstance(command.args[0], dict) else {}
                deferred.errback(
                    StatusError(str(info.get("description", "")), code=info.get("code"))
                )
        elif command.name == "onStatus" and command.args and isinstance(command.args[0], dict):
            self._status_received(command.args[0])

    def _status_received(self, info: dict[str, Any]) -> None:
        self.statuses.append(info)
        if self.on_status is not None:
            self.on_status(info)
        still_waiting = []
        for matches, deferred in self._status_waiters:
            if info.get("level") == "error":
                deferred.errback(
                    StatusError(str(info.get("description", "")), code=info.get("code"))
                )
            elif matches(info):
                deferred.callback(info)
            else:
                still_waiting.append((matches, deferred))
        self._status_waiters = still_waiting

    # --- sending ----------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Encode and write *message* on the customary chunk stream for its type."""
        if message.type_id in PROTOCOL_CONTROL_TYPES or message.type_id == MessageType.USER_CONTROL:
            csid = CSID_CONTROL
        else:
            csid = _MEDIA_CSID.get(message.type_id, CSID_COMMAND)
        self.transport.write(self._encoder.encode(message, csid))

    def call(
        self, name: str, command_object: Any = None, *args: Any, stream_id: int = 0
    ) -> defer.Deferred[Command]:
        """Send a command; the Deferred fires with its ``_result`` (errback on ``_error``)."""
        txn = float(self._next_txn)
        self._next_txn += 1
        deferred: defer.Deferred[Command] = defer.Deferred()
        self._pending[txn] = deferred
        self.send(messages.command(name, txn, command_object, *args, stream_id=stream_id))
        return deferred

    def wait_for_status(self, code: str) -> defer.Deferred[dict[str, Any]]:
        """Fire with the next ``onStatus`` info whose code is *code* (errback on an error)."""
        deferred: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._status_waiters.append((lambda info: info.get("code") == code, deferred))
        return deferred

    async def connect(self, app: str, tc_url: str | None = None, **params: Any) -> Command:
        """Wait for the handshake, then send ``connect``; return the ``_result``."""
        await self.handshake_done
        obj: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; streamserver)",
            "tcUrl": tc_url or f"rtmp://127.0.0.1/{app}",
        }
        obj.update(params)
        return await self.call("connect", obj)

    async def create_stream(self) -> int:
        """Send ``createStream``; return the message stream id."""
        reply = await self.call("createStream")
        return int(reply.args[0])

    async def publish(self, name: str, stream_id: int) -> dict[str, Any]:
        """Publish *name* on *stream_id*; fire with the ``NetStream.Publish.Start`` info."""
        started = self.wait_for_status("NetStream.Publish.Start")
        self.send(messages.command("publish", 0, None, name, "live", stream_id=stream_id))
        return await started

    async def play(
        self,
        name: str,
        stream_id: int,
        *,
        start: float = -2000.0,
        duration: float | None = None,
        buffer_ms: int = 1000,
    ) -> dict[str, Any]:
        """Play *name* on *stream_id*; fire with the ``NetStream.Play.Start`` info.

        :param start: ``play``'s start: -2000 live or recorded, -1000 live only
            (what a relay edge sends).
        :param duration: ``play``'s duration, left out when ``None`` (-1000 with
            *start* -1000: live until the end, as nginx-rtmp's relay sends it).
        :param buffer_ms: the SetBufferLength sent after ``play``.
        """
        started = self.wait_for_status("NetStream.Play.Start")
        args: tuple[Any, ...] = (name, start) if duration is None else (name, start, duration)
        self.send(messages.command("play", 0, None, *args, stream_id=stream_id))
        self.send(messages.set_buffer_length(stream_id, buffer_ms))
        return await started

    def join_chat(self, name: str, stream_id: int) -> defer.Deferred[Command]:
        """Join *name*'s chat room without media on *stream_id* (``joinChat``).

        The room's history arrives in :attr:`chat_messages` before the Deferred
        fires with the ``_result`` (its info object names the room and our nick);
        it errbacks with :class:`StatusError` (``Chat.*`` code) on a refusal.
        """
        return self.call("joinChat", None, name, stream_id=stream_id)

    def send_chat(self, text: str, stream_id: int) -> defer.Deferred[Command]:
        """Send *text* to the room of *stream_id* (``sendChatMessage``).

        Fires with the ``_result`` (its info object carries the message ``id``);
        errbacks with :class:`StatusError` whose ``code`` is the refusal's
        (``Chat.TooLong``, ``Chat.RateLimited``...).
        """
        return self.call("sendChatMessage", None, text, stream_id=stream_id)

    async def get_viewer_count(self, stream_id: int, name: str | None = None) -> int:
        """How many connections play *name*, or the stream of *stream_id*'s room."""
        args = () if name is None else (name,)
        reply = await self.call("getViewerCount", None, *args, stream_id=stream_id)
        return int(reply.args[0])

    def send_tags(self, tags: Sequence[FLVTag], stream_id: int, offset: int = 0) -> None:
        """Send FLV *tags* at once as messages on *stream_id*, shifted by *offset* ms."""
        for tag in tags:
            message = tag_to_message(tag, stream_id)
            if tag.tag_type == MessageType.DATA_AMF0 and not message.payload.startswith(
                b"\x02\x00\x0d@setDataFrame"
            ):
                message.payload = b"\x02\x00\x0d@setDataFrame" + message.payload
            message.timestamp = (message.timestamp + offset) & 0xFFFFFFFF
            self.send(message)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.loseConnection()


def pace_tags(
    clock: IReactorTime,
    client: RTMPClientProtocol,
    tags: Sequence[FLVTag],
    stream_id: int,
    *,
    loops: int = 1,
    on_sent: Callable[[FLVTag, float], None] | None = None,
) -> defer.Deferred[int]:
    """Send *tags* at real-time pace by their timestamps, *loops* times.

    Metadata (script tags) is sent once, at the start of the first loop.  Each
    loop's timestamps continue from the last.  The Deferred fires with the
    number of messages sent.

    :param on_sent: called with each tag and the clock time it was written.
    """
    done: defer.Deferred[int] = defer.Deferred()
    media = [t for t in tags if t.tag_type in (MessageType.AUDIO, MessageType.VIDEO)]
    script = [t for t in tags if t.tag_type == MessageType.DATA_AMF0]
    if not media:
        done.callback(0)
        return done
    first = media[0].timestamp
    span = media[-1].timestamp - first + 33
    start = clock.seconds()
    state = {"index": 0, "loop": 0, "sent": 0}
    client.send_tags(script, stream_id)

    def step() -> None:
        if client.transport is None or not client.connected:
            if not done.called:
                done.callback(state["sent"])
            return
        now = clock.seconds()
        while True:
            index, loop = state["index"], state["loop"]
            if index >= len(media):
                state["index"], state["loop"] = 0, loop + 1
                if loop + 1 >= loops:
                    done.callback(state["sent"])
                    return
                continue
            tag = media[index]
            offset = loop * span - first
            due = start + (tag.timestamp + offset) / 1000.0
            if due > now:
                clock.callLater(due - now, step)
                return
            client.send_tags([tag], stream_id, offset=loop * span)
            state["sent"] += 1
            state["index"] = index + 1
            if on_sent is not None:
                on_sent(tag, now)

    step()
    return done


async def connect_client(
    reactor: IReactorTCP,
    url: str,
    *,
    chunk_size: int = 4096,
    keep_media: bool = True,
    **connect_params: Any,
) -> RTMPClientProtocol:
    """Open a TCP connection to *url*'s server and send ``connect`` for its app."""
    host, port, app, _ = parse_rtmp_url(url)
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=10)
    protocol = RTMPClientProtocol(chunk_size=chunk_size, keep_media=keep_media)
    await connectProtocol(endpoint, protocol)
    await protocol.connect(app, f"rtmp://{host}:{port}/{app}", **connect_params)
    return protocol
