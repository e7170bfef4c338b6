"""The media playlists of one stream: the segments held, their lifetime, and the text.

A :class:`MediaPlaylist` holds what an HLS segmenter
(:class:`~streamserver.media.hls.Segmenter`) made, oldest first: segments
that left the playlist but stay fetchable (retained), the last ``window``
complete segments (listed), and the segment in progress with its finished
parts.  It decides nothing about cutting; it keeps the window, frees a
segment that left it once its time is up (RFC 8216 §6.2.2: its duration plus
that of the playlist it left), drops the oldest segments past a memory
bound, numbers the init segments, answers the blocking reload question
(:meth:`MediaPlaylist.has`) and writes the playlists.  Nothing here keeps
time but the clock it is given.

Implements, of RFC 8216 (HTTP Live Streaming) and its second edition
draft-pantos-hls-rfc8216bis (Low-Latency HLS):

- the Media Playlist tags: ``EXT-X-VERSION``, ``EXT-X-TARGETDURATION``
  (every ``EXTINF`` rounded to the nearest integer is at most the target
  duration, RFC 8216 §4.3.3.1), ``EXT-X-MEDIA-SEQUENCE``,
  ``EXT-X-DISCONTINUITY-SEQUENCE`` (the number of ``EXT-X-DISCONTINUITY``
  tags before the first segment listed, §4.3.3.3) and
  ``EXT-X-INDEPENDENT-SEGMENTS`` (every segment starts with a keyframe);
- the Media Segment tags ``EXTINF`` (real durations, 5 decimals),
  ``EXT-X-DISCONTINUITY`` and ``EXT-X-MAP`` (each time the init segment
  changes);
- for LL-HLS (rfc8216bis §4.4.3.7, 4.4.3.8, 4.4.4.9, 4.4.5.2, 4.4.5.3):
  ``EXT-X-PART-INF`` (PART-TARGET: no part listed is longer),
  ``EXT-X-SERVER-CONTROL`` (CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK of
  :data:`PART_HOLD_BACK_PARTS` part targets, CAN-SKIP-UNTIL of
  :data:`SKIP_TARGET_DURATIONS` target durations), ``EXT-X-PART`` for the
  last segments and the one in progress (INDEPENDENT=YES on those that start
  with a keyframe), ``EXT-X-PRELOAD-HINT`` for the next part, always, and
  the Playlist Delta Update (``EXT-X-SKIP:SKIPPED-SEGMENTS=n``) of a
  request with ``_HLS_skip=YES`` (§6.2.5.1).

URIs are relative to the playlist: ``init-{n}.mp4``, ``seg-{msn}.m4s``,
``part-{msn}-{i}.m4s`` and ``seg-{msn}.ts``, each followed by the query
string given (a play token carried to every URI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FMP4_VERSION",
    "PART_HOLD_BACK_PARTS",
    "SKIP_TARGET_DURATIONS",
    "TS_VERSION",
    "MediaPlaylist",
    "Part",
    "Segment",
    "ceil_ms",
    "format_seconds",
    "render_fmp4",
    "render_ts",
    "rounded_seconds",
]

#: The protocol version of the LL-HLS playlist.  rfc8216bis asks for 6 with
#: ``EXT-X-MAP`` and 9 with ``EXT-X-SKIP``; 10 is what LL-HLS servers send
#: (gohlslib, Apple's tools) and what the issue asks for.
FMP4_VERSION = 10

#: The protocol version of the classic playlist: 3 for decimal ``EXTINF``
#: durations, nothing newer, so that the oldest players read it.
TS_VERSION = 3

#: PART-HOLD-BACK in part targets: rfc8216bis §4.4.3.8 asks for at least 2
#: and advises 3; hls.js starts this far behind the live edge.
PART_HOLD_BACK_PARTS = 3

#: CAN-SKIP-UNTIL in target durations: the least rfc8216bis §4.4.3.8 allows.
SKIP_TARGET_DURATIONS = 6

#: Parts are listed for at most this many complete segments before the one in
#: progress (gohlslib lists 2): enough for a player PART-HOLD-BACK behind the
#: live edge, little text to send on every blocking reload.
PART_SEGMENTS = 2

#: ...and only for segments that start at most this many target durations
#: before the end of the playlist: rfc8216bis §4.4.4.9 has servers remove
#: parts older than that.
PART_TARGET_DURATIONS = 3

#: Characters a query string cannot hold inside a quoted URI or a URI line
#: (and the placeholder below).
_FORBIDDEN_IN_QUERY = frozenset('"\r\n\x00')

#: Where the query goes in a playlist rendered once for every query: NUL
#: cannot be in a playlist (RFC 8216 §4.1), so it cannot clash.
_QUERY = "\x00"


def format_seconds(seconds: float) -> str:
    """A duration as the playlists write it: seconds with 5 decimals."""
    return f"{seconds:.5f}"


def rounded_seconds(seconds: float) -> int:
    """A duration as written, rounded to the nearest integer, halves up (RFC 8216 §4.3.3.1)."""
    return math.floor(float(format_seconds(seconds)) + 0.5)


def ceil_ms(seconds: float) -> int:
    """*seconds* in whole milliseconds, rounded up (ignoring float noise below a microsecond)."""
    return math.ceil(seconds * 1000 - 1e-6)


def _ms(milliseconds: int) -> str:
    return f"{milliseconds // 1000}.{milliseconds % 1000:03d}"


def _check_query(query: str) -> str:
    if _FORBIDDEN_IN_QUERY & set(query):
        raise ValueError(f"query {query!r} cannot be written into a playlist")
    if query and not query.startswith("?"):
        return "?" + query
    return query


@dataclass
class Part:
    """An LL-HLS part: one ``moof`` + ``mdat``.

    :ivar index: its place in its segment, from 0.
    :ivar duration: seconds, on the lead track.
    :ivar independent: it starts with a keyframe (always, for audio only).
    :ivar data: the bytes, served as they are.
    """

    index: int
    duration: float
    independent: bool
    data: bytes


@dataclass
class Segment:
    """A media segment, complete or in progress.

    :ivar msn: its media sequence number.
    :ivar duration: its real duration in seconds (so far, while in progress).
    :ivar discontinuity: the first segment after a republish, a codec
        configuration change or a timestamp jump.
    :ivar init: the number of its fMP4 init segment; -1 when fMP4 carries none
        of the stream's tracks.
    :ivar parts: its finished parts.
    :ivar complete: no more parts will come.
    :ivar ts: the same media as MPEG-TS, PAT and PMT first, once complete;
        ``b""`` while in progress or made while the TS variant was off.
    """

    msn: int
    duration: float
    discontinuity: bool
    init: int
    parts: list[Part] = field(default_factory=list)
    complete: bool = False
    ts: bytes = b""

    def mp4(self) -> bytes:
        """The segment as fMP4: its parts one after the other."""
        return b"".join(part.data for part in self.parts)

    @property
    def size(self) -> int:
        """The bytes it holds (parts and TS)."""
        return sum(len(part.data) for part in self.parts) + len(self.ts)


class MediaPlaylist:
    """The segments of one stream as its media playlists list them.

    :param window: the complete segments listed.
    :param segment_seconds: the segment duration asked for (the least target
        duration).
    :param part_ms: the part target asked for (the least PART-TARGET).
    :param clock: seconds, for the lifetime of segments that left the window.
    :param first_msn: the first media sequence number and init number.

    :ivar segments: held, oldest first: retained, listed, then the one in
        progress (:attr:`current`), if any.
    :ivar current: the segment in progress, or ``None``.
    :ivar active_init: the init segment the segmenter writes with now (kept
        while in use, even by no segment yet).
    :ivar _listed_from: the media sequence number of the first listed segment.
    :ivar _expiry: by msn, the clock time a retained segment may be freed.
    :ivar _dropped_discontinuities: discontinuities among the segments freed.
    :ivar _version: counts the changes a playlist shows.
    :ivar _rendered: by (variant, skip), the playlist text of a version with
        :data:`_QUERY` for the query: rendered once, served to every request.
    """

    def __init__(
        self,
        *,
        window: int,
        segment_seconds: float,
        part_ms: int,
        clock: Callable[[], float],
        first_msn: int = 0,
    ) -> None:
        self.window = window
        self.segment_seconds = segment_seconds
        self.part_ms = part_ms
        self._clock = clock
        self.segments: list[Segment] = []
        self.current: Segment | None = None
        self.active_init: int | None = None
        self._first_msn = first_msn
        self._next_msn = first_msn
        self._listed_from = first_msn
        self._next_init = first_msn
        self._inits: dict[int, bytes] = {}
        self._expiry: dict[int, float] = {}
        self._dropped_discontinuities = 0
        self._bytes = 0
        self._last_complete: int | None = None
        self._last_part: tuple[int, int] | None = None
        self._version = 0
        self._rendered: dict[tuple[str, bool], tuple[int, str | None]] = {}

    # --- making --------------------------------------------------------------------

    @property
    def made_any(self) -> bool:
        """Whether a segment was ever started."""
        return self._next_msn != self._first_msn

    def add_init(self, data: bytes) -> int:
        """Hold init segment *data* and make it active; return its number.

        The same bytes as the last one keep its number.
        """
        latest = self._next_init - 1
        if self._inits.get(latest) == data:
            self.active_init = latest
            return latest
        number = self.active_init = self._next_init
        self._next_init += 1
        self._inits[number] = data
        self._bytes += len(data)
        return number

    def open(self, *, discontinuity: bool, init: int) -> Segment:
        """Start the next segment: the one in progress from now."""
        segment = Segment(self._next_msn, 0.0, discontinuity, init)
        self._version += 1
        self._next_msn += 1
        self.segments.append(segment)
        self.current = segment
        return segment

    def add_part(self, part: Part) -> None:
        """A finished part of the segment in progress."""
        segment = self.current
        if segment is None:
            raise ValueError("no segment in progress to add a part to")
        segment.parts.append(part)
        self._version += 1
        self._bytes += len(part.data)
        self._last_part = (segment.msn, part.index)

    def advance(self, duration: float) -> None:
        """The segment in progress now lasts *duration* seconds."""
        if self.current is not None and self.current.duration != duration:
            self.current.duration = duration
            self._version += 1

    def finish(self, ts: bytes = b"") -> Segment:
        """Complete the segment in progress (with its TS bytes) and slide the window."""
        segment = self.current
        if segment is None:
            raise ValueError("no segment in progress to complete")
        segment.ts = ts
        segment.complete = True
        self._version += 1
        self._bytes += len(ts)
        self.current = None
        self._last_complete = segment.msn
        listed = self._listed()
        excess = len(listed) - self.window
        if excess > 0:
            length = sum(s.duration for s in listed)
            now = self._clock()
            for gone in listed[:excess]:
                # RFC 8216 §6.2.2: available for its duration plus that of the
                # longest playlist that held it, after it left.
                self._expiry[gone.msn] = now + gone.duration + length
            self._listed_from = listed[excess].msn
        return segment

    def abandon(self) -> None:
        """Forget the segment in progress: nothing of it was served (its number is used again).

        Its init segment goes too if it was the last one made and nothing else uses it.
        """
        segment = self.current
        if segment is None:
            return
        self.segments.remove(segment)
        self._version += 1
        self._bytes -= segment.size
        self._next_msn = segment.msn
        self.current = None
        latest = self._next_init - 1
        if segment.init == latest and all(s.init != latest for s in self.segments):
            self._bytes -= len(self._inits.pop(latest, b""))
            self._next_init = latest
            if self.active_init == latest:
                self.active_init = None

    # --- lifetime and memory -------------------------------------------------------

    def expire(self) -> None:
        """Free the retained segments whose time is up."""
        now = self._clock()
        while self.segments:
            expiry = self._expiry.get(self.segments[0].msn)
            if expiry is None or now < expiry:
                break
            self._drop_oldest()

    def limit(self, max_bytes: int) -> None:
        """Drop the oldest complete segments (retained, then listed) while over *max_bytes*."""
        while self._bytes > max_bytes and self.segments and self.segments[0].complete:
            self._drop_oldest()

    def clear(self) -> None:
        """Free everything."""
        self.segments.clear()
        self.current = None
        self.active_init = None
        self._inits.clear()
        self._expiry.clear()
        self._bytes = 0
        self._version += 1

    def _drop_oldest(self) -> None:
        segment = self.segments.pop(0)
        self._version += 1
        self._bytes -= segment.size
        self._expiry.pop(segment.msn, None)
        if segment.discontinuity:
            self._dropped_discontinuities += 1
        if segment.msn >= self._listed_from:
            self._listed_from = segment.msn + 1
        used = {s.init for s in self.segments}
        used.add(-1 if self.active_init is None else self.active_init)
        for number in [n for n in self._inits if n not in used]:
            self._bytes -= len(self._inits.pop(number))

    # --- what is served ------------------------------------------------------------

    @property
    def bytes_held(self) -> int:
        """The bytes of every part, TS segment and init segment held."""
        return self._bytes

    @property
    def next_msn(self) -> int:
        """The media sequence number of the segment in progress (or the next one)."""
        return self.current.msn if self.current is not None else self._next_msn

    @property
    def next_part(self) -> int:
        """The index of the part in progress in that segment."""
        return len(self.current.parts) if self.current is not None else 0

    def _listed(self) -> list[Segment]:
        return [s for s in self.segments if s.complete and s.msn >= self._listed_from]

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: at least every listed segment's rounded duration."""
        minimum = math.ceil(self.segment_seconds)
        return max([minimum, *(rounded_seconds(s.duration) for s in self._listed())])

    @property
    def part_target_ms(self) -> int:
        """PART-TARGET in ms: the part target asked for, or the longest part listed if longer."""
        listed = self._listed()
        if self.current is not None:
            listed.append(self.current)
        durations = [part.duration for segment in listed for part in segment.parts]
        return max([self.part_ms, *(ceil_ms(d) for d in durations)])

    def init_segment(self, number: int) -> bytes | None:
        """The fMP4 init segment *number*, if held."""
        return self._inits.get(number)

    def _held(self, msn: int) -> Segment | None:
        if not self.segments:
            return None
        index = msn - self.segments[0].msn
        return self.segments[index] if 0 <= index < len(self.segments) else None

    def segment(self, msn: int) -> Segment | None:
        """Complete segment *msn*, listed or retained, if held."""
        self.expire()
        segment = self._held(msn)
        return segment if segment is not None and segment.complete else None

    def part(self, msn: int, index: int) -> Part | None:
        """Finished part *index* of segment *msn* (also of the segment in progress), if held."""
        self.expire()
        segment = self._held(msn)
        if segment is None or not 0 <= index < len(segment.parts):
            return None
        return segment.parts[index]

    def has(self, msn: int, part: int | None = None) -> bool:
        """Whether a playlist now would list segment *msn* (or later), or part *part* of it.

        The blocking reload condition of rfc8216bis §6.2.5.2: ``_HLS_msn``
        alone waits for that segment to be complete; with ``_HLS_part``, for
        that part, a part index past the segment's last meaning part 0 of the
        next segment.
        """
        if part is None:
            return self._last_complete is not None and self._last_complete >= msn
        if self._last_part is None:
            return False
        last_msn, last_part = self._last_part
        return msn < last_msn or (msn == last_msn and part <= last_part)

    def _discontinuities_before(self, msn: int) -> int:
        held = sum(1 for s in self.segments if s.msn < msn and s.discontinuity)
        return self._dropped_discontinuities + held

    def render(self, variant: str, *, skip: bool = False, query: str = "") -> str | None:
        """The media playlist of *variant*: ``"fmp4"`` (LL-HLS) or ``"ts"`` (classic).

        ``None`` until there is something to list: a part for fMP4, a complete
        segment with TS bytes for TS.  A variant lists the last run of listed
        segments it has bytes for.

        The text is rendered once per change and variant, the query put in for
        each request.

        :param skip: a delta update (``_HLS_skip=YES``), fMP4 only.
        :param query: appended to every URI (a play token).
        :raises ValueError: an unknown variant, or a query that cannot be written.
        """
        if variant not in ("fmp4", "ts"):
            raise ValueError(f"no HLS variant {variant!r}")
        query = _check_query(query)
        self.expire()
        key = (variant, skip and variant == "fmp4")
        cached = self._rendered.get(key)
        if cached is None or cached[0] != self._version:
            cached = self._rendered[key] = (self._version, self._render(*key))
        text = cached[1]
        return None if text is None else text.replace(_QUERY, query)

    def _render(self, variant: str, skip: bool) -> str | None:
        listed = self._listed()
        if variant == "fmp4":
            segments = _suffix(listed, lambda s: bool(s.parts))
            current = self.current if self.current is not None and self.current.parts else None
            if not segments and current is None:
                return None
            first = segments[0].msn if segments else self.next_msn
            return _fmp4_text(
                segments,
                current,
                target_duration=self.target_duration,
                part_target_ms=self.part_target_ms,
                discontinuity_sequence=self._discontinuities_before(first),
                preload=(self.next_msn, self.next_part),
                skip=skip,
                query=_QUERY,
            )
        segments = _suffix(listed, lambda s: bool(s.ts))
        if not segments:
            return None
        return _ts_text(
            segments,
            target_duration=self.target_duration,
            discontinuity_sequence=self._discontinuities_before(segments[0].msn),
            query=_QUERY,
        )


def _suffix(segments: list[Segment], keep: Callable[[Segment], bool]) -> list[Segment]:
    """The longest run at the end of *segments* whose segments all *keep*."""
    start = len(segments)
    while start and keep(segments[start - 1]):
        start -= 1
    return segments[start:]


# --- the text ------------------------------------------------------------------------


def _header(version: int, target_duration: int) -> list[str]:
    return ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target_duration}"]


def _part_line(msn: int, part: Part, query: str) -> str:
    uri = f"part-{msn}-{part.index}.m4s{query}"
    line = f'#EXT-X-PART:DURATION={format_seconds(part.duration)},URI="{uri}"'
    if part.independent:
        line += ",INDEPENDENT=YES"
    return line


def skipped_segments(
    segments: Sequence[Segment], current: Segment | None, target_duration: int
) -> int:
    """How many segments a delta update skips: those ending CAN-SKIP-UNTIL or more before the end.

    rfc8216bis §6.2.5.1: a delta update leaves out the segments before the
    Skip Boundary, so that what it lists covers at least CAN-SKIP-UNTIL
    seconds back from the end of the playlist.
    """
    end = sum(segment.duration for segment in segments)
    if current is not None:
        end += current.duration
    boundary = end - SKIP_TARGET_DURATIONS * target_duration
    count = 0
    elapsed = 0.0
    for segment in segments:
        elapsed += segment.duration
        if elapsed > boundary:
            break
        count += 1
    return count


def render_fmp4(
    segments: Sequence[Segment],
    current: Segment | None,
    *,
    target_duration: int,
    part_target_ms: int,
    discontinuity_sequence: int,
    preload: tuple[int, int],
    skip: bool = False,
    query: str = "",
) -> str:
    """The LL-HLS media playlist of *segments* and the parts of *current*.

    :param segments: the complete segments listed, oldest first, consecutive.
    :param current: the segment in progress if it has finished parts, else
        ``None``.
    :param target_duration: at least every listed segment's rounded duration.
    :param part_target_ms: PART-TARGET in milliseconds: at least every listed
        part's duration.
    :param discontinuity_sequence: the discontinuities before the first
        segment listed (or *current* when there is none).
    :param preload: (msn, part index) of the next part, for the preload hint.
    :param skip: write a delta update when there are segments to skip (else
        the whole playlist, which a client asking for one must accept too).
    :param query: appended to every URI (``?`` added if missing).
    :raises ValueError: *query* holds a quote or a line break.
    """
    return _fmp4_text(
        segments,
        current,
        target_duration=target_duration,
        part_target_ms=part_target_ms,
        discontinuity_sequence=discontinuity_sequence,
        preload=preload,
        skip=skip,
        query=_check_query(query),
    )


def _fmp4_text(
    segments: Sequence[Segment],
    current: Segment | None,
    *,
    target_duration: int,
    part_target_ms: int,
    discontinuity_sequence: int,
    preload: tuple[int, int],
    skip: bool,
    query: str,
) -> str:
    first = segments[0].msn if segments else current.msn if current else preload[0]
    lines = _header(FMP4_VERSION, target_duration)
    lines += [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
        f"PART-HOLD-BACK={_ms(PART_HOLD_BACK_PARTS * part_target_ms)},"
        f"CAN-SKIP-UNTIL={SKIP_TARGET_DURATIONS * target_duration:.1f}",
        f"#EXT-X-PART-INF:PART-TARGET={_ms(part_target_ms)}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    skipped = skipped_segments(segments, current, target_duration) if skip else 0
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")

    end = sum(segment.duration for segment in segments)
    if current is not None:
        end += current.duration
    horizon = end - PART_TARGET_DURATIONS * target_duration
    starts = []
    elapsed = 0.0
    for segment in segments:
        starts.append(elapsed)
        elapsed += segment.duration
    with_parts = {
        index
        for index in range(max(len(segments) - PART_SEGMENTS, 0), len(segments))
        if starts[index] >= horizon
    }

    init: int | None = None
    shown: list[tuple[int, Segment]] = list(enumerate(segments))[skipped:]
    for index, segment in shown:
        init = _segment_tags(lines, segment, init, query)
        if index in with_parts:
            lines += [_part_line(segment.msn, part, query) for part in segment.parts]
        lines += [f"#EXTINF:{format_seconds(segment.duration)},", f"seg-{segment.msn}.m4s{query}"]
    if current is not None:
        _segment_tags(lines, current, init, query)
        lines += [_part_line(current.msn, part, query) for part in current.parts]
    msn, part_index = preload
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{msn}-{part_index}.m4s{query}"')
    return "\n".join(lines) + "\n"


def _segment_tags(lines: list[str], segment: Segment, init: int | None, query: str) -> int:
    """Add the discontinuity and map tags before *segment*; return the init in force."""
    if segment.discontinuity:
        lines.append("#EXT-X-DISCONTINUITY")
    if segment.init != init:
        lines.append(f'#EXT-X-MAP:URI="init-{segment.init}.mp4{query}"')
    return segment.init


def render_ts(
    segments: Sequence[Segment],
    *,
    target_duration: int,
    discontinuity_sequence: int,
    query: str = "",
) -> str:
    """The classic HLS media playlist of *segments* (MPEG-TS, no parts).

    :param segments: the complete segments listed, oldest first, consecutive,
        each with its TS bytes; at least one.
    :raises ValueError: *query* holds a quote or a line break.
    """
    return _ts_text(
        segments,
        target_duration=target_duration,
        discontinuity_sequence=discontinuity_sequence,
        query=_check_query(query),
    )


def _ts_text(
    segments: Sequence[Segment], *, target_duration: int, discontinuity_sequence: int, query: str
) -> str:
    lines = _header(TS_VERSION, target_duration)
    lines += [
        f"#EXT-X-MEDIA-SEQUENCE:{segments[0].msn}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for segment in segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{format_seconds(segment.duration)},", f"seg-{segment.msn}.ts{query}"]
    return "\n".join(lines) + "\n"
