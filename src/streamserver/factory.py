"""RTMPServerFactory: the stream registries, the configuration and the clock.

One factory serves every listener of a server process.  Protocols read all their
configuration from ``self.factory``; nothing global is imported at module level,
so tests inject a :class:`twisted.internet.task.Clock` (or a
``MemoryReactorClock``) as the factory's reactor.
"""

from __future__ import annotations

import itertools
import resource
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamserver.auth import IAuthorizer, build_authorizer, is_loopback
from streamserver.config import ServerConfig
from streamserver.errors import StreamError
from streamserver.events import RecordingEvents, SessionEvents
from streamserver.media.rooms import ChatRoom
from streamserver.media.stream import ChatBridge, Stream, StreamRegistry
from streamserver.policy import DropFramesPolicy, IDropPolicy, PolicyLimits
from streamserver.transport import FlushList

_log = Logger()

if TYPE_CHECKING:
    from streamserver.apps import AppView
    from streamserver.media.viewer import Viewer, ViewerServer
    from streamserver.protocol.server import RTMPServerProtocol
    from streamserver.stats import ConnectionStats, StreamStats
    from streamserver.transport import TransportAdapter


class _Named(Protocol):
    @property
    def peer(self) -> str: ...


class _Tracked(Protocol):
    conn_id: int

    @property
    def link(self) -> TransportAdapter: ...


class Connection(Protocol):
    """What the factory tracks of a connection, whatever its wire protocol.

    RTMP connections (:class:`~streamserver.protocol.server.RTMPServerProtocol`)
    and HTTP-FLV / WebSocket-FLV viewers (:mod:`streamserver.http.flv`) are
    counted against the same limits, listed by the same snapshots, timed out by
    the same watchdog and closed by the same shutdown.
    """

    conn_id: int
    closing: bool

    @property
    def link(self) -> TransportAdapter:
        """The connection's transport adapter."""
        ...

    @property
    def peer(self) -> str:
        """The peer's address, for logs."""
        ...

    def stats(self) -> ConnectionStats:
        """A snapshot of the connection's numbers now."""
        ...

    def check_timeouts(self, now: float) -> bool:
        """Apply the connection's timeouts; whether it is closed."""
        ...

    def drop_connection(self) -> None:
        """Close now, discarding what is queued (idempotent)."""
        ...


class RTMPServerFactory(ServerFactory):
    """Builds server protocols and holds what they share.

    :ivar config: the :class:`ServerConfig`.
    :ivar reactor: the reactor used for time and timers (a ``Clock`` in tests).
    :ivar registries: one :class:`StreamRegistry` per application name.
    :ivar connections: every live protocol, by connection id.
    :ivar policy: the drop-frames policy every viewer consults.
    :ivar disconnects: viewers disconnected by the policy, by reason.
    :ivar authorizer: decides every publish and play (:mod:`streamserver.auth`).
    :ivar refusals: connections closed by a limit or timeout, by reason.
    :ivar shutting_down: :meth:`shutdown` has begun.
    :ivar started_at: when the factory was made, by its clock (the server's uptime).
    :ivar events: the observers of publish and play sessions
        (:class:`~streamserver.events.SessionEvents`).
    :ivar recordings: the listeners of finished recordings
        (:class:`~streamserver.events.RecordingEvents`).
    :ivar hls: the HLS segmenters of the streams
        (:class:`~streamserver.http.hls_manager.HlsManager`).
    :ivar app_views: the applications ``--config``'s file names, with their own
        settings (:class:`~streamserver.apps.AppView`); every other application
        uses :attr:`config`, :attr:`authorizer` and :attr:`policy`.
    :ivar pushes: the push relays of local publishes
        (:class:`~streamserver.relay.push.PushManager`).
    :ivar pulls: the pull relays of streams published elsewhere
        (:class:`~streamserver.relay.pull.PullManager`).
    """

    #: The protocol class to build; ``None`` means ``RTMPServerProtocol``.
    protocol_class: type[RTMPServerProtocol] | None = None

    def __init__(self, config: ServerConfig | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config or ServerConfig()
        self.reactor: IReactorTime = reactor
        self.registries: dict[str, StreamRegistry] = {}
        self.connections: dict[int, Connection] = {}
        self.policy: IDropPolicy = DropFramesPolicy(self.config.limits)
        self.disconnects: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._watchdog = LoopingCall(self.check_viewers)
        self._watchdog.clock = reactor
        self.authorizer: IAuthorizer = build_authorizer(self.config.access, reactor)
        self.refusals: Counter[str] = Counter()
        self.shutting_down = False
        self._hosts: Counter[str] = Counter()
        self._counted: set[int] = set()
        self._drained: defer.Deferred[None] | None = None
        self._grace_call: IDelayedCall | None = None
        self._refusal_log: dict[str, tuple[float | None, int]] = {}
        self.started_at = self.seconds()
        self.events = SessionEvents()
        self.recordings = RecordingEvents()
        #: The RecordingService with --record (recording/service.py), else None; set by it.
        self.recorder: Any = None
        #: The Reloader with --config (streamserver/reload.py), else None; set by makeService.
        self.reloader: Any = None
        #: With --cluster: where chat goes across nodes (cluster/chat.py), set before
        #: any stream exists; and the node, whose ``snapshot()`` the API shows.
        self.chat_bridge: ChatBridge | None = None
        self.cluster: Any = None
        from streamserver.http.hls_manager import HlsManager

        self.hls = HlsManager(self)
        from streamserver.relay.pull import PullManager
        from streamserver.relay.push import PushManager

        self.app_views: dict[str, AppView] = {}
        self.pushes = PushManager(self)
        self.pulls = PullManager(self)
        #: the links holding viewers' frames, flushed at the end of each publisher
        #: read or after --merge-ms (streamserver.transport.FlushList)
        self.flush_list = FlushList(reactor, self.config.merge_ms)

    # --- per-application settings (docs/configuration.md) -------------------------

    def set_app_configs(self, configs: Mapping[str, ServerConfig]) -> None:
        """Give the applications named in *configs* their own settings.

        A view already there is updated in place (its viewers see the new
        limits); an application no longer named falls back to :attr:`config`.
        Call it after replacing :attr:`config` (a reload does).
        """
        from streamserver.apps import AppView

        for app, config in configs.items():
            view = self.app_views.get(app)
            if view is None:
                self.app_views[app] = AppView(self, app, config)
            else:
                view.update(config)
        for app, view in self.app_views.items():
            if app not in configs:
                view.update(self.config)
        self.pushes.config_changed()
        self.pulls.config_changed()

    def settings_for(self, app: str) -> ServerConfig:
        """The configuration in force for application *app*."""
        view = self.app_views.get(app)
        return view.config if view is not None else self.config

    def authorizer_for(self, app: str) -> IAuthorizer:
        """Who decides publishes and plays of application *app*."""
        view = self.app_views.get(app)
        return view.authorizer if view is not None else self.authorizer

    def viewer_server(self, app: str) -> ViewerServer:
        """What a viewer of application *app* consults: its policy, the clock, the tally."""
        view = self.app_views.get(app)
        return view if view is not None else self

    def startFactory(self) -> None:
        """Start the stall watchdog; warn loudly if dropping is disabled."""
        if not self.config.limits.enabled:
            _log.warn(
                "DROP POLICY DISABLED (--no-drop): slow viewers will make memory grow "
                "without bound; use only to demonstrate the failure"
            )
        if not self._watchdog.running:
            self._watchdog.start(self.config.watchdog_interval, now=False)
        self.log_access_policy()
        self.pulls.start()

    def log_access_policy(self) -> None:
        """Say at start who may publish and play, and the connection limits."""
        config = self.config
        publish, play = config.access.describe()
        _log.info(
            "publishing allowed {publish}; playing allowed {play}", publish=publish, play=play
        )
        _log.info(
            "limits: {max_connections} connections, {per_ip} per remote address, "
            "{max_streams} streams, messages up to {max_message} bytes",
            max_connections=config.max_connections or "unlimited",
            per_ip=config.max_connections_per_ip or "unlimited",
            max_streams=config.max_streams or "unlimited",
            max_message=config.max_message_bytes,
        )
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = config.max_connections + 64
        if config.max_connections and soft != resource.RLIM_INFINITY and soft < wanted:
            _log.warn(
                "the open file limit ({soft}) is below --max-connections + 64 ({wanted}); "
                "connections past it are refused by the kernel, not by us",
                soft=soft,
                wanted=wanted,
            )

    def stopFactory(self) -> None:
        """Stop the watchdog and close every connection (:meth:`shutdown`)."""
        if self._watchdog.running:
            self._watchdog.stop()
        self.flush_list.stop()
        self.shutdown()

    def check_viewers(self) -> None:
        """Run each connection's timeouts, and disconnect stalled viewers.

        Every connection's :meth:`~streamserver.protocol.guard.GuardMixin.check_timeouts`
        (handshake, connect, idle publisher, ping) runs first, then every
        viewer's :meth:`~streamserver.media.viewer.Viewer.check_progress` (drain
        rate and the drop policy's stall check), whatever its wire protocol, and
        every stream's input bit rate is sampled (:meth:`Stream.sample_rate`).
        Then the HLS segmenters' turn (:meth:`HlsManager.check
        <streamserver.http.hls_manager.HlsManager.check>`: parked requests past
        their deadline, idle segmenters, ``--hls always``).
        """
        now = self.seconds()
        for protocol in list(self.connections.values()):
            protocol.check_timeouts(now)
        for stream in self.streams():
            stream.sample_rate(now)
            for viewer in stream.subscribers:
                viewer.check_progress(now)
        self.hls.check(now)

    def set_policy(self, **limits: Any) -> PolicyLimits:
        """Change policy limits for every viewer at once (of every application); return
        the server's new limits.

        :raises ValueError: an unknown limit or an inconsistent combination.
        """
        new = self.policy.limits.updated(**limits)
        self.policy.limits = new
        self.config.limits = new
        for view in self.app_views.values():
            view.policy.limits = view.config.limits = view.policy.limits.updated(**limits)
        return new

    def viewer_disconnected(self, viewer: Viewer | None, reason: str) -> None:
        """Count a disconnect the drop policy decided (for *viewer*, or a chat-only seat)."""
        self.disconnects[reason] += 1

    def kick(self, conn_id: int, reason: str = "kicked") -> bool:
        """Disconnect connection *conn_id* at once; return whether it existed."""
        protocol = self.connections.get(conn_id)
        if protocol is None:
            return False
        _log.info("kicking {peer}: {reason}", peer=protocol.peer, reason=reason)
        protocol.drop_connection()
        return True

    # --- chat moderation (the console calls these) --------------------------------

    def chat_room(self, stream: str) -> ChatRoom | None:
        """The chat room of *stream* (``"app/name"``), or ``None`` if no such stream."""
        app, _, name = stream.strip("/").partition("/")
        found = self.find_stream(app, name)
        return found.chat if found is not None else None

    def mute(self, stream: str, nick: str) -> bool:
        """Mute *nick* in *stream*'s room (``"app/name"``); whether it was newly muted.

        ``False`` if the stream does not exist or the nick was muted already.
        Mutes last as long as the stream does.
        """
        room = self.chat_room(stream)
        if room is None or not room.mute(nick):
            return False
        _log.info("muted {nick} in {stream}", nick=nick, stream=stream)
        return True

    def unmute(self, stream: str, nick: str) -> bool:
        """Unmute *nick* in *stream*'s room; whether it was muted."""
        room = self.chat_room(stream)
        if room is None or not room.unmute(nick):
            return False
        _log.info("unmuted {nick} in {stream}", nick=nick, stream=stream)
        return True

    def clear_history(self, stream: str) -> int:
        """Forget the chat history of *stream*'s room; how many messages were dropped."""
        room = self.chat_room(stream)
        if room is None:
            return 0
        count = room.clear_history()
        _log.info("cleared {count} chat messages of {stream}", count=count, stream=stream)
        return count

    def connection_stats(self) -> list[ConnectionStats]:
        """A snapshot of every connection, by connection id."""
        return [self.connections[i].stats() for i in sorted(self.connections)]

    def stream_stats(self) -> list[StreamStats]:
        """A snapshot of every stream, by ``app/name``."""
        return sorted((s.stats() for s in self.streams()), key=lambda s: (s.app, s.name))

    def bytes_queued_total(self) -> int:
        """Bytes held in every connection's transport write buffer."""
        return sum(p.link.queued() for p in self.connections.values())

    def buildProtocol(self, addr: IAddress | None) -> RTMPServerProtocol:  # type: ignore[override]
        from streamserver.protocol.server import RTMPServerProtocol

        protocol_class = self.protocol_class or RTMPServerProtocol
        protocol = protocol_class()
        protocol.factory = self
        protocol.conn_id = self.next_conn_id()
        return protocol

    def next_conn_id(self) -> int:
        """A connection id never handed out before (RTMP and HTTP share the sequence)."""
        return next(self._ids)

    def seconds(self) -> float:
        """Now, by the factory's reactor."""
        return self.reactor.seconds()

    def registry(self, app: str) -> StreamRegistry:
        """The registry of application *app*, created on first use."""
        registry = self.registries.get(app)
        if registry is None:
            config = self.settings_for(app)
            registry = StreamRegistry(
                app,
                gop_cache_bytes=config.gop_cache_bytes,
                clock=self.seconds,
                chat_history=config.chat_history,
                chat_history_bytes=config.chat_history_bytes,
                chat_bridge=self.chat_bridge,
            )
            self.registries[app] = registry
        return registry

    def streams(self) -> list[Stream]:
        """Every stream of every application."""
        return [stream for registry in self.registries.values() for stream in registry.streams]

    def find_stream(self, app: str, name: str) -> Stream | None:
        """The stream *app*/*name*, or ``None``."""
        registry = self.registries.get(app)
        return registry.get(name) if registry else None

    def connection_opened(self, protocol: _Tracked, *, count_address: bool = True) -> None:
        """Track *protocol*, a :class:`Connection` (the RTMP session mixin, an HTTP-FLV viewer).

        :param count_address: count it against its address's limit; ``False`` for
            a session inside an HTTP connection, which counted itself
            (:meth:`address_opened`).
        """
        self.connections[protocol.conn_id] = cast("Connection", protocol)
        if count_address:
            self._counted.add(protocol.conn_id)
            self.address_opened(protocol.link.peer)

    def connection_closed(self, protocol: _Tracked) -> None:
        """Forget *protocol* (the RTMP session mixin, an HTTP-FLV viewer)."""
        counted = protocol.conn_id in self._counted
        if self.connections.pop(protocol.conn_id, None) is not None and counted:
            self._counted.discard(protocol.conn_id)
            self.address_closed(protocol.link.peer)
        if self._drained is not None and not self.connections and not self._drained.called:
            if self._grace_call is not None and self._grace_call.active():
                self._grace_call.cancel()
            self._grace_call = None
            self._drained.callback(None)

    def address_opened(self, address: IAddress | None) -> None:
        """Count one more connection from *address* (an RTMP or HTTP connection)."""
        self._hosts[limited_host(address)] += 1

    def address_closed(self, address: IAddress | None) -> None:
        """Count one connection from *address* less."""
        host = limited_host(address)
        self._hosts[host] -= 1
        if self._hosts[host] <= 0:
            del self._hosts[host]

    def address_refusal(self, address: IAddress | None) -> str | None:
        """Why a connection from *address*, just counted, must be closed, or ``None``.

        Its address holds more than ``max_connections_per_ip`` connections
        (RTMP and HTTP together; loopback is exempt), or the server is stopping.
        """
        if self.shutting_down:
            return "the server is shutting down"
        host = limited_host(address)
        limit = self.config.max_connections_per_ip
        if limit and host and self._hosts[host] > limit:
            return f"connection limit per address ({limit}) reached for {host}"
        return None

    def admission_refusal(self, protocol: _Tracked) -> str | None:
        """Why *protocol*, just opened, must be closed at once, or ``None``.

        Checked after :meth:`connection_opened` counted it: the server is
        shutting down, or holds more than ``max_connections``, or its remote
        address more than ``max_connections_per_ip`` (loopback is exempt).
        """
        config = self.config
        if self.shutting_down:
            return "the server is shutting down"
        if config.max_connections and len(self.connections) > config.max_connections:
            return f"server connection limit ({config.max_connections}) reached"
        return self.address_refusal(protocol.link.peer)

    def connection_refused(self, protocol: _Named, kind: str, reason: str) -> None:
        """Count and log that *protocol* is being closed by a limit or timeout.

        At most one line per *kind* per second is logged, with the number of
        refusals of that kind left out since, so a flood of connections cannot
        flood the log.
        """
        self.refusals[kind] += 1
        now = self.seconds()
        last, skipped = self._refusal_log.get(kind, (None, 0))
        if last is not None and now - last < 1.0:
            self._refusal_log[kind] = (last, skipped + 1)
            return
        self._refusal_log[kind] = (now, 0)
        _log.info(
            "closing {peer}: {reason}{also}",
            peer=protocol.peer,
            reason=reason,
            kind=kind,
            also=f" ({skipped} more {kind} refusals not logged)" if skipped else "",
        )

    def connections_from(self, host: str) -> int:
        """How many connections remote address *host* holds (0 for loopback)."""
        return self._hosts.get(host, 0)

    # --- streams -----------------------------------------------------------------

    def stream_count(self) -> int:
        """How many streams the server holds, over every application."""
        return sum(len(registry) for registry in self.registries.values())

    def open_stream(self, app: str, name: str, code: str) -> Stream:
        """The stream *app*/*name*, created if needed within ``max_streams``.

        :param code: the status code of the refusal (``NetStream.Publish.Rejected``,
            ``NetStream.Play.Rejected``...).
        :raises StreamError: creating it would exceed ``max_streams``.
        """
        existing = self.find_stream(app, name)
        if existing is not None:
            return existing
        limit = self.config.max_streams
        if limit and self.stream_count() >= limit:
            raise StreamError(f"the server's stream limit ({limit}) is reached", code=code)
        return self.registry(app).get_or_create(name)

    def release_stream(self, stream: Stream) -> None:
        """Forget *stream* if it is idle, and its application's registry if now empty.

        Its pull (:attr:`pulls`) hears of it first: the last viewer gone starts its
        idle wait, a local publisher gone with viewers left starts one.
        """
        self.pulls.stream_released(stream)
        registry = self.registries.get(stream.app)
        if registry is None:
            return
        registry.release(stream)
        if not len(registry):
            del self.registries[stream.app]

    # --- shutdown ------------------------------------------------------------------

    def shutdown(self, grace: float | None = None) -> defer.Deferred[None]:
        """Close every connection; the Deferred fires when all are gone.

        Publishers' streams end first, so their viewers get
        ``NetStream.Play.UnpublishNotify``; then every connection is closed
        after its queued bytes are sent.  Connections still open after *grace*
        seconds (``shutdown_grace`` by default), such as a viewer that stopped
        reading, are aborted.  Idempotent: later calls wait for the same end.
        """
        if self._drained is None:
            self.shutting_down = True
            self._drained = defer.Deferred()
            self.hls.shutdown()
            self.pushes.stop_all()
            self.pulls.stop_all()
            protocols = list(self.connections.values())
            if protocols:
                _log.info("shutting down: closing {count} connections", count=len(protocols))
            for protocol in protocols:
                # RTMP publishers end their streams first (an HTTP viewer publishes nothing)
                for stream_id in list(getattr(protocol, "publishing", ())):
                    cast("RTMPServerProtocol", protocol).message_stream_deleted(stream_id)
            for protocol in protocols:
                protocol.closing = True
                protocol.link.close()
            if self.connections:
                delay = self.config.shutdown_grace if grace is None else grace
                self._grace_call = self.reactor.callLater(delay, self._abort_remaining)
            elif not self._drained.called:
                self._drained.callback(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._drained.addBoth(_copy_to(waiter))
        return waiter

    def _abort_remaining(self) -> None:
        self._grace_call = None
        if self.connections:
            _log.info(
                "shutdown grace over: aborting {count} connections", count=len(self.connections)
            )
        for protocol in list(self.connections.values()):
            protocol.link.abort()
        # Aborted transports report connectionLost on the next reactor turn; the
        # wait is over now, whatever they do.
        if self._drained is not None and not self._drained.called:
            self._drained.callback(None)


def limited_host(address: IAddress | None) -> str:
    """The address the per-address limit counts *address* under; ``""`` if exempt.

    Loopback and UNIX socket peers are exempt: a local reverse proxy or load
    generator shows every client under one such address.
    """
    if not isinstance(address, IPv4Address | IPv6Address) or is_loopback(address.host):
        return ""
    return address.host


def _copy_to(target: defer.Deferred[None]) -> Any:
    """A callback passing a result on unchanged after copying it into *target*."""

    def copy(result: Any) -> Any:
        if not target.called:
            target.callback(None)
        return result

    return copy
