"""The HLS segmenter over a fake clock: cut points, parts, the fMP4 it writes, has() and listeners.

A :class:`Feed` (a :class:`~tests.media.timed_feed.TimedFeed`) publishes
synthetic H.264 (real avcC, length-prefixed NAL units) and AAC frames (real
AudioSpecificConfig) through a real :class:`~streamserver.media.stream.Stream`,
advancing a ``task.Clock`` with the media, as a publisher in real time would.
What the segmenter made is read back with the tests' own MP4 reader.
"""

from __future__ import annotations

import pytest
from twisted.internet import task

from streamserver.codec.fmp4 import ms_to_ticks
from streamserver.codec.messages import Message, MessageType
from streamserver.media.hls import MIN_PART_MS, HlsSettings, Part, Segment, Segmenter
from streamserver.media.stream import Stream
from tests.codec.mp4_reader import FragmentInfo, parse_boxes, read_file, read_fragments, read_init
from tests.media.timed_feed import (
    AAC_FRAME,
    SAMPLE_RATE,
    TimedFeed,
    audio_message,
    video_message,
)

#: Another valid AVC configuration (different level): a codec change.
AVC_SEQUENCE_HEADER_2 = bytes.fromhex("1700000000" + "01640028ffe1000467640028" + "01000468ee3cb0")


class Feed(TimedFeed):
    """A :class:`~tests.media.timed_feed.TimedFeed` and the segmenter of its stream."""

    def __init__(
        self,
        settings: HlsSettings | None = None,
        *,
        video: bool = True,
        audio: bool = True,
        fps: int = 30,
        gop: int = 60,
        ts: bool = True,
        start: bool = True,
    ) -> None:
        clock = task.Clock()
        super().__init__(
            Stream("live", "cam", clock=clock.seconds),
            clock,
            video=video,
            audio=audio,
            fps=fps,
            gop=gop,
        )
        self.segmenter = Segmenter(
            self.stream, settings or HlsSettings(), self.clock.seconds, ts=ts
        )
        self.finished: list[tuple[int, int]] = []
        self.segmenter.add_listener(self._heard)
        if start:
            self.segmenter.start()

    def _heard(self) -> None:
        self.finished.append((self.segmenter.next_msn, self.segmenter.next_part))

    def complete(self) -> list[Segment]:
        return [s for s in self.segmenter.segments if s.complete]


def published(settings: HlsSettings | None = None, **kwargs: object) -> Feed:
    feed = Feed(settings, **kwargs)  # type: ignore[arg-type]
    feed.publish()
    return feed


def fragments_of(feed: Feed, segment: Segment) -> list[FragmentInfo]:
    data = segment.mp4()
    return read_fragments(data, parse_boxes(data))


def video_samples(fragment: FragmentInfo) -> list[bool]:
    """The sync flags of the video samples of a fragment."""
    return [s.is_sync for t in fragment.trafs if t.track_id == 1 for s in t.samples]


# --- settings ------------------------------------------------------------------------


def test_settings_refuse_parts_below_the_minimum() -> None:
    """part_ms below 100 (and other values out of range) raise ValueError."""
    assert HlsSettings(part_ms=MIN_PART_MS).part_ms == 100
    for bad in (
        {"part_ms": 99},
        {"segment_seconds": 0},
        {"window": 0},
        {"max_bytes": 0},
        {"segment_seconds": 0.5, "part_ms": 600},
    ):
        with pytest.raises(ValueError):
            HlsSettings(**bad)  # type: ignore[arg-type]


# --- cut points ----------------------------------------------------------------------


def test_segments_are_cut_at_the_first_keyframe_after_the_segment_duration() -> None:
    """2 s segments from a 1 s GOP last 2 s; from a 3 s GOP, 3 s: only keyframes cut."""
    for gop_frames, expected in ((30, 2.0), (90, 3.0)):
        feed = published(gop=gop_frames)
        feed.run(13)
        complete = feed.complete()
        assert len(complete) >= 4
        assert [s.duration for s in complete] == pytest.approx([expected] * len(complete))
        for segment in complete:
            first = fragments_of(feed, segment)[0]
            assert video_samples(first)[0], "a segment starts with a keyframe"
            assert segment.parts[0].independent


def test_irregular_keyframes_give_real_durations() -> None:
    """Keyframes at 0, 1.5, 2.5, 5.1 and 6 s: segments of 2.5, 2.6 s (the real durations)."""
    feed = Feed()
    keys = {0, 45, 75, 153, 180}
    feed.keyframes = lambda index: index in keys
    feed.publish()
    feed.run(7)
    assert [s.duration for s in feed.complete()] == pytest.approx([2.5, 2.6])
    assert feed.segmenter.segments[-1].complete is False


def test_parts_close_at_the_first_sample_after_the_part_target() -> None:
    """Parts of 200 ms at 30 fps; all but a segment's last at least the target, none much more."""
    feed = published(HlsSettings(part_ms=200), gop=45)  # keyframes every 1.5 s
    feed.run(10)
    for segment in feed.complete():
        durations = [part.duration for part in segment.parts]
        assert sum(durations) == pytest.approx(segment.duration)
        assert [p.index for p in segment.parts] == list(range(len(segment.parts)))
        for duration in durations[:-1]:
            assert 0.2 <= duration < 0.2 + 1 / 30 + 1e-9
        assert 0 < durations[-1] < 0.2 + 1 / 30


def test_a_keyframe_that_cuts_a_segment_ends_the_part_early() -> None:
    """A keyframe at 2.333 s comes 133 ms into a part: that part ends there, a segment begins."""
    feed = published(HlsSettings(part_ms=200), gop=70)
    feed.run(3)
    first = feed.complete()[0]
    assert first.duration == pytest.approx(2.333)
    assert [round(p.duration, 3) for p in first.parts] == [0.2] * 11 + [0.133]
    assert feed.segmenter.segments[1].parts[0].independent


def test_independent_flags_follow_the_keyframes() -> None:
    """A part is INDEPENDENT exactly when its first video sample is a keyframe."""
    feed = published(gop=30)  # a keyframe every second: the middle of each 2 s segment
    feed.run(9)
    independent = 0
    for segment in feed.complete():
        for part, fragment in zip(segment.parts, fragments_of(feed, segment), strict=True):
            assert part.independent == video_samples(fragment)[0]
            independent += part.independent
    assert independent == 2 * len(feed.complete())


def test_audio_only_segments_cut_at_part_boundaries() -> None:
    """Audio only: every part independent, parts of whole AAC frames, segments once 2 s passed."""
    feed = published(video=False)
    feed.run(9)
    frame = AAC_FRAME / SAMPLE_RATE
    complete = feed.complete()
    assert len(complete) == 4
    for segment in complete:
        assert all(part.independent for part in segment.parts)
        assert segment.duration >= 2.0
        assert segment.duration - segment.parts[-1].duration < 2.0
        for part in segment.parts:
            assert part.duration / frame == pytest.approx(round(part.duration / frame))
            assert 0.2 <= part.duration < 0.2 + frame
    init, fragments = read_file(feed.segmenter.init_segment(0) + complete[0].mp4())
    assert [t.handler for t in init.tracks] == [b"soun"]
    assert all(s.duration == AAC_FRAME for f in fragments for t in f.trafs for s in t.samples)


def test_video_only_streams_have_one_track() -> None:
    """Video only: the init segment holds one video track, segments of 2 s."""
    feed = published(audio=False)
    feed.run(7)
    init = feed.segmenter.init_segment(feed.complete()[0].init)
    assert init is not None
    info = read_init(parse_boxes(init))
    assert [(t.handler, t.width, t.height) for t in info.tracks] == [(b"vide", 320, 240)]
    assert [s.duration for s in feed.complete()] == pytest.approx([2.0] * 3)


def test_audio_up_to_a_part_before_the_first_keyframe_is_kept() -> None:
    """Audio sent before the first keyframe: kept from one part target before it, not older."""
    feed = Feed()
    feed.publish()
    for index in range(22):  # AAC frames from 0 to 487 ms
        feed.stream.broadcast(audio_message(index * AAC_FRAME * 1000 // SAMPLE_RATE, index=index))
    feed.stream.broadcast(video_message(500, key=True, index=0))
    for index in range(1, 10):
        feed.stream.broadcast(video_message(500 + index * 33, key=False, index=index))
        feed.stream.broadcast(audio_message(500 + index * 33, index=100 + index))
    segment = feed.segmenter.segments[0]
    first = fragments_of(feed, segment)[0]
    audio = next(t for t in first.trafs if t.track_id == 2)
    # 300 ms is the earliest kept: the frame at 301 ms (frame 13) comes first.
    assert audio.base_decode_time == ms_to_ticks(301, SAMPLE_RATE)
    assert audio.samples[0].data[:4] == (13).to_bytes(4, "big")


# --- what the fMP4 holds -------------------------------------------------------------


def test_fragments_keep_every_sample_with_exact_durations() -> None:
    """init + all parts read back: every frame once, decode times contiguous per track."""
    feed = published()
    sent: list[Message] = []
    feed.run(8, each=sent.append)
    feed.unpublish()
    segmenter = feed.segmenter
    data = segmenter.init_segment(0) or b""
    data += b"".join(s.mp4() for s in segmenter.segments)
    init, fragments = read_file(data)
    assert [t.timescale for t in init.tracks] == [90000, SAMPLE_RATE]
    assert [f.sequence_number for f in fragments] == list(range(1, len(fragments) + 1))
    ends: dict[int, int] = {}
    payloads: dict[int, list[bytes]] = {1: [], 2: []}
    for fragment in fragments:
        for traf in fragment.trafs:
            if traf.track_id in ends:
                assert traf.base_decode_time == ends[traf.track_id], "no gap, no overlap"
            ends[traf.track_id] = traf.base_decode_time + sum(s.duration for s in traf.samples)
            payloads[traf.track_id] += [s.data for s in traf.samples]
            if traf.track_id == 1:
                assert {s.duration for s in traf.samples} <= {2970, 3060}  # 33 or 34 ms
            else:
                assert {s.duration for s in traf.samples} == {AAC_FRAME}
    video_sent = [m.payload[5:] for m in sent if m.type_id == MessageType.VIDEO]
    audio_sent = [m.payload[2:] for m in sent if m.type_id == MessageType.AUDIO]
    assert payloads[1] == video_sent
    assert payloads[2] == audio_sent


def test_audio_goes_into_the_part_of_its_time() -> None:
    """A part's audio starts within one AAC frame of its video (audio follows the cuts)."""
    feed = published()
    feed.run(6)
    for segment in feed.complete():
        for fragment in fragments_of(feed, segment)[1:]:
            times = {t.track_id: t.base_decode_time for t in fragment.trafs}
            video_s, audio_s = times[1] / 90000, times[2] / SAMPLE_RATE
            assert abs(video_s - audio_s) <= 2 * AAC_FRAME / SAMPLE_RATE


# --- has() and listeners -------------------------------------------------------------


def test_has_flips_exactly_when_the_part_finishes() -> None:
    """has(msn, part) turns true with the frame that finishes that part, not before."""
    feed = published()
    segmenter = feed.segmenter
    in_progress = [(segmenter.next_msn, segmenter.next_part)]
    flips = []

    def check(message: Message) -> None:
        msn, part = in_progress[-1]
        now = (segmenter.next_msn, segmenter.next_part)
        # The part that was in progress is there exactly when production moved on.
        assert segmenter.has(msn, part) == (now != (msn, part))
        assert segmenter.has(*now) is False
        assert segmenter.has(now[0]) is False
        assert (segmenter.part(msn, part) is not None) == (now != (msn, part))
        if now[0]:
            assert segmenter.has(now[0] - 1)
            # A part past a segment's last is part 0 of the next one.
            assert segmenter.has(now[0] - 1, 99) == (now[1] > 0)
        if now != (msn, part):
            flips.append((msn, part))
            in_progress.append(now)

    assert not segmenter.has(0, 0) and not segmenter.has(0)
    feed.run(6.5, each=check)
    assert flips[:11] == [(0, index) for index in range(10)] + [(1, 0)]
    assert len(flips) == sum(len(s.parts) for s in segmenter.segments)


def test_listeners_are_called_once_per_finished_part() -> None:
    """One call per finished part (a part that ends a segment: one call), state already updated."""
    feed = published()
    feed.run(6.5)
    parts = [(s.msn, p.index) for s in feed.segmenter.segments for p in s.parts]
    assert len(feed.finished) == len(parts)
    # Each call saw the part just finished already counted.
    for (msn, next_part), (done_msn, done_index) in zip(feed.finished, parts, strict=True):
        if next_part:
            assert (msn, next_part - 1) == (done_msn, done_index)
        else:
            assert msn == done_msn + 1
            assert feed.segmenter.segment(done_msn) is not None


def test_a_failing_listener_is_removed_and_the_others_still_called() -> None:
    """A listener that raises is dropped (kept in listener_failure); the segmenter goes on."""
    feed = published()
    calls: list[int] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    feed.segmenter.add_listener(broken)
    feed.segmenter.add_listener(lambda: calls.append(1))
    feed.run(1)
    assert isinstance(feed.segmenter.listener_failure, RuntimeError)
    assert len(calls) == len(feed.finished) > 1
    assert feed.stream.consumers == [feed.segmenter]
    feed.segmenter.remove_listener(broken)  # no error: already gone


# --- starting and closing ------------------------------------------------------------


def test_start_replays_the_gop_of_a_published_stream() -> None:
    """Started mid-GOP, the segmenter begins with the cached keyframe and its frames."""
    feed = Feed(start=False)
    feed.publish()
    feed.run(3.5)  # the GOP cached starts at the keyframe at 2 s
    feed.segmenter.start()
    assert feed.segmenter.next_part >= 7, "the cached 1.5 s became parts at once"
    feed.run(1)
    first = feed.segmenter.segments[0]
    assert first.msn == 0 and not first.discontinuity
    assert first.parts[0].independent


def test_close_detaches_and_frees_everything() -> None:
    """close(): detached, nothing held, listeners told once more, then no playlist."""
    feed = published()
    feed.run(5)
    before = len(feed.finished)
    feed.segmenter.close()
    assert feed.stream.consumers == []
    assert feed.segmenter.bytes_held == 0 and feed.segmenter.segments == []
    assert len(feed.finished) == before + 1
    assert feed.segmenter.playlist("fmp4") is None
    feed.run(1)
    assert feed.segmenter.segments == []
    feed.segmenter.close()
    with pytest.raises(Exception, match="closed"):
        feed.segmenter.start()


def test_a_failure_the_stream_reports_closes_the_segmenter() -> None:
    """consumer_failed keeps the error and frees everything."""
    feed = published()
    feed.run(1)
    error = RuntimeError("bug")
    feed.stream.detach(feed.segmenter)
    feed.segmenter.consumer_failed(feed.stream, error)
    assert feed.segmenter.failure is error and feed.segmenter.closed
    assert feed.segmenter.bytes_held == 0


def test_garbage_media_is_skipped() -> None:
    """Cut-short tags, garbage headers and media before any header cost nothing."""
    feed = Feed()
    feed.stream.publish(feed.publisher)
    feed.stream.broadcast(video_message(0, key=True, index=0))  # no header yet
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 0, b"\x17\x00\x00"))
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 0, b"\x17\x00\x00\x00\x00\x01\x02"))
    feed.stream.broadcast(Message(MessageType.AUDIO, 1, 0, b"\xaf"))
    assert feed.segmenter.segments == [] and not feed.segmenter.closed
    feed.stream.unpublish(feed.publisher)
    feed.publish()
    feed.run(3)
    assert feed.complete() and feed.stream.consumers == [feed.segmenter]


def test_part_and_segment_lookups() -> None:
    """segment() gives complete segments only; part() finished parts, of the one in progress too."""
    feed = published()
    feed.run(3)
    segmenter = feed.segmenter
    current = segmenter.segments[-1]
    assert not current.complete and current.msn == segmenter.next_msn == 1
    assert segmenter.segment(1) is None and segmenter.segment(0) is segmenter.segments[0]
    assert isinstance(segmenter.part(1, 0), Part)
    assert segmenter.part(1, segmenter.next_part) is None
    assert segmenter.part(7, 0) is None and segmenter.segment(-1) is None
    assert segmenter.init_segment(0) is not None and segmenter.init_segment(1) is None


def test_frames_of_another_codec_than_the_header_are_dropped() -> None:
    """Opus frames after an AAC header (and no new header): dropped, the segmenter goes on."""
    feed = published()
    feed.run(1)
    opus = b"\x91Opus" + b"\xfc" * 40  # Enhanced RTMP audio: CodedFrames, Opus
    feed.stream.broadcast(Message(MessageType.AUDIO, 1, 1000, opus))
    feed.run(2)
    assert feed.stream.consumers == [feed.segmenter] and feed.segmenter.failure is None
    assert feed.complete() and not any(s.discontinuity for s in feed.segmenter.segments)
