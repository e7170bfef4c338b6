"""Graceful shutdown: :class:`StreamServerService`, the top of the service tree.

Its ``stopService`` waits for
:meth:`~streamserver.factory.RTMPServerFactory.shutdown`: viewers get
``NetStream.Play.UnpublishNotify`` and a clean close before the reactor stops.

The hardening options (input limits, timeouts, connection limits, access
control) are rows of :data:`streamserver.options.OPTIONS` like every other
option, and their ranges are checked by
:meth:`streamserver.config.ServerConfig.validate`; ``docs/security.md``
explains every one.  :func:`read_secret` (``env:NAME``, ``file:PATH``) lives in
:mod:`streamserver.options` with the other loaders and is re-exported here.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer

from streamserver.factory import RTMPServerFactory
from streamserver.options import read_secret

__all__ = ["StreamServerService", "read_secret"]


class StreamServerService(MultiService):
    """The server's service tree; stopping it shuts the factory down gently.

    ``stopService`` stops the children (the listeners first), then returns a
    Deferred that fires once :meth:`~streamserver.factory.RTMPServerFactory.shutdown`
    closed every connection.  twistd waits for it before the reactor stops, so
    viewers get ``NetStream.Play.UnpublishNotify`` and their queued bytes, and
    the process exits within ``shutdown_grace`` seconds.

    :ivar factory: the RTMP server factory every listener shares.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def stopService(self) -> defer.Deferred[Any]:
        stopped = defer.maybeDeferred(super().stopService)
        closed = self.factory.shutdown()
        return defer.gatherResults([stopped, closed], consumeErrors=True)
