"""RTMPServerFactory: the stream registries, the configuration and the clock.

One factory serves every listener of a server process.  Protocols read all their
configuration from ``self.factory``; nothing global is imported at module level,
so tests inject a :class:`twisted.internet.task.Clock` (or a
``MemoryReactorClock``) as the factory's reactor.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamserver.policy import DropFramesPolicy, IDropPolicy, PolicyLimits
from streamserver.protocol.backpressure import transport_queued_bytes
from streamserver.streams import DEFAULT_GOP_CACHE_BYTES, Stream, StreamRegistry

if TYPE_CHECKING:
    from streamserver.protocol.base import ProtocolRoot
    from streamserver.protocol.server import RTMPServerProtocol


@dataclass
class ServerConfig:
    """Settings of a server; the twistd options map onto these fields.

    :ivar chunk_size: outgoing chunk size announced with Set Chunk Size.  4096
        (as nginx-rtmp) cuts per-chunk header overhead to 0.03% and keeps a
        typical inter frame in one chunk.
    :ivar gop_cache_bytes: per-stream GOP cache bound, 0 disables it.
    :ivar window_ack_size: the Window Acknowledgement Size we announce; peers
        acknowledge every this many bytes (2.5 MB, as FMS, nginx-rtmp and ffmpeg).
    :ivar peer_bandwidth: the Set Peer Bandwidth value we announce.
    :ivar max_message_bytes: largest inbound message accepted.  16 MiB lets 4K
        keyframes through; nginx-rtmp's 1 MiB default breaks them.
    :ivar limits: the drop-frames policy's watermarks.
    :ivar notsent_lowat: ``TCP_NOTSENT_LOWAT`` for every connection's socket (0:
        leave the kernel default).  16 KiB makes a stalled viewer show up in user
        space after ~200 KB instead of ~3 MB (TWISTED-FACTS §4).
    :ivar send_buffer: ``SO_SNDBUF`` for every socket (0: kernel default).
    :ivar watchdog_interval: seconds between stall checks of every viewer.
    """

    chunk_size: int = 4096
    gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES
    window_ack_size: int = 2_500_000
    peer_bandwidth: int = 2_500_000
    max_message_bytes: int = 16 * 1024 * 1024
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    notsent_lowat: int = 16 * 1024
    send_buffer: int = 0
    watchdog_interval: float = 1.0


class RTMPServerFactory(ServerFactory):
    """Builds server protocols and holds what they share.

    :ivar config: the :class:`ServerConfig`.
    :ivar reactor: the reactor used for time and timers (a ``Clock`` in tests).
    :ivar registries: one :class:`StreamRegistry` per application name.
    :ivar connections: every live protocol, by connection id.
    :ivar policy: the drop-frames policy every viewer consults.
    :ivar disconnects: viewers disconnected by the policy, by reason.
    """

    log = Logger()

    #: The protocol class to build; ``None`` means ``RTMPServerProtocol``.
    protocol_class: type[RTMPServerProtocol] | None = None

    def __init__(self, config: ServerConfig | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config or ServerConfig()
        self.reactor: IReactorTime = reactor
        self.registries: dict[str, StreamRegistry] = {}
        self.connections: dict[int, RTMPServerProtocol] = {}
        self.policy: IDropPolicy = DropFramesPolicy(self.config.limits)
        self.disconnects: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._watchdog = LoopingCall(self.check_viewers)
        self._watchdog.clock = reactor

    def startFactory(self) -> None:
        """Start the stall watchdog; warn loudly if dropping is disabled."""
        if not self.config.limits.enabled:
            self.log.warn(
                "DROP POLICY DISABLED (--no-drop): slow viewers will make memory grow "
                "without bound; use only to demonstrate the failure"
            )
        if not self._watchdog.running:
            self._watchdog.start(self.config.watchdog_interval, now=False)

    def stopFactory(self) -> None:
        """Stop the watchdog."""
        if self._watchdog.running:
            self._watchdog.stop()

    def check_viewers(self) -> None:
        """Disconnect every viewer that made no write progress for the stall timeout."""
        now = self.seconds()
        for protocol in list(self.connections.values()):
            protocol.check_stalled(now)

    def set_policy(self, **limits: Any) -> PolicyLimits:
        """Change policy limits for every viewer at once; return the new limits.

        :raises ValueError: an unknown limit or an inconsistent combination.
        """
        new = self.policy.limits.updated(**limits)
        self.policy.limits = new
        self.config.limits = new
        return new

    def viewer_disconnected(self, protocol: ProtocolRoot, reason: str) -> None:
        """Count a policy disconnect (called by the backpressure mixin)."""
        self.disconnects[reason] += 1

    def kick(self, conn_id: int, reason: str = "kicked") -> bool:
        """Disconnect connection *conn_id* at once; return whether it existed."""
        protocol = self.connections.get(conn_id)
        if protocol is None:
            return False
        self.log.info("kicking {peer}: {reason}", peer=protocol.peer, reason=reason)
        protocol.drop_connection()
        return True

    def bytes_queued_total(self) -> int:
        """Bytes held in every connection's transport write buffer."""
        return sum(transport_queued_bytes(p.transport) for p in self.connections.values())

    def buildProtocol(self, addr: IAddress | None) -> RTMPServerProtocol:  # type: ignore[override]
        from streamserver.protocol.server import RTMPServerProtocol

        protocol_class = self.protocol_class or RTMPServerProtocol
        protocol = protocol_class()
        protocol.factory = self
        protocol.conn_id = next(self._ids)
        return protocol

    def seconds(self) -> float:
        """Now, by the factory's reactor."""
        return self.reactor.seconds()

    def registry(self, app: str) -> StreamRegistry:
        """The registry of application *app*, created on first use."""
        registry = self.registries.get(app)
        if registry is None:
            registry = StreamRegistry(
                app, gop_cache_bytes=self.config.gop_cache_bytes, clock=self.seconds
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

    def connection_opened(self, protocol: ProtocolRoot) -> None:
        """Track *protocol* (called by the session mixin)."""
        self.connections[protocol.conn_id] = cast("RTMPServerProtocol", protocol)

    def connection_closed(self, protocol: ProtocolRoot) -> None:
        """Forget *protocol* (called by the session mixin)."""
        self.connections.pop(protocol.conn_id, None)
