"""What the segmenter holds and for how long, and what starts a new timeline.

The window lists ``window`` complete segments; a segment that leaves it
stays fetchable for its duration plus the playlist's (RFC 8216 §6.2.2), then
is freed; ``max_bytes`` bounds everything held, dropping retained segments
first, then listed ones, never the one in progress.  A republish, a new
sequence header (new bytes: a new init segment) and a timestamp jump each
mark the next segment ``discontinuity``; media sequence numbers go on.
"""

from __future__ import annotations

import m3u8
import pytest

from streamserver.codec.messages import Message, MessageType
from streamserver.media.hls import MAX_GAP_MS, MAX_STEP_BACK_MS, HlsSettings
from tests.codec.mp4_reader import parse_boxes, read_init
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER
from tests.media.test_hls import (
    AAC_FRAME,
    AVC_SEQUENCE_HEADER_2,
    SAMPLE_RATE,
    Feed,
    published,
    video_message,
)

#: The avcC inside AVC_SEQUENCE_HEADER_2 (after its 5-byte FLV video tag header).
AVCC_2 = AVC_SEQUENCE_HEADER_2[5:]


def listed_msns(feed: Feed) -> list[int]:
    text = feed.segmenter.playlist("fmp4")
    assert text is not None
    playlist = m3u8.loads(text)
    return [playlist.media_sequence + i for i, s in enumerate(playlist.segments) if s.uri]


# --- window and retention ------------------------------------------------------------


def test_the_window_lists_seven_segments_and_retains_those_that_left() -> None:
    """After 30 s: 7 listed, older ones still fetchable, none older than their lifetime."""
    feed = published()
    feed.run(30)
    segmenter = feed.segmenter
    listed = listed_msns(feed)
    assert listed == list(range(segmenter.next_msn - 7, segmenter.next_msn))
    retained = [s for s in segmenter.segments if s.complete and s.msn < listed[0]]
    assert retained, "segments that left the playlist are still held"
    for segment in retained:
        assert segmenter.segment(segment.msn) is segment
    # Segment k left when k + 7 completed, at 2k + 16 s, and lives 2 s + the 16 s playlist
    # it left (7 segments and the parts of the 8th, at most 16 s): until 2k + 34 s.
    assert [s.msn for s in retained] == list(range(7))
    feed.clock.advance(35.9 - feed.clock.seconds())
    assert segmenter.segment(0) is None and segmenter.segment(1) is not None
    feed.clock.advance(0.1)
    assert segmenter.segment(1) is None and segmenter.segment(2) is not None
    assert segmenter.segments[-1].complete is False


def test_a_segment_that_left_is_freed_after_its_duration_plus_the_playlist() -> None:
    """RFC 8216 6.2.2: fetchable for its duration + the playlist's after it left, then freed."""
    feed = published()
    segmenter = feed.segmenter
    left: dict[int, float] = {}

    def note() -> None:
        text = segmenter.playlist("fmp4")
        if text is not None:
            first = m3u8.loads(text).media_sequence
            for msn in range(first):
                left.setdefault(msn, feed.clock.seconds())

    segmenter.add_listener(note)
    feed.run(16.1)  # segment 0 left at 16 s, when segment 7 completed
    assert left == {0: 16.0}
    feed.unpublish()
    bytes_before = segmenter.bytes_held
    # The playlist it left held segments 0-6 and the parts of 7: 14 s and more.
    feed.clock.advance(left[0] + 2 + 14 - feed.clock.seconds() + 1.9)
    assert segmenter.segment(0) is not None and segmenter.part(0, 0) is not None
    feed.clock.advance(0.1)
    assert segmenter.segment(0) is None and segmenter.part(0, 3) is None
    assert segmenter.segments[0].msn > 0
    assert segmenter.bytes_held < bytes_before


# --- the memory bound ------------------------------------------------------------------


def segment_bytes(feed: Feed) -> int:
    complete = feed.complete()
    return max(len(s.mp4()) + len(s.ts) for s in complete)


def test_max_bytes_drops_retained_segments_before_listed_ones() -> None:
    """A bound of about 9 segments: the window stays whole, fewer retained, the bound kept."""
    probe = published()
    probe.run(5)
    size = segment_bytes(probe)
    bound = int(9.5 * size)
    feed = published(HlsSettings(max_bytes=bound))
    segmenter = feed.segmenter
    held: list[int] = []
    segmenter.add_listener(lambda: held.append(segmenter.bytes_held))
    feed.run(40)
    assert max(held) <= bound
    assert len(listed_msns(feed)) == 7
    complete = feed.complete()
    assert len(complete) < 7 + 9, "fewer retained than the lifetime alone would keep"
    assert [s.msn for s in segmenter.segments] == list(
        range(segmenter.segments[0].msn, segmenter.next_msn + 1)
    )


def test_max_bytes_shrinks_the_window_but_never_drops_the_segment_in_progress() -> None:
    """A bound below three segments: the playlist lists fewer, the one in progress stays whole."""
    probe = published()
    probe.run(5)
    size = segment_bytes(probe)
    feed = published(HlsSettings(max_bytes=int(2.5 * size)))
    segmenter = feed.segmenter
    feed.run(20)
    assert segmenter.bytes_held <= 2.5 * size
    listed = listed_msns(feed)
    assert 1 <= len(listed) <= 2 and listed[-1] == segmenter.next_msn - 1
    current = segmenter.segments[-1]
    assert not current.complete and current.parts[0].index == 0
    # Smaller than one segment: only the segment in progress remains.
    tiny = published(HlsSettings(max_bytes=size // 3))
    tiny.run(9)
    assert [s.complete for s in tiny.segmenter.segments] == [False]
    assert tiny.segmenter.bytes_held > size // 3
    text = tiny.segmenter.playlist("fmp4")
    assert text is not None and "#EXTINF" not in text and "#EXT-X-PART:" in text
    assert tiny.segmenter.playlist("ts") is None
    assert tiny.segmenter.init_segment(0) is not None, "the init in use stays"


# --- new timelines --------------------------------------------------------------------


def test_republish_with_the_same_headers_keeps_the_init_segment() -> None:
    """Same sequence headers after a republish: the same init, a discontinuity, msn going on."""
    feed = published()
    feed.run(5)
    feed.unpublish()
    feed.publish()
    feed.run(3)
    segments = feed.segmenter.segments
    assert [s.msn for s in segments] == list(range(len(segments)))
    assert [s.discontinuity for s in segments] == [False, False, False, True, False]
    assert {s.init for s in segments} == {0}
    assert feed.segmenter.init_segment(1) is None


def test_a_new_sequence_header_starts_a_new_init_segment() -> None:
    """New avcC bytes mid-stream: the segment ends, the next is tagged and uses init 1."""
    feed = published()
    feed.run(3)
    # The same header again changes nothing.
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 3000, AVC_SEQUENCE_HEADER))
    assert feed.segmenter.segments[-1].complete is False
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 3000, AVC_SEQUENCE_HEADER_2))
    assert [(s.msn, s.complete, round(s.duration, 3)) for s in feed.segmenter.segments] == [
        (0, True, 2.0),
        # Its last frame's duration is estimated (the frame before lasted 33 ms).
        (1, True, 0.999),
    ]
    # Inter frames until the next keyframe (at 4 s) are dropped; then init 1.
    feed.run(3)
    new = feed.segmenter.segments[2]
    assert (new.msn, new.discontinuity, new.init) == (2, True, 1)
    assert new.parts[0].independent
    init = feed.segmenter.init_segment(1)
    assert init is not None
    assert read_init(parse_boxes(init)).tracks[0].config == AVCC_2
    text = feed.segmenter.playlist("fmp4")
    assert text is not None
    tags = '#EXTINF:0.99900,\nseg-1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init-1.mp4"\n'
    assert tags + '#EXT-X-PART:DURATION=0.20000,URI="part-2-0.m4s",INDEPENDENT=YES\n' in text


def jump(feed: Feed, seconds: float) -> None:
    """Make the publisher's clock jump by *seconds* (back when negative)."""
    feed.video_index += round(seconds * feed.fps)
    feed.audio_index += round(seconds * SAMPLE_RATE / AAC_FRAME)
    feed.session_start -= seconds


@pytest.mark.parametrize("step", [-(MAX_STEP_BACK_MS + 1000) / 1000, (MAX_GAP_MS + 2000) / 1000])
def test_a_timestamp_jump_starts_a_new_timeline(step: float) -> None:
    """Timestamps jumping back or far ahead: the segment ends, the next is a discontinuity."""
    feed = published()
    feed.run(5)
    jump(feed, step)
    feed.run(5)
    segments = feed.segmenter.segments
    tagged = [s.msn for s in segments if s.discontinuity]
    assert tagged == [3]
    assert segments[2].duration == pytest.approx(1.0, abs=0.002)
    assert {s.init for s in segments} == {0}


def test_a_small_step_back_is_held_at_the_last_time() -> None:
    """A frame 26 ms before the last one (jitter): no discontinuity, durations never negative."""
    feed = published(audio=False)
    feed.run(1)  # the last frame at 966 ms
    feed.stream.broadcast(video_message(940, key=False, index=999))
    feed.run(3)
    assert feed.stream.consumers == [feed.segmenter] and feed.segmenter.failure is None
    assert not any(s.discontinuity for s in feed.segmenter.segments)
    assert feed.complete()[0].duration == pytest.approx(2.0)


@pytest.mark.parametrize("late_ms", [50, 400])
def test_an_audio_header_after_the_first_keyframe(late_ms: int) -> None:
    """Before the first part is out the segment is made again with audio; after, a new timeline."""
    feed = Feed()
    feed.stream.publish(feed.publisher)
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 0, AVC_SEQUENCE_HEADER))
    feed.video_index = feed.audio_index = 0
    feed.session_start = 0.0
    feed.audio = False
    feed.run(late_ms / 1000)
    feed.stream.broadcast(Message(MessageType.AUDIO, 1, late_ms, AAC_SEQUENCE_HEADER))
    feed.audio = True
    feed.audio_index = round(late_ms / 1000 * SAMPLE_RATE / AAC_FRAME) + 1
    feed.run(4)
    segments = feed.segmenter.segments
    inits = {s.init for s in segments}
    if late_ms < 200:
        assert not any(s.discontinuity for s in segments) and inits == {0}
        assert segments[0].parts[0].duration == pytest.approx(0.2)
    else:
        assert [s.discontinuity for s in segments] == [False, True, False]
        assert [s.init for s in segments] == [0, 1, 1]
        assert segments[0].duration == pytest.approx(late_ms / 1000, abs=0.002)
    last = feed.segmenter.init_segment(max(inits))
    assert last is not None
    assert [t.handler for t in read_init(parse_boxes(last)).tracks] == [b"vide", b"soun"]
