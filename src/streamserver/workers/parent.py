"""A child of the supervisor stops when the supervisor is gone.

A supervisor killed with SIGKILL cannot stop its children, and an orphaned
worker would keep its share of the public ports with nobody to restart its
siblings or aggregate for them.  :class:`ParentWatch` checks every
:data:`CHECK_INTERVAL` seconds that the process's parent is still the
supervisor (whose pid the supervisor put in the environment,
:data:`~streamserver.workers.roles.SUPERVISOR_VARIABLE`) and, when it
is not, stops the reactor: the child shuts down as on SIGTERM (its viewers get
``UnpublishNotify`` and a clean close).  Linux's ``PR_SET_PDEATHSIG`` would do
this in the kernel, but Twisted's ``spawnProcess`` runs no code in the child
before ``exec``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from typing_extensions import override

__all__ = ["CHECK_INTERVAL", "ParentWatch"]

_log = Logger()

#: Seconds between checks: an orphan serves at most this long, for the price of
#: one getppid() a second.
CHECK_INTERVAL = 1.0


class ParentWatch(Service):
    """Stops the process once its parent is no longer *parent*.

    :ivar supervisor_pid: the supervisor's pid (not ``parent``: that is the
        service's parent in the service tree).
    """

    def __init__(
        self,
        reactor: Any,
        parent: int,
        *,
        getppid: Callable[[], int] = os.getppid,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.supervisor_pid = parent
        self._getppid = getppid
        self._stop = stop if stop is not None else reactor.stop
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def check(self) -> None:
        """Stop the process if the supervisor is gone."""
        if self._getppid() == self.supervisor_pid:
            return
        _log.warn("the supervisor (pid {pid}) is gone: stopping", pid=self.supervisor_pid)
        if self._loop.running:
            self._loop.stop()
        self._stop()

    @override
    def startService(self) -> None:
        super().startService()
        self._loop.start(CHECK_INTERVAL, now=True)

    @override
    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
