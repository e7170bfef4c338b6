"""Upstream: one reconnecting RTMP client connection of a relay.

An :class:`Upstream` keeps one RTMP client session (a publish or a play, its
:class:`UpstreamRole`) up with a list of :class:`~streamserver.relay.target.RelayTarget`:

1. each attempt asks for the targets afresh (``resolve()``): a router may move a
   stream's origin between two attempts (the cluster's Redis lookup);
2. the targets are tried in order (failover), each by connecting through
   ``clientFromString(reactor, target.endpoint)`` -- TCP, a Unix socket, TLS --,
   the RTMP ``connect`` and ``createStream``, then the role's
   :meth:`UpstreamRole.start_session` (``publish`` or ``play``), all within
   :data:`ATTEMPT_TIMEOUT` seconds;
3. the first that succeeds is the session (:meth:`UpstreamRole.session_started`);
   when none does, or when the session's connection is lost
   (:meth:`UpstreamRole.session_lost`), the next attempt follows after a backoff:
   ``--relay-reconnect-seconds`` (3 s by default), doubling each failed attempt
   up to :data:`BACKOFF_CAP`, back to the first delay after a session started.

Every attempt is logged once, with named fields (``relay``, ``url``,
``attempt``, ``delay``).  All timing is on the given reactor (a ``task.Clock`` in
tests); how a target is connected is a parameter (:data:`Connector`), so tests
connect two factories in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.client import RTMPClientProtocol
from streamserver.relay.target import RelayTarget

__all__ = [
    "ATTEMPT_TIMEOUT",
    "BACKOFF_CAP",
    "Connector",
    "Upstream",
    "UpstreamRole",
    "backoff_delay",
    "endpoint_connector",
]

_log = Logger()

#: The longest wait between two attempts.  30 s: an upstream down for minutes is
#: tried twice a minute (a log line each), one back after a restart is found
#: within half a minute; nginx-rtmp retries a relay every 5 s forever, SRS backs
#: off to 30 s too.
BACKOFF_CAP = 30.0

#: Seconds one target gets for TCP connect, handshake, ``connect``,
#: ``createStream`` and ``publish``/``play`` together.  10 s is the TCP connect
#: timeout of the endpoint descriptions :func:`~streamserver.relay.target.parse_target`
#: makes; an upstream that takes longer is as good as down.
ATTEMPT_TIMEOUT = 10.0

#: Connects *client* to *target*: fires once the transport is connected.
Connector = Callable[[RelayTarget, RTMPClientProtocol], "defer.Deferred[Any]"]


def backoff_delay(first: float, failures: int, cap: float = BACKOFF_CAP) -> float:
    """The wait before the next attempt after *failures* failed attempts in a row.

    *first* after the first failure (or a lost session), doubling, at most
    ``max(cap, first)``.
    """
    if failures <= 1:
        return first
    return min(max(cap, first), first * 2 ** min(failures - 1, 32))


def endpoint_connector(reactor: Any) -> Connector:
    """The :data:`Connector` of a real reactor: ``clientFromString(reactor, target.endpoint)``."""

    def connect(target: RelayTarget, client: RTMPClientProtocol) -> defer.Deferred[Any]:
        return connectProtocol(clientFromString(reactor, target.endpoint), client)

    return connect


class UpstreamRole(Protocol):
    """What a relay does on its upstream session (a push publishes, a pull plays)."""

    def start_session(
        self, client: RTMPClientProtocol, target: RelayTarget, stream_id: int
    ) -> defer.Deferred[Any]:
        """``publish`` / ``play`` on the connected *client*; fires once it started."""
        ...

    def session_started(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        """The session on *client* is up."""
        ...

    def session_lost(self, target: RelayTarget) -> None:
        """The session's connection is lost (a new attempt is scheduled)."""
        ...


class Upstream:
    """One reconnecting RTMP client session, for a push or a pull.

    :ivar label: what logs call the relay (``push live/cam``).
    :ivar state: ``idle`` (not started), ``connecting``, ``connected``,
        ``waiting`` (for the next attempt) or ``stopped``.
    :ivar client: the connected client of the session, or ``None``.
    :ivar target: the target of the session (or of the attempt in progress).
    :ivar attempts: attempts made, over the upstream's life.
    :ivar failures: attempts failed in a row (the backoff's count).
    :ivar sessions: sessions started, over the upstream's life.
    :ivar next_attempt_at: when the next attempt is due, if one is scheduled.
    """

    def __init__(
        self,
        reactor: Any,
        label: str,
        resolve: Callable[[], defer.Deferred[list[RelayTarget]]],
        role: UpstreamRole,
        *,
        reconnect_seconds: float,
        connector: Connector | None = None,
        chunk_size: int = 4096,
    ) -> None:
        self.reactor = reactor
        self.label = label
        self.state = "idle"
        self.client: RTMPClientProtocol | None = None
        self.target: RelayTarget | None = None
        self.attempts = 0
        self.failures = 0
        self.sessions = 0
        self.next_attempt_at: float | None = None
        self._resolve = resolve
        self._role = role
        self._reconnect = reconnect_seconds
        self._connector = connector or endpoint_connector(reactor)
        self._chunk_size = chunk_size
        self._call: IDelayedCall | None = None
        self._attempt: defer.Deferred[Any] | None = None

    def __repr__(self) -> str:
        return f"<Upstream {self.label} {self.state}>"

    @property
    def stopped(self) -> bool:
        """:meth:`stop` was called."""
        return self.state == "stopped"

    def start(self) -> None:
        """Make the first attempt now (nothing if started already)."""
        if self.state == "idle":
            self._try()

    def stop(self) -> None:
        """Close the session or give up the attempt; no attempt follows (idempotent)."""
        if self.stopped:
            return
        self.state = "stopped"
        self.next_attempt_at = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def retry_now(self) -> bool:
        """Make the next attempt now if one is only waiting for its backoff delay (a
        router learned where the stream went); the backoff count stays.

        :returns: whether an attempt started.
        """
        if self.state != "waiting":
            return False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._try()
        return True

    # --- attempts -------------------------------------------------------------------

    def _try(self) -> None:
        self._call = None
        self.next_attempt_at = None
        self.state = "connecting"
        self.attempts += 1
        attempt: defer.Deferred[Any] = defer.maybeDeferred(self._resolve)
        attempt.addCallback(self._try_targets, 0)
        attempt.addErrback(self._attempt_failed)
        self._attempt = attempt

    def _try_targets(self, targets: list[RelayTarget], index: int) -> Any:
        if self.stopped:
            return None
        if index >= len(targets):
            reason = "no upstream for it" if not targets else "every upstream failed"
            self._schedule(reason)
            return None
        target = targets[index]
        self.target = target
        _log.info(
            "relay {relay}: connecting to {url} (attempt {attempt})",
            relay=self.label,
            url=target.url,
            attempt=self.attempts,
        )
        client = RTMPClientProtocol(chunk_size=self._chunk_size, keep_media=False)
        session = defer.ensureDeferred(self._open(client, target))
        session.addTimeout(ATTEMPT_TIMEOUT, self.reactor, onTimeoutCancel=_timed_out)

        def failed(failure: Failure) -> Any:
            if failure.check(defer.CancelledError) and self.stopped:
                client.close()
                return None
            client.close()
            _log.info(
                "relay {relay}: {url} failed: {error}",
                relay=self.label,
                url=target.url,
                error=failure.getErrorMessage() or repr(failure.value),
            )
            return self._try_targets(targets, index + 1)

        session.addCallbacks(lambda _: self._established(client, target), failed)
        return session

    async def _open(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        await self._connector(target, client)
        await client.connect(target.app, target.tc_url)
        stream_id = await client.create_stream()
        await self._role.start_session(client, target, stream_id)

    def _established(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        self._attempt = None
        if self.stopped:
            client.close()
            return
        self.state = "connected"
        self.failures = 0
        self.sessions += 1
        self.client = client
        _log.info("relay {relay}: up with {url}", relay=self.label, url=target.url)
        client.disconnected.addCallback(lambda _: self._lost(client, target))
        self._role.session_started(client, target)

    def _lost(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        if client is not self.client:
            return
        self.client = None
        if self.stopped:
            return
        self._role.session_lost(target)
        self._schedule("the connection was lost", lost=True)

    def _attempt_failed(self, failure: Failure) -> None:
        if self.stopped:
            return
        _log.failure("relay {relay}: attempt failed", failure, relay=self.label)
        self._schedule("the attempt failed")

    def _schedule(self, reason: str, *, lost: bool = False) -> None:
        self._attempt = None
        self.failures = 1 if lost else self.failures + 1
        delay = backoff_delay(self._reconnect, self.failures)
        self.state = "waiting"
        self.next_attempt_at = self.reactor.seconds() + delay
        _log.info(
            "relay {relay}: {reason}; next attempt in {delay:g} s",
            relay=self.label,
            reason=reason,
            delay=delay,
        )
        self._call = self.reactor.callLater(delay, self._try)


def _timed_out(result: Any, timeout: float) -> Any:
    """``addTimeout``'s translation of its own cancellation: a clear error."""
    if isinstance(result, Failure) and result.check(defer.CancelledError):
        raise TimeoutError(f"no session within {timeout:g} s")
    return result
