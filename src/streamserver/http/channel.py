"""The HTTP connection: ``twisted.web``'s channel with the server's limits.

Every HTTP connection is a :class:`StreamChannel`.  Before any resource runs it
enforces, from the :class:`~streamserver.config.ServerConfig`:

- ``--max-connections-per-ip``: the connection counts against its address
  together with the address's RTMP connections (loopback is exempt); past it
  the connection is answered 503 and closed;
- ``--http-max-header-bytes``: the request line and headers together (and any
  one line) may take this many bytes; past it 431 and closed, before the rest
  is read (Twisted's own bound answers a bare 400);
- ``--http-max-headers``: header lines per request; past it 431 and closed;
- ``--http-header-timeout``: from a request's first byte to the end of its
  headers (a slowloris client trickling a header a minute is cut); 408 and
  closed;
- ``--http-max-body-bytes``: a body announced or sent larger than this is
  answered 413 and closed (the API's JSON bodies are a few hundred bytes);
- a request target that is not printable ASCII (RFC 9112 3.2) is a 400;
- a WebSocket client may send :data:`WS_INPUT_BYTES` per :data:`WS_INPUT_SECONDS`
  (a token bucket over the raw bytes); past it the connection is aborted.
  Frames wsproto refuses (an unknown opcode, invalid UTF-8 in a text message, an
  unmasked client frame) close the WebSocket with its code (1002, 1007).
  Once the server has sent its close, a frame wsproto cannot answer any more
  (a ping crossing the close) closes the connection instead of raising.

An idle keep-alive connection is closed by the site's timeout
(:data:`~streamserver.http.site.IDLE_TIMEOUT`).  Each refusal is counted by
kind in ``factory.refusals`` and logged through
:meth:`~streamserver.factory.RTMPServerFactory.connection_refused` (at most one
line a second per kind, with the numbers).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from typing_extensions import override
from wsproto.utilities import LocalProtocolError

from streamserver.transport import address_text

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol

    from streamserver.factory import RTMPServerFactory

__all__ = ["WS_INPUT_BYTES", "WS_INPUT_SECONDS", "StreamChannel", "WebSocketInput"]

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


#: What a WebSocket client may send: :data:`WS_INPUT_BYTES` at once, refilled over
#: :data:`WS_INPUT_SECONDS`.  An FLV viewer sends nothing but pongs and a close; a chat
#: client at the chat rate (5 messages per 10 s) of the largest message the chat
#: WebSocket takes sends a few KiB.  Twisted reassembles a message of any size
#: before it is handed on, so this bound is what keeps one endless message, or a
#: ping flood (each ping is answered), from costing memory and CPU: past it the
#: connection is aborted.
WS_INPUT_BYTES = 64 * 1024
WS_INPUT_SECONDS = 10.0


class WebSocketInput:
    """A token bucket over the bytes a WebSocket client sends (before decoding)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens = float(WS_INPUT_BYTES)
        self._at = clock()

    def take(self, size: int) -> bool:
        """Whether *size* more bytes fit now (and take them)."""
        now = self._clock()
        rate = WS_INPUT_BYTES / WS_INPUT_SECONDS
        self._tokens = min(float(WS_INPUT_BYTES), self._tokens + (now - self._at) * rate)
        self._at = now
        if size > self._tokens:
            return False
        self._tokens -= size
        return True


#: A control character other than HTAB, which no header field may hold (RFC 9110
#: 5.5); Twisted's ``Content-Type`` parser raises on some (a vertical tab,
#: found by tests/http/test_fuzz_http.py).
_HEADER_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _ignore(*args: Any) -> None:
    """What a refused connection does with what it still receives."""


class StreamChannel(http.HTTPChannel):
    """An HTTP connection of the server's site, with its limits.

    :ivar stream_factory: the server's factory (its config, clock, address counts).
    :ivar peer: ``host:port`` of the client, for logs.
    """

    stream_factory: RTMPServerFactory
    _header_deadline: IDelayedCall | None = None
    _counted = False
    _refused = False
    _body_bytes = 0
    _address: IAddress | None = None

    @property
    def peer(self) -> str:
        return address_text(self.transport.getPeer() if self.transport is not None else None)

    @override
    def connectionMade(self) -> None:
        factory = self.stream_factory
        config = factory.config
        self.maxHeaders = config.http_max_headers
        self.totalHeadersSize = config.http_max_header_bytes
        self.MAX_LENGTH = config.http_max_header_bytes
        super().connectionMade()
        transport: Any = self.transport
        address = self._address = transport.getPeer()
        factory.address_opened(address)
        self._counted = True
        refusal = factory.address_refusal(address)
        if refusal is not None:
            self._refuse(503, "limit", refusal)

    @override
    def dataReceived(self, data: bytes) -> None:
        # a request's line and headers are being read: line mode, no request handled
        if (
            self._header_deadline is None
            and self.line_mode
            and not self._handlingRequest
            and not self._refused
        ):
            timeout = self.stream_factory.config.http_header_timeout
            if timeout:
                self._header_deadline = self.callLater(timeout, self._headers_too_slow)
        super().dataReceived(data)

    @override
    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(431, "http-headers", f"request headers over {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    @override
    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(431, "http-headers", f"a request line over {self.MAX_LENGTH} bytes")

    @override
    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse(431, "http-headers", f"more than {self.maxHeaders} request headers")
            return False
        if _HEADER_CTL.search(line):
            self._refuse(400, "http-request", "a request header with a control character")
            return False
        ok: bool = super().headerReceived(line)
        return ok

    @override
    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        self._body_bytes = 0
        target: bytes = getattr(self, "_path", b"")
        if not target.isascii() or any(byte < 0x21 or byte == 0x7F for byte in target):
            # RFC 9112 3.2: a request target is ASCII (browsers percent-encode the rest);
            # Twisted's own error pages cannot even show another one
            self._refuse(400, "http-request", "a request target that is not printable ASCII")
            return
        limit = self.stream_factory.config.http_max_body_bytes
        if self.length is not None and self.length > limit:
            self._refuse(413, "http-body", f"a request body of {self.length} bytes (limit {limit})")
            return
        super().allHeadersReceived()

    @override
    def rawDataReceived(self, data: bytes) -> None:
        if not self._handlingRequest:
            # a body being received (chunked bodies announce no length)
            self._body_bytes += len(data)
            limit = self.stream_factory.config.http_max_body_bytes
            if self._body_bytes > limit + self.totalHeadersSize:
                # the chunk framing takes a few bytes; the decoded body is bounded below
                self._refuse(413, "http-body", f"a request body over {limit} bytes")
                return
        super().rawDataReceived(data)

    @override
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._release()
        super().connectionLost(reason)

    def _protocolUpgradeForWebsockets(self, protocol: IProtocol) -> None:
        """The upgrade hands ``connectionLost`` to the WebSocket: keep the count's release.

        ``twisted.web.websocket`` replaces this channel's ``dataReceived`` and
        ``connectionLost`` with the WebSocket protocol's (a private hook of
        ``HTTPChannel``, the only way in); without this the address would stay
        counted after a WebSocket closes.
        """
        self._cancel_deadline()
        super()._protocolUpgradeForWebsockets(protocol)
        websocket_received = self.dataReceived
        budget = WebSocketInput(self.stream_factory.seconds)

        def data_received(data: bytes) -> None:
            if self._refused:
                return
            if not budget.take(len(data)):
                self._refused = True
                self.stream_factory.connection_refused(
                    self,
                    "websocket-input",
                    f"WebSocket client sent over {WS_INPUT_BYTES} bytes in {WS_INPUT_SECONDS:g} s",
                )
                transport: Any = self.transport
                transport.abortConnection()
                return
            try:
                websocket_received(data)
            except LocalProtocolError:
                # Twisted answers a ping the peer sent before it saw our close;
                # wsproto refuses to send after a close: the WebSocket is over.
                self._refused = True
                closing: Any = self.transport
                closing.loseConnection()

        self.dataReceived = data_received  # type: ignore[method-assign]
        websocket_lost = self.connectionLost

        def connection_lost(reason: Failure = connectionDone) -> None:
            self._release()
            websocket_lost(reason)

        self.connectionLost = connection_lost  # type: ignore[method-assign]

    def _release(self) -> None:
        """The connection is gone: its address counts one less (once)."""
        self._cancel_deadline()
        if self._counted:
            self._counted = False
            self.stream_factory.address_closed(self._address)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        timeout = self.stream_factory.config.http_header_timeout
        self._refuse(408, "http-header-timeout", f"request headers not complete in {timeout:g} s")

    def _cancel_deadline(self) -> None:
        deadline, self._header_deadline = self._header_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _refuse(self, code: int, kind: str, reason: str) -> None:
        """Answer *code* with a one-line body, close, and count and log the refusal once."""
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        self.stream_factory.connection_refused(self, kind, reason)
        body = reason.encode("utf-8", "replace") + b"\n"
        transport: Any = self.transport
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (code, _REASONS[code], len(body), body)
        )
        # nothing more is read from this client
        self.dataReceived = self.lineReceived = _ignore  # type: ignore[method-assign,assignment]
        self.allContentReceived = _ignore  # type: ignore[method-assign]  # refused in its headers
        transport.loseConnection()
