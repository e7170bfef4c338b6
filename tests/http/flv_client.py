"""An HTTP-FLV and WebSocket-FLV client for the tests: raw bytes on a real socket.

It writes the request itself and parses what comes back (status line, headers,
a chunked, raw or WebSocket body, then FLV), so a test sees exactly what a
player gets, and it can stop reading to play a slow viewer.
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from streamserver.codec.flv import FLVReader, FLVTag
from tests.integration.support import get_reactor, within


class FlvClient(Protocol):
    """Sends one GET and collects the response; FLV tags as they complete.

    :ivar status: the response's status code (``None`` until the headers came).
    :ivar headers: the response headers, lower-cased names.
    :ivar body: the decoded body bytes (FLV, or the text of an error).
    :ivar tags: the FLV tags parsed so far.
    :ivar reader: the FLV parser (its ``has_audio``/``has_video`` are the header's flags).
    :ivar complete: the body ended as the framing says (last chunk, WebSocket close).
    :ivar close_code: the WebSocket close code received.
    :ivar messages: WebSocket binary messages received.
    :ivar received: raw bytes received.
    """

    def __init__(self, request: bytes, *, websocket: bool = False, keep_body: bool = True) -> None:
        self.request = request
        self.websocket = websocket
        self.keep_body = keep_body
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.tags: list[FLVTag] = []
        self.reader = FLVReader()
        self.complete = False
        self.close_code: int | None = None
        self.messages = 0
        self.received = 0
        self.media_bytes = 0
        self._buffer = bytearray()
        self._chunked = False
        self._head_done = False
        self.headers_received: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.connected_ok = False

    def connectionMade(self) -> None:
        self.connected_ok = True
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._buffer += data
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._chunked = self.headers.get("transfer-encoding") == "chunked"
            self._head_done = True
            self.headers_received.callback(None)
        if self.status == 101:
            self._websocket_frames()
        elif self._chunked:
            self._chunks()
        else:
            self._deliver(bytes(self._buffer))
            self._buffer.clear()

    def _chunks(self) -> None:
        buffer = self._buffer
        while not self.complete:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(buffer[:line_end]), 16)
            if len(buffer) < line_end + 2 + size + 2:
                return
            data = bytes(buffer[line_end + 2 : line_end + 2 + size])
            del buffer[: line_end + 2 + size + 2]
            if size == 0:
                self.complete = True
                return
            self._deliver(data)

    def _websocket_frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            size = buffer[1] & 0x7F
            offset = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                (size,) = struct.unpack_from(">H", buffer, 2)
                offset = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                (size,) = struct.unpack_from(">Q", buffer, 2)
                offset = 10
            if len(buffer) < offset + size:
                return
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            if opcode == 0x2:
                self.messages += 1
                self._deliver(payload)
            elif opcode == 0x8:
                self.close_code = struct.unpack(">H", payload[:2])[0] if payload else 1005
                self.complete = True

    def _deliver(self, data: bytes) -> None:
        if self.status != 200 and self.status != 101:
            self.body += data
            return
        if self.keep_body:
            self.body += data
        for tag in self.reader.receive_data(data):
            self.media_bytes += len(tag.payload)
            if self.keep_body:
                self.tags.append(tag)
            else:
                self.tags.append(FLVTag(tag.tag_type, tag.timestamp, tag.payload[:16]))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.headers_received.called:
            self.headers_received.errback(reason or Failure(ConnectionError("lost")))
        self.lost.callback(None)

    @property
    def text(self) -> str:
        return bytes(self.body).decode("utf-8", "replace")


def get_request(path: str, *, version: str = "1.1", extra: str = "") -> bytes:
    """A GET request line and headers for *path*."""
    return (
        f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nUser-Agent: tests\r\n{extra}\r\n"
    ).encode("latin-1")


def websocket_request(path: str) -> bytes:
    """An ``Upgrade: websocket`` GET for *path*."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    return get_request(
        path,
        extra=(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        ),
    )


async def open_flv(port: int, request: bytes, **kwargs: Any) -> FlvClient:
    """Connect to 127.0.0.1:*port* and send *request*; the client once connected."""
    reactor = get_reactor()
    client = FlvClient(request, **kwargs)
    connected: defer.Deferred[None] = defer.Deferred()

    class _Factory(ClientFactory):
        def buildProtocol(self, addr: Any) -> Protocol:
            reactor.callLater(0, connected.callback, None)
            return client

        def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
            connected.errback(reason)

    reactor.connectTCP("127.0.0.1", port, _Factory())
    await within(connected, 10, "connect to the HTTP port")
    return client
