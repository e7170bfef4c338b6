"""HlsManager: one HLS segmenter per stream, and the requests waiting on it.

A stream's :class:`~streamserver.media.hls.Segmenter` is a consumer of the
stream (it never drops); the manager decides when it exists:

- ``--hls on-demand`` (the default): from the stream's first playlist request
  (:meth:`HlsManager.open`), until no HLS request came for ``--hls-idle-timeout``
  seconds;
- ``--hls always``: also from the watchdog turn after a stream is published
  (:meth:`HlsManager.check` attaches one to every published stream that has
  none; the segmenter starts from the GOP cache, so the second at most that
  this waits costs no media), kept while the stream is published, then as for
  on-demand;
- ``--hls off``: never.

Stopping a segmenter closes it (it detaches from the stream) and releases the
stream (forgotten if nothing else holds it).  The factory's one-second watchdog
calls :meth:`HlsManager.check`: idle segmenters stop there, and so do parked
requests whose time is up.

Parked requests: a request that can only be answered once the segmenter has
made something (a playlist before its first segment, a blocking playlist reload
``_HLS_msn``/``_HLS_part``, the part a preload hint names) is a :class:`Wait`
parked on its stream under a *key* (what it waits for).  The segmenter's
listener, called after every finished part and segment, evaluates each key's
condition once and answers every request parked under a key that now holds, in
the order they came; so 500 players blocking on the next part cost one check
and 500 writes when it is finished, and no timer or poll per request.  Their
deadlines are checked by the watchdog.

Every stream's segmenter session has a random :attr:`HlsStream.session` that
its playlists carry on every URI (``?sid=...``), so an HTTP cache in front never
mixes the segments of two sessions whose numbers start alike (a segmenter
stopped and started again, a server restart).

Nothing here touches a request: the clock is the factory's, the answers are
callbacks (:mod:`streamserver.http.hls` makes them).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from twisted.logger import Logger

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Consumer, Stream

__all__ = ["FIRST_SEGMENTS", "HlsManager", "HlsStream", "MakeSegmenter", "SegmenterLike", "Wait"]

_log = Logger()

#: Complete segments a playlist lists before it is first served.  A playlist of
#: parts alone has nothing for players that ignore parts (ffmpeg, every classic
#: player); hls.js, started on an LL-HLS playlist whose only complete segment is
#: the first of a timeline, reloads that segment's last part in a loop for
#: seconds (its buffered media ends a few ms before the playlist says, the audio
#: ending at an AAC frame); from the second on it starts at the last complete
#: one and plays.  gohlslib waits for 2 (fMP4) and 1 (TS) the same way.
FIRST_SEGMENTS = {"fmp4": 2, "ts": 2}

#: Rendered playlists kept per stream between two segmenter updates (one per
#: distinct query string: with play tokens, one per viewer).
_RENDERED_LIMIT = 512


class SegmenterLike(Protocol):
    """What the manager and the resource use of a :class:`~streamserver.media.hls.Segmenter`."""

    closed: bool
    last_request: float

    @property
    def segments(self) -> list[Any]: ...

    @property
    def next_msn(self) -> int: ...

    @property
    def next_part(self) -> int: ...

    @property
    def bytes_held(self) -> int: ...

    @property
    def target_duration(self) -> int: ...

    @property
    def part_target(self) -> float: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def enable_ts(self) -> None: ...

    def init_segment(self, number: int) -> bytes | None: ...

    def segment(self, msn: int) -> Any: ...

    def part(self, msn: int, index: int) -> Any: ...

    def playlist(self, variant: str, *, skip: bool = False, query: str = "") -> str | None: ...

    def has(self, msn: int, part: int | None) -> bool: ...

    def add_listener(self, callback: Callable[[], None]) -> None: ...

    def remove_listener(self, callback: Callable[[], None]) -> None: ...


#: A parked request's condition, evaluated on the segmenter after each update:
#: ``True`` answer now, ``False`` keep waiting, ``None`` it can never hold.
Condition = Callable[[SegmenterLike], "bool | None"]

#: Makes a stream's segmenter: ``(stream, ts)``, *ts* saying whether it makes TS
#: segments from the start.
MakeSegmenter = Callable[["Stream", bool], SegmenterLike]


@dataclass(eq=False)
class Wait:
    """One parked request: until when it waits, and how it is answered.

    :ivar deadline: the factory-clock time after which :attr:`give_up` is called
        with ``"timeout"``.
    :ivar answer: called once the condition it is parked under holds.
    :ivar give_up: called with ``"timeout"``, ``"gone"`` (the condition can never
        hold) or ``"stopped"`` (the segmenter stopped).
    :ivar done: answered, given up or cancelled (the client went away).
    """

    deadline: float
    answer: Callable[[], None]
    give_up: Callable[[str], None]
    done: bool = False
    #: the counts this wait is in (:meth:`HlsStream.park`), released when it is done
    counts: list[tuple[Counter[str], str]] = field(default_factory=list)

    def finish(self) -> bool:
        """Mark it answered or given up; whether it was not done before."""
        if self.done:
            return False
        self.done = True
        for counter, key in self.counts:
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        self.counts = []
        return True

    def cancel(self) -> None:
        """The request went away: never answer it."""
        self.finish()


@dataclass(eq=False)
class _Parked:
    condition: Condition
    waits: list[Wait] = field(default_factory=list)


class HlsStream:
    """One stream's segmenter, its session and the requests parked on it.

    :ivar stream: the :class:`~streamserver.media.stream.Stream` it consumes.
    :ivar segmenter: the segmenter.
    :ivar session: random hex naming this segmenter session in URIs (``sid``).
    :ivar started_at: when it started, by the factory's clock.
    :ivar ts_enabled: a TS playlist was asked for, so TS segments are made.
    """

    def __init__(self, stream: Stream, segmenter: SegmenterLike, now: float) -> None:
        self.stream = stream
        self.segmenter = segmenter
        self.session = secrets.token_hex(4)
        self.started_at = now
        self.ts_enabled = False
        self._ready: set[str] = set()
        self._parked: dict[Hashable, _Parked] = {}
        self._counts: Counter[str] = Counter()
        self._rendered: dict[tuple[str, bool, str], bytes | None] = {}
        self._rendered_at: tuple[int, int] = (-1, -1)

    def __repr__(self) -> str:
        return f"<HlsStream {self.stream.app}/{self.stream.name} sid={self.session}>"

    @property
    def waiting(self) -> int:
        """How many requests are parked."""
        return self._counts[""]

    def touch(self, now: float) -> None:
        """A request came: the segmenter is not idle."""
        self.segmenter.last_request = now

    def enable_ts(self) -> None:
        """Make TS segments too (from the next segment on), once."""
        if not self.ts_enabled:
            self.ts_enabled = True
            self.segmenter.enable_ts()

    def ready(self, variant: str) -> bool:
        """Whether the playlist of *variant* has listed :data:`FIRST_SEGMENTS` complete segments.

        Until then a playlist is not served (see :data:`FIRST_SEGMENTS`).
        """
        if variant in self._ready:
            return True
        complete = [s for s in self.segmenter.segments if s.complete]
        if variant == "ts":
            complete = [s for s in complete if s.ts]
        made = len(complete) >= FIRST_SEGMENTS[variant]
        if made:
            self._ready.add(variant)
        return made

    def playlist(self, variant: str, *, skip: bool = False, query: str = "") -> bytes | None:
        """The playlist as served (UTF-8), rendered once per segmenter update and query."""
        segmenter = self.segmenter
        version = (segmenter.next_msn, segmenter.next_part)
        if version != self._rendered_at or len(self._rendered) >= _RENDERED_LIMIT:
            self._rendered.clear()
            self._rendered_at = version
        key = (variant, skip, query)
        if key in self._rendered:
            return self._rendered[key]
        text = segmenter.playlist(variant, skip=skip, query=query)
        rendered = text.encode("utf-8") if text is not None else None
        self._rendered[key] = rendered
        return rendered

    def park(
        self,
        key: Hashable,
        condition: Condition,
        wait: Wait,
        counts: tuple[tuple[Counter[str], str], ...] = (),
    ) -> None:
        """Hold *wait* until *condition* holds for *key*'s requests (it does not now).

        :param counts: more counts to hold it in until it is done (``(counter,
            key)``: the manager's count by address).
        """
        parked = self._parked.get(key)
        if parked is None:
            parked = self._parked[key] = _Parked(condition)
        parked.waits.append(wait)
        for counter, name in ((self._counts, ""), *counts):
            counter[name] += 1
            wait.counts.append((counter, name))

    def progress(self) -> None:
        """The segmenter finished a part or a segment: answer what can be answered.

        Each key's condition is evaluated once; the requests under a key that
        holds are answered in the order they came, and keys in the order their
        first request came.
        """
        self._rendered.clear()
        for key, parked in list(self._parked.items()):
            waits = [w for w in parked.waits if not w.done]
            if not waits:
                del self._parked[key]
                continue
            state = parked.condition(self.segmenter)
            if state is False:
                parked.waits = waits
                continue
            del self._parked[key]
            for wait in waits:
                if wait.finish():
                    if state:
                        wait.answer()
                    else:
                        wait.give_up("gone")

    def expire(self, now: float) -> None:
        """Give up every parked request whose deadline has passed."""
        for key, parked in list(self._parked.items()):
            keep = []
            for wait in parked.waits:
                if wait.done:
                    continue
                if now >= wait.deadline:
                    wait.finish()
                    wait.give_up("timeout")
                else:
                    keep.append(wait)
            if keep:
                parked.waits = keep
            else:
                self._parked.pop(key, None)

    def give_up_all(self, reason: str) -> None:
        """Give up every parked request (the segmenter stops)."""
        parked, self._parked = self._parked, {}
        for group in parked.values():
            for wait in group.waits:
                if wait.finish():
                    wait.give_up(reason)


class HlsManager:
    """The segmenters of a server's streams: ``factory.hls``.

    :ivar factory: the factory (its config, clock, streams).
    """

    def __init__(
        self, factory: RTMPServerFactory, make_segmenter: MakeSegmenter | None = None
    ) -> None:
        self.factory = factory
        self._make = make_segmenter or self.make_segmenter
        self._streams: dict[tuple[str, str], HlsStream] = {}
        self.waiting_by_host: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def mode(self) -> str:
        """``on-demand``, ``always`` or ``off`` (``--hls``)."""
        return self.factory.config.hls

    def mode_for(self, app: str) -> str:
        """Application *app*'s HLS mode (its ``hls`` key in ``--config``'s file)."""
        return self.factory.settings_for(app).hls

    @property
    def streams(self) -> list[HlsStream]:
        """Every running segmenter's :class:`HlsStream`."""
        return list(self._streams.values())

    def get(self, stream: Stream) -> HlsStream | None:
        """*stream*'s running segmenter, or ``None``."""
        entry = self._streams.get((stream.app, stream.name))
        return entry if entry is not None and entry.stream is stream else None

    def bytes_held(self, stream: Stream) -> int:
        """Bytes *stream*'s segmenter holds (its segments, parts, init segments); 0 without one."""
        entry = self.get(stream)
        return entry.segmenter.bytes_held if entry is not None else 0

    def total_bytes_held(self) -> int:
        """Bytes every segmenter holds."""
        return sum(entry.segmenter.bytes_held for entry in self._streams.values())

    def make_segmenter(self, stream: Stream, ts: bool) -> SegmenterLike:
        """A :class:`~streamserver.media.hls.Segmenter` of *stream*, with the ``--hls-*`` values."""
        from streamserver.media.hls import HlsSettings, Segmenter

        config = self.factory.settings_for(stream.app)
        settings = HlsSettings(
            segment_seconds=config.hls_segment_seconds,
            part_ms=config.hls_part_ms,
            window=config.hls_window,
            max_bytes=config.hls_max_bytes,
        )
        segmenter: SegmenterLike = Segmenter(stream, settings, self.factory.seconds, ts=ts)
        return segmenter

    def open(self, stream: Stream) -> HlsStream:
        """*stream*'s segmenter, started now if it has none.

        :raises RuntimeError: HLS is off.
        """
        mode = self.mode_for(stream.app)
        if mode == "off":
            raise RuntimeError("HLS is off (--hls off)")
        key = (stream.app, stream.name)
        entry = self._streams.get(key)
        if entry is not None:
            if entry.stream is stream:
                return entry
            self._stop(entry, "its stream was replaced")
        now = self.factory.seconds()
        segmenter = self._make(stream, False)
        segmenter.last_request = now
        entry = HlsStream(stream, segmenter, now)
        self._streams[key] = entry
        segmenter.add_listener(entry.progress)
        segmenter.start()
        _log.info(
            "HLS segmenter for {app}/{name} started ({mode}, session {session})",
            app=stream.app,
            name=stream.name,
            mode=mode,
            session=entry.session,
        )
        return entry

    def check(self, now: float) -> None:
        """The watchdog's turn: attach (``always``), expire parked requests, stop idle ones.

        A segmenter stops when no HLS request came for ``--hls-idle-timeout``
        seconds and nothing is parked on it (with ``--hls always``, not while its
        stream is published), and at once when its stream is no longer the
        registry's or it was detached from it (a consumer that failed).
        """
        for stream in self.factory.streams():
            if (
                stream.publisher is not None
                and self.mode_for(stream.app) == "always"
                and self.get(stream) is None
            ):
                self.open(stream)
        for entry in list(self._streams.values()):
            entry.expire(now)
            stream = entry.stream
            config = self.factory.settings_for(stream.app)
            idle = config.hls_idle_timeout
            if self.factory.find_stream(stream.app, stream.name) is not stream:
                self._stop(entry, "its stream is gone")
            elif entry.segmenter.closed or entry.segmenter not in stream.consumers:
                self._stop(entry, "it was detached from its stream")
            elif (
                idle
                and now - entry.segmenter.last_request >= idle
                and not entry.waiting
                and not (config.hls == "always" and stream.publisher is not None)
            ):
                self._stop(entry, f"no HLS request for {idle:g} s")

    def stop(self, stream: Stream) -> bool:
        """Stop *stream*'s segmenter; whether it had one."""
        entry = self.get(stream)
        if entry is None:
            return False
        self._stop(entry, "stopped")
        return True

    def _stop(self, entry: HlsStream, reason: str) -> None:
        stream = entry.stream
        if self._streams.get((stream.app, stream.name)) is entry:
            del self._streams[(stream.app, stream.name)]
        entry.give_up_all("stopped")
        segmenter = entry.segmenter
        segmenter.remove_listener(entry.progress)
        try:
            segmenter.close()
        finally:
            stream.detach(cast("Consumer", segmenter))  # in case close() did not
            self.factory.release_stream(stream)
        _log.info(
            "HLS segmenter for {app}/{name} stopped: {reason}",
            app=stream.app,
            name=stream.name,
            reason=reason,
        )

    def shutdown(self) -> None:
        """Stop every segmenter (parked requests are given up)."""
        for entry in list(self._streams.values()):
            self._stop(entry, "the server is shutting down")
