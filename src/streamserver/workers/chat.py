"""One chat room across workers: the room of a stream published on a worker
joins the origin's room.

A worker's *pulled* stream already shares the origin's room through the
relay's pull (docs/chat.md, "Relays": the pull's play seats it there).  A
*push* carries no chat, so without this module the publisher's worker would
keep a room of its own.  :class:`PublisherChats` (a session observer of a
worker's factory) gives each stream published on the worker a
:class:`PublisherChat`: an RTMP connection to the origin that ``joinChat``-s the
stream's room there and is the local stream's
:attr:`~streamserver.media.stream.Stream.chat_relay`, with the relay pull's
rules -- a message posted on the worker is posted locally at once and sent to
the origin with ``sendChatMessage``, the origin's broadcast of it back is
recognised and not posted twice; every other message of the origin's room
(from the other workers, the history once, by id) is posted into the local
room.  The connection is a relay :class:`~streamserver.relay.upstream.Upstream`:
it reconnects with the relays' backoff while the publish lasts.

So every participant of every worker (RTMP, WebSocket, IRC) sees every message
of the stream's room; each room numbers its messages itself (the ids differ
between workers), and a message shows first where it was posted.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.events import PUBLISH, SessionEvent
from streamserver.relay.upstream import Upstream

if TYPE_CHECKING:
    from streamserver.client import ReceivedChatMessage, RTMPClientProtocol
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.rooms import ChatMessage
    from streamserver.media.stream import Stream
    from streamserver.relay.target import RelayTarget
    from streamserver.workers.origin import OriginRoute

__all__ = ["PublisherChat", "PublisherChats", "install_publisher_chats"]

_log = Logger()


class PublisherChat:
    """The local room of a stream published here, joined to the origin's room.

    :ivar stream: the local stream.
    :ivar upstream: the reconnecting chat-only connection to the origin.
    """

    def __init__(self, chats: PublisherChats, stream: Stream) -> None:
        factory = chats.factory
        self.chats = chats
        self.stream = stream
        self._client: RTMPClientProtocol | None = None
        self._stream_id = 0
        self._floor = 0
        #: texts sent to the origin whose broadcast back has not arrived yet
        self._pending: deque[str] = deque()
        target = chats.route.target(stream.app)
        self.upstream = Upstream(
            factory.reactor,
            f"chat {stream.app}/{stream.name}",
            lambda: defer.succeed([target]),
            self,
            reconnect_seconds=factory.config.relay_reconnect_seconds,
            chunk_size=factory.config.chunk_size,
        )

    def start(self) -> None:
        """Connect."""
        self.upstream.start()

    def stop(self) -> None:
        """Leave the origin's room (idempotent)."""
        self.upstream.stop()
        self._lost()

    # --- the upstream session (UpstreamRole) ---------------------------------------

    def start_session(
        self, client: RTMPClientProtocol, target: RelayTarget, stream_id: int
    ) -> defer.Deferred[Any]:
        """``joinChat`` the stream's room at the origin (its history arrives first)."""
        self._stream_id = stream_id
        self._floor = self.chats.seen.get(self._key, 0)
        self._pending.clear()
        client.on_chat = self._received
        return client.join_chat(target.stream_name(self.stream.name), stream_id)

    def session_started(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        """In the origin's room: local messages go there from now on."""
        self._client = client
        self.stream.chat_relay = self

    def session_lost(self, target: RelayTarget) -> None:
        """The origin is gone: messages stay local until it is back."""
        self._lost()

    def _lost(self) -> None:
        self._client = None
        if self.stream.chat_relay is self:
            self.stream.chat_relay = None

    @property
    def _key(self) -> tuple[str, str]:
        return (self.stream.app, self.stream.name)

    # --- chat ---------------------------------------------------------------------------

    def chat_posted(self, message: ChatMessage) -> None:
        """A local participant posted *message*: send it to the origin's room."""
        client = self._client
        if client is None:
            return
        self._pending.append(message.text)
        client.send_chat(message.text, self._stream_id).addErrback(self._refused, message)

    def _refused(self, failure: Failure, message: ChatMessage) -> None:
        if message.text in self._pending:
            self._pending.remove(message.text)
        _log.info("{stream}: the origin refused chat message {id}: {error}",
                  stream=self.stream, id=message.id, error=failure.getErrorMessage())  # fmt: skip

    def _received(self, chat: ReceivedChatMessage) -> None:
        """A message of the origin's room: post it here unless it is ours or was seen."""
        if chat.stream_id != self._stream_id or chat.id <= self._floor:
            return
        seen = self.chats.seen
        seen[self._key] = max(seen.get(self._key, 0), chat.id)
        if self._pending and self._pending[0] == chat.text:
            self._pending.popleft()  # ours, posted here already
            return
        self.stream.relay_chat(chat.nick, chat.text, int(chat.time))


class PublisherChats:
    """A :class:`PublisherChat` per stream published on this worker, for as long as
    the publish lasts (a session observer).

    :ivar route: the origin (:class:`~streamserver.workers.origin.OriginRoute`).
    :ivar chats: the running links, by stream.
    :ivar seen: the highest id of the origin's room posted here, by ``(app, name)``
        (so a publisher back does not repeat the room's history).
    """

    def __init__(self, factory: RTMPServerFactory, route: OriginRoute) -> None:
        self.factory = factory
        self.route = route
        self.chats: dict[Stream, PublisherChat] = {}
        self.seen: dict[tuple[str, str], int] = {}

    def session_started(self, event: SessionEvent) -> None:
        if event.role != PUBLISH or event.stream in self.chats:
            return
        chat = self.chats[event.stream] = PublisherChat(self, event.stream)
        chat.start()

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        if event.role != PUBLISH:
            return
        chat = self.chats.pop(event.stream, None)
        if chat is not None:
            chat.stop()


def install_publisher_chats(factory: RTMPServerFactory, route: OriginRoute) -> PublisherChats:
    """Join the room of every stream published on *factory* to the origin's."""
    chats = PublisherChats(factory, route)
    factory.events.add(chats)
    return chats
