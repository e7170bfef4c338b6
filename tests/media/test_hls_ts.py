"""The segmenter's MPEG-TS variant: the same segments as the fMP4 ones, read back strictly.

Each complete segment's ``ts`` is read with the tests' TS reader (188-byte
packets, continuity counters, PES and PSI rules): PAT and PMT first, the
segment's own video and audio frames and nothing else, the first video
access unit a keyframe; consecutive segments continue each other's
continuity counters.  The variant can start switched off and be switched on
later, from the next segment.
"""

from __future__ import annotations

from streamserver.codec.messages import Message, MessageType
from streamserver.codec.mpegts import AUDIO_PID, DECODE_DELAY_MS, VIDEO_PID, StreamType
from streamserver.media.hls import Segment
from tests.codec.mp4_reader import parse_boxes, read_fragments
from tests.codec.ts_reader import read_ts, split_adts, split_annex_b
from tests.media.test_hls import Feed, published


def mp4_samples(segment: Segment) -> dict[int, list[bytes]]:
    """By track id, the sample bytes of a segment's fMP4 parts."""
    data = segment.mp4()
    samples: dict[int, list[bytes]] = {1: [], 2: []}
    for fragment in read_fragments(data, parse_boxes(data)):
        for traf in fragment.trafs:
            samples[traf.track_id] += [s.data for s in traf.samples]
    return samples


def test_ts_segments_hold_the_same_frames_as_the_fmp4_segments() -> None:
    """PAT/PMT first, a keyframe first, the same video and audio frames as the fMP4 segment."""
    feed = published()
    feed.run(9)
    complete = feed.complete()
    assert len(complete) == 4
    for segment in complete:
        ts = read_ts(segment.ts)
        assert segment.ts[:188][1:3] == b"\x40\x00", "the PAT opens the segment"
        assert ts.streams == {VIDEO_PID: StreamType.H264, AUDIO_PID: StreamType.AAC_ADTS}
        assert ts.pcr_pid == VIDEO_PID
        video = ts.pes_of(VIDEO_PID)
        assert video[0].random_access and video[0].pcr is not None
        samples = mp4_samples(segment)
        # Each access unit: an AUD, SPS and PPS before a keyframe, then the frame's NAL unit.
        units = [split_annex_b(pes.data)[-1] for pes in video]
        assert units == [sample[4:] for sample in samples[1]]
        assert split_annex_b(video[0].data)[1][0] & 0x1F == 7, "the SPS before the keyframe"
        frames = [raw for pes in ts.pes_of(AUDIO_PID) for _, raw in split_adts(pes.data)]
        assert frames == samples[2]
    # The first segment starts at 0 ms: its PTS is the 700 ms decode delay.
    assert read_ts(complete[0].ts).pes_of(VIDEO_PID)[0].pts == DECODE_DELAY_MS * 90
    # Segments follow each other: the concatenation reads as one stream.
    whole = read_ts(b"".join(s.ts for s in complete))
    assert len(whole.pes_of(VIDEO_PID)) == sum(len(mp4_samples(s)[1]) for s in complete)


def test_audio_only_ts_puts_the_pcr_on_audio() -> None:
    """Audio only: one AAC stream carrying the PCR, every frame of the segment."""
    feed = published(video=False)
    feed.run(5)
    segment = feed.complete()[0]
    ts = read_ts(segment.ts)
    assert ts.streams == {AUDIO_PID: StreamType.AAC_ADTS} and ts.pcr_pid == AUDIO_PID
    frames = [raw for pes in ts.pes_of(AUDIO_PID) for _, raw in split_adts(pes.data)]
    assert frames == mp4_samples(segment)[2]


def test_ts_can_be_switched_on_later_from_the_next_segment() -> None:
    """ts=False: no TS bytes, no TS playlist; enable_ts(): TS from the next segment on."""
    feed = published(ts=False)
    segmenter = feed.segmenter
    feed.run(5)
    assert not segmenter.ts_enabled
    assert all(s.ts == b"" for s in segmenter.segments) and segmenter.playlist("ts") is None
    init = segmenter.init_segment(0) or b""
    assert segmenter.bytes_held == sum(len(s.mp4()) for s in segmenter.segments) + len(init)
    segmenter.enable_ts()
    in_progress = segmenter.next_msn
    feed.run(4)
    by_msn = {s.msn: s for s in segmenter.segments}
    assert by_msn[in_progress].complete and by_msn[in_progress].ts == b""
    assert by_msn[in_progress + 1].ts != b""
    text = segmenter.playlist("ts")
    assert text is not None
    assert f"#EXT-X-MEDIA-SEQUENCE:{in_progress + 1}\n" in text
    assert f"seg-{in_progress}.ts" not in text


def test_bytes_held_counts_the_ts_of_the_segment_in_progress() -> None:
    """bytes_held: every part, TS segment and init segment, and the TS being made."""
    feed = published()
    feed.run(3.1)
    segmenter = feed.segmenter
    made = sum(len(s.mp4()) + len(s.ts) for s in segmenter.segments)
    init = len(segmenter.init_segment(0) or b"")
    assert segmenter.bytes_held > made + init, "the segment in progress has TS bytes already"
    feed.run(1)
    feed.unpublish()
    made = sum(len(s.mp4()) + len(s.ts) for s in segmenter.segments)
    assert segmenter.bytes_held == made + init


def mp3_message(timestamp: int, index: int) -> Message:
    """An MP3 tag: FLV sound format 2, then an MPEG-1 layer III frame (128 kbit/s, 44.1 kHz)."""
    frame = b"\xff\xfb\x90\x64" + bytes([index % 250 + 1]) * 413
    return Message(MessageType.AUDIO, 1, timestamp, b"\x2f" + frame)


def test_mp3_audio_goes_into_the_ts_variant_only() -> None:
    """H.264 + MP3 (no sequence header): one timeline, fMP4 video only, TS with both."""
    feed = Feed(audio=False)
    feed.publish()
    for index in range(int(5 * 44100 / 1152)):
        timestamp = index * 1152 * 1000 // 44100
        while feed.video_index * 1000 // feed.fps <= timestamp:
            feed.stream.broadcast(feed.next_message())
        feed.stream.broadcast(mp3_message(timestamp, index))
    segmenter = feed.segmenter
    assert not any(s.discontinuity for s in segmenter.segments)
    first = feed.complete()[0]
    assert first.msn == 0 and first.init == 0 and segmenter.init_segment(1) is None
    assert set(mp4_samples(first)) == {1, 2} and mp4_samples(first)[2] == []
    ts = read_ts(first.ts)
    assert ts.streams == {VIDEO_PID: StreamType.H264, AUDIO_PID: StreamType.MPEG1_AUDIO}
    audio = b"".join(pes.data for pes in ts.pes_of(AUDIO_PID))
    # The 77 frames before 2 s but the last, held back until the one after it came.
    assert audio.startswith(b"\xff\xfb\x90\x64") and len(audio) == 417 * 76
