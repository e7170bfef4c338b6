"""A segmenter the test drives: the API of ``streamserver.media.hls.Segmenter``, no media.

Parts and segments appear when the test says (:meth:`FakeSegmenter.add_part`,
:meth:`FakeSegmenter.end_segment`), each telling the listeners as the real one
does, so the HTTP side's waits, blocking reloads and their order can be checked
part by part.  Its playlists follow RFC 8216bis closely enough for the ``m3u8``
package and hls.js-like clients: the last two segments list their parts, a
preload hint names the next part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Part:
    index: int
    duration: float
    independent: bool
    data: bytes


@dataclass
class Segment:
    msn: int
    duration: float
    discontinuity: bool
    init: int
    parts: list[Part]
    complete: bool
    ts: bytes

    def mp4(self) -> bytes:
        return b"".join(part.data for part in self.parts)


@dataclass
class FakeSegmenter:
    """The Segmenter API over parts the test adds."""

    stream: Any
    settings: Any
    clock: Callable[[], float]
    ts_enabled: bool = True
    segments: list[Segment] = field(default_factory=list)
    retained: dict[int, Segment] = field(default_factory=dict)
    current: list[Part] = field(default_factory=list)
    next_msn: int = 0
    next_part: int = 0
    bytes_held: int = 0
    last_request: float = 0.0
    started: bool = False
    closed: bool = False
    frames: int = 0
    listeners: list[Callable[[], None]] = field(default_factory=list)
    skips: list[bool] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    @property
    def target_duration(self) -> int:
        longest = max((s.duration for s in self.segments), default=self.settings.segment_seconds)
        return max(1, round(longest))

    @property
    def part_target(self) -> float:
        return self.settings.part_ms / 1000

    # --- Consumer

    def consume(self, frame: Any) -> None:
        self.frames += 1

    def stream_published(self, stream: Any) -> None:
        pass

    def stream_unpublished(self, stream: Any) -> None:
        pass

    def consumer_failed(self, stream: Any, error: BaseException) -> None:
        pass

    # --- life

    def start(self) -> None:
        self.started = True
        for frame in self.stream.attach(self):
            self.consume(frame)

    def close(self) -> None:
        self.closed = True
        self.stream.detach(self)

    def enable_ts(self) -> None:
        self.ts_enabled = True

    def add_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.remove(callback)

    def _tell(self) -> None:
        for listener in list(self.listeners):
            listener()

    # --- what the test drives

    def add_part(self, duration: float = 0.2, *, independent: bool | None = None) -> Part:
        """One more part of the segment being made; the listeners are told."""
        index = len(self.current)
        data = b"part %d-%d " % (self.next_msn, index) + bytes(100)
        part = Part(index, duration, index == 0 if independent is None else independent, data)
        self.current.append(part)
        self.next_part = len(self.current)
        self.bytes_held += len(data)
        self._tell()
        return part

    def end_segment(self) -> Segment:
        """The segment being made is complete; the listeners are told."""
        parts, self.current = self.current, []
        ts = b"G" + bytes(187) if self.ts_enabled else b""
        segment = Segment(self.next_msn, sum(p.duration for p in parts), False, 0, parts, True, ts)
        self.bytes_held += len(ts)
        self.segments.append(segment)
        while len(self.segments) > self.settings.window:
            old = self.segments.pop(0)
            self.retained[old.msn] = old
        self.next_msn += 1
        self.next_part = 0
        self._tell()
        return segment

    # --- the API the server uses

    def init_segment(self, number: int) -> bytes | None:
        return b"ftyp-moov" if number == 0 and (self.segments or self.current) else None

    def segment(self, msn: int) -> Segment | None:
        for segment in self.segments:
            if segment.msn == msn:
                return segment
        return self.retained.get(msn)

    def part(self, msn: int, index: int) -> Part | None:
        if msn == self.next_msn:
            return self.current[index] if index < len(self.current) else None
        segment = self.segment(msn)
        if segment is None or index >= len(segment.parts):
            return None
        return segment.parts[index]

    def has(self, msn: int, part: int | None) -> bool:
        if part is None:  # the whole segment, complete
            return msn < self.next_msn
        index = part
        if msn < self.next_msn:
            segment = self.segment(msn)
            if segment is not None and index >= len(segment.parts):
                return self.has(msn + 1, 0)
            return True
        if msn == self.next_msn:
            return index < self.next_part
        return False

    def playlist(self, variant: str, *, skip: bool = False, query: str = "") -> str | None:
        self.skips.append(skip)
        self.queries.append(query)
        q = query
        if variant == "ts":
            segments = [s for s in self.segments if s.ts]
            if not segments:
                return None
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{self.target_duration}",
                f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn}",
            ]
            for segment in segments:
                lines += [f"#EXTINF:{segment.duration:.3f},", f"seg-{segment.msn}.ts{q}"]
            return "\n".join(lines) + "\n"
        if not self.segments and not self.current:
            return None
        target = self.target_duration
        first = self.segments[0].msn if self.segments else self.next_msn
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:10",
            f"#EXT-X-TARGETDURATION:{target}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={3 * self.part_target:.3f},CAN-SKIP-UNTIL={6 * target}",
            f"#EXT-X-PART-INF:PART-TARGET={self.part_target:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            f'#EXT-X-MAP:URI="init-0.mp4{q}"',
        ]
        listed = self.segments
        if skip and len(listed) > 2:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={len(listed) - 2}")
            listed = listed[-2:]
        for position, segment in enumerate(listed):
            if position >= len(listed) - 2:
                lines += [self._part_line(segment.msn, p, q) for p in segment.parts]
            lines += [f"#EXTINF:{segment.duration:.5f},", f"seg-{segment.msn}.m4s{q}"]
        lines += [self._part_line(self.next_msn, p, q) for p in self.current]
        lines.append(
            f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{self.next_msn}-{self.next_part}.m4s{q}"'
        )
        return "\n".join(lines) + "\n"

    @staticmethod
    def _part_line(msn: int, part: Part, q: str) -> str:
        independent = ",INDEPENDENT=YES" if part.independent else ""
        return (
            f"#EXT-X-PART:DURATION={part.duration:.5f},"
            f'URI="part-{msn}-{part.index}.m4s{q}"{independent}'
        )


@dataclass(frozen=True)
class Settings:
    """The settings the real segmenter gets (``HlsSettings``), from the config."""

    segment_seconds: float
    part_ms: int
    window: int
    max_bytes: int


class FakeSegmenters:
    """The ``make_segmenter`` of an :class:`~streamserver.http.hls_manager.HlsManager`:
    makes :class:`FakeSegmenter` objects and keeps them for the test."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.made: list[FakeSegmenter] = []

    def __call__(self, stream: Any, ts: bool) -> FakeSegmenter:
        config = self.factory.config
        settings = Settings(
            config.hls_segment_seconds, config.hls_part_ms, config.hls_window, config.hls_max_bytes
        )
        segmenter = FakeSegmenter(stream, settings, self.factory.seconds, ts_enabled=ts)
        self.made.append(segmenter)
        return segmenter

    @property
    def last(self) -> FakeSegmenter:
        return self.made[-1]
