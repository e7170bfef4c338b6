"""A chat WebSocket client in memory: wsproto's client framing over a :class:`SiteClient`.

The server side is the real site (``twisted.web`` and its WebSocket upgrade) on
a :class:`~streamserver.testing.FakeTransport`; the client side is wsproto's
own client connection, which masks what it sends and parses what the server
wrote, so the frames are checked by code other than ours.
"""

from __future__ import annotations

import json
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from streamserver.testing import FakeTransport
from tests.http.support import SiteClient


class ChatClient:
    """One chat WebSocket to ``/APP/NAME/chat``.

    :ivar transport: the server's transport (its ``value()`` is what it wrote).
    :ivar accepted: the server answered ``101``.
    :ivar status: the HTTP status of a refused upgrade.
    :ivar closed: the close code the server sent, once it did.
    :ivar received: every JSON message received, in order.
    """

    def __init__(self, client: SiteClient, path: str, *, auto_drain: bool = True) -> None:
        self.transport: FakeTransport = client.open(auto_drain=auto_drain)
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._offset = 0
        self.accepted = False
        self.status: int | None = None
        self.body = b""
        self.closed: int | None = None
        self.received: list[dict[str, Any]] = []
        self._text = ""
        self._feed(self._ws.send(Request(host="127.0.0.1", target=path)))
        self.read()

    def _feed(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def read(self) -> list[dict[str, Any]]:
        """Parse what the server wrote since the last read; the new JSON messages."""
        data = self.transport.value()[self._offset :]
        self._offset += len(data)
        self._ws.receive_data(data)
        new: list[dict[str, Any]] = []
        for event in self._ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.status = event.status_code
            elif isinstance(event, RejectData):
                self.body += event.data
            elif isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    new.append(json.loads(self._text))
                    self._text = ""
            elif isinstance(event, BytesMessage):
                raise AssertionError("the chat sends text messages only")
            elif isinstance(event, CloseConnection):
                self.closed = event.code
        self.received.extend(new)
        return new

    def send(self, value: Any) -> list[dict[str, Any]]:
        """Send *value* as JSON (a string as it is); the messages that came back."""
        text = value if isinstance(value, str) else json.dumps(value)
        self._feed(self._ws.send(TextMessage(text)))
        return self.read()

    def send_bytes(self, data: bytes) -> list[dict[str, Any]]:
        """Send a binary message."""
        self._feed(self._ws.send(BytesMessage(data)))
        return self.read()

    def join(self, nick: str | None = None) -> list[dict[str, Any]]:
        """``{"type": "join"}`` with *nick* if given."""
        return self.send({"type": "join"} | ({"nick": nick} if nick is not None else {}))

    def say(self, text: Any, ref: Any = None) -> list[dict[str, Any]]:
        """``{"type": "send", "text": text}`` with *ref* if given."""
        return self.send({"type": "send", "text": text} | ({"ref": ref} if ref is not None else {}))

    def messages(self) -> list[dict[str, Any]]:
        """The room messages received (history and live)."""
        self.read()
        return [m for m in self.received if m["type"] == "message"]

    @property
    def gone(self) -> bool:
        """The server closed or aborted the connection."""
        return bool(self.transport.disconnecting or self.transport.aborted)
