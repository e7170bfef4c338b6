"""What one process of ``--workers N`` is: the origin, or worker *I*.

The supervisor starts every child with the same ``twistd streamserver``
arguments and says what it is in the environment (:data:`ROLE_VARIABLE`,
:data:`INDEX_VARIABLE`, :data:`DIR_VARIABLE`): environment variables, not
options, because a role is no setting a person chooses and must not show in
``--help``.  :func:`current_role` reads them; without them the process is the
single server (``--workers 1``) or the supervisor.

The files of the workers' directory (mode 0700), one owner each:

``origin.rtmp.sock``
    the origin's RTMP listener: every worker's pushes and pulls;
``origin.http.sock``, ``worker-I.http.sock``
    each process's private HTTP site (the whole site, read by a sibling that
    aggregates ``/api`` and ``/metrics``, and ``/_process``:
    :mod:`streamserver.workers.aggregate`).

The origin listens on nothing else: no TCP, no IRC.  The console
(``--manhole tcp:P...``) is the origin's on port P and worker *I*'s on
P + 1 + I (:meth:`Role.console_endpoint`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIR_VARIABLE",
    "INDEX_VARIABLE",
    "ORIGIN",
    "ROLE_VARIABLE",
    "SUPERVISOR_VARIABLE",
    "WORKER",
    "Role",
    "current_role",
]

#: The environment variable naming a child's role: :data:`ORIGIN` or :data:`WORKER`.
ROLE_VARIABLE = "STREAMSERVER_ROLE"
#: The environment variable holding a worker's index (0..N-1).
INDEX_VARIABLE = "STREAMSERVER_WORKER_INDEX"
#: The environment variable holding the workers' directory.
DIR_VARIABLE = "STREAMSERVER_WORKERS_DIR"
#: The environment variable holding the supervisor's pid
#: (:class:`~streamserver.workers.parent.ParentWatch`).
SUPERVISOR_VARIABLE = "STREAMSERVER_SUPERVISOR_PID"

ORIGIN = "origin"
WORKER = "worker"

_PORT = re.compile(r"^(tcp6?:)(?:port=)?(\d+)")


@dataclass(frozen=True)
class Role:
    """One child of the supervisor.

    :ivar kind: :data:`ORIGIN` or :data:`WORKER`.
    :ivar index: a worker's index; ``-1`` for the origin.
    :ivar directory: the workers' directory (the Unix sockets).
    :ivar workers: how many workers there are (the siblings to aggregate).
    :ivar supervisor: the supervisor's pid (``None``: not known).
    """

    kind: str
    index: int
    directory: Path
    workers: int
    supervisor: int | None = None

    @property
    def name(self) -> str:
        """``origin`` or ``worker-I``: the log prefix and the socket's name."""
        return ORIGIN if self.kind == ORIGIN else f"{WORKER}-{self.index}"

    @property
    def label(self) -> str:
        """The ``worker`` label of its metrics: ``origin`` or the index."""
        return ORIGIN if self.kind == ORIGIN else str(self.index)

    def environment(self) -> dict[str, str]:
        """The environment variables telling a child it is this role."""
        environment = {
            ROLE_VARIABLE: self.kind,
            INDEX_VARIABLE: str(self.index),
            DIR_VARIABLE: str(self.directory),
        }
        if self.supervisor is not None:
            environment[SUPERVISOR_VARIABLE] = str(self.supervisor)
        return environment

    @property
    def origin_rtmp_path(self) -> Path:
        """The origin's RTMP socket."""
        return self.directory / "origin.rtmp.sock"

    def http_path(self, name: str | None = None) -> Path:
        """The private HTTP socket of the process *name* (``origin``,
        ``worker-I``; default: this one)."""
        return self.directory / f"{name or self.name}.http.sock"

    def siblings(self) -> list[str]:
        """The names of every child: the origin first, then each worker."""
        return [ORIGIN, *(f"{WORKER}-{index}" for index in range(self.workers))]

    def console_endpoint(self, endpoint: str) -> str:
        """*endpoint* of ``--manhole`` for this process: the origin keeps its port
        P, worker *I* listens on P + 1 + I (an endpoint that is no TCP port, a
        ``unix:`` path say, gets ``-worker-I`` appended to the path instead)."""
        if self.kind == ORIGIN:
            return endpoint
        found = _PORT.match(endpoint)
        if found is not None:
            port = int(found[2]) + 1 + self.index
            return f"{found[1]}{port}{endpoint[found.end() :]}"
        return re.sub(r"^(unix:(?:address=)?)([^:]+)", rf"\g<1>\g<2>-{self.name}", endpoint)

    def unix_endpoint(self, path: Path) -> str:
        """The endpoint description of a private Unix socket at *path* (mode 0600).

        A socket left by a killed process is removed first: each path has one
        owner, so nothing else can be listening there.
        """
        path.unlink(missing_ok=True)
        escaped = str(path).replace(":", "\\:")
        return f"unix:{escaped}:mode=600"


def current_role(environ: Mapping[str, str] = os.environ, workers: int = 1) -> Role | None:
    """The role the environment gives this process, or ``None`` (single server or
    supervisor).

    :param workers: ``--workers``, the number of siblings.
    :raises ValueError: the variables are incomplete or wrong (a supervisor's bug).
    """
    kind = environ.get(ROLE_VARIABLE)
    if kind is None:
        return None
    if kind not in (ORIGIN, WORKER):
        raise ValueError(f"{ROLE_VARIABLE}={kind!r} is neither {ORIGIN} nor {WORKER}")
    directory = environ.get(DIR_VARIABLE)
    if not directory:
        raise ValueError(f"{ROLE_VARIABLE} without {DIR_VARIABLE}")
    index = int(environ.get(INDEX_VARIABLE, "-1"))
    if kind == WORKER and not 0 <= index < workers:
        raise ValueError(f"{INDEX_VARIABLE}={index} is not in 0..{workers - 1}")
    supervisor = environ.get(SUPERVISOR_VARIABLE)
    return Role(
        kind,
        index if kind == WORKER else -1,
        Path(directory),
        workers,
        int(supervisor) if supervisor else None,
    )
