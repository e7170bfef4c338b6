"""Driving the HTTP site in memory: real ``twisted.web`` channels on fake transports.

:class:`SiteClient` builds the server's site (:func:`~streamserver.http.site.build_site`)
and opens an ``HTTPChannel`` per request on a
:class:`~streamserver.testing.FakeTransport`, so a request goes through the whole
of ``twisted.web`` (parsing, resources, the response's framing) and an HTTP-FLV
or WebSocket-FLV viewer is a real session of the factory, whose queue the
transport accounts for.  Time is the test's ``Clock``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import task
from twisted.web.server import Site

from streamserver.factory import RTMPServerFactory
from streamserver.http.site import build_site
from streamserver.testing import FakeTransport


@dataclass
class Response:
    """One parsed HTTP response: status, headers (names lowercased), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)


def parse_response(data: bytes) -> Response:
    """The first response in *data* (a Content-Length body, or none)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Response(int(status_line.split()[1]), headers, rest[:length])


class SiteClient:
    """Requests to a factory's site over in-memory channels.

    :ivar site: the site under test (its reactor is the test's clock).
    """

    def __init__(self, factory: RTMPServerFactory, clock: task.Clock) -> None:
        self.site: Site = build_site(factory)
        self.site.reactor = clock

    def open(self, *, auto_drain: bool = True) -> FakeTransport:
        """A new connection to the site; its transport holds what the server wrote."""
        transport = FakeTransport(auto_drain=auto_drain)
        channel = self.site.buildProtocol(transport.getPeer())
        assert channel is not None
        transport.protocol = channel
        channel.makeConnection(transport)
        return transport

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request on a new connection; the parsed response (the connection closed)."""
        transport = self.open()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        transport.protocol.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        response = parse_response(transport.value())
        transport.loseConnection()
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        """``GET path``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, *, token: str | None = None) -> Response:
        """``POST path`` with *body* as JSON (none if ``None``), with a bearer *token*."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.request("POST", path, headers=headers, body=data)

    def play(self, path: str, *, websocket: bool = False, auto_drain: bool = True) -> FakeTransport:
        """Start playing *path* (``/APP/NAME.flv``) over HTTP-FLV or WebSocket-FLV."""
        transport = self.open(auto_drain=auto_drain)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        if websocket:
            key = base64.b64encode(b"0123456789abcdef").decode()
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
        transport.protocol.dataReceived("\r\n".join(lines).encode() + b"\r\n\r\n")
        return transport
