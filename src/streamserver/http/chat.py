"""The chat WebSocket: a stream's chat room from a browser, at ``/APP/NAME/chat``.

The same room as RTMP chat (``docs/chat.md``): the same ids, order, history,
nick rules, limits, refusal codes and mutes, because a WebSocket participant
sits in ``stream.chat`` next to the RTMP seats and every message goes through
:func:`~streamserver.media.rooms.accept_message` and ``Stream.post_chat``.
The wire is JSON text messages (the contract is in ``docs/watch.md``):

client → server
    ``{"type": "join", "nick": "ann"}`` once, then
    ``{"type": "send", "text": "hi", "ref": 7}`` (``ref`` optional, echoed);
server → client
    ``{"type": "joined", "room": "live/cam", "nick": "ann"}``, the history
    (``{"type": "message", "id", "nick", "text", "time", "history": true}``),
    then each live message (the same without ``history``), ``{"type": "sent",
    "id": 4, "ref": 7}`` after the sender's own message, and ``{"type":
    "error", "code": "Chat.TooLong", "description": "...", "ref": 7}``.

Each WebSocket is a :class:`ChatSession`: one more
:class:`~streamserver.factory.Connection` of the factory (protocol ``ws-chat``),
so the connection limits, ``kick``, the console, the API and the shutdown
treat it like any other.  The join is authorized exactly like a play of the
stream (``?token=`` on the URL, ``--on-play``); a refusal is the error
``Chat.Unauthorized`` and the close.  A WebSocket that does not join within
``--connect-timeout`` seconds gets ``Chat.Timeout`` and is closed.

Room messages are encoded once per broadcast: every chat WebSocket shares one
``fanout_key``, so the first one's :meth:`ChatSession.encode_chat` makes the
framed text message and the others get the same bytes, written to the TCP
transport through the session's :class:`~streamserver.transport.TransportAdapter`
under the hard queue limit (past ``--max-queue`` the connection is closed;
chat is never dropped), as RTMP's ``deliver_chat`` does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from typing_extensions import override

from streamserver.auth import AccessRequest, authorize
from streamserver.errors import (
    ChatBadRequestError,
    ChatError,
    ChatNotInRoomError,
    ChatRejectedError,
    ChatTimeoutError,
    ChatUnauthorizedError,
    StreamError,
)
from streamserver.http.cors import allow_origin
from streamserver.http.flv import stream_names
from streamserver.http.websocket import HANDSHAKE_ERRORS, TEXT, SessionWebSocket, server_frame
from streamserver.media.rooms import ChatMessage, ChatRateLimit, accept_message, clean_nick
from streamserver.policy import DisconnectReason
from streamserver.stats import ConnectionStats
from streamserver.transport import TransportAdapter

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Stream

_log = Logger()

__all__ = ["CHAT_SEGMENT", "MAX_MESSAGE_BYTES", "PROTOCOL_NAME", "ChatResource", "ChatSession"]

#: The last path segment of a stream's chat WebSocket (``/APP/NAME/chat``).
CHAT_SEGMENT = b"chat"

#: The connection's protocol name (console, API, metrics).
PROTOCOL_NAME = "ws-chat"

#: Largest client message accepted, in UTF-8 bytes.  The biggest one a client
#: needs is a ``send`` of ``--chat-max-length`` characters (500 by default): even
#: with every character written as a 6-byte ``\\uXXXX`` escape that is 3000 bytes
#: plus the envelope.  Anything bigger is no chat message; refusing it bounds
#: what one client makes us parse.  A larger ``--chat-max-length`` raises it
#: (:func:`max_message_bytes`).
MAX_MESSAGE_BYTES = 4 * 1024

#: Longest ``ref`` echoed back (a string; numbers are echoed as they are).
MAX_REF_LENGTH = 64

#: The WebSocket close codes used: normal, policy violation, message too big.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


def max_message_bytes(chat_max_length: int) -> int:
    """The bound on a client message for a server accepting *chat_max_length* characters."""
    return max(MAX_MESSAGE_BYTES, 6 * chat_max_length + 256)


def text_frame(text: str) -> bytes:
    """*text* as one unmasked WebSocket text message (what a server sends)."""
    return server_frame(TEXT, text.encode("utf-8"))


def encode(value: dict[str, Any]) -> bytes:
    """*value* as one framed JSON text message (compact, non-ASCII kept as it is)."""
    return text_frame(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def message_json(message: ChatMessage, *, history: bool = False) -> dict[str, Any]:
    """The ``message`` object of *message* (flagged when it comes from the history)."""
    value: dict[str, Any] = {
        "type": "message",
        "id": message.id,
        "nick": message.nick,
        "text": message.text,
        "time": message.time,
    }
    if history:
        value["history"] = True
    return value


def _lone_surrogate(value: dict[str, Any]) -> bool:
    """A string the server would echo or post (nick, text, ref) is not Unicode text.

    ``"\\ud800"`` is valid JSON but a lone surrogate, which no UTF-8 encoder (the
    chat WebSocket's frames, RTMP's AMF) takes: the message is refused up front.
    """
    for key in ("nick", "text", "ref"):
        field = value.get(key)
        if isinstance(field, str):
            try:
                field.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _ref(value: Any) -> int | float | str | None:
    """The client's ``ref`` if it is one we echo: a number or a short string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) <= MAX_REF_LENGTH:
        return value
    return None


class ChatSession:
    """One chat WebSocket: a factory connection and, once joined, a room participant.

    :ivar conn_id: its connection id (shared sequence with RTMP).
    :ivar closing: it is being closed (by us or the peer).
    :ivar link: its transport adapter (the TCP transport under the HTTP channel).
    :ivar peer: ``host:port``.
    :ivar app: the application.
    :ivar name: the stream name.
    :ivar nick: the nick it speaks with ("" before it joined).
    :ivar stream: the stream whose room it sits in, once joined.
    :ivar chat_sent: messages accepted from it.
    :ivar chat_delivered: room messages written to it.
    """

    protocol_name = PROTOCOL_NAME

    def __init__(
        self,
        factory: RTMPServerFactory,
        request: Request,
        app: str,
        name: str,
        args: dict[str, str],
    ) -> None:
        self.factory = factory
        self.request = request
        self.app = app
        self.name = name
        self.link = TransportAdapter(request.channel.transport)
        self.peer = self.link.peer_text
        self.conn_id = factory.next_conn_id()
        self.closing = False
        self.nick = ""
        self.stream: Stream | None = None
        self.chat_sent = 0
        self.chat_delivered = 0
        self.opened_at = factory.seconds()
        config = factory.config
        self._rate = ChatRateLimit(config.chat_rate, config.chat_rate_window)
        # the bound of a message frame follows the room's application's chat length
        self._max_bytes = max_message_bytes(factory.settings_for(app).chat_max_length)
        self._ws: WebSocketTransport | None = None
        self._pending: defer.Deferred[None] | None = None
        self._tracked = False
        self.access = AccessRequest(
            "play",
            app,
            name,
            args,
            self.link.peer,
            self.conn_id,
            {"tcUrl": request.uri.decode("utf-8", "replace"), "protocol": PROTOCOL_NAME},
        )

    def __repr__(self) -> str:
        return f"<ChatSession {self.peer} {self.app}/{self.name} {self.nick or '(not joined)'}>"

    @property
    def room_name(self) -> str:
        """``APP/NAME``."""
        return f"{self.app}/{self.name}"

    # --- opening -------------------------------------------------------------------

    def admit(self) -> str | None:
        """Count the connection; why it must be refused at once (limits), or ``None``."""
        factory = self.factory
        factory.connection_opened(self, count_address=False)  # its HTTP connection counted
        self._tracked = True
        refusal = factory.admission_refusal(self)
        if refusal is not None:
            factory.connection_refused(self, "limit", refusal)
        return refusal

    def websocket_open(self, transport: WebSocketTransport) -> None:
        """The handshake is under way: messages go out on *transport* from now."""
        self._ws = transport

    # --- the client's messages -------------------------------------------------------

    def message_received(self, raw: str) -> None:
        """One text message from the client: a join or a send (anything else is refused)."""
        if self.closing:
            return
        if len(raw) > self._max_bytes or len(raw.encode("utf-8")) > self._max_bytes:
            self._fail(
                ChatBadRequestError(f"a message is at most {self._max_bytes} bytes"), CLOSE_TOO_BIG
            )
            return
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            self._error(ChatBadRequestError("not JSON"))
            return
        if not isinstance(value, dict):
            self._error(ChatBadRequestError("a message is a JSON object"))
            return
        if _lone_surrogate(value):
            self._error(ChatBadRequestError("a string holds a lone surrogate (\\ud800-\\udfff)"))
            return
        kind = value.get("type")
        ref = _ref(value.get("ref"))
        if kind == "join":
            self._join(value)
        elif kind == "send":
            self._send(value, ref)
        else:
            self._error(ChatBadRequestError('"type" must be "join" or "send"'), ref)

    def _join(self, value: dict[str, Any]) -> None:
        if self.stream is not None or self._pending is not None:
            self._error(ChatBadRequestError("already joined"))
            return
        nick = clean_nick(value.get("nick")) or f"guest-{self.conn_id}"
        pending = authorize(self.factory.authorizer_for(self.access.app), self.access)
        self._pending = pending
        pending.addCallbacks(self._authorized, self._refused, callbackArgs=(nick,))

    def _refused(self, failure: Failure) -> None:
        self._pending = None
        if failure.check(defer.CancelledError) or self.closing:
            return
        if isinstance(failure.value, StreamError):
            _log.info(
                "chat join of {room} by {peer} refused: {reason}",
                room=self.room_name,
                peer=self.peer,
                reason=failure.getErrorMessage(),
            )
            self._fail(ChatUnauthorizedError(failure.value.description), CLOSE_POLICY)
            return
        _log.failure("authorizing the chat of {peer} failed", failure, peer=self.peer)
        self._fail(ChatUnauthorizedError("could not authorize the join"), CLOSE_POLICY)

    def _authorized(self, _: None, nick: str) -> None:
        self._pending = None
        if self.closing:
            return
        try:
            stream = self.factory.open_stream(self.app, self.name, ChatRejectedError.code)
        except StreamError as error:
            self._fail(ChatRejectedError(error.description), CLOSE_POLICY)
            return
        self.nick = nick
        self.stream = stream
        history = stream.chat.join(self)
        self._write(encode({"type": "joined", "room": self.room_name, "nick": nick}))
        for message in history:
            self._write(encode(message_json(message, history=True)))
        _log.info(
            "{peer} joined the chat of {room} over WebSocket", peer=self.peer, room=self.room_name
        )

    def _send(self, value: dict[str, Any], ref: Any) -> None:
        stream = self.stream
        if stream is None:
            self._error(ChatNotInRoomError("join the room first"), ref)
            return
        now = self.factory.seconds()
        try:
            text = accept_message(
                stream.chat,
                self.nick,
                value.get("text"),
                max_length=self.factory.settings_for(stream.app).chat_max_length,
                rate=self._rate,
                now=now,
            )
        except ChatError as error:
            self._error(error, ref)
            return
        message = stream.post_chat(self.nick, text, int(now * 1000))
        self.chat_sent += 1
        # With --cluster the id is the cluster's, known when the message comes back.
        answer: dict[str, Any] = {"type": "sent"}
        if message is not None:
            answer["id"] = message.id
        if ref is not None:
            answer["ref"] = ref
        self._write(encode(answer))

    # --- ChatParticipant -------------------------------------------------------------

    @property
    def fanout_key(self) -> str:
        """Every chat WebSocket gets the same bytes for a room message."""
        return PROTOCOL_NAME

    def encode_chat(self, message: ChatMessage, timestamp: int) -> bytes:
        """*message* as a framed ``message`` text message (once per broadcast)."""
        return encode(message_json(message))

    def deliver_chat(self, data: bytes) -> None:
        """Write one room message; a failure is this connection's only."""
        try:
            if self._write(data):
                self.chat_delivered += 1
        except Exception as error:
            _log.failure(
                "delivering chat to {peer} in {room} failed; disconnecting it",
                Failure(error, type(error), error.__traceback__),
                peer=self.peer,
                room=self.room_name,
            )
            self.drop_connection()

    def _write(self, data: bytes) -> bool:
        """Write framed *data* under the hard queue limit; whether it was written.

        Past ``--max-queue`` the connection is closed with reason ``max-queue``
        (counted as the policy's disconnects are), as an RTMP chat seat would be.
        """
        if self.closing or self._ws is None:
            return False
        limits = self.factory.policy.limits
        queued = self.link.queued()
        if limits.enabled and queued + len(data) > limits.max_queue:
            _log.warn(
                "disconnecting chat WebSocket {peer} of {room}: {reason} (queued {queued} bytes)",
                peer=self.peer,
                room=self.room_name,
                reason=DisconnectReason.MAX_QUEUE,
                queued=queued,
            )
            self.drop_connection()
            self.factory.viewer_disconnected(None, DisconnectReason.MAX_QUEUE)
            return False
        self.link.write_media(data, queued)
        return True

    def _error(self, error: ChatError, ref: Any = None) -> None:
        answer: dict[str, Any] = {
            "type": "error",
            "code": error.code,
            "description": error.description,
        }
        if ref is not None:
            answer["ref"] = ref
        self._write(encode(answer))

    def _fail(self, error: ChatError, code: int) -> None:
        """Send *error*, then close the WebSocket with *code*."""
        self._error(error)
        self._leave()
        ws = self._ws
        self.closing = True
        if ws is not None:
            ws.loseConnection(code)
        else:
            self.link.close()

    # --- Connection ----------------------------------------------------------------------

    def check_timeouts(self, now: float) -> bool:
        """A WebSocket that has not joined within ``--connect-timeout`` is closed."""
        timeout = self.factory.config.connect_timeout
        if (
            not self.closing
            and self.stream is None
            and self._pending is None
            and timeout
            and now - self.opened_at >= timeout
        ):
            self.factory.connection_refused(self, "timeout", "no chat join in time")
            self._fail(ChatTimeoutError(f"no join within {timeout:g} s"), CLOSE_POLICY)
        return self.closing

    def drop_connection(self) -> None:
        """Close now, discarding what is queued (idempotent)."""
        if self.closing:
            return
        self._leave()
        self.closing = True
        self.link.abort()

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's numbers now."""
        verb = "chat" if self.stream is not None else "joining"
        return ConnectionStats(
            conn_id=self.conn_id,
            peer=self.peer,
            protocol=PROTOCOL_NAME,
            role=f"{verb} {self.room_name}",
            queued=self.link.queued(),
            bytes_sent=self.link.media_written,
            viewer=None,
            publishing=(),
        )

    # --- the end -----------------------------------------------------------------------

    def _leave(self) -> None:
        """Leave the room (the stream may be forgotten) and stop a pending join."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.chat.leave(self)
            self.factory.release_stream(stream)

    def connection_lost(self) -> None:
        """The WebSocket is gone: forget it."""
        self._leave()
        self.closing = True
        if self._tracked:
            self._tracked = False
            self.factory.connection_closed(self)


class _ChatWebSocket(SessionWebSocket["ChatSession"]):
    """The ``twisted.web.websocket`` protocol of one :class:`ChatSession`."""

    @override
    def textMessageReceived(self, message: str) -> None:
        self.session.message_received(message)

    @override
    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self.session._error(ChatBadRequestError("messages are JSON text, not binary"))


class _SessionFactory:
    """``WebSocketResource``'s factory for one session."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session

    def buildProtocol(self, request: Request) -> _ChatWebSocket:
        return _ChatWebSocket(self.session)


class ChatResource(Resource):
    """``/APP/NAME/chat``: the chat WebSocket of the stream ``APP/NAME``."""

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def _text(self, request: Request, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return message.encode("utf-8") + b"\n"

    def render_GET(self, request: Request) -> bytes | int:
        """Open the chat WebSocket (a plain GET is told to upgrade, 426)."""
        allow_origin(request, self.factory.config.http_cors_origin)
        segments = [*(request.prepath or ()), *(request.postpath or ())]
        target = stream_names(segments[:-1]) if segments[-1:] == [CHAT_SEGMENT] else None
        if target is None:
            return self._text(request, 404, "not found: chat rooms are at /APP/NAME/chat")
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            request.setHeader(b"upgrade", b"websocket")
            return self._text(request, 426, "the chat is a WebSocket (Upgrade: websocket)")
        args = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in request.args.items()
            if values
        }
        session = ChatSession(self.factory, request, *target, args)
        refusal = session.admit()
        if refusal is not None:
            session.connection_lost()
            request.write(self._text(request, 503, refusal))
            request.finish()
            session.link.close()  # a refused connection is not kept alive
            return NOT_DONE_YET
        try:
            answer = WebSocketResource(_SessionFactory(session)).render_GET(request)
        except HANDSHAKE_ERRORS as error:
            _log.info(
                "WebSocket handshake of {peer} refused: {error}", peer=session.peer, error=error
            )
            session.connection_lost()
            return self._text(request, 400, "bad WebSocket handshake")
        if answer is not NOT_DONE_YET:
            session.connection_lost()  # wsproto refused the handshake: its 400
        return answer
