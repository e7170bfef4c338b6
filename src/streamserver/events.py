"""Session events: a publish or a play started or ended, whatever its wire protocol.

The factory's :class:`SessionEvents` tells its observers (the recorder, the
``--on-publish-done`` / ``--on-play-done`` hooks, a relay) when a session
starts and ends.  RTMP publishes and plays and HTTP-FLV / WebSocket-FLV plays
report here, each start followed by exactly one end.  An observer that raises
is logged and the others are still told: an observer can never break a
publish or a play.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from streamserver.auth import AccessRequest
    from streamserver.media.stream import Stream

_log = Logger()

__all__ = ["PLAY", "PUBLISH", "SessionEvent", "SessionEvents", "SessionObserver"]

#: :attr:`SessionEvent.role` of a publish.
PUBLISH = "publisher"
#: :attr:`SessionEvent.role` of a play.
PLAY = "viewer"


@dataclass(frozen=True, eq=False)
class SessionEvent:
    """One publish or play session, as told at its start and again at its end.

    :ivar role: :data:`PUBLISH` or :data:`PLAY`.
    :ivar stream: the stream published or played.
    :ivar access: the request its authorization saw (action, app, name, query
        arguments, peer, connection id, connect parameters with ``tcUrl``):
        what a hook POSTs, as for ``--on-publish``.
    :ivar protocol: ``rtmp``, ``http-flv`` or ``ws-flv``.
    :ivar started_at: when it started, on the factory's clock (seconds).
    """

    role: str
    stream: Stream
    access: AccessRequest
    protocol: str
    started_at: float


class SessionObserver(Protocol):
    """What :class:`SessionEvents` tells."""

    def session_started(self, event: SessionEvent) -> None:
        """*event*'s session started (for a publish: the stream has its publisher)."""
        ...

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        """*event*'s session ended at *ended_at* (for a publish: after unpublishing)."""
        ...


class SessionEvents:
    """The factory's observers of sessions, told in the order they were added."""

    def __init__(self) -> None:
        self.observers: list[SessionObserver] = []

    def add(self, observer: SessionObserver) -> None:
        """Tell *observer* of every session from now on."""
        if observer not in self.observers:
            self.observers.append(observer)

    def remove(self, observer: SessionObserver) -> None:
        """Stop telling *observer* (no error if it was not added)."""
        if observer in self.observers:
            self.observers.remove(observer)

    def started(self, event: SessionEvent) -> None:
        """Tell every observer that *event*'s session started."""
        for observer in tuple(self.observers):
            try:
                observer.session_started(event)
            except Exception:
                _log.failure(
                    "session observer {observer} failed on the start of {stream}",
                    Failure(),
                    observer=observer,
                    stream=event.access.stream,
                )

    def ended(self, event: SessionEvent, ended_at: float) -> None:
        """Tell every observer that *event*'s session ended at *ended_at*."""
        for observer in tuple(self.observers):
            try:
                observer.session_ended(event, ended_at)
            except Exception:
                _log.failure(
                    "session observer {observer} failed on the end of {stream}",
                    Failure(),
                    observer=observer,
                    stream=event.access.stream,
                )
