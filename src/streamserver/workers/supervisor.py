"""The supervisor of ``--workers N``: one origin and N workers, restarted when they die.

``twistd streamserver --workers N`` (N > 1) serves nothing itself.  It

1. picks a concrete port for every listener asked on port 0 (a port cannot be
   shared before it is known: :func:`~streamserver.workers.reuseport.resolve_port`)
   and refuses listeners that cannot be shared (``unix:``, ``ssl:``);
2. makes the workers' directory (``--workers-dir``, or a fresh one under the
   temp dir, removed at exit), mode 0700;
3. runs the children, each ``twistd -n streamserver`` with the same arguments
   (the listeners resolved) and its role in the environment
   (:class:`~streamserver.workers.roles.Role`), through Twisted's
   :class:`~twisted.runner.procmon.ProcessMonitor`: a child that exits is started
   again at once if it ran for :data:`CRASH_THRESHOLD` seconds, else after a
   delay doubling from :data:`MIN_RESTART_DELAY` up to :data:`MAX_RESTART_DELAY`
   (a crash loop does not spin a core); every line a child writes is logged
   with its name in front (``[worker-1] ...``);
4. on SIGTERM sends each child SIGTERM (each closes its viewers as a single
   server does: ``UnpublishNotify``, then the connection), SIGKILL after the
   children's shutdown grace plus :data:`KILL_MARGIN`, and stops once all have
   exited;
5. on SIGHUP sends each child SIGHUP: with ``--config`` every child re-reads the
   file (``systemctl reload`` reaches them all; a child's ``POST /api/reload`` or
   console ``reload()`` signals the supervisor after its own reload, so its
   siblings follow: :meth:`streamserver.reload.Reloader.reload_everywhere`).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor
from typing_extensions import override

from streamserver.workers.reuseport import parse_tcp, resolve_port
from streamserver.workers.roles import ORIGIN, WORKER, Role

__all__ = [
    "CRASH_THRESHOLD",
    "LISTENER_FLAGS",
    "MAX_RESTART_DELAY",
    "MIN_RESTART_DELAY",
    "WorkerSupervisor",
    "child_arguments",
    "make_directory",
    "resolve_listeners",
    "twistd_command",
]

_log = Logger()

#: A child that dies sooner than this after its start is crash-looping (it cannot
#: listen, its config is bad): its restart waits, longer each time.
CRASH_THRESHOLD = 5
#: The first delay of a crash-looping child's restart, doubled at each crash...
MIN_RESTART_DELAY = 1
#: ...up to this: a broken worker is retried twice a minute, never given up.
MAX_RESTART_DELAY = 30
#: Seconds past the children's ``--shutdown-grace`` before SIGKILL: twistd's own
#: shutdown (logs, listeners) on top of closing the connections.
KILL_MARGIN = 5

#: The repeatable listener options the supervisor resolves and passes on itself.
LISTENER_FLAGS = ("rtmp", "http", "irc")


def resolve_listeners(listeners: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Every listener of *listeners* (by flag) with port 0 made concrete.

    :raises usage.UsageError: a listener is no ``tcp:``/``tcp6:`` endpoint, which
        workers cannot share.
    """
    resolved: dict[str, list[str]] = {}
    for flag, endpoints in listeners.items():
        resolved[flag] = []
        for endpoint in endpoints:
            try:
                listener = parse_tcp(endpoint)
            except ValueError as error:
                raise usage.UsageError(f"--{flag} {endpoint}: {error}") from error
            if listener is None:
                raise usage.UsageError(
                    f"--{flag} {endpoint}: --workers shares only tcp: and tcp6: listeners "
                    "(SO_REUSEPORT); put a TLS or Unix-socket front end before them"
                )
            resolved[flag].append(resolve_port(endpoint))
    return resolved


def child_arguments(argv: Sequence[str], listeners: Mapping[str, Sequence[str]]) -> list[str]:
    """The children's ``streamserver`` arguments: *argv* without its listener
    options, then *listeners* (resolved) as options.

    :param argv: the supervisor's own ``streamserver`` arguments.
    """
    kept: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        name, equals, _ = argument.partition("=")
        if argument.startswith("--") and name[2:] in LISTENER_FLAGS:
            if not equals:
                next(arguments, None)
            continue
        kept.append(argument)
    for flag, endpoints in listeners.items():
        for endpoint in endpoints:
            kept += [f"--{flag}", endpoint]
    return kept


def twistd_command(arguments: Sequence[str], python: str = sys.executable) -> list[str]:
    """The argv of a child: this Python running twistd in the foreground, logging
    to its stdout (the supervisor logs each line), with *arguments*."""
    return [
        python, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "--logfile=-", "streamserver", *arguments,
    ]  # fmt: skip


def make_directory(path: str | None) -> tuple[Path, bool]:
    """The workers' directory, made mode 0700, and whether it was made here (to
    remove at exit): *path*, or a fresh one under the temp dir.

    :raises usage.UsageError: *path* cannot be made or made private.
    """
    if path is None:
        return Path(tempfile.mkdtemp(prefix="streamserver-workers-")), True
    directory = Path(path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    except OSError as error:
        raise usage.UsageError(f"--workers-dir {path}: {error}") from error
    return directory, False


class WorkerSupervisor(ProcessMonitor):
    """A :class:`~twisted.runner.procmon.ProcessMonitor` of the origin and the
    workers whose ``stopService`` waits until every child has exited.

    :ivar roles: the children, by process name.
    :ivar directory: the workers' directory.
    """

    threshold = CRASH_THRESHOLD
    minRestartDelay = MIN_RESTART_DELAY
    maxRestartDelay = MAX_RESTART_DELAY

    def __init__(
        self,
        reactor: Any,
        command: Sequence[str],
        directory: Path,
        workers: int,
        *,
        grace: float,
        environ: Mapping[str, str] = os.environ,
        remove_directory: bool = False,
    ) -> None:
        super().__init__(reactor=reactor)
        self.killTime = int(grace) + 1 + KILL_MARGIN
        self.directory = directory
        self._remove_directory = remove_directory
        self._stopped: defer.Deferred[None] | None = None
        self._previous_hangup: Any = None
        self.roles: dict[str, Role] = {}
        me = os.getpid()
        children = [Role(ORIGIN, -1, directory, workers, me)]
        children += [Role(WORKER, index, directory, workers, me) for index in range(workers)]
        for role in children:
            self.roles[role.name] = role
            self.addProcess(role.name, list(command), env={**environ, **role.environment()})

    @override
    def startService(self) -> None:
        _log.info(
            "supervising {names} (sockets in {directory})",
            names=", ".join(self.roles),
            directory=str(self.directory),
        )
        super().startService()
        self._previous_hangup = signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.forward_hangup)  # type: ignore[attr-defined]

    def forward_hangup(self) -> list[str]:
        """Send SIGHUP to every running child (each reloads ``--config``'s file).

        :returns: the names of the children signalled.
        """
        signalled = []
        for name, protocol in sorted(self.protocols.items()):
            transport = getattr(protocol, "transport", None)
            if transport is None:
                continue
            try:
                transport.signalProcess("HUP")
            except (OSError, ProcessExitedAlready):
                continue
            signalled.append(name)
        _log.info("SIGHUP: {names} reload", names=", ".join(signalled) or "no child")
        return signalled

    @override
    def _monitoredProcessExited(self, name: str, reason: Failure | None = None) -> None:
        status = getattr(reason.value, "status", None) if reason is not None else None
        if self.running:
            _log.warn("{name} exited (status {status}); restarting", name=name, status=status)
        super()._monitoredProcessExited(name, reason)
        if not self.running and not self.protocols and self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            self._cleanup()
            stopped.callback(None)

    @override
    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        if self._previous_hangup is not None:
            signal.signal(signal.SIGHUP, self._previous_hangup)
            self._previous_hangup = None
        super().stopService()
        if not self.protocols:
            self._cleanup()
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        return self._stopped

    def _cleanup(self) -> None:
        if self._remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
