"""What the mixins offer one another, one small :class:`typing.Protocol` per thing offered.

At runtime every mixin subclasses only :class:`~streamserver.protocol.base.ProtocolRoot`
(the import-time chain check and ``check_composition`` see nothing else).  For the
type checker, each mixin also subclasses the contract it offers and the contracts
it needs, through a base defined under ``TYPE_CHECKING``::

    if TYPE_CHECKING:
        from streamserver.protocol.contracts import Messaging, Session

        class _Contracts(Messaging, Session, ProtocolRoot): ...
    else:
        _Contracts = ProtocolRoot

    class SessionMixin(_Contracts): ...

A contract's members have no value (an annotation, or a ``...`` body), so mypy
counts them as abstract in every class that inherits the contract, until a class
before the contract in the MRO implements them.  The offering mixin subclasses
its own contract, which puts it there (and checks its signatures against the
contract).  So a composition without a mixin that another one needs cannot be
instantiated ("Cannot instantiate abstract class ... with abstract attributes
..."); and ``protocol/server.py`` assigns the composed protocol to
:class:`Composition`, so a mixin nobody else needs (chat, the guard, the
handshake) cannot go missing either.

Two rules keep the MRO that mypy computes for the composition sound:

- every ``_Contracts`` base names its contracts in the order they are defined
  here (the order of the composition), or no consistent MRO exists;
- attributes are declared with the offering mixin's own type, never as
  read-only properties: a property in a needing mixin's bases cannot override
  the offering mixin's attribute when the needing mixin comes first (the guard
  needs the session).

What is the root's (``factory``, ``link``, ``conn_id``, ``closing``,
``drop_connection`` and the chained hooks) is in no contract: every mixin has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.defer import Deferred

    from streamserver.codec.messages import Command, Message
    from streamserver.errors import StreamError
    from streamserver.events import SessionEvent
    from streamserver.media.stream import Stream
    from streamserver.media.viewer import Viewer


class HandshakeState(Protocol):
    """Offered by :class:`~streamserver.protocol.handshake.HandshakeMixin`."""

    @property
    def handshake_done(self) -> bool:
        """Whether the RTMP handshake has completed."""
        ...


class Timeouts(Protocol):
    """Offered by :class:`~streamserver.protocol.guard.GuardMixin` to the factory's watchdog."""

    def check_timeouts(self, now: float) -> bool:
        """Apply the timeouts at time *now*; return whether the connection is closed."""
        ...


class Messaging(Protocol):
    """Offered by :class:`~streamserver.protocol.chunking.ChunkingMixin`: sending messages."""

    #: Our outgoing chunk size.
    out_chunk_size: int

    def send_message(self, message: Message, csid: int | None = None) -> None:
        """Encode *message* with the connection's chunk encoder and write it."""
        ...

    def set_outgoing_chunk_size(self, size: int) -> None:
        """Announce *size* with Set Chunk Size and use it for everything after."""
        ...


class Session(Protocol):
    """Offered by :class:`~streamserver.protocol.session.SessionMixin`: the NetConnection."""

    #: The peer address as ``host:port``, for logs.
    peer: str
    #: The application name from ``connect``, ``None`` before it.
    app: str | None
    #: The ``connect`` command object.
    connect_params: dict[str, Any]

    def send_status(self, stream_id: int, code: str, description: str = "", **extra: Any) -> None:
        """Send ``onStatus`` with level ``status`` on message stream *stream_id*."""
        ...

    def reply(self, command: Command, *values: Any) -> None:
        """Send ``_result`` for *command* (nothing for transaction id 0)."""
        ...

    def refuse(self, command: Command, error: StreamError) -> None:
        """Answer *command* with *error*: the one place a refusal is turned into a reply."""
        ...

    def authorize_access(self, action: str, name: str, args: Mapping[str, str]) -> Deferred[None]:
        """Ask the factory's authorizers whether this peer may *action* *name*."""
        ...

    def session_event(self, role: str, stream: Stream, args: Mapping[str, str]) -> SessionEvent:
        """A session event of this connection's *role* (publisher, viewer) in *stream*."""
        ...


class Disconnecting(Protocol):
    """Offered by :class:`~streamserver.protocol.backpressure.BackpressureMixin`."""

    def disconnect_viewer(self, reason: str) -> bool:
        """Drop this connection for the policy's *reason*, logging the viewer's numbers.

        :returns: whether it was dropped now (``False``: it was closing already).
        """
        ...


class Publishing(Protocol):
    """Offered by :class:`~streamserver.protocol.publish.PublishMixin`."""

    #: The streams this connection publishes, by message stream id.
    publishing: dict[int, Stream]


class Playing(Protocol):
    """Offered by :class:`~streamserver.protocol.subscribe.SubscribeMixin`."""

    #: The viewer of the current play, or ``None``.
    viewer: Viewer | None


class Chatting(Protocol):
    """Offered by :class:`~streamserver.protocol.chat.ChatMixin` to the chat rooms' seats."""

    def deliver_chat(self, data: bytes) -> None:
        """Write one chat message's chunk bytes: never dropped, the hard limit applies."""
        ...


class Composition(
    HandshakeState,
    Timeouts,
    Messaging,
    Session,
    Disconnecting,
    Publishing,
    Playing,
    Chatting,
    Protocol,
):
    """Every contract at once: what a complete composition of the mixins provides.

    ``protocol/server.py`` assigns an ``RTMPServerProtocol()`` to it for mypy.
    """
