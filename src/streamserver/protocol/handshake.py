"""HandshakeMixin: the RTMP handshake in front of the chunk stream.

Hooks overridden: ``connectionMade`` (starts a handshake), ``dataReceived``
(feeds the handshake until it completes, then passes on only the bytes after
C2).  Emits ``handshake_completed``.

Offers :class:`~streamserver.protocol.contracts.HandshakeState`; needs no other mixin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import override

from streamserver.codec.handshake import ServerHandshake
from streamserver.protocol.base import ProtocolRoot

if TYPE_CHECKING:
    from streamserver.protocol.contracts import HandshakeState

    class _Contracts(HandshakeState, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class HandshakeMixin(_Contracts):
    """Runs the server side of the handshake (simple or digest) over the transport.

    :ivar _handshake: the sans-I/O handshake, ``None`` once it completed.
    """

    _handshake: ServerHandshake | None = None

    @override
    def connectionMade(self) -> None:
        self._handshake = ServerHandshake()
        super().connectionMade()

    @override
    def dataReceived(self, data: bytes) -> None:
        if self._handshake is not None:
            data = self._feed_handshake(self._handshake, data)
        super().dataReceived(data)

    def _feed_handshake(self, handshake: ServerHandshake, data: bytes) -> bytes:
        """Feed *data* to the handshake; return the bytes that follow it, if done."""
        reply = handshake.receive_data(data)
        if reply:
            self.link.write(reply)
        if not handshake.complete:
            return b""
        self._handshake = None
        self.handshake_completed()
        return handshake.leftover

    @property
    def handshake_done(self) -> bool:
        """Whether the handshake has completed."""
        return self._handshake is None
