"""PublishMixin: an encoder publishes a live stream on one of its message streams.

Hooks overridden: ``connectionMade``, ``message_received`` (relays audio, video
and data messages of a publishing message stream to the :class:`Stream`),
``message_stream_deleted`` and ``session_closed`` (end the publish).

Events emitted: ``stream_joined`` / ``stream_left`` with role ``"publisher"``
when a publish starts / ends (the chat mixin seats the publisher in the room).

Commands defined here: ``publish``.

Offers :class:`~streamserver.protocol.contracts.Publishing`; needs
:class:`~streamserver.protocol.contracts.Messaging` and
:class:`~streamserver.protocol.contracts.Session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from streamserver.auth import RelayRedirect
from streamserver.codec import messages
from streamserver.codec.messages import Command, Message, MessageType
from streamserver.errors import BadNameError, StreamError
from streamserver.events import PUBLISH, SessionEvent
from streamserver.media.stream import Stream
from streamserver.protocol.base import ProtocolRoot
from streamserver.protocol.session import split_name

_log = Logger()

_MEDIA_TYPES = frozenset(
    {MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0, MessageType.DATA_AMF3}
)


def split_aggregate(message: Message) -> list[Message]:
    """Split an aggregate message (type 22, spec 7.1.6) into its sub-messages.

    Sub-message timestamps are rebased so the first one carries the aggregate
    message's timestamp.  A truncated tail is ignored.
    """
    payload = message.payload
    out: list[Message] = []
    offset = 0
    base: int | None = None
    while offset + 11 <= len(payload):
        tag_type = payload[offset]
        size = int.from_bytes(payload[offset + 1 : offset + 4], "big")
        timestamp = int.from_bytes(payload[offset + 4 : offset + 7], "big") | (
            payload[offset + 7] << 24
        )
        start = offset + 11
        end = start + size
        if end > len(payload):
            break
        if base is None:
            base = timestamp
        stamp = (message.timestamp + timestamp - base) & 0xFFFFFFFF
        out.append(Message(tag_type, message.stream_id, stamp, payload[start:end]))
        offset = end + 4  # skip PreviousTagSize
    return out


if TYPE_CHECKING:
    from streamserver.protocol.contracts import Messaging, Publishing, Session

    class _Contracts(Messaging, Session, Publishing, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class PublishMixin(_Contracts):
    """Relays what the peer publishes to its :class:`Stream`.

    A ``publish`` is first put to the factory's authorizer
    (:func:`streamserver.auth.authorize`); until it answers, the message stream
    is in :attr:`publish_pending`, not in :attr:`publishing`, so its media is
    not relayed and the publish has not started.  A refusal is answered through
    :meth:`~streamserver.protocol.session.SessionMixin.refuse`.

    :ivar publishing: the streams this connection publishes, by message stream id.
    :ivar publish_events: their session events (told to ``factory.events``), by
        message stream id.
    :ivar publish_pending: authorizations in progress, by message stream id.
    """

    publishing: dict[int, Stream]
    publish_events: dict[int, SessionEvent]
    publish_pending: dict[int, defer.Deferred[None]]
    publish_args: dict[str, str]

    @override
    def connectionMade(self) -> None:
        self.publishing = {}
        self.publish_events = {}
        self.publish_pending = {}
        super().connectionMade()

    @override
    def message_received(self, message: Message) -> None:
        type_id = message.type_id
        if type_id in _MEDIA_TYPES:
            stream = self.publishing.get(message.stream_id)
            if stream is not None:
                stream.broadcast(message)
        elif type_id == MessageType.AGGREGATE:
            stream = self.publishing.get(message.stream_id)
            if stream is not None:
                for sub_message in split_aggregate(message):
                    if sub_message.type_id in _MEDIA_TYPES:
                        stream.broadcast(sub_message)
        super().message_received(message)

    @override
    def message_stream_deleted(self, stream_id: int) -> None:
        self._cancel_pending_publish(stream_id)
        self._stop_publishing(stream_id)
        super().message_stream_deleted(stream_id)

    @override
    def session_closed(self) -> None:
        for stream_id in list(self.publish_pending):
            self._cancel_pending_publish(stream_id)
        for stream_id in list(self.publishing):
            self._stop_publishing(stream_id)
        super().session_closed()

    def command_publish(self, command: Command) -> None:
        """``publish``: authorize, then publish the named stream on the command's stream.

        :raises BadNameError: this message stream publishes (or waits to) already.
        """
        name, args = split_name(command.args[0] if command.args else None)
        stream_id = command.stream_id
        if stream_id in self.publishing or stream_id in self.publish_pending:
            raise BadNameError("this message stream is already publishing")
        pending = self.authorize_access("publish", name, args)
        self.publish_pending[stream_id] = pending
        pending.addCallback(self._publish_authorized, command, name, args)
        pending.addErrback(self._publish_failed, command)

    def _cancel_pending_publish(self, stream_id: int) -> None:
        pending = self.publish_pending.pop(stream_id, None)
        if pending is not None:
            pending.cancel()

    def _publish_failed(self, failure: Failure, command: Command) -> None:
        """The authorization refused the publish, or starting it failed."""
        if failure.check(defer.CancelledError) or self.closing:
            return  # the stream was deleted or the connection closed meanwhile
        self.publish_pending.pop(command.stream_id, None)
        if isinstance(failure.value, StreamError):
            self.refuse(command, failure.value)
        else:
            _log.failure("publish by {peer} failed", failure, peer=self.peer)

    def _publish_authorized(
        self, decision: RelayRedirect | None, command: Command, name: str, args: dict[str, str]
    ) -> None:
        """Start the publish the authorizer allowed, unless it was cancelled meanwhile.

        A :class:`~streamserver.auth.RelayRedirect` (an ``--on-publish`` 3xx) pushes
        the stream there too, while it is published.

        :raises BadNameError: the name is being published already.
        :raises StreamError: the server's stream limit is reached.
        """
        stream_id = command.stream_id
        if self.publish_pending.pop(stream_id, None) is None or self.closing:
            return
        self.publish_args = args
        stream = self.factory.open_stream(self.app or "", name, "NetStream.Publish.Rejected")
        self.factory.pulls.supersede(stream)  # a local publish ends a pull of the stream
        try:
            stream.publish(self)
        except BadNameError:
            self.factory.release_stream(stream)
            raise
        self.publishing[stream_id] = stream
        self.send_message(messages.stream_begin(stream_id))
        self.send_status(stream_id, "NetStream.Publish.Start", f"{name} is now published.")
        _log.info("{app}/{name} published by {peer}", app=self.app, name=name, peer=self.peer)
        self.stream_joined(stream, stream_id, "publisher", self.publish_args)
        event = self.session_event(PUBLISH, stream, self.publish_args)
        self.publish_events[stream_id] = event
        self.factory.events.started(event)
        if isinstance(decision, RelayRedirect):
            self.factory.pushes.redirect(stream, decision.url)

    def _stop_publishing(self, stream_id: int) -> None:
        stream = self.publishing.pop(stream_id, None)
        if stream is None:
            return
        stream.unpublish(self)
        self.stream_left(stream, stream_id, "publisher")
        event = self.publish_events.pop(stream_id, None)
        if event is not None:
            self.factory.events.ended(event, self.factory.seconds())
        self.factory.release_stream(stream)
        _log.info(
            "{app}/{name} unpublished by {peer}", app=stream.app, name=stream.name, peer=self.peer
        )
