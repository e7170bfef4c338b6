"""What the server's WebSockets (WebSocket-FLV, the chat) share.

:data:`HANDSHAKE_ERRORS`: ``twisted.web.websocket.WebSocketResource.render_GET``
hands the request's headers to wsproto, which parses them again with h11: a
header that is not ASCII raises ``UnicodeDecodeError``, a repeated ``Host``
h11's ``ProtocolError``, others wsproto's.  Each is the client's fault, worth a
400, never an unhandled error; this is what to catch around the call
(``bench/fuzz.py --target http`` found the first two).

:class:`SessionWebSocket`: the ``twisted.web.websocket`` protocol of one
session (an :class:`~streamserver.http.flv.FlvSession`, a
:class:`~streamserver.http.chat.ChatSession`): it tells the session when the
WebSocket opens and when it is gone, ignores pongs and, unless a subclass says
otherwise, the client's messages.  The limits on what a client may send are the
HTTP connection's (:mod:`streamserver.http.channel`).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import h11
import wsproto.utilities

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.web.websocket import WebSocketTransport

__all__ = [
    "BINARY",
    "HANDSHAKE_ERRORS",
    "TEXT",
    "SessionWebSocket",
    "WebSocketSession",
    "server_frame",
]

#: The opcodes of a text and a binary message (RFC 6455 5.2).
TEXT = 0x1
BINARY = 0x2

HANDSHAKE_ERRORS: tuple[type[Exception], ...] = (
    UnicodeError,
    ValueError,
    h11.ProtocolError,
    wsproto.utilities.ProtocolError,
)


def server_frame(opcode: int, data: bytes) -> bytes:
    """*data* as one final, unmasked WebSocket frame of *opcode* (RFC 6455 5.2).

    What a server sends; written straight to the connection's transport, so a
    broadcast frames its bytes once for every viewer or participant.
    """
    size = len(data)
    first = 0x80 | opcode
    if size < 126:
        header = struct.pack(">BB", first, size)
    elif size < 0x10000:
        header = struct.pack(">BBH", first, 126, size)
    else:
        header = struct.pack(">BBQ", first, 127, size)
    return header + data


class WebSocketSession(Protocol):
    """What :class:`SessionWebSocket` tells its session."""

    def websocket_open(self, transport: WebSocketTransport) -> None:
        """The handshake is done: messages go out through *transport*."""
        ...

    def connection_lost(self) -> None:
        """The WebSocket (and its connection) is gone."""
        ...


_S = TypeVar("_S", bound=WebSocketSession)


class SessionWebSocket(Generic[_S]):
    """The ``twisted.web.websocket`` protocol of one session.

    :ivar session: the session it speaks for.
    """

    def __init__(self, session: _S) -> None:
        self.session = session

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.session.websocket_open(transport)

    def negotiationFinished(self) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        pass  # by default the client has nothing to say: ignored, not an error

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.session.connection_lost()
