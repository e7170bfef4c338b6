"""Live reload of ``--config``'s file: on ``SIGHUP``, ``reload()`` in the console
and ``POST /api/reload``.

:meth:`Reloader.reload` reads and checks the file first, with the command line
over it as at start (:func:`streamserver.configfile.effective`); a bad file
changes nothing, and the error is the result.  Then it applies what changed:

- listeners (``rtmp``, ``http``, ``irc``): an endpoint no longer listed stops
  listening, a new one starts, an unchanged one is not touched (the connections
  it accepted stay);
- the server's configuration is replaced (``RTMPServerFactory.config``); the
  drop policy's limits change for current viewers, the authorizer is rebuilt when
  the access rules changed (new sessions are asked by it; current ones stay);
- each application of the file gets its settings
  (:meth:`RTMPServerFactory.set_app_configs
  <streamserver.factory.RTMPServerFactory.set_app_configs>`): a changed one's
  viewers get its new limits, an unchanged one is not touched;
- an option read only at start (``live=False`` in :data:`~streamserver.options.OPTIONS`:
  the console, recording's directory, the access log) is reported as needing a
  restart and keeps its running value.

What changed, per key and application, is logged and returned
(:class:`ReloadResult`).  Settings a stream took when it was created (its GOP
cache bound, its chat history) apply to the application's next streams.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from typing_extensions import override

from streamserver.auth import build_authorizer
from streamserver.config import ConfigError
from streamserver.configfile import DEFAULT_APP, Effective, effective, shown_value
from streamserver.factory import RTMPServerFactory
from streamserver.options import DEFAULT_HTTP_ENDPOINT, DEFAULT_RTMP_ENDPOINT, OPTIONS

__all__ = ["ReloadResult", "ReloadService", "Reloader", "listener_endpoints"]

_log = Logger()

#: The listener options: their services are named ``KIND:ENDPOINT``.
LISTENERS = ("rtmp", "http", "irc")


def listener_endpoints(values: Mapping[str, Any]) -> dict[str, list[str]]:
    """The endpoints each listener kind serves, the defaults filled in as at start."""
    http = [] if values["no-http"] else list(values["http"]) or [DEFAULT_HTTP_ENDPOINT]
    return {
        "rtmp": list(values["rtmp"]) or [DEFAULT_RTMP_ENDPOINT],
        "http": http,
        "irc": list(values["irc"]),
    }


@dataclass
class ReloadResult:
    """What a reload did.

    :ivar ok: the file was valid and applied.
    :ivar error: why not (the file's line and key), when not.
    :ivar changed: ``(where, key, old, new)`` of every setting applied: *where*
        is ``server``, ``app "*"`` or ``app NAME``; values shown as in the file
        (secrets masked).
    :ivar listeners: ``(kind, endpoint, "added" or "removed")``.
    :ivar restart: the keys that changed but apply only after a restart.
    :ivar spread: a ``--workers`` child sent it on to every process.
    """

    ok: bool
    error: str | None = None
    changed: list[tuple[str, str, str, str]] = field(default_factory=list)
    listeners: list[tuple[str, str, str]] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    spread: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/reload``."""
        return {
            "ok": self.ok,
            "error": self.error,
            "changed": [
                {"where": where, "key": key, "old": old, "new": new}
                for where, key, old, new in self.changed
            ],
            "listeners": [
                {"kind": kind, "endpoint": endpoint, "action": action}
                for kind, endpoint, action in self.listeners
            ],
            "needs_restart": self.restart,
            "every_process": self.spread,
        }

    def text(self) -> str:
        """The result in lines, for the console and the log."""
        if not self.ok:
            return f"reload refused, nothing changed: {self.error}"
        lines = [f"{where}: {key}: {old} -> {new}" for where, key, old, new in self.changed]
        lines += [
            f"listener {kind}:{endpoint} {action}" for kind, endpoint, action in self.listeners
        ]
        lines += [f"{key}: changed, needs a restart" for key in self.restart]
        if self.spread:
            lines.append("sent on to every --workers process (SIGHUP through the supervisor)")
        if not lines:
            return "reloaded: nothing changed"
        return "reloaded:\n" + "\n".join(lines)


class Reloader:
    """Re-reads ``--config``'s file and applies it to a running server.

    :ivar factory: the server's factory.
    :ivar current: the configuration in force.
    """

    def __init__(
        self,
        factory: RTMPServerFactory,
        current: Effective,
        command_line: Mapping[str, Any],
        path: str | None,
        *,
        listeners: MultiService | None = None,
        listener_factories: Mapping[str, Any] | None = None,
        supervisor: int | None = None,
    ) -> None:
        """
        :param command_line: the values the command line gave, by flag (kept over the file).
        :param path: the file.
        :param listeners: the service the listeners are children of.
        :param listener_factories: the protocol factory of each listener kind
            (``rtmp``: the factory, ``http``: the site, ``irc``: the gateway).
        :param supervisor: the pid of the ``--workers`` supervisor of this child
            (:meth:`reload_everywhere` signals it).
        """
        self.factory = factory
        self.current = current
        self._command_line = dict(command_line)
        self._path = path
        self._listeners = listeners
        self._listener_factories = dict(listener_factories or {})
        self._supervisor = supervisor

    def reload(self) -> ReloadResult:
        """Read, check and apply the file; a bad file changes nothing."""
        try:
            new = effective(self._command_line, self._command_line, self._path)
        except (ConfigError, ValueError) as error:
            _log.error(
                "reload of {path} refused, nothing changed: {error}",
                path=self._path,
                error=str(error),
            )
            return ReloadResult(False, str(error))
        result = ReloadResult(True)
        self._diff(self.current, new, result)
        self._apply_listeners(new, result)
        self._apply_config(new)
        self.current = new
        _log.info("reload of {path}: {result}", path=self._path, result=result.text())
        return result

    def reload_everywhere(self) -> ReloadResult:
        """:meth:`reload` here and, in a ``--workers`` child, in every process.

        After a good reload the child sends its supervisor SIGHUP, which sends it
        to every child (this one reloads again: nothing changes), so an API
        request or a console command reaches the processes it did not land on.
        A bad file is refused here and goes no further.
        """
        result = self.reload()
        if result.ok and self._supervisor is not None:
            try:
                os.kill(self._supervisor, signal.SIGHUP)
            except OSError as error:
                _log.error(
                    "reload: cannot signal the supervisor {pid}: {error}",
                    pid=self._supervisor,
                    error=str(error),
                )
            else:
                result.spread = True
        return result

    # --- what changed

    def _diff(self, old: Effective, new: Effective, result: ReloadResult) -> None:
        for option in OPTIONS:
            if not option.in_file or option.flag in LISTENERS:
                continue
            before = shown_value(option, old.values[option.flag])
            after = shown_value(option, new.values[option.flag])
            if before == after:
                continue
            if not option.live:
                result.restart.append(option.flag)
                continue
            where = "server" if option.scope == "server" else f'app "{DEFAULT_APP}"'
            result.changed.append((where, option.flag, before or "off", after or "off"))
        by_flag = {option.flag: option for option in OPTIONS}
        old_apps = old.source.apps if old.source is not None else {}
        new_apps = new.source.apps if new.source is not None else {}
        for app in sorted(set(old_apps) | set(new_apps)):
            if app == DEFAULT_APP:
                continue
            before_table = old_apps.get(app, {})
            after_table = new_apps.get(app, {})
            for flag in sorted(set(before_table) | set(after_table)):
                if flag in self._command_line:
                    continue
                option = by_flag[flag]
                before = shown_value(option, before_table[flag]) if flag in before_table else None
                after = shown_value(option, after_table[flag]) if flag in after_table else None
                if before != after:
                    result.changed.append(
                        (f"app {app}", flag, before or "(the default)", after or "(the default)")
                    )

    # --- applying

    def _apply_listeners(self, new: Effective, result: ReloadResult) -> None:
        parent = self._listeners
        if parent is None:
            return
        old_endpoints = listener_endpoints(self.current.values)
        new_endpoints = listener_endpoints(new.values)
        for kind in LISTENERS:
            for endpoint in old_endpoints[kind]:
                if endpoint not in new_endpoints[kind]:
                    name = f"{kind}:{endpoint}"
                    try:
                        service = parent.getServiceNamed(name)
                    except KeyError:
                        continue
                    service.disownServiceParent()
                    result.listeners.append((kind, endpoint, "removed"))
            for endpoint in new_endpoints[kind]:
                if endpoint in old_endpoints[kind]:
                    continue
                protocol_factory = self._listener_factories.get(kind)
                if protocol_factory is None:
                    result.restart.append(kind)
                    continue
                service = strports.service(endpoint, protocol_factory)
                service.setName(f"{kind}:{endpoint}")
                service.setServiceParent(parent)
                result.listeners.append((kind, endpoint, "added"))

    def _apply_config(self, new: Effective) -> None:
        factory = self.factory
        config = new.config
        # what only a restart changes keeps its running value
        keep = {
            path: _path_value(factory.config, path)
            for option in OPTIONS
            if not option.live
            for path in option.paths
        }
        if keep:
            config = config.derived(keep)
        old_access = factory.config.access
        factory.config = config
        if factory.policy.limits != config.limits:
            factory.policy.limits = config.limits
        if config.access != old_access:
            factory.authorizer = build_authorizer(config.access, factory.reactor)
        factory.set_app_configs(new.app_configs)
        # an application's next streams take its GOP cache bound and chat history;
        # its current streams keep theirs
        for app, registry in factory.registries.items():
            settings = factory.settings_for(app)
            registry.gop_cache_bytes = settings.gop_cache_bytes
            registry.chat_history = settings.chat_history
            registry.chat_history_bytes = settings.chat_history_bytes


def _path_value(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


class ReloadService(Service):
    """Reloads on ``SIGHUP`` while running (the previous handler is restored at stop).

    The signal handler only schedules the reload on the reactor's thread.
    """

    def __init__(self, reloader: Reloader, call_from_signal: Callable[..., Any]) -> None:
        self.reloader = reloader
        self._call = call_from_signal
        self._previous: Any = None

    @override
    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    @override
    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: Any) -> None:
        self._call(self.reloader.reload)
