"""Listening sockets shared by several processes: ``SO_REUSEPORT``.

Each worker binds its **own** socket on the same address and port with
``SO_REUSEPORT`` set before ``bind``; the kernel then spreads new connections
over every process listening there (by a hash of the connection's addresses),
and a dead worker's socket leaves the group with it, so the others go on
accepting.  Twisted's endpoints cannot set an option before ``bind``, so
:class:`ReusePortService` makes the socket itself and hands it to
``reactor.adoptStreamPort`` (which duplicates the descriptor; ours is closed).

Only ``tcp:`` and ``tcp6:`` endpoint descriptions are shared
(:func:`parse_tcp`); port 0 cannot be shared (every process would get its own
port), so :func:`resolve_port` picks a concrete one first, in the supervisor.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from typing_extensions import override

__all__ = ["ReusePortService", "TcpListener", "parse_tcp", "resolve_port", "reuseport_socket"]

_log = Logger()

#: The listen backlog without ``backlog=``: Twisted's own default for its ports.
DEFAULT_BACKLOG = 50

#: A colon that separates two fields of an endpoint description (``\\:`` escapes one).
_FIELD = re.compile(r"(?<!\\):")


@dataclass(frozen=True)
class TcpListener:
    """A ``tcp:`` or ``tcp6:`` endpoint description, parsed.

    :ivar family: ``AF_INET`` or ``AF_INET6``.
    :ivar port: the port (0: any, which cannot be shared).
    :ivar interface: the address to bind (``""``: every address of the family).
    :ivar backlog: the listen backlog.
    """

    family: socket.AddressFamily
    port: int
    interface: str
    backlog: int = DEFAULT_BACKLOG

    def describe(self) -> str:
        """The endpoint description of this listener (colons of the address escaped)."""
        kind = "tcp6" if self.family == socket.AF_INET6 else "tcp"
        text = f"{kind}:{self.port}"
        if self.interface:
            text += ":interface=" + self.interface.replace(":", "\\:")
        if self.backlog != DEFAULT_BACKLOG:
            text += f":backlog={self.backlog}"
        return text


def parse_tcp(description: str) -> TcpListener | None:
    """*description* as a :class:`TcpListener`, or ``None`` if it is no plain TCP endpoint.

    :raises ValueError: a ``tcp:`` description with a bad port, or an argument this
        module does not know how to share.
    """
    fields = [field.replace("\\:", ":") for field in _FIELD.split(description)]
    kind = fields[0]
    if kind not in ("tcp", "tcp6") or len(fields) < 2:
        return None
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    positional = [field for field in fields[1:] if "=" not in field]
    named = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
    port_text = named.pop("port", positional[0] if positional else "")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{description}: not a TCP port: {port_text!r}")
    interface = named.pop("interface", "")
    backlog = int(named.pop("backlog", DEFAULT_BACKLOG))
    if named or len(positional) > 1:
        raise ValueError(f"{description}: cannot share a listener with {sorted(named)}")
    return TcpListener(family, int(port_text), interface, backlog)


def reuseport_socket(listener: TcpListener) -> socket.socket:
    """A non-blocking socket listening on *listener* with ``SO_REUSEPORT`` (and
    ``SO_REUSEADDR``, as Twisted's own ports) set before ``bind``.

    :raises OSError: the address is taken by a socket without ``SO_REUSEPORT``,
        by another user, or cannot be bound.
    """
    sock = socket.socket(listener.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.family == socket.AF_INET6:
            # As Twisted's tcp6 ports: an IPv6 socket takes no IPv4 connections, so a
            # tcp: and a tcp6: listener on one port do not collide.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.interface, listener.port))
        sock.listen(listener.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def resolve_port(description: str) -> str:
    """*description* with port 0 replaced by a free port of its interface.

    The port is found by binding and closing a socket, so another program could
    take it before the workers bind it; they then fail to listen and the
    supervisor restarts them, which logs the error.  Any other description is
    returned unchanged.
    """
    listener = parse_tcp(description)
    if listener is None or listener.port != 0:
        return description
    sock = reuseport_socket(listener)
    try:
        port = sock.getsockname()[1]
    finally:
        sock.close()
    return replace(listener, port=port).describe()


class ReusePortService(Service):
    """Listen on a shared TCP port while running (the role of
    ``strports.service`` for a worker's listener).

    :ivar listener: where it listens.
    :ivar factory: the protocol factory of the connections.
    :ivar port: the listening port while running, else ``None``.
    """

    def __init__(self, listener: TcpListener, factory: ServerFactory[Any], reactor: Any) -> None:
        self.listener = listener
        self.factory = factory
        self.port: IListeningPort | None = None
        self._reactor = reactor

    @override
    def startService(self) -> None:
        super().startService()
        try:
            sock = reuseport_socket(self.listener)
        except OSError as error:
            # As strports.service's _raiseSynchronously: twistd exits non-zero.
            raise CannotListenError(self.listener.interface, self.listener.port, error) from error
        try:
            self.port = self._reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory)
        finally:
            sock.close()
        _log.info("listening on {endpoint} (SO_REUSEPORT)", endpoint=self.listener.describe())

    @override
    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopped: defer.Deferred[None] = defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload]
        return stopped
