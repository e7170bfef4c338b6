"""IrcSeat: one IRC connection's place in one chat room.

A :class:`~streamserver.media.rooms.ChatParticipant` like RTMP's ``ChatSeat``:
every IRC seat of a room shares one ``fanout_key`` (two with ``server-time``),
so a broadcast builds its ``PRIVMSG`` line(s) once for them
(:func:`~streamserver.irc.names.chat_lines`); the seat of the sender skips its
own message, as IRC servers do not echo.  It also remembers the topic its
client was told, to tell it again only when it changes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from streamserver.irc.names import SERVER_NAME, channel_name, chat_lines, stream_topic
from streamserver.media.rooms import ChatMessage

if TYPE_CHECKING:
    from streamserver.irc.server import IrcConnection
    from streamserver.media.stream import Stream

__all__ = ["IrcSeat"]


class IrcSeat:
    """One IRC connection in one room: a :class:`~streamserver.media.rooms.ChatParticipant`.

    :ivar connection: the client.
    :ivar stream: the stream whose room this is.
    :ivar channel: ``#APP/NAME``.
    :ivar topic: the topic the client was last told.
    """

    __slots__ = ("_live", "_metadata", "channel", "connection", "own_message", "stream", "topic")

    def __init__(self, connection: IrcConnection, stream: Stream) -> None:
        self.connection = connection
        self.stream = stream
        self.channel = channel_name(stream.app, stream.name)
        self.topic = stream_topic(stream)
        self._metadata = stream.metadata
        self._live = stream.publisher is not None
        #: set while this seat's own message is broadcast: IRC does not echo it
        self.own_message = False

    def __repr__(self) -> str:
        return f"<IrcSeat {self.nick} {self.channel}>"

    @property
    def nick(self) -> str:
        """The connection's nick (the API kicks by it)."""
        return self.connection.nick

    @property
    def conn_id(self) -> int:
        """The connection's id."""
        return self.connection.conn_id

    @property
    def fanout_key(self) -> Hashable:
        """IRC participants of a room share the bytes, told apart by ``server-time``."""
        return ("irc", "server-time" in self.connection.caps)

    def encode_chat(self, message: ChatMessage, timestamp: int) -> bytes:
        """*message* as this room's ``PRIVMSG`` line(s)."""
        return chat_lines(message, self.channel, tags="server-time" in self.connection.caps)

    def deliver_chat(self, data: bytes) -> None:
        """Write *data*, unless it is the connection's own message."""
        if not self.own_message:
            self.connection.deliver_chat(data)

    def refresh_topic(self) -> None:
        """Tell the client the topic if it changed (publish, unpublish, a new title)."""
        stream = self.stream
        live = stream.publisher is not None
        if stream.metadata is self._metadata and live is self._live:
            return
        self._metadata, self._live = stream.metadata, live
        topic = stream_topic(stream)
        if topic != self.topic:
            self.topic = topic
            self.connection.sendCommand("TOPIC", (self.channel, ":" + topic), SERVER_NAME)
