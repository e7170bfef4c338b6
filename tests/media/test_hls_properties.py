"""The segmenter over streams hypothesis makes up: what must hold whatever the publisher does.

Frame rates, GOPs, timestamp jitter, audio ahead of or behind video, a
republish, a new sequence header, a timestamp jump, audio or video alone:
the segmenter never fails (it is never detached), sequence numbers are
consecutive, every playlist keeps the rules, every segment starts with an
independent part, the fMP4 of each run of segments between discontinuities
reads back with contiguous decode times, and every TS segment reads back.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.messages import Message, MessageType
from streamserver.media.hls import Segment, Segmenter
from tests.codec.mp4_reader import read_file
from tests.codec.ts_reader import read_ts
from tests.media.test_hls import (
    AAC_FRAME,
    AVC_SEQUENCE_HEADER_2,
    SAMPLE_RATE,
    Feed,
    audio_message,
    video_message,
)
from tests.media.test_hls_playlist import check_fmp4


@dataclass(frozen=True)
class Scenario:
    fps: int
    gop: int
    seconds: float
    jitter: tuple[int, ...]
    audio_offset_ms: int
    video: bool
    audio: bool
    event: str
    event_at: float


scenarios = st.builds(
    Scenario,
    fps=st.sampled_from([15, 24, 25, 30, 50, 60]),
    gop=st.integers(min_value=10, max_value=150),
    seconds=st.floats(min_value=1.0, max_value=12.0),
    jitter=st.lists(st.integers(min_value=-4, max_value=4), min_size=1, max_size=8).map(tuple),
    audio_offset_ms=st.integers(min_value=-300, max_value=300),
    video=st.booleans(),
    audio=st.booleans(),
    event=st.sampled_from(["none", "republish", "header", "jump back", "jump ahead"]),
    event_at=st.floats(min_value=0.0, max_value=1.0),
).filter(lambda s: s.video or s.audio)


def messages(scenario: Scenario, start: float, end: float) -> list[Message]:
    """The media of [start, end) seconds of the publisher's clock, in time order."""
    out: list[tuple[int, int, Message]] = []
    if scenario.video:
        first = int(start * scenario.fps)
        for index in range(first, int(end * scenario.fps)):
            jitter = scenario.jitter[index % len(scenario.jitter)]
            timestamp = max(0, index * 1000 // scenario.fps + jitter)
            key = index % scenario.gop == 0
            out.append((timestamp, 0, video_message(timestamp, key=key, index=index)))
    if scenario.audio:
        per_second = SAMPLE_RATE / AAC_FRAME
        for index in range(int(start * per_second), int(end * per_second)):
            timestamp = max(0, index * AAC_FRAME * 1000 // SAMPLE_RATE + scenario.audio_offset_ms)
            out.append((timestamp, 1, audio_message(timestamp, index=index)))
    out.sort(key=lambda item: (item[0], item[1]))
    return [message for _, _, message in out]


def check_timeline(segmenter: Segmenter, run: list[Segment]) -> None:
    """init + the segments of one run read back: sequence numbers and decode times go on."""
    init = segmenter.init_segment(run[0].init)
    assert init is not None
    _, fragments = read_file(init + b"".join(s.mp4() for s in run))
    ends: dict[int, int] = {}
    for fragment in fragments:
        for traf in fragment.trafs:
            if traf.track_id in ends:
                assert traf.base_decode_time == ends[traf.track_id]
            ends[traf.track_id] = traf.base_decode_time + sum(s.duration for s in traf.samples)
    numbers = [f.sequence_number for f in fragments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


@settings(max_examples=150, deadline=None)
@given(scenarios)
def test_whatever_the_publisher_does_the_segmenter_holds(scenario: Scenario) -> None:
    """No failure, consecutive numbers, valid playlists, readable fMP4 runs and TS segments."""
    feed = Feed(video=scenario.video, audio=scenario.audio)
    segmenter = feed.segmenter
    failures: list[BaseException] = []

    def served() -> None:
        try:
            text = segmenter.playlist("fmp4")
            if text is not None:
                check_fmp4(segmenter, text)
        except BaseException as error:  # reported below: a listener's error is kept, not raised
            failures.append(error)

    segmenter.add_listener(served)
    feed.publish()
    event_at = scenario.seconds * scenario.event_at
    for message in messages(scenario, 0, event_at):
        feed.stream.broadcast(message)
    offset = 0
    if scenario.event == "republish":
        feed.unpublish()
        feed.publish()
    elif scenario.event == "header" and scenario.video:
        feed.stream.broadcast(
            Message(MessageType.VIDEO, 1, int(event_at * 1000), AVC_SEQUENCE_HEADER_2)
        )
    elif scenario.event == "jump back":
        offset = -5000
    elif scenario.event == "jump ahead":
        offset = 60_000
    for message in messages(scenario, event_at, scenario.seconds):
        timestamp = message.timestamp + offset
        if timestamp >= 0:  # a jump back to 0 goes on from there
            feed.stream.broadcast(Message(message.type_id, 1, timestamp, message.payload))
    feed.unpublish()

    assert failures == []
    assert segmenter.failure is None and feed.stream.consumers == [segmenter]
    segments = segmenter.segments
    numbers = [s.msn for s in segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True
    assert all(s.complete for s in segments)
    runs: list[list[Segment]] = []
    for segment in segments:
        assert segment.parts and segment.parts[0].independent
        assert [p.index for p in segment.parts] == list(range(len(segment.parts)))
        assert abs(sum(p.duration for p in segment.parts) - segment.duration) < 1e-6
        read_ts(segment.ts)
        if not runs or segment.discontinuity or segment.init != runs[-1][0].init:
            runs.append([])
        runs[-1].append(segment)
    for run in runs:
        check_timeline(segmenter, run)
    held = sum(s.size for s in segments) + sum(
        len(segmenter.init_segment(n) or b"") for n in {s.init for s in segments}
    )
    assert segmenter.bytes_held >= held
