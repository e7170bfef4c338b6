"""HLS and LL-HLS segmenting of one stream, in memory: segments, parts and playlists.

A :class:`Segmenter` is a :class:`~streamserver.media.stream.Consumer` of a
:class:`~streamserver.media.stream.Stream`: it is fed every frame (never
dropped, it is not a network viewer) and turns the stream into

- fragmented MP4 (:mod:`~streamserver.codec.fmp4`): an init segment per
  configuration, and segments made of LL-HLS parts, each part one
  ``moof`` + ``mdat``;
- MPEG-TS (:mod:`~streamserver.codec.mpegts`): the same segments, cut at the
  same points, for classic HLS (made when the segment is complete, only
  while the TS variant is on);
- the two media playlists (:mod:`~streamserver.media.playlist`).

Cutting, on the *lead* track (video if the stream has video, else audio):
a segment ends at the first keyframe once :attr:`HlsSettings.segment_seconds`
has passed (audio only: at the first part boundary once it has passed); a
part ends at the first sample once :attr:`HlsSettings.part_ms` has passed,
and always where a segment ends, so every segment starts with a new part and,
for video, with a keyframe.  "Passed" allows half a sample: the boundary
nearest the target is taken, so that millisecond jitter does not add a frame
to a part (or a GOP to a segment).  The other track's samples go into the part
whose time they fall in, as far as they have arrived.  Each track holds back
its last sample until the next one arrives, so every duration written is
exact (the ``next_dts`` of :meth:`FragmentWriter.write
<streamserver.codec.fmp4.FragmentWriter.write>`); only the end of a session
estimates one.  Timestamps are unwrapped per track
(:class:`~streamserver.codec.samples.TimestampUnwrapper`); AAC frames are
counted, so that their durations are exactly one frame; a small step back is
held at the last time, a jump (:data:`MAX_STEP_BACK_MS`, :data:`MAX_GAP_MS`)
starts a new timeline.

Lifetime (RFC 8216 §6.2.2): the playlists list :attr:`HlsSettings.window`
complete segments; one that leaves stays fetchable for its duration plus the
duration of the playlist it left, then is freed.  Everything held (parts, TS
bytes, init segments) is bounded by :attr:`HlsSettings.max_bytes`: past it
the oldest retained segments go first, then the oldest listed ones, never
the segment in progress.

Continuity: media sequence numbers increase for the segmenter's whole life,
across republishes; the first segment after a republish, a codec
configuration change or a timestamp jump is marked ``discontinuity`` (and a
new configuration gets a new init segment), and the playlists count the
discontinuities that slid out in ``EXT-X-DISCONTINUITY-SEQUENCE``.

Codecs: fMP4 carries H.264, HEVC, AV1, AAC and Opus; MPEG-TS carries H.264,
HEVC, AAC (as ADTS can) and MP3.  A track neither carries is ignored.

Nothing here imports Twisted: the clock is given, and the HTTP side
(``http/hls.py``) waits on :meth:`Segmenter.add_listener`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from streamserver.codec import amf0
from streamserver.codec.flv import FrameKind
from streamserver.codec.fmp4 import (
    FragmentWriter,
    Mp4Sample,
    init_segment,
)
from streamserver.codec.mpegts import AudioConfig, TsMuxer, VideoConfig
from streamserver.codec.samples import Codec, Sample, TimestampUnwrapper, Track
from streamserver.errors import ProtocolError, UsageError
from streamserver.media.playlist import MediaPlaylist, Part, Segment
from streamserver.media.stream import Frame, Stream
from streamserver.media.tracks import PendingSample, TrackState, frame_sample

__all__ = ["MIN_PART_MS", "HlsSettings", "Part", "Segment", "Segmenter"]

#: The shortest part allowed: hls.js breaks on parts of 20 ms (mediamtx #938)
#: and a part costs a request per viewer; 200 ms is the advised least.
MIN_PART_MS = 100

#: A track's timestamps stepping back by more than this start a new timeline
#: (a discontinuity); a smaller step (an encoder's jitter) is held at the last
#: time.  RTMP publishers are known to jump back and forth (nginx-rtmp #596).
MAX_STEP_BACK_MS = 1000

#: ...and so do steps forward past this: a sample that lasts longer is a jump
#: or a publisher that paused, and a segment that long would raise the target
#: duration for a whole window.
MAX_GAP_MS = 10_000

#: Audio received while waiting for the keyframe that starts a timeline is
#: kept this long: encoders interleave audio up to a few hundred ms ahead,
#: and what is at most one part older than the keyframe goes into its segment.
WAIT_MS = 2000

#: Audio frames grouped into one TS PES packet (see TsMuxer's audio_group_ms):
#: a 64 kbit/s AAC frame alone takes two 188-byte packets; ffmpeg groups too.
TS_AUDIO_GROUP_MS = 100

#: The picture size written into the init segment when ``onMetaData`` gives
#: none; decoders take the real one from the SPS, only the track header says it.
DEFAULT_PICTURE_SIZE = (1280, 720)


# --- settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class HlsSettings:
    """What a segmenter makes.

    :ivar segment_seconds: a segment ends at the first keyframe once this has
        passed.
    :ivar part_ms: the LL-HLS part target in milliseconds, at least
        :data:`MIN_PART_MS`.
    :ivar window: the complete segments a playlist lists.
    :ivar max_bytes: the bytes held per stream, both variants and retained
        segments included.
    :raises ValueError: a value out of range.
    """

    segment_seconds: float = 2.0
    part_ms: int = 200
    window: int = 7
    max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.segment_seconds > 0:
            raise ValueError(f"segment_seconds {self.segment_seconds} is not positive")
        if self.part_ms < MIN_PART_MS:
            raise ValueError(f"part_ms {self.part_ms} is below {MIN_PART_MS}")
        if self.part_ms > self.segment_seconds * 1000:
            raise ValueError(f"part_ms {self.part_ms} is longer than a segment")
        if self.window < 1:
            raise ValueError(f"window {self.window} is below 1")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes {self.max_bytes} is below 1")


@dataclass
class _Timeline:
    """The tracks, init segment and writers shared by a run of segments.

    A new timeline starts after a republish, a configuration change or a
    timestamp jump, at the next lead sample that can start a segment.

    :ivar lead: the track the cuts follow.
    :ivar other: the other track (audio under video), or ``None``.
    :ivar signature: the configurations it was built from.
    :ivar init: the number of its init segment, or -1.
    :ivar writer: its fragment writer, if fMP4 carries a track.
    :ivar ts_muxer: its TS muxer, made when a segment first needs it.
    :ivar segment_start: the lead ticks where the segment in progress began.
    :ivar part_start: the lead ticks where the part in progress began.
    :ivar segments: the segments started in it.
    """

    lead: TrackState
    other: TrackState | None
    signature: tuple[tuple[Track, Codec, bytes], ...]
    init: int
    writer: FragmentWriter | None
    ts_muxer: TsMuxer | None = None
    segment_start: int = 0
    part_start: int = 0
    segments: int = 0

    @property
    def tracks(self) -> tuple[TrackState, ...]:
        return (self.lead,) if self.other is None else (self.lead, self.other)

    def track(self, kind: Track) -> TrackState | None:
        return next((track for track in self.tracks if track.kind is kind), None)

    def muxer(self) -> TsMuxer | None:
        """The TS muxer, made on first use; ``None`` if TS carries no track."""
        if self.ts_muxer is None:
            video = next((t.ts for t in self.tracks if isinstance(t.ts, VideoConfig)), None)
            audio = next((t.ts for t in self.tracks if isinstance(t.ts, AudioConfig)), None)
            if video is None and audio is None:
                return None
            self.ts_muxer = TsMuxer(video, audio, audio_group_ms=TS_AUDIO_GROUP_MS)
        return self.ts_muxer


# --- the segmenter ---------------------------------------------------------------------


class Segmenter:
    """The HLS segmenter of one stream (a :class:`~streamserver.media.stream.Consumer`).

    What it made is held, listed and written by a
    :class:`~streamserver.media.playlist.MediaPlaylist`; the methods below
    that serve it (:meth:`segment`, :meth:`playlist`, :meth:`has`...) ask it.

    :param stream: the stream to segment.
    :param settings: segment and part durations, window, memory bound.
    :param clock: seconds, for the lifetime of segments that left the window
        (the server's reactor clock).
    :param ts: make the MPEG-TS variant from the start (see :meth:`enable_ts`).
    :param first_msn: the media sequence number (and init number) to start at;
        a server that restarts segmenters can make URLs unique across them.

    :ivar stream: the stream.
    :ivar settings: the settings.
    :ivar last_request: clock time of the last HLS request, set by the HTTP
        side (for its idle timeout); the creation time at first.
    :ivar closed: :meth:`close` was called (or the stream detached us).
    :ivar failure: what made the stream detach us, if it did.
    :ivar listener_failure: the last error a listener raised (it was removed).
    :ivar _configs: the session's sequence headers by track (MP3: its first frame).
    :ivar _discontinuity: the next segment starts after a republish, a
        configuration change or a jump.
    :ivar _timeline: the timeline the segment in progress belongs to.
    :ivar _ts_buffer: the TS bytes of the segment in progress, if it gets any.
    :ivar _waiting: audio samples received while waiting for a keyframe to
        start a timeline with (see :data:`WAIT_MS`).
    """

    def __init__(
        self,
        stream: Stream,
        settings: HlsSettings,
        clock: Callable[[], float],
        *,
        ts: bool = True,
        first_msn: int = 0,
    ) -> None:
        self.stream = stream
        self.settings = settings
        self._playlist = MediaPlaylist(
            window=settings.window,
            segment_seconds=settings.segment_seconds,
            part_ms=settings.part_ms,
            clock=clock,
            first_msn=first_msn,
        )
        self.last_request = clock()
        self.closed = False
        self.failure: BaseException | None = None
        self.listener_failure: BaseException | None = None
        self._ts_on = ts
        self._listeners: list[Callable[[], None]] = []
        self._fragment_sequence = 1
        self._configs: dict[Track, Sample] = {}
        self._unwrappers: dict[Track, TimestampUnwrapper] = {}
        self._size: tuple[int, int] | None = None
        self._discontinuity = False
        self._timeline: _Timeline | None = None
        self._ts_buffer: bytearray | None = None
        self._waiting: list[Sample] = []

    def __repr__(self) -> str:
        return (
            f"<Segmenter {self.stream.app}/{self.stream.name} next={self.next_msn}"
            f".{self.next_part} segments={len(self.segments)} bytes={self.bytes_held}>"
        )

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the stream; if it is published, take its catch-up frames first.

        :raises UsageError: the segmenter was closed.
        """
        if self.closed:
            raise UsageError("a closed segmenter cannot start again")
        frames = self.stream.attach(self)
        if self.stream.publisher is not None:
            self._new_session()
            for frame in frames:
                self.consume(frame)

    def close(self) -> None:
        """Detach from the stream and free everything; listeners are told a last time."""
        if self.closed:
            return
        self.closed = True
        self.stream.detach(self)
        self._timeline = None
        self._ts_buffer = None
        self._playlist.clear()
        self._notify()
        self._listeners.clear()

    def enable_ts(self) -> None:
        """Make the MPEG-TS variant from the next segment on (nothing if it is on)."""
        self._ts_on = True

    @property
    def ts_enabled(self) -> bool:
        """Whether segments started now get their MPEG-TS bytes."""
        return self._ts_on

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call *callback* after every finished part or segment (and at :meth:`close`).

        One call for each change: a part that ends its segment makes one call.
        A listener that raises is removed (:attr:`listener_failure`); the
        others are still called.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling *callback* (no error if it is not a listener)."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for listener in tuple(self._listeners):
            try:
                listener()
            except Exception as error:
                self.listener_failure = error
                self.remove_listener(listener)

    # --- what is served (see MediaPlaylist) ------------------------------------------

    @property
    def segments(self) -> list[Segment]:
        """The segments held, oldest first: retained, listed, then the one in progress."""
        return self._playlist.segments

    @property
    def next_msn(self) -> int:
        """The media sequence number of the segment being produced (or produced next)."""
        return self._playlist.next_msn

    @property
    def next_part(self) -> int:
        """The index of the part being produced in that segment."""
        return self._playlist.next_part

    @property
    def bytes_held(self) -> int:
        """The bytes held: parts, TS segments (the one in progress too), init segments."""
        return self._playlist.bytes_held + len(self._ts_buffer or b"")

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: at least every listed segment's rounded duration."""
        return self._playlist.target_duration

    @property
    def part_target(self) -> float:
        """PART-TARGET in seconds: the part target, or the longest part listed if longer."""
        return self._playlist.part_target_ms / 1000

    def init_segment(self, number: int) -> bytes | None:
        """The fMP4 init segment *number*, if held."""
        return self._playlist.init_segment(number)

    def segment(self, msn: int) -> Segment | None:
        """Complete segment *msn*, listed or retained, if held."""
        return self._playlist.segment(msn)

    def part(self, msn: int, index: int) -> Part | None:
        """Finished part *index* of segment *msn* (also of the segment in progress), if held."""
        return self._playlist.part(msn, index)

    def has(self, msn: int, part: int | None = None) -> bool:
        """Whether the playlist would list segment *msn* (part ``None``) or that part of it.

        See :meth:`MediaPlaylist.has <streamserver.media.playlist.MediaPlaylist.has>`.
        """
        return self._playlist.has(msn, part)

    def playlist(self, variant: str, *, skip: bool = False, query: str = "") -> str | None:
        """The media playlist of *variant*: ``"fmp4"`` (LL-HLS) or ``"ts"`` (classic).

        ``None`` until there is something to list: a part for fMP4, a complete
        TS segment for TS.

        :param skip: a delta update (``_HLS_skip=YES``), fMP4 only.
        :param query: appended to every URI (a play token).
        :raises ValueError: an unknown variant, or a query that cannot be written.
        """
        return self._playlist.render(variant, skip=skip, query=query)

    # --- the consumer -----------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        """A new session: its segments follow on, after a discontinuity."""
        if self._end_timeline():
            self._finished()
        self._new_session()

    def stream_unpublished(self, stream: Stream) -> None:
        """The session ended: the segment in progress is completed with what it has."""
        if self._end_timeline():
            self._finished()

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        """The stream detached us after *error*: keep it and free everything."""
        self.failure = error
        self.close()

    def consume(self, frame: Frame) -> None:
        """One frame of the stream: metadata, a sequence header or a media sample."""
        if self.closed:
            return
        if frame.kind is FrameKind.METADATA:
            self._metadata(frame.message.payload)
            return
        sample = frame_sample(frame)
        if sample is None:
            return
        if sample.is_config:
            finished = self._configure(sample.track, sample)
        else:
            kind = sample.track
            dts = self._unwrappers.setdefault(kind, TimestampUnwrapper()).unwrap(
                frame.message.timestamp
            )
            sample = dataclasses.replace(sample, dts=dts, pts=dts + sample.composition_time)
            finished = False
            if sample.codec is Codec.MP3:
                known = self._configs.get(kind)
                if known is None or known.codec is not Codec.MP3:
                    # MP3 has no sequence header: its first frame stands for one.
                    finished = self._configure(kind, sample)
            finished = self._media(sample) or finished
        if finished:
            self._finished()

    def _new_session(self) -> None:
        if self._playlist.made_any:
            self._discontinuity = True
        self._configs.clear()
        self._unwrappers.clear()
        self._waiting.clear()
        self._size = None

    def _metadata(self, payload: bytes) -> None:
        try:
            values = amf0.decode_all(payload)
        except (ProtocolError, UsageError):
            return
        if len(values) < 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
            return
        width, height = values[1].get("width"), values[1].get("height")
        if isinstance(width, int | float) and isinstance(height, int | float):
            size = (int(width), int(height))
            if all(1 <= side <= 0xFFFF for side in size):
                self._size = size

    def _configure(self, kind: Track, config: Sample) -> bool:
        """A sequence header: a new configuration ends the timeline (new init, discontinuity).

        Before anything of the segment in progress is out (no part yet: a
        track whose header came just after the first keyframe, MP3 which has
        none), the segment is made again with the new configuration instead.

        :returns: whether a part or segment finished.
        """
        known = self._configs.get(kind)
        if known is not None and known.codec is config.codec and known.data == config.data:
            return False
        self._configs[kind] = config
        timeline = self._timeline
        if timeline is None or _signature(self._tracks()) == timeline.signature:
            return False
        current = self._playlist.current
        if current is not None and not current.parts and not current.duration:
            return self._restart(timeline, current)
        finished = self._end_timeline()
        self._discontinuity = True
        return finished

    def _restart(self, timeline: _Timeline, current: Segment) -> bool:
        """Forget *timeline*'s segment in progress (nothing of it is out) and make it again."""
        replay = sorted(
            (item.sample for track in timeline.tracks for item in track.pending),
            key=lambda sample: (sample.dts, sample.track is not Track.VIDEO),
        )
        self._timeline = None
        self._ts_buffer = None
        self._playlist.abandon()
        self._playlist.active_init = None
        # After segments of the old configuration, the new one is a discontinuity.
        self._discontinuity = current.discontinuity or timeline.segments > 1
        finished = False
        for sample in replay:
            finished = self._media(sample) or finished
        return finished

    def _tracks(self) -> dict[Track, TrackState]:
        size = self._size or DEFAULT_PICTURE_SIZE
        tracks = {kind: TrackState(kind, config, size) for kind, config in self._configs.items()}
        return {kind: track for kind, track in tracks.items() if track.carried}

    # --- cutting ----------------------------------------------------------------------

    def _media(self, sample: Sample) -> bool:
        """Take one media sample; return whether a part or segment finished."""
        timeline = self._timeline
        started = timeline is None
        if timeline is None:
            timeline = self._timeline = self._start_timeline(sample)
            if timeline is None:
                self._wait(sample)
                return False
        track = timeline.track(sample.track)
        if track is None or (track is not timeline.lead and self._playlist.current is None):
            return False
        if sample.codec is not track.config.codec:
            return False  # a frame of another codec than the sequence header said
        last = track.last_ms
        if last is not None:
            step = sample.dts - last
            if step < -MAX_STEP_BACK_MS or step > MAX_GAP_MS:
                finished = self._end_timeline()
                self._discontinuity = True
                return self._media(sample) or finished
            if step < 0:
                sample = dataclasses.replace(sample, dts=last, pts=sample.pts - step)
        track.last_ms = sample.dts
        pending = track.take(sample)
        if track is not timeline.lead:
            track.pending.append(pending)
            return False
        finished = self._lead(timeline, pending)
        if started:
            # Audio that came before the first keyframe goes in too, up to one part
            # earlier than it (encoders start audio a frame or two before video).
            early, self._waiting = self._waiting, []
            for waited in early:
                if waited.dts >= sample.dts - self.settings.part_ms:
                    finished = self._media(waited) or finished
        return finished

    def _wait(self, sample: Sample) -> None:
        """Keep an audio sample that came before the keyframe a timeline starts with."""
        if sample.track is not Track.AUDIO:
            return
        self._waiting.append(sample)
        while self._waiting[0].dts < sample.dts - WAIT_MS:
            self._waiting.pop(0)

    def _start_timeline(self, sample: Sample) -> _Timeline | None:
        """A timeline starting with *sample*, if it is a lead sample that can start a segment."""
        tracks = self._tracks()
        lead = tracks.get(Track.VIDEO) or tracks.get(Track.AUDIO)
        if lead is None or lead.kind is not sample.track or not sample.is_keyframe:
            return None
        other = tracks.get(Track.AUDIO) if lead.kind is Track.VIDEO else None
        mp4_tracks = [t.mp4 for t in (lead, other) if t is not None and t.mp4 is not None]
        number, writer = -1, None
        if mp4_tracks:
            number = self._playlist.add_init(init_segment(mp4_tracks))
            writer = FragmentWriter(mp4_tracks, sequence_number=self._fragment_sequence)
        return _Timeline(lead, other, _signature(tracks), number, writer)

    def _lead(self, timeline: _Timeline, pending: PendingSample) -> bool:
        """A lead sample: cut a part or a segment before it if due, then queue it."""
        finished = False
        ticks = pending.ticks
        lead = timeline.lead
        if self._playlist.current is None:
            if not pending.sample.is_keyframe:
                return False
            self._start_segment(timeline, ticks)
        else:
            # Cut at the sample boundary nearest the target (half the part's mean
            # sample duration early): millisecond timestamps jitter, and 15 fps
            # frames at 199 or 201 ms must not make a 200 ms part 267 ms long
            # (nor a keyframe at 1999 ms a 4 s segment).
            elapsed = ticks - timeline.part_start
            slack = elapsed // (2 * len(lead.pending)) if lead.pending else 0
            part_due = elapsed + slack >= lead.ticks(self.settings.part_ms / 1000)
            segment_due = ticks - timeline.segment_start + slack >= lead.ticks(
                self.settings.segment_seconds
            )
            if lead.kind is Track.VIDEO:
                segment_due = segment_due and pending.sample.is_keyframe
            else:
                segment_due = segment_due and part_due
            if segment_due:
                self._finish_part(timeline, pending)
                self._finish_segment(timeline)
                self._start_segment(timeline, ticks)
                finished = True
            elif part_due:
                self._finish_part(timeline, pending)
                finished = True
        lead.pending.append(pending)
        return finished

    def _start_segment(self, timeline: _Timeline, ticks: int) -> None:
        self._playlist.open(discontinuity=self._discontinuity, init=timeline.init)
        self._discontinuity = False
        timeline.segment_start = timeline.part_start = ticks
        timeline.segments += 1
        muxer = timeline.muxer() if self._ts_on else None
        self._ts_buffer = bytearray(muxer.segment_start()) if muxer is not None else None

    def _finish_part(self, timeline: _Timeline, following: PendingSample | None) -> None:
        """End the part in progress before lead sample *following* (``None``: take everything).

        The other track gives the samples before *following* it has, except
        the last (held back for its duration); without *following*, all.
        """
        segment = self._playlist.current
        lead, other = timeline.lead, timeline.other
        if segment is None or not lead.pending:
            return
        runs: list[tuple[TrackState, list[PendingSample], int | None]] = []
        lead_items, lead.pending = lead.pending, []
        runs.append((lead, lead_items, None if following is None else following.ticks))
        if other is not None:
            if following is None:
                taken, other.pending = other.pending, []
                runs.append((other, taken, None))
            else:
                count = 0
                while (
                    count < len(other.pending) - 1
                    and other.pending[count].sample.dts < following.sample.dts
                ):
                    count += 1
                taken, other.pending = other.pending[:count], other.pending[count:]
                runs.append((other, taken, other.pending[0].ticks if other.pending else None))
        samples: dict[int, list[Mp4Sample]] = {}
        next_dts: dict[int, int] = {}
        lead_end = lead_items[-1].ticks
        for track, items, end in runs:
            if not items:
                continue
            if end is None:
                # The end of a session: the last sample lasts as long as the one before.
                last = items[-1].ticks
                end = last + (last - items[-2].ticks if len(items) > 1 else track.last_duration)
            track.last_duration = end - items[-1].ticks
            if track is lead:
                lead_end = end
            if track.mp4 is not None:
                samples[track.track_id] = [item.mp4 for item in items if item.mp4 is not None]
                next_dts[track.track_id] = end
        if timeline.writer is not None and samples:
            fragment = timeline.writer.write(samples, next_dts=next_dts)
            duration = (lead_end - timeline.part_start) / lead.timescale
            self._playlist.add_part(
                Part(len(segment.parts), duration, fragment.independent, fragment.data)
            )
        self._playlist.advance((lead_end - timeline.segment_start) / lead.timescale)
        timeline.part_start = lead_end
        if self._ts_buffer is not None and timeline.ts_muxer is not None:
            self._write_ts(timeline.ts_muxer, self._ts_buffer, runs)

    @staticmethod
    def _write_ts(
        muxer: TsMuxer,
        buffer: bytearray,
        runs: list[tuple[TrackState, list[PendingSample], int | None]],
    ) -> None:
        """Mux the samples of *runs* into *buffer* in decode order (video first at a tie)."""
        items = sorted(
            ((item, track) for track, track_items, _ in runs for item in track_items),
            key=lambda pair: (pair[0].sample.dts, pair[1].kind is not Track.VIDEO),
        )
        for item, track in items:
            if track.ts is None:
                continue
            try:
                buffer += muxer.write(item.sample)
            except ProtocolError:
                continue  # a frame the publisher got wrong: the TS goes on without it

    def _finish_segment(self, timeline: _Timeline) -> None:
        buffer, self._ts_buffer = self._ts_buffer, None
        ts = b""
        if buffer is not None and timeline.ts_muxer is not None:
            buffer += timeline.ts_muxer.flush()
            ts = bytes(buffer)
        self._playlist.finish(ts)

    def _end_timeline(self) -> bool:
        """Complete the segment in progress with every pending sample; end the timeline.

        :returns: whether a segment finished.
        """
        timeline = self._timeline
        if timeline is None:
            return False
        self._timeline = None
        segment = self._playlist.current
        self._playlist.active_init = None
        if segment is not None:
            self._finish_part(timeline, None)
        if timeline.writer is not None:
            self._fragment_sequence = timeline.writer.sequence_number
        if segment is None:
            return False
        if not segment.parts and not segment.duration:
            self._playlist.abandon()
            self._ts_buffer = None
            return False
        self._finish_segment(timeline)
        return True

    def _finished(self) -> None:
        """After parts or segments finished: free what expired, keep the bound, tell listeners."""
        playlist = self._playlist
        playlist.expire()
        playlist.limit(self.settings.max_bytes - len(self._ts_buffer or b""))
        self._notify()


def _signature(tracks: dict[Track, TrackState]) -> tuple[tuple[Track, Codec, bytes], ...]:
    """The configurations of *tracks*, video first: what a new timeline compares."""
    return tuple(tracks[kind].signature for kind in (Track.VIDEO, Track.AUDIO) if kind in tracks)
