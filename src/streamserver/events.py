"""Session and recording events: a publish or a play started or ended, a recording is done.

The factory's :class:`SessionEvents` tells its observers (the recorder, the
``--on-publish-done`` / ``--on-play-done`` hooks, a relay) when a session
starts and ends.  RTMP publishes and plays and HTTP-FLV / WebSocket-FLV plays
report here, each start followed by exactly one end.  An observer that raises
is logged and the others are still told: an observer can never break a
publish or a play.

The factory's :class:`RecordingEvents` tells its listeners (the
``--on-record-done`` and ``--exec-record-done`` hooks, the API's history) of
every recording file that is done, with a :class:`RecordingDone`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from pathlib import Path

    from streamserver.auth import AccessRequest
    from streamserver.media.stream import Stream

_log = Logger()

__all__ = [
    "PLAY",
    "PUBLISH",
    "RECORD_DONE_REASONS",
    "RecordingDone",
    "RecordingEvents",
    "SessionEvent",
    "SessionEvents",
    "SessionObserver",
]

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


#: Why a recording file is done: its publisher left (after the reconnect grace),
#: it reached ``--record-segment-seconds`` or ``--record-max-bytes``, writing it
#: failed (a full disk...), the server shut down, or it was left by a crash and
#: finalized at the next start.
RECORD_DONE_REASONS = ("unpublish", "segment", "size", "error", "shutdown", "recovered")


@dataclass(frozen=True)
class RecordingDone:
    """One recording file that is done (what ``--on-record-done`` POSTs).

    :ivar app: the stream's application.
    :ivar name: the stream's name.
    :ivar path: the finished file (absolute; still the ``.part`` file when it could
        not be renamed).
    :ivar format: ``fmp4`` or ``flv``.
    :ivar size: its size in bytes.
    :ivar duration: seconds of media in it.
    :ivar start: when it was opened, Unix seconds (wall clock).
    :ivar end: when it was closed, Unix seconds (wall clock).
    :ivar reason: one of :data:`RECORD_DONE_REASONS`.
    :ivar error: what went wrong (reason ``error``), else ``None``.
    :ivar access: the publish's request (for the hook's form fields), ``None`` for a
        file recovered after a crash.
    """

    app: str
    name: str
    path: Path
    format: str
    size: int
    duration: float
    start: float
    end: float
    reason: str
    error: str | None = None
    access: AccessRequest | None = None


class RecordingEvents:
    """The factory's listeners of finished recordings, told in the order they were added."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[RecordingDone], None]] = []

    def add(self, listener: Callable[[RecordingDone], None]) -> None:
        """Call *listener* with every recording done from now on."""
        if listener not in self.listeners:
            self.listeners.append(listener)

    def remove(self, listener: Callable[[RecordingDone], None]) -> None:
        """Stop calling *listener* (no error if it was not added)."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def done(self, record: RecordingDone) -> None:
        """Tell every listener of *record*; one that raises is logged, the others still told."""
        for listener in tuple(self.listeners):
            try:
                listener(record)
            except Exception:
                _log.failure(
                    "recording listener {listener} failed on {path}",
                    Failure(),
                    listener=listener,
                    path=str(record.path),
                )
