"""GuardMixin: connection limits, timeouts and keepalive for one connection.

Hooks overridden: ``connectionMade`` (after every other mixin set up: closes the
connection at once if the factory's connection limits refuse it),
``dataReceived`` (any byte from the peer is a sign of life),
``handshake_completed`` (starts the wait for ``connect``), ``message_received``
(media on a publishing message stream keeps the publisher alive).

:meth:`GuardMixin.check_timeouts` runs from the factory's watchdog (every
``watchdog_interval`` seconds, on the factory's clock) and closes the
connection that:

- has not completed the handshake ``handshake_timeout`` seconds after it opened;
- has not sent ``connect`` ``connect_timeout`` seconds after the handshake;
- publishes but sent no audio or video for ``publisher_idle_timeout`` seconds;
- stayed silent ``ping_interval`` seconds, was sent a User Control Ping
  Request, and then for ``ping_timeout`` more seconds neither sent a byte (a
  Ping Response, an Acknowledgement, anything) nor took any of the media we
  send it.  A viewer that only reads is alive as long as its media drains, so
  a healthy viewer is never dropped for not talking.

Every refusal is counted and logged through
:meth:`~streamserver.factory.RTMPServerFactory.connection_refused`.

Offers :class:`~streamserver.protocol.contracts.Timeouts` (to the factory's
watchdog); needs :class:`~streamserver.protocol.contracts.Messaging` (the ping),
:class:`~streamserver.protocol.contracts.Session` (whether ``connect`` came; the
peer for the refusal log) and :class:`~streamserver.protocol.contracts.Publishing`.
The handshake and connection times are the guard's own timestamps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import override

from streamserver.codec import messages
from streamserver.codec.messages import Message, MessageType
from streamserver.protocol.base import ProtocolRoot

if TYPE_CHECKING:
    from streamserver.protocol.contracts import Messaging, Publishing, Session, Timeouts

    class _Contracts(Timeouts, Messaging, Session, Publishing, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot

#: Message types that show a publisher is alive: audio, video and aggregates of them.
_MEDIA_TYPES = frozenset({MessageType.AUDIO, MessageType.VIDEO, MessageType.AGGREGATE})


class GuardMixin(_Contracts):
    """Closes connections that exceed a limit or a timeout; pings silent peers.

    :ivar alive_at: when the peer last showed life (a byte received, or media we
        sent it drained), on the factory's clock.
    :ivar ping_sent_at: when we sent the Ping Request still unanswered, or ``None``.
    :ivar media_at: when the publisher last sent media (``None``: not publishing).
    :ivar _opened_at: when the connection was made.
    :ivar _handshake_at: when the handshake completed (``None``: not yet).
    :ivar _delivered: the media bytes the peer had taken at the last check.
    """

    alive_at = 0.0
    ping_sent_at: float | None = None
    media_at: float | None = None
    _opened_at = 0.0
    _handshake_at: float | None = None
    _delivered = 0

    @override
    def connectionMade(self) -> None:
        self._opened_at = self.alive_at = self.factory.seconds()
        super().connectionMade()
        reason = self.factory.admission_refusal(self)
        if reason is not None:
            self.refuse_connection("limit", reason)

    @override
    def dataReceived(self, data: bytes) -> None:
        self.alive_at = self.factory.seconds()
        super().dataReceived(data)

    @override
    def handshake_completed(self) -> None:
        self._handshake_at = self.factory.seconds()
        super().handshake_completed()

    @override
    def message_received(self, message: Message) -> None:
        super().message_received(message)
        if message.type_id in _MEDIA_TYPES and message.stream_id in self.publishing:
            self.media_at = self.factory.seconds()

    def refuse_connection(self, kind: str, reason: str) -> None:
        """Close this connection for *reason*; counted under *kind* and logged."""
        if self.closing:
            return
        self.factory.connection_refused(self, kind, reason)
        self.drop_connection()

    def check_timeouts(self, now: float) -> bool:
        """Apply the timeouts at time *now*; return whether the connection is closed."""
        if self.closing:
            return True
        config = self.factory.config
        if self._handshake_at is None:
            timeout = config.handshake_timeout
            if timeout and now - self._opened_at >= timeout:
                self.refuse_connection("handshake-timeout", f"no handshake within {timeout:g} s")
            return self.closing
        if self.app is None:
            timeout = config.connect_timeout
            if timeout and now - self._handshake_at >= timeout:
                self.refuse_connection("connect-timeout", f"no connect within {timeout:g} s")
            return self.closing
        self._check_publisher(now, config.publisher_idle_timeout)
        if not self.closing:
            self._check_ping(now, config.ping_interval, config.ping_timeout)
        return self.closing

    def _check_publisher(self, now: float, timeout: float) -> None:
        if not self.publishing:
            self.media_at = None
            return
        if self.media_at is None:
            self.media_at = now  # publishing began since the last check
        elif timeout and now - self.media_at >= timeout:
            names = ", ".join(f"{s.app}/{s.name}" for s in self.publishing.values())
            self.refuse_connection(
                "publisher-idle", f"publisher of {names} sent no media for {timeout:g} s"
            )

    def _check_ping(self, now: float, interval: float, timeout: float) -> None:
        # what the peer took of the stream's bytes (not of our own pings and replies)
        delivered = self.link.media_written - self.link.queued()
        if delivered > self._delivered:
            self.alive_at = max(self.alive_at, now)
        self._delivered = max(self._delivered, delivered)
        if not interval or now - self.alive_at < interval:
            return
        sent = self.ping_sent_at
        if sent is None or sent <= self.alive_at:  # the peer showed life since that ping
            self.ping_sent_at = now
            self.send_message(messages.ping_request(int(now * 1000) & 0xFFFFFFFF))
        elif timeout and now - sent >= timeout:
            self.refuse_connection(
                "ping-timeout",
                f"silent for {now - self.alive_at:.0f} s, no answer to a ping within {timeout:g} s",
            )
