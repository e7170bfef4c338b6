"""Experiment, not a fix: does ``TCP_NODELAY`` explain HTTP-FLV's extra CPU against RTMP?

streamserver's two viewer protocols differed in one socket option it did not set
itself: ``twisted.web``'s ``HTTPChannel.connectionMade`` turns Nagle's algorithm
off (``setTcpNoDelay(True)``) on every HTTP connection, and the RTMP protocol
leaves it on.  (Since a528a08 the HTTP-FLV session turns it back on,
``TransportAdapter.set_no_delay(False)``.)  With Nagle on, a small frame (an AAC
packet) written while the previous segment is unacknowledged waits and leaves
with the next one; with it off, every ``send()`` is its own segment. On loopback
each segment costs the sender the receiver's TCP work too, so the option changes
the server's CPU per frame.

:func:`install` gives every accepted TCP connection of the process the same
setting, HTTP ones included (``on``: no Nagle anywhere, as HTTP-FLV had it;
``off``: Nagle everywhere, as RTMP has it), whatever the server asks for through
``TransportAdapter.set_no_delay`` where it has one. ``twistd_nodelay.py`` runs
twistd with it, the setting from ``BENCH_TCP_NODELAY``::

    BENCH_TCP_NODELAY=on .venv/bin/python bench/compare.py --case 400@1000 \\
        --protocol both --servers streamserver \\
        --twistd bench/experiments/twistd_nodelay.py --tag nodelay-on
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.web import http

from streamserver.transport import TransportAdapter


def install(nodelay: bool) -> None:
    """Every server-side TCP connection of this process gets ``TCP_NODELAY`` = *nodelay*."""
    accepted = tcp.Server.__init__
    http_made = http.HTTPChannel.connectionMade

    def server_init(self: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        accepted(self, sock, *args, **kwargs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))

    def connection_made(self: Any) -> None:
        http_made(self)  # turns it on
        self.transport.setTcpNoDelay(nodelay)

    tcp.Server.__init__ = server_init  # type: ignore[method-assign]
    http.HTTPChannel.connectionMade = connection_made  # type: ignore[method-assign]
    server_set = getattr(TransportAdapter, "set_no_delay", None)
    if server_set is not None:

        def set_no_delay(self: Any, enabled: bool) -> bool:
            return bool(server_set(self, nodelay))

        TransportAdapter.set_no_delay = set_no_delay  # type: ignore[attr-defined]
