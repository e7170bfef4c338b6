"""ChatMixin: a chat room per stream, over the same RTMP connection.

A connection that publishes or plays a stream sits in that stream's room on the
message stream it publishes or plays on; ``joinChat`` seats it without media.
Messages go out as ``onChatMessage`` data messages to every participant, the
sender included; a new participant first gets the room's history, oldest first.
The full wire contract, with every refusal code, is in ``docs/chat.md``.

Hooks overridden: ``connectionMade`` (per-connection chat state),
``stream_joined`` (take a seat in the stream's room on that message stream and
send the history), ``stream_left`` (give the seat up once no role holds it),
``message_stream_deleted`` (leave the room joined with ``joinChat`` on that
message stream), ``session_closed`` (leave every room).

Events emitted: ``stream_joined`` / ``stream_left`` with role ``"chat"`` when
``joinChat`` seats the connection / when it leaves that room.

Commands defined here: ``joinChat``, ``sendChatMessage``, ``getViewerCount``.
Every refusal is a :class:`~streamserver.errors.ChatError`, answered by
``SessionMixin.refuse`` with ``_error`` (or ``onStatus`` for transaction id 0).

Chat goes out through :meth:`ChatMixin.deliver_chat`: the connection's
transport, as media does, but never through ``admit_frame``, so the
drop-frames policy never drops it.  The policy's hard limit still applies: a
message that would take the queue past ``max_queue`` disconnects the
connection, as a media frame would.

Offers :class:`~streamserver.protocol.contracts.Chatting` (to the rooms' seats);
needs :class:`~streamserver.protocol.contracts.Messaging` (the chunk size),
:class:`~streamserver.protocol.contracts.Session`,
:class:`~streamserver.protocol.contracts.Disconnecting` and
:class:`~streamserver.protocol.contracts.Playing` (past the hard limit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from streamserver.codec import messages
from streamserver.codec.messages import Command
from streamserver.errors import (
    ChatBadNameError,
    ChatNotInRoomError,
    ChatRejectedError,
    ChatTooManyRoomsError,
    ChatUnauthorizedError,
    StreamError,
)
from streamserver.media.rooms import (
    MAX_NICK_LENGTH,
    ChatMessage,
    ChatRateLimit,
    accept_message,
    clean_nick,
    clean_text,
)
from streamserver.media.stream import Stream
from streamserver.policy import DisconnectReason
from streamserver.protocol.base import ProtocolRoot
from streamserver.protocol.session import split_name

_log = Logger()

__all__ = ["MAX_CHAT_ROOMS", "MAX_NICK_LENGTH", "ChatMixin", "ChatSeat", "clean_nick", "clean_text"]

#: Rooms one connection may join with ``joinChat``.  A bot watching a handful of
#: rooms fits; a client cannot pin thousands of streams in the registry.
MAX_CHAT_ROOMS = 16

#: The role ``joinChat`` seats a connection with (publish and play use
#: ``"publisher"`` and ``"viewer"``).
ROLE_CHAT = "chat"


class ChatSeat:
    """One connection's place in one room, on one of its message streams.

    :ivar protocol: the connection.
    :ivar stream: the stream whose room this is.
    :ivar stream_id: the message stream the room's messages go out on.
    :ivar nick: the nick the connection speaks with in this room.
    :ivar roles: why the connection is here: ``"publisher"``, ``"viewer"``,
        ``"chat"``; the seat is given up when the last role leaves.
    """

    __slots__ = ("nick", "protocol", "roles", "stream", "stream_id")

    def __init__(self, protocol: ChatMixin, stream: Stream, stream_id: int, nick: str) -> None:
        self.protocol = protocol
        self.stream = stream
        self.stream_id = stream_id
        self.nick = nick
        self.roles: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"<ChatSeat {self.nick} in {self.stream.app}/{self.stream.name} "
            f"on stream {self.stream_id} as {','.join(sorted(self.roles))}>"
        )

    @property
    def conn_id(self) -> int:
        """The connection's id (what ``factory.kick`` takes; the API kicks by nick with it)."""
        return self.protocol.conn_id

    @property
    def fanout_key(self) -> tuple[int, int]:
        """Seats sharing (outgoing chunk size, message stream id) share message bytes."""
        return (self.protocol.out_chunk_size, self.stream_id)

    def encode_chat(self, message: ChatMessage, timestamp: int) -> bytes:
        """*message* as a data message in this seat's chunk size, on its message stream."""
        return message.wire(self.protocol.out_chunk_size, self.stream_id, timestamp)

    def deliver_chat(self, data: bytes) -> None:
        """Write one chat message's bytes to the connection; a failure is the connection's.

        The room's broadcast runs inside the sender's command: whatever goes
        wrong writing to this participant ends this participant's connection
        only, logged once, and the broadcast goes on.
        """
        try:
            self.protocol.deliver_chat(data)
        except Exception as error:
            self.protocol.chat_failed(self, error)


if TYPE_CHECKING:
    from streamserver.protocol.contracts import (
        Chatting,
        Disconnecting,
        Messaging,
        Playing,
        Session,
    )

    class _Contracts(Messaging, Session, Disconnecting, Playing, Chatting, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class ChatMixin(_Contracts):
    """Seats the connection in chat rooms and carries its chat.

    :ivar chat_seats: the connection's seats, by message stream id.
    :ivar chat_sent: chat messages accepted from this connection.
    :ivar chat_delivered: chat messages written to this connection.
    :ivar _chat_rate: the connection's chat rate limit (``--chat-rate``).
    """

    chat_seats: dict[int, ChatSeat]
    chat_sent = 0
    chat_delivered = 0
    _chat_rate: ChatRateLimit

    @override
    def connectionMade(self) -> None:
        self.chat_seats = {}
        config = self.factory.config
        self._chat_rate = ChatRateLimit(config.chat_rate, config.chat_rate_window)
        super().connectionMade()

    # --- joining and leaving -------------------------------------------------------

    @override
    def stream_joined(
        self, stream: Stream, stream_id: int, role: str, params: dict[str, str]
    ) -> None:
        self._take_seat(stream, stream_id, role, params)
        super().stream_joined(stream, stream_id, role, params)

    @override
    def stream_left(self, stream: Stream, stream_id: int, role: str) -> None:
        seat = self.chat_seats.get(stream_id)
        if seat is not None and seat.stream is stream:
            seat.roles.discard(role)
            if not seat.roles:
                self._give_up_seat(seat)
        super().stream_left(stream, stream_id, role)

    @override
    def message_stream_deleted(self, stream_id: int) -> None:
        seat = self.chat_seats.get(stream_id)
        if seat is not None and ROLE_CHAT in seat.roles:
            self.stream_left(seat.stream, stream_id, ROLE_CHAT)
        super().message_stream_deleted(stream_id)

    @override
    def session_closed(self) -> None:
        for seat in list(self.chat_seats.values()):
            if ROLE_CHAT in seat.roles:
                self.stream_left(seat.stream, seat.stream_id, ROLE_CHAT)
        # publish and play left before us in the chain; whatever remains goes too
        for seat in list(self.chat_seats.values()):
            self._give_up_seat(seat)
        super().session_closed()

    def _take_seat(self, stream: Stream, stream_id: int, role: str, params: dict[str, str]) -> None:
        """Seat the connection in *stream*'s room on *stream_id* and send the history.

        One room per message stream: joining another room on a message stream
        leaves the one it was in.
        """
        seat = self.chat_seats.get(stream_id)
        if seat is not None and seat.stream is not stream:
            self._give_up_seat(seat)
            seat = None
        if seat is None:
            seat = ChatSeat(self, stream, stream_id, self.chat_nick(params))
            self.chat_seats[stream_id] = seat
            history = stream.chat.join(seat)
            chunk_size, _ = seat.fanout_key
            timestamp = stream.live_timestamp or 0
            for message in history:
                self.deliver_chat(message.wire(chunk_size, stream_id, timestamp))
        seat.roles.add(role)

    def _give_up_seat(self, seat: ChatSeat) -> None:
        if self.chat_seats.get(seat.stream_id) is seat:
            del self.chat_seats[seat.stream_id]
        stream = seat.stream
        stream.chat.leave(seat)
        self.factory.release_stream(stream)

    def chat_nick(self, params: dict[str, str]) -> str:
        """The nick for a room joined with query parameters *params*.

        The ``nick`` of the ``connect`` command object, else the ``nick`` query
        parameter of the joined name, else that of the tcUrl, else
        ``guest-<connection id>``.
        """
        tc_url = self.connect_params.get("tcUrl")
        tc_query = tc_url.partition("?")[2].partition("#")[0] if isinstance(tc_url, str) else ""
        for candidate in (
            self.connect_params.get("nick"),
            params.get("nick"),
            dict(parse_qsl(tc_query, keep_blank_values=True)).get("nick"),
        ):
            nick = clean_nick(candidate)
            if nick:
                return nick
        return f"guest-{self.conn_id}"

    # --- the write path ------------------------------------------------------------

    def deliver_chat(self, data: bytes) -> None:
        """Write one chat message's chunk bytes *data*: never dropped, hard limit applies.

        Written as a stream's bytes (``link.write_media``), so the guard's
        keepalive counts a peer taking chat as a peer alive.  Past the hard
        limit the connection goes as a media frame would make it go: through
        its viewer's disconnect if it plays, else counted here.
        """
        if self.closing:
            return
        limits = self.factory.policy.limits
        queued = self.link.queued()
        if limits.enabled and queued + len(data) > limits.max_queue:
            viewer = self.viewer
            if viewer is not None:
                viewer.disconnect(DisconnectReason.MAX_QUEUE)
            elif self.disconnect_viewer(DisconnectReason.MAX_QUEUE):
                self.factory.viewer_disconnected(None, DisconnectReason.MAX_QUEUE)
            return
        self.link.write_media(data, queued)
        self.chat_delivered += 1

    def chat_failed(self, seat: ChatSeat, error: BaseException) -> None:
        """Writing a chat message to *seat* raised: log it once and drop the connection."""
        stream = seat.stream
        _log.failure(
            "delivering chat to {peer} in {room} failed; disconnecting it",
            Failure(error, type(error), error.__traceback__),
            peer=self.peer,
            room=f"{stream.app}/{stream.name}",
        )
        self.drop_connection()

    # --- commands ------------------------------------------------------------------

    def command_joinChat(self, command: Command) -> None:
        """``joinChat``: sit in a stream's room without media, on the command's message stream.

        The join is authorized as a ``play`` of that stream (the same authorizers,
        tokens and callbacks), so a room is never open to whom the stream is not.

        :raises ChatBadNameError: no valid stream name.
        """
        try:
            name, params = split_name(command.args[0] if command.args else None)
        except StreamError as error:
            raise ChatBadNameError(error.description) from error
        pending = self.authorize_access("play", name, params)
        pending.addCallback(self._join_authorized, command, name, params)
        pending.addErrback(self._join_refused, command)

    def _join_refused(self, failure: Failure, command: Command) -> None:
        if self.closing or failure.check(defer.CancelledError):
            return
        if isinstance(failure.value, StreamError):
            self.refuse(command, ChatUnauthorizedError(failure.value.description))
        else:
            _log.failure("joinChat by {peer} failed", failure, peer=self.peer)

    def _join_authorized(
        self, _: None, command: Command, name: str, params: dict[str, str]
    ) -> None:
        """Join the room the authorizers allowed (unless the connection went meanwhile)."""
        if self.closing:
            return
        try:
            self._join_room(command, name, params)
        except StreamError as error:
            self.refuse(command, error)

    def _join_room(self, command: Command, name: str, params: dict[str, str]) -> None:
        """Take a chat seat in *name*'s room on the command's message stream.

        :raises ChatTooManyRoomsError: the connection sits in too many rooms.
        :raises ChatRejectedError: the server holds as many streams as it may.
        """
        stream_id = command.stream_id
        seat = self.chat_seats.get(stream_id)
        joined = sum(ROLE_CHAT in s.roles for s in self.chat_seats.values())
        if (seat is None or ROLE_CHAT not in seat.roles) and joined >= MAX_CHAT_ROOMS:
            raise ChatTooManyRoomsError(f"a connection may join at most {MAX_CHAT_ROOMS} rooms")
        try:
            stream = self.factory.open_stream(self.app or "", name, ChatRejectedError.code)
        except StreamError as error:
            raise ChatRejectedError(error.description) from error
        self.stream_joined(stream, stream_id, ROLE_CHAT, params)
        seat = self.chat_seats.get(stream_id)
        room = f"{stream.app}/{stream.name}"
        self.reply(
            command,
            None,
            messages.status_info(
                "Chat.Joined", f"Joined {room}.", room=room, nick=seat.nick if seat else ""
            ),
        )
        _log.info("{peer} joined the chat of {room}", peer=self.peer, room=room)

    def command_sendChatMessage(self, command: Command) -> None:
        """``sendChatMessage``: post a message to the room of the command's message stream.

        :raises ChatNotInRoomError: that message stream is in no room.
        :raises ChatMutedError: the sender's nick is muted there.
        :raises ChatEmptyError: no text once control characters are stripped.
        :raises ChatTooLongError: more than ``chat_max_length`` characters.
        :raises ChatRateLimitedError: over ``chat_rate`` messages in the window.
        """
        seat = self.chat_seats.get(command.stream_id)
        if seat is None:
            raise ChatNotInRoomError(f"message stream {command.stream_id} is in no chat room")
        stream = seat.stream
        now = self.factory.seconds()
        text = accept_message(
            stream.chat,
            seat.nick,
            command.args[0] if command.args else None,
            max_length=self.factory.settings_for(stream.app).chat_max_length,
            rate=self._chat_rate,
            now=now,
        )
        message = stream.post_chat(seat.nick, text, int(now * 1000))
        self.chat_sent += 1
        message_id = None if message is None else message.id
        _log.debug(
            "chat {id} from {nick} ({peer}) in {app}/{name}",
            id=message_id,
            nick=seat.nick,
            peer=self.peer,
            app=stream.app,
            name=stream.name,
        )
        # With --cluster the id is the cluster's, known when the message comes back.
        fields: dict[str, Any] = {} if message_id is None else {"id": float(message_id)}
        self.reply(command, None, messages.status_info("Chat.Sent", "Message sent.", **fields))

    def command_getViewerCount(self, command: Command) -> None:
        """``getViewerCount``: how many connections play a stream.

        The stream is the one named by the argument, or without one, the room
        of the command's message stream.  The ``_result`` carries the number.

        :raises ChatNotInRoomError: no name and that message stream is in no room.
        :raises ChatBadNameError: the name is not a valid stream name.
        """
        raw = command.args[0] if command.args else None
        stream: Stream | None
        if raw is None:
            seat = self.chat_seats.get(command.stream_id)
            if seat is None:
                raise ChatNotInRoomError(f"message stream {command.stream_id} is in no chat room")
            stream = seat.stream
        else:
            try:
                name, _ = split_name(raw)
            except StreamError as error:
                raise ChatBadNameError(error.description) from error
            stream = self.factory.find_stream(self.app or "", name)
        self.reply(command, None, float(stream.subscriber_count if stream is not None else 0))
