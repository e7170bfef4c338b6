"""What a WebSocket handshake can raise on what a client sends.

``twisted.web.websocket.WebSocketResource.render_GET`` hands the request's
headers to wsproto, which parses them again with h11: a header that is not
ASCII raises ``UnicodeDecodeError``, a repeated ``Host`` h11's
``ProtocolError``, others wsproto's.  Each is the client's fault, worth a 400,
never an unhandled error; :data:`HANDSHAKE_ERRORS` is what to catch around the
call (``bench/fuzz.py --target http`` found the first two).
"""

from __future__ import annotations

import h11
import wsproto.utilities

__all__ = ["HANDSHAKE_ERRORS"]

HANDSHAKE_ERRORS: tuple[type[Exception], ...] = (
    UnicodeError,
    ValueError,
    h11.ProtocolError,
    wsproto.utilities.ProtocolError,
)
