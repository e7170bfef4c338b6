"""Every core of one machine: ``--workers N`` (docs/scaling.md, "Every core: --workers").

With ``--workers 1`` (the default) nothing here runs.  With N > 1 the twistd
process is a supervisor (:mod:`~streamserver.workers.supervisor`) of one origin
and N workers, each a ``twistd streamserver`` child with the same options and
its :class:`~streamserver.workers.roles.Role` in the environment:

- a **worker** listens on the public RTMP, HTTP and IRC ports with its own
  ``SO_REUSEPORT`` socket (:mod:`~streamserver.workers.reuseport`), pushes every
  publish to the origin and pulls every play without a local publisher from it
  (:mod:`~streamserver.workers.origin`), and answers ``/api`` and ``/metrics``
  for all (:mod:`~streamserver.workers.aggregate`);
- the **origin** listens only on Unix sockets in the workers' directory.

:func:`build_supervisor`, :func:`prepare_child`, :func:`listener_service` and
:func:`install_child` are what :mod:`streamserver.tap` calls; nothing below
imports the tap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import IService, MultiService

from streamserver.workers.reuseport import ReusePortService, parse_tcp
from streamserver.workers.roles import ORIGIN, Role, current_role

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping, Sequence

    from twisted.internet.protocol import ServerFactory
    from twisted.web.server import Site

    from streamserver.config import ServerConfig
    from streamserver.factory import RTMPServerFactory

__all__ = [
    "ORIGIN_LIMITS",
    "ORIGIN_ONLY",
    "WORKER_ONLY",
    "Role",
    "build_supervisor",
    "current_role",
    "install_child",
    "listener_service",
    "prepare_child",
]


def build_supervisor(arguments: Sequence[str], options: MutableMapping[str, Any],
                     config: ServerConfig, reactor: Any) -> IService:  # fmt: skip
    """The supervisor's service: the children of *config*'s ``workers``, started
    with *arguments* (the supervisor's own, listeners resolved).

    :raises usage.UsageError: a listener cannot be shared.
    """
    from streamserver.workers.supervisor import (
        LISTENER_FLAGS,
        WorkerSupervisor,
        child_arguments,
        make_directory,
        resolve_listeners,
        twistd_command,
    )

    listeners = resolve_listeners({flag: options[flag] for flag in LISTENER_FLAGS})
    directory, made = make_directory(config.workers_dir)
    command = twistd_command(child_arguments(arguments, listeners))
    top = MultiService()
    supervisor = WorkerSupervisor(
        reactor,
        command,
        directory,
        config.workers,
        grace=config.shutdown_grace,
        remove_directory=made,
    )
    supervisor.setName("workers")
    supervisor.setServiceParent(top)
    return top


#: Settings only the origin keeps, as it holds every stream once: the user's
#: relays (a worker's relay is the origin) and recording (one file per stream).
ORIGIN_ONLY = ("push", "pull", "pull_static", "record_dir", "on_record_done", "exec_record_done")

#: Settings only the workers keep, as they meet the clients: access control
#: (the origin's only peers are the workers, on a 0700 socket) and the hooks of
#: sessions (the origin's sessions are the workers' relays).
WORKER_ONLY = ("access", "on_publish_done", "on_play_done")


#: The drop policy of the origin, whose only viewers are the workers' pulls: peers
#: on this machine that lag only when the cores are busy, and whose every dropped
#: frame is lost by all of that worker's viewers.  So the origin holds up to 30 s
#: or 64 MiB for a worker (memory it would spend on one slow viewer at most) before
#: it drops; each worker's own policy (the user's limits) still guards its viewers.
#: Measured: with the defaults (500 ms of lag before inter frames go) a worker
#: fanning out 800 viewers on a busy 2-core machine lost 50-100 frames in 10 s.
ORIGIN_LIMITS = {
    "drop-low": 16 * 1024 * 1024,
    "drop-high": 32 * 1024 * 1024,
    "max-queue": 64 * 1024 * 1024,
    "max-lag-ms": 30_000,
}


def _defaults(fields: tuple[str, ...]) -> dict[str, Any]:
    """The default of every option that sets one of *fields* (or a field inside it)."""
    from streamserver.options import OPTIONS

    return {
        option.flag: option.default
        for option in OPTIONS
        if any(path.split(".")[0] in fields for path in option.paths)
    }


def prepare_child(role: Role, options: Mapping[str, Any]) -> dict[str, Any]:
    """The changes (by flag) a child's parsed *options* take for its role.

    The origin listens for RTMP only on its Unix socket (no HTTP, no IRC), drops
    :data:`WORKER_ONLY` and applies :data:`ORIGIN_LIMITS` to its viewers (the
    workers' pulls); a worker drops :data:`ORIGIN_ONLY`.  The console moves to the
    role's port (:meth:`Role.console_endpoint`).  The tap applies the changes as if
    the command line gave them, so a ``--config`` file does not override them.
    """
    changes: dict[str, Any] = {}
    if role.kind == ORIGIN:
        changes.update(rtmp=[role.unix_endpoint(role.origin_rtmp_path)], http=[], irc=[])
        changes["no-http"] = True
        changes.update(_defaults(WORKER_ONLY))
        changes.update(ORIGIN_LIMITS)
    else:
        changes.update(_defaults(ORIGIN_ONLY))
    if options.get("manhole"):
        changes["manhole"] = role.console_endpoint(options["manhole"])
    return changes


def listener_service(role: Role | None, endpoint: str, factory: ServerFactory[Any]) -> IService:
    """The service listening on *endpoint*: shared (``SO_REUSEPORT``) in a worker
    for a TCP endpoint, else ``strports.service``."""
    listener = parse_tcp(endpoint) if role is not None and role.kind != ORIGIN else None
    if listener is None:
        return strports.service(endpoint, factory)
    from twisted.internet import reactor

    return ReusePortService(listener, factory, reactor)


def install_child(role: Role, factory: RTMPServerFactory, top: MultiService,
                  site: Site | None, reactor: Any) -> None:  # fmt: skip
    """Add to a child's service tree what its role needs beyond a single server:
    its private HTTP site (``/_process`` included), the aggregation of the public
    site's ``/api`` and ``/metrics`` (a worker), a worker's links to the origin, and
    the watch that stops it when the supervisor is gone."""
    from streamserver.http import build_site
    from streamserver.workers.aggregate import ProcessResource, Siblings, install_aggregation

    private = build_site(factory)
    private.resource.putChild(b"_process", ProcessResource(role, factory))
    service = strports.service(role.unix_endpoint(role.http_path()), private)
    service.setName(f"private-http:{role.name}")
    service.setServiceParent(top)
    if site is not None:
        install_aggregation(site, Siblings(reactor, role))
    if role.kind != ORIGIN:
        from streamserver.workers.origin import install_origin_link

        install_origin_link(role, factory)
    if role.supervisor is not None:
        from streamserver.workers.parent import ParentWatch

        watch = ParentWatch(reactor, role.supervisor)
        watch.setName("parent-watch")
        watch.setServiceParent(top)
