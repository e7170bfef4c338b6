"""SessionMixin: the NetConnection commands and command dispatch.

Hooks overridden: ``connectionMade`` (registers the connection with the
factory), ``message_received`` (dispatches command messages to
``command_<name>`` methods; answers User Control pings), ``connectionLost``
(emits ``session_closed`` once, then unregisters).

Commands defined here: ``connect``, ``createStream``, ``deleteStream``,
``closeStream``, ``releaseStream``, ``FCPublish``, ``FCUnpublish``,
``getStreamLength``, ``ping``, ``_checkbw`` and the replies ``_result``/``_error``
(ignored).  Every :class:`~streamserver.errors.StreamError` a command raises is
turned into an ``onStatus``/``_error`` reply in :meth:`SessionMixin.refuse`, the
one place that does so.  A command message over ``max_command_bytes`` or with a
name over :data:`MAX_COMMAND_NAME` bytes is a protocol error (the peer is dropped)
and is never decoded or looked up.

Offers :class:`~streamserver.protocol.contracts.Session`; needs
:class:`~streamserver.protocol.contracts.Messaging`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from streamserver.auth import AccessRequest, authorize
from streamserver.codec import messages
from streamserver.codec.messages import Command, Message, MessageType, UserControlEvent
from streamserver.errors import ConnectRejectedError, ProtocolError, StreamError
from streamserver.events import PUBLISH, SessionEvent
from streamserver.protocol.base import ProtocolRoot

_log = Logger()

#: Longest command name accepted, in UTF-8 bytes: every command we know is under
#: 20; a longer name is a broken or hostile peer, and its connection is dropped.
MAX_COMMAND_NAME = 64

#: Longest application or stream name accepted (bytes of UTF-8 are not needed:
#: names are only compared and logged).
MAX_NAME_LENGTH = 256

#: The version string and capabilities FMS 3 reported; ffmpeg, OBS and Flash
#: players accept it, and some players look for "FMS/" in it.
FMS_VERSION = "FMS/3,0,1,123"
CAPABILITIES = 31


def split_name(raw: Any) -> tuple[str, dict[str, str]]:
    """Split ``name?a=b`` into the name and its query parameters.

    :raises StreamError: the name is not a non-empty string of sane length.
    """
    if not isinstance(raw, str):
        raise StreamError("stream name must be a string", code="NetStream.Play.StreamNotFound")
    name, _, query = raw.partition("?")
    name = name.strip().strip("/")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise StreamError("invalid stream name", code="NetStream.Play.StreamNotFound")
    return name, dict(parse_qsl(query, keep_blank_values=True))


if TYPE_CHECKING:
    from streamserver.media.stream import Stream
    from streamserver.protocol.contracts import Messaging, Session

    class _Contracts(Messaging, Session, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class SessionMixin(_Contracts):
    """NetConnection state: the application, message stream ids, command dispatch.

    :ivar peer: the peer address as ``host:port``.
    :ivar app: the application name from ``connect``, ``None`` before it.
    :ivar connect_params: the ``connect`` command object.
    :ivar connected_at: when the connection was made (factory clock).
    """

    peer = "?"
    app: str | None = None
    connect_params: dict[str, Any]
    connected_at = 0.0
    _next_stream_id = 1
    _session_open = False

    @override
    def connectionMade(self) -> None:
        self.connect_params = {}
        self.connected_at = self.factory.seconds()
        self.peer = self.link.peer_text
        self._session_open = True
        self.factory.connection_opened(self)
        super().connectionMade()

    @override
    def message_received(self, message: Message) -> None:
        type_id = message.type_id
        if type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            self._dispatch(self._parse_command(message))
        elif type_id == MessageType.USER_CONTROL:
            event, values = messages.parse_user_control(message)
            if event == UserControlEvent.PING_REQUEST and values:
                self.send_message(messages.ping_response(values[0]))
        super().message_received(message)

    @override
    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.end_session()
        super().connectionLost(reason)

    def end_session(self) -> None:
        """Emit ``session_closed`` once and unregister from the factory."""
        if self._session_open:
            self._session_open = False
            self.session_closed()
            self.factory.connection_closed(self)
            _log.info(
                "{peer} disconnected after {seconds:.1f} s",
                peer=self.peer,
                seconds=self.factory.seconds() - self.connected_at,
            )

    # --- dispatch and replies --------------------------------------------------

    def _parse_command(self, message: Message) -> Command:
        """Decode a command message within the size and command name limits.

        :raises ProtocolError: the message is over ``max_command_bytes``, its
            name over :data:`MAX_COMMAND_NAME` UTF-8 bytes, or its AMF malformed.
        """
        limit = self.factory.config.max_command_bytes
        if limit and len(message.payload) > limit:
            raise ProtocolError(
                f"command message of {len(message.payload)} bytes exceeds the limit of "
                f"{limit} bytes (--max-command-bytes)"
            )
        command = messages.parse_command(message)
        if len(command.name.encode("utf-8", "surrogatepass")) > MAX_COMMAND_NAME:
            raise ProtocolError(
                f"command name of {len(command.name)} characters exceeds {MAX_COMMAND_NAME} bytes"
            )
        return command

    def _dispatch(self, command: Command) -> None:
        name = command.name
        handler = None
        if len(name) <= MAX_COMMAND_NAME and name.isidentifier():
            handler = getattr(self, "command_" + name, None)
        try:
            if handler is None:
                _log.debug("unknown command {command!r} from {peer}", command=name, peer=self.peer)
                raise StreamError(f"unknown command {name!r}", code="NetConnection.Call.Failed")
            if self.app is None and name != "connect":
                raise StreamError(f"{name!r} before connect", code="NetConnection.Call.Failed")
            handler(command)
        except StreamError as error:
            self.refuse(command, error)

    def refuse(self, command: Command, error: StreamError) -> None:
        """Answer *command* with *error*'s code: ``_error``, or ``onStatus`` on its stream.

        Commands on a message stream (publish, play) and commands with
        transaction id 0 get an ``onStatus`` with level ``error``; the others an
        ``_error`` reply to their transaction.  An error whose
        ``transaction_reply`` is set (chat) gets ``_error`` whenever the command
        has a transaction id, on a message stream too.
        """
        _log.info(
            "refused {command} from {peer}: {code} {reason}",
            command=command.name,
            peer=self.peer,
            code=error.code,
            reason=error.description,
        )
        info = messages.status_info(error.code, error.description, "error")
        if command.transaction_id and (error.transaction_reply or not command.stream_id):
            self.send_message(messages.command("_error", command.transaction_id, None, info))
        else:
            self.send_message(
                messages.command("onStatus", 0, None, info, stream_id=command.stream_id)
            )
        if isinstance(error, ConnectRejectedError):
            self.drop_connection()

    def authorize_access(
        self, action: str, name: str, args: Mapping[str, str]
    ) -> defer.Deferred[None]:
        """Ask the factory's authorizers whether this peer may *action* (publish/play) *name*.

        :returns: a Deferred that fires when allowed and fails with
            :class:`~streamserver.errors.UnauthorizedError` when refused.
        """
        request = AccessRequest(
            action,
            self.app or "",
            name,
            args,
            self.link.peer,
            self.conn_id,
            self.connect_params,
        )
        return authorize(self.factory.authorizer_for(request.app), request)

    def session_event(self, role: str, stream: Stream, args: Mapping[str, str]) -> SessionEvent:
        """A :class:`~streamserver.events.SessionEvent` of this connection's *role* in *stream*."""
        request = AccessRequest(
            "publish" if role == PUBLISH else "play",
            stream.app,
            stream.name,
            args,
            self.link.peer,
            self.conn_id,
            self.connect_params,
        )
        return SessionEvent(role, stream, request, "rtmp", self.factory.seconds())

    def reply(self, command: Command, *values: Any) -> None:
        """Send ``_result`` for *command* (nothing for transaction id 0)."""
        if command.transaction_id:
            self.send_message(
                messages.command("_result", command.transaction_id, *values or (None,))
            )

    def send_status(self, stream_id: int, code: str, description: str = "", **extra: Any) -> None:
        """Send ``onStatus`` with level ``status`` on message stream *stream_id*."""
        self.send_message(messages.on_status(code, description, stream_id=stream_id, **extra))

    # --- NetConnection commands ------------------------------------------------

    def command_connect(self, command: Command) -> None:
        """``connect``: remember the application, set up the connection, answer."""
        if self.app is not None:
            raise ConnectRejectedError("already connected", code="NetConnection.Connect.Rejected")
        params = command.command_object if isinstance(command.command_object, dict) else {}
        app = params.get("app", "")
        if not isinstance(app, str):
            raise ConnectRejectedError("app must be a string")
        app = app.partition("?")[0].strip("/")
        if not app or len(app) > MAX_NAME_LENGTH:
            raise ConnectRejectedError("no application name in connect")
        self.app = app
        self.connect_params = params
        config = self.factory.config
        self.send_message(messages.window_ack_size(config.window_ack_size))
        self.send_message(messages.set_peer_bandwidth(config.peer_bandwidth))
        self.set_outgoing_chunk_size(config.chunk_size)
        encoding = params.get("objectEncoding", 0)
        self.reply(
            command,
            {"fmsVer": FMS_VERSION, "capabilities": CAPABILITIES, "mode": 1},
            messages.status_info(
                "NetConnection.Connect.Success",
                "Connection succeeded.",
                objectEncoding=encoding if encoding in (0, 3) else 0,
            ),
        )
        _log.info("{peer} connected to {app}", peer=self.peer, app=app)

    def command_createStream(self, command: Command) -> None:
        """``createStream``: allocate a message stream id."""
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self.reply(command, None, stream_id)

    def _stream_id_argument(self, command: Command) -> int:
        value = command.args[0] if command.args else command.stream_id
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return command.stream_id
        return int(value)

    def command_deleteStream(self, command: Command) -> None:
        """``deleteStream``: end whatever runs on the given message stream."""
        self.message_stream_deleted(self._stream_id_argument(command))

    def command_closeStream(self, command: Command) -> None:
        """``closeStream``: end whatever runs on the message stream it came on."""
        self.message_stream_deleted(command.stream_id)

    def command_releaseStream(self, command: Command) -> None:
        """``releaseStream``: FMS-era courtesy before publishing; acknowledged."""
        self.reply(command)

    def command_FCPublish(self, command: Command) -> None:
        """``FCPublish``: acknowledged with ``onFCPublish`` as FMS did."""
        self.reply(command)
        name = command.args[0] if command.args and isinstance(command.args[0], str) else ""
        self.send_message(
            messages.command(
                "onFCPublish", 0, None, messages.status_info("NetStream.Publish.Start", name)
            )
        )

    def command_FCUnpublish(self, command: Command) -> None:
        """``FCUnpublish``: acknowledged; ``deleteStream`` ends the publish."""
        self.reply(command)

    def command_getStreamLength(self, command: Command) -> None:
        """``getStreamLength``: a live stream has no length; answer 0."""
        self.reply(command, None, 0)

    def command_ping(self, command: Command) -> None:
        """``ping``: answered at once."""
        self.reply(command)

    def command__checkbw(self, command: Command) -> None:
        """``_checkbw``: bandwidth checks are not done; answered at once."""
        self.reply(command)

    def command__result(self, command: Command) -> None:
        """Replies to calls we made are not needed; ignored."""

    def command__error(self, command: Command) -> None:
        """Error replies to calls we made are logged."""
        _log.info("{peer} answered with _error: {args!r}", peer=self.peer, args=command.args)
