"""RTMPServerProtocol: the ONE place the mixins are composed.

The order of the bases is the order every hook chain runs in: the handshake
first (it decides which bytes are chunk stream), the guard (its
``connectionMade`` checks the connection limits once every mixin behind it has
set up; its ``dataReceived`` notes that the peer is alive), then chunking (it
turns bytes into messages), then the session (command dispatch), backpressure (whose
``admit_frame`` runs its policy after every mixin behind it has had its say),
publish, subscribe, and chat last: publish and subscribe emit ``stream_joined``
/ ``stream_left`` and end their own work on ``message_stream_deleted`` and
``session_closed`` before chat gives up the seats that remain.
:func:`~streamserver.protocol.base.check_composition` runs at import.

:meth:`RTMPServerProtocol.dataReceived` is the protocol boundary: the one place
where a :class:`~streamserver.errors.ProtocolError` is caught, logged with the
peer, and answered by dropping that connection only.

Every mixin declares, for the type checker, the contracts it offers and needs
(:mod:`streamserver.protocol.contracts`); the end of this module checks that the
composition provides all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from typing_extensions import override

from streamserver.errors import ProtocolError
from streamserver.protocol.backpressure import BackpressureMixin
from streamserver.protocol.base import check_composition
from streamserver.protocol.chat import ChatMixin
from streamserver.protocol.chunking import ChunkingMixin
from streamserver.protocol.guard import GuardMixin
from streamserver.protocol.handshake import HandshakeMixin
from streamserver.protocol.publish import PublishMixin
from streamserver.protocol.session import SessionMixin
from streamserver.protocol.subscribe import SubscribeMixin
from streamserver.stats import ConnectionStats

if TYPE_CHECKING:
    from streamserver.protocol.contracts import Composition

_log = Logger()


class RTMPServerProtocol(
    HandshakeMixin,
    GuardMixin,
    ChunkingMixin,
    SessionMixin,
    BackpressureMixin,
    PublishMixin,
    SubscribeMixin,
    ChatMixin,
):
    """The server side of one RTMP connection."""

    @override
    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)
        except ProtocolError as error:
            _log.warn(
                "dropping {peer}: {error_type}: {error}",
                peer=self.peer,
                error_type=type(error).__name__,
                error=str(error),
            )
            self.drop_connection()
        except Exception:
            _log.failure("dropping {peer}: unexpected error", peer=self.peer)
            self.drop_connection()

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's numbers now (what the console shows)."""
        viewer = self.viewer
        publishing = tuple(f"{s.app}/{s.name}" for s in self.publishing.values())
        if viewer is not None:
            role = f"play {viewer.stream.app}/{viewer.stream.name}"
        elif publishing:
            role = "publish " + ",".join(publishing)
        elif self.app:
            role = f"connected {self.app}"
        else:
            role = "handshake"
        return ConnectionStats(
            conn_id=self.conn_id,
            peer=self.peer,
            protocol=self.protocol_name,
            role=role,
            queued=self.link.queued(),
            bytes_sent=self.link.media_written,
            viewer=(
                viewer.stats(congested=self.congested, closing=self.closing)
                if viewer is not None
                else None
            ),
            publishing=publishing,
        )


check_composition(RTMPServerProtocol)

if TYPE_CHECKING:
    # The composition checked statically (by mypy; this never runs): the composed
    # class is concrete, so every contract a mixin needs is implemented by the mixin
    # that offers it, and it provides every contract, also those no other mixin
    # needs (the handshake's, the guard's, chat's).  Leaving any mixin out of the
    # bases above is a type error here.
    _composed: Composition = RTMPServerProtocol()
