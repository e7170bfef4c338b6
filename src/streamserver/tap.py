"""twistd integration: the ``streamserver`` command-line options and service.

``twistd -n streamserver`` listens for RTMP on ``tcp:1935``.  Every listener is
a Twisted endpoint string, so ``tcp6:``, ``unix:`` and ``ssl:`` (RTMPS) work
without code.  All logic lives here; the plugin in ``twistd_plugins/`` only
points at this module.

The options are declared in :mod:`streamserver.options`, one row each:
:class:`Options` takes its ``optParameters``, ``optFlags``, the ``opt_*``
handlers of the repeatable options and :meth:`Options.config` from that table,
and adds what only the process needs: the default listener and the checks of
the console's options.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from twisted.application.service import IService
from twisted.python import usage
from typing_extensions import override

from streamserver.config import ConfigError, ServerConfig
from streamserver.configfile import Effective, describe, effective
from streamserver.errors import UsageError
from streamserver.factory import RTMPServerFactory
from streamserver.hooks import install as install_hooks
from streamserver.options import (
    DEFAULT_HTTP_ENDPOINT,
    DEFAULT_RTMP_ENDPOINT,
    add_repeatable_handlers,
    config_from,
    initial_values,
    opt_flags,
    opt_parameters,
)
from streamserver.security import StreamServerService
from streamserver.workers import (
    build_supervisor,
    current_role,
    install_child,
    listener_service,
    prepare_child,
)

__all__ = ["DEFAULT_HTTP_ENDPOINT", "DEFAULT_RTMP_ENDPOINT", "Options", "makeService"]


@add_repeatable_handlers
class Options(usage.Options):
    """``twistd streamserver`` options: the rows of :data:`streamserver.options.OPTIONS`."""

    synopsis = "[--rtmp ENDPOINT ...] [--http ENDPOINT ...] [--irc ENDPOINT ...] [options]"
    longdesc = (
        "A live-streaming server: encoders publish rtmp://HOST/APP/NAME, any number of "
        "viewers play it over RTMP, HTTP-FLV or WebSocket-FLV.  Listens for RTMP on "
        "tcp:1935 unless --rtmp is given, and for HTTP on tcp:8080 unless --http or "
        "--no-http is given."
    )

    optParameters: list[list[Any]] = opt_parameters()
    optFlags: list[list[str | None]] = opt_flags()

    def __init__(self) -> None:
        super().__init__()
        self.update(initial_values())
        #: the flags given on the command line (they override ``--config``'s file)
        self.given: set[str] = set()
        #: the configuration in force, once parsed (:func:`streamserver.configfile.effective`)
        self.effective: Effective | None = None
        self._parsing = True
        #: the arguments as given, for --workers: the supervisor starts its children with them
        self.arguments: list[str] = []

    @override
    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    @override
    def __setitem__(self, key: str, value: Any) -> None:
        # usage.Options stores each parsed argument through here
        if getattr(self, "_parsing", False):
            self.given.add(key)
        super().__setitem__(key, value)

    def command_line(self) -> dict[str, Any]:
        """The values the command line gave, by flag (what a reload keeps)."""
        return {flag: self[flag] for flag in self.given}

    def _check_manhole(self) -> None:
        """--manhole needs a keys file with a usable key; default the data directory."""
        from streamserver.console import ConsoleError, check_keys_file, default_data_dir

        if not self["manhole-keys"]:
            raise usage.UsageError(
                "--manhole needs --manhole-keys FILE, an OpenSSH authorized_keys file listing "
                "the public keys allowed into the console (it has no passwords)"
            )
        try:
            check_keys_file(self["manhole-keys"])
        except ConsoleError as error:
            raise usage.UsageError(str(error)) from error
        if not self["data-dir"]:
            self["data-dir"] = str(default_data_dir())
        if self["manhole"].isdigit():
            self["manhole"] = f"tcp:{self['manhole']}:interface=127.0.0.1"

    @override
    def postOptions(self) -> None:
        self._parsing = False
        if self["check"]:
            try:
                self._resolve()
            except (usage.UsageError, ConfigError) as error:
                sys.stderr.write(f"configuration error: {error}\n")
                raise SystemExit(1) from error
            assert self.effective is not None
            sys.stdout.write(describe(self.effective) + "\n")
            sys.stdout.write("configuration OK\n")
            raise SystemExit(0)
        try:
            self._resolve()
        except ConfigError as error:
            raise usage.UsageError(str(error)) from error

    def _resolve(self) -> None:
        """Merge the file under the command line, then the defaults of the listeners.

        :raises ConfigError: the file is wrong (naming its line and key).
        :raises usage.UsageError: an option is wrong.
        """
        self.effective = effective(dict(self), self.given, self["config"])
        self.update(self.effective.values)
        self._listener_defaults()

    def _listener_defaults(self) -> None:
        if not self["rtmp"]:
            self["rtmp"] = [DEFAULT_RTMP_ENDPOINT]
        if self["no-http"]:
            if self["http"]:
                raise usage.UsageError("--no-http and --http exclude each other")
        elif not self["http"]:
            self["http"] = [DEFAULT_HTTP_ENDPOINT]
        if self["manhole"]:
            self._check_manhole()

    def config(self) -> ServerConfig:
        """The :class:`~streamserver.config.ServerConfig` these options describe.

        :raises usage.UsageError: a value is out of its range (naming the flag).
        """
        if self.effective is not None:
            return self.effective.config
        return config_from(self)

    def adjust(self, changes: dict[str, Any]) -> None:
        """Set *changes* (by flag) as if the command line gave them, and resolve the
        configuration again (a ``--workers`` child's role, over ``--config``'s file).

        :raises usage.UsageError: the result is wrong.
        """
        self.update(changes)
        self.given.update(changes)
        try:
            self._resolve()
        except ConfigError as error:
            raise usage.UsageError(str(error)) from error

    def app_configs(self) -> dict[str, ServerConfig]:
        """The configuration of each application ``--config``'s file names."""
        return dict(self.effective.app_configs) if self.effective is not None else {}


def makeService(options: Options) -> IService:
    """Build the service tree: one RTMP listener per ``--rtmp`` endpoint, one HTTP
    listener per ``--http`` endpoint (one site), one IRC gateway listener per
    ``--irc`` endpoint (one :class:`~streamserver.irc.IrcFactory`), the SSH
    console (``manhole``) when ``--manhole`` is given, the cluster membership
    (``--cluster``, :mod:`streamserver.cluster.service`), and the hooks
    (``--on-publish-done``..., :func:`streamserver.hooks.install`) observing the
    factory.

    With ``--workers N`` (N > 1) this process is the supervisor of the origin and
    the workers instead (:mod:`streamserver.workers`), and a child started by it
    listens as its role says."""
    from twisted.internet import reactor

    from streamserver.http import build_site

    config = options.config()
    role = current_role(workers=config.workers)
    if role is None and config.workers > 1:
        return build_supervisor(options.arguments, options, config, reactor)
    if role is not None:
        options.adjust(prepare_child(role, options))
        config = options.config()
    listen = partial(listener_service, role)
    factory = RTMPServerFactory(config, reactor=reactor)
    factory.set_app_configs(options.app_configs())
    install_hooks(factory)
    top = StreamServerService(factory)
    for endpoint in options["rtmp"]:
        service = listen(endpoint, factory)
        service.setName(f"rtmp:{endpoint}")
        service.setServiceParent(top)
    listener_factories: dict[str, Any] = {"rtmp": factory}
    site = None
    if options["http"] or options["config"]:
        listener_factories["http"] = site = build_site(factory)
        for endpoint in options["http"]:
            service = listen(endpoint, site)
            service.setName(f"http:{endpoint}")
            service.setServiceParent(top)
    if options["irc"] or options["config"]:
        from streamserver.irc import IrcFactory

        listener_factories["irc"] = gateway = IrcFactory(factory)
        for endpoint in options["irc"]:
            service = listen(endpoint, gateway)
            service.setName(f"irc:{endpoint}")
            service.setServiceParent(top)
    if options["config"] and options.effective is not None:
        from streamserver.reload import Reloader, ReloadService

        reloader = Reloader(
            factory,
            options.effective,
            options.command_line(),
            options["config"],
            listeners=top,
            listener_factories=listener_factories,
            supervisor=role.supervisor if role is not None else None,
        )
        factory.reloader = reloader
        hangup = ReloadService(reloader, reactor.callFromThread)  # type: ignore[attr-defined]
        hangup.setName("reload")
        hangup.setServiceParent(top)
    if factory.config.record_dir is not None:
        from streamserver.recording.service import RecordingService

        recording = RecordingService(factory)
        recording.setName("recording")
        recording.setServiceParent(top)
    if factory.config.cluster is not None:
        from streamserver.cluster.service import ClusterService

        try:
            cluster = ClusterService(factory, options["rtmp"])
        except UsageError as error:
            raise usage.UsageError(str(error)) from error
        cluster.setName("cluster")
        cluster.setServiceParent(top)
    if options["manhole"]:
        from streamserver.console import ConsoleService

        console = ConsoleService(
            options["manhole"],
            factory,
            options["manhole-keys"],
            options["data-dir"],
            reactor=reactor,
        )
        console.setName("manhole")
        console.setServiceParent(top)
    if role is not None:
        install_child(role, factory, top, site, reactor)
    return top
