"""The recorder over task.Clock and a temporary directory: files, cuts, grace, paths, failures."""

from __future__ import annotations

import errno
import io
import itertools
from pathlib import Path
from typing import BinaryIO

import pytest

from streamserver.codec import amf0
from streamserver.codec.flv import FLVReader
from streamserver.codec.messages import Message, MessageType
from streamserver.recording.paths import PART_SUFFIX
from streamserver.recording.writer import ManualWriter
from tests.codec.mp4_reader import FragmentInfo, parse_boxes, read_file
from tests.media.test_hls import AVC_SEQUENCE_HEADER_2
from tests.recording.support import Feed

VIDEO, AUDIO = 1, 2


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def mvhd_ms(data: bytes) -> int:
    moov = next(b for b in parse_boxes(data) if b.type == b"moov")
    return int.from_bytes(moov.one(b"mvhd").payload[16:20], "big")


def video_track(fragments: list[FragmentInfo]) -> list[tuple[int, int, bool]]:
    """(dts, duration, sync) of every video sample of a file, in order."""
    out = []
    for fragment in fragments:
        for traf in fragment.trafs:
            if traf.track_id == VIDEO:
                dts = traf.base_decode_time
                for sample in traf.samples:
                    out.append((dts, sample.duration, sample.is_sync))
                    dts += sample.duration
    return out


def track_seconds(fragments: list[FragmentInfo], track_id: int, timescale: int) -> float:
    total = sum(
        s.duration for f in fragments for t in f.trafs if t.track_id == track_id for s in t.samples
    )
    return total / timescale


def test_a_published_stream_becomes_one_finished_fmp4_file(tmp_path: Path) -> None:
    """5 s published, then unpublished (grace 0): one .mp4, 5 s long, fragments of 1 s."""
    feed = Feed(tmp_path, reconnect_grace=0)
    feed.publish()
    feed.run(2.5)
    [part] = files(tmp_path)
    assert part.name.endswith(".mp4" + PART_SUFFIX)
    assert part.parent == tmp_path / "live" / "cam"
    assert part.name.startswith("cam-20251201T120000Z")
    feed.run(2.5)
    feed.unpublish()
    [path] = files(tmp_path)
    assert path.suffix == ".mp4"
    data = path.read_bytes()
    init, fragments = read_file(data)
    assert len(init.tracks) == 2
    assert 4 <= len(fragments) <= 6
    samples = video_track(fragments)
    assert len(samples) == 125
    assert samples[0] == (0, 3600, True)
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(samples))
    assert track_seconds(fragments, VIDEO, 90000) == pytest.approx(5.0)
    assert track_seconds(fragments, AUDIO, 44100) == pytest.approx(5.0, abs=0.05)
    assert mvhd_ms(data) == pytest.approx(5000, abs=30)
    [done] = feed.done
    assert done.reason == "unpublish" and done.path == path and done.format == "fmp4"
    assert done.size == len(data)
    assert done.duration == pytest.approx(5.0, abs=0.03)
    assert feed.closed == [feed.recorder] and feed.stream.consumers == []


def test_files_are_cut_at_the_first_keyframe_after_the_segment_duration(tmp_path: Path) -> None:
    """3 s segments of a stream with a keyframe every 2 s: files of 4, 4 and 2 s."""
    feed = Feed(tmp_path, reconnect_grace=0, segment_seconds=3)
    feed.publish()
    feed.run(10)
    feed.unpublish()
    paths = [p for p in files(tmp_path) if p.suffix == ".mp4"]
    assert len(paths) == 3
    assert [d.reason for d in feed.done] == ["segment", "segment", "unpublish"]
    assert [d.duration for d in feed.done] == pytest.approx([4.0, 4.0, 2.0], abs=0.05)
    for done in feed.done:
        _, fragments = read_file(done.path.read_bytes())
        samples = video_track(fragments)
        assert samples[0][0] == 0 and samples[0][2], "every file starts at 0 with a keyframe"
    # Names differ: the same second gets -1, -2...
    assert len({p.name for p in paths}) == 3


def test_the_size_limit_cuts_at_the_next_keyframe(tmp_path: Path) -> None:
    """Frames of 3000 bytes at 25 fps (75 kB/s), a 64 KiB limit: a file per 2 s GOP."""
    feed = Feed(tmp_path, reconnect_grace=0, max_bytes=65536, frame_size=3000)
    feed.publish()
    feed.run(6)
    feed.unpublish()
    assert [d.reason for d in feed.done] == ["size", "size", "unpublish"]
    for done in feed.done:
        assert done.size < 65536 + 2 * 75_000
        _, fragments = read_file(done.path.read_bytes())
        assert video_track(fragments)[0][2]


def test_a_publisher_back_within_the_grace_continues_the_file(tmp_path: Path) -> None:
    """Unpublished 3 s, back for 2 s: one file, its timestamps going on without going back."""
    feed = Feed(tmp_path, reconnect_grace=10)
    feed.publish()
    feed.run(4)
    feed.unpublish()
    assert feed.done == [] and feed.closed == []
    feed.clock.advance(3)
    feed.publish()
    feed.run(2)
    feed.unpublish()
    assert feed.done == []
    feed.clock.advance(9.9)
    assert feed.done == []
    feed.clock.advance(0.2)
    feed.flush()
    [done] = feed.done
    assert done.reason == "unpublish"
    _, fragments = read_file(done.path.read_bytes())
    samples = video_track(fragments)
    assert len(samples) == 150
    assert all(b[0] > a[0] for a, b in itertools.pairwise(samples))
    assert done.duration == pytest.approx(6.0, abs=0.1)
    assert feed.closed == [feed.recorder]


def test_a_publisher_back_after_the_grace_gets_a_new_recorder(tmp_path: Path) -> None:
    feed = Feed(tmp_path, reconnect_grace=2)
    feed.publish()
    feed.run(2)
    feed.unpublish()
    feed.clock.advance(2.5)
    feed.flush()
    assert [d.reason for d in feed.done] == ["unpublish"]
    assert feed.recorder.closed and feed.stream.consumers == []


def test_a_republish_with_another_codec_configuration_starts_a_new_file(tmp_path: Path) -> None:
    feed = Feed(tmp_path, reconnect_grace=10)
    feed.publish()
    feed.run(2)
    feed.unpublish()
    feed.publish(video_header=AVC_SEQUENCE_HEADER_2)
    feed.run(2)
    feed.flush()
    assert [d.reason for d in feed.done] == ["unpublish"]
    feed.recorder.close()
    feed.flush()
    assert [d.reason for d in feed.done] == ["unpublish", "shutdown"]
    first, second = (read_file(d.path.read_bytes())[0] for d in feed.done)
    assert first.tracks[0].config != second.tracks[0].config


def test_an_audio_only_stream_starts_at_its_first_audio_frame(tmp_path: Path) -> None:
    feed = Feed(tmp_path, reconnect_grace=0, video=False)
    feed.publish()
    feed.run(3)
    feed.unpublish()
    [done] = feed.done
    init, fragments = read_file(done.path.read_bytes())
    assert [t.handler for t in init.tracks] == [b"soun"]
    assert track_seconds(fragments, AUDIO, 44100) == pytest.approx(3.0, abs=0.05)


def test_media_before_the_first_keyframe_is_not_recorded(tmp_path: Path) -> None:
    feed = Feed(tmp_path, reconnect_grace=0)
    feed.publish()
    inter = b"\x27\x01\x00\x00\x00\x00\x00\x00\x01\x41"
    feed.stream.broadcast(Message(MessageType.VIDEO, 1, 0, inter))
    feed.flush()
    assert files(tmp_path) == []


def test_an_flv_recording_plays_before_and_states_its_duration_after(tmp_path: Path) -> None:
    """FLV: header, onMetaData, sequence headers at 0, tags from 0; patched at close."""
    feed = Feed(tmp_path, reconnect_grace=0, format="flv")
    feed.publish()
    feed.run(3)
    [part] = files(tmp_path)
    before = FLVReader().receive_data(part.read_bytes())
    meta = dict(amf0.decode_all(before[0].payload)[1])
    assert meta["duration"] == 0 and meta["width"] == 640 and meta["videocodecid"] == 7
    assert meta["audiocodecid"] == 10
    assert [t.tag_type for t in before[1:3]] == [9, 8] and before[1].timestamp == 0
    feed.run(1)
    feed.unpublish()
    [done] = feed.done
    data = done.path.read_bytes()
    tags = FLVReader().receive_data(data)
    meta = dict(amf0.decode_all(tags[0].payload)[1])
    assert meta["duration"] == pytest.approx(4.0, abs=0.05)
    assert meta["filesize"] == len(data) == done.size
    video = [t for t in tags[3:] if t.tag_type == 9]
    assert len(video) == 100 and video[0].timestamp == 0 and video[0].payload[0] == 0x17


@pytest.mark.parametrize(
    "name", ["../../escape", "/etc/passwd", "a\0b", "x" * 5000, "..", "sub/dir\\name"]
)
def test_every_stream_name_stays_inside_the_directory(tmp_path: Path, name: str) -> None:
    root = tmp_path / "rec"
    feed = Feed(root, app="../app", name=name, reconnect_grace=0)
    feed.publish()
    feed.run(1)
    feed.unpublish()
    [done] = feed.done
    assert done.path.resolve().is_relative_to(root.resolve())
    assert [p.parent.parent.parent for p in files(tmp_path)] == [root]
    assert len(done.path.name) < 255


# --- failures


class FullDisk(io.BytesIO):
    """A file that takes *room* bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_drops_the_recording_only(tmp_path: Path) -> None:
    """ENOSPC: reported once with reason error, the recorder detaches, the stream goes on."""
    opened: list[BinaryIO] = []

    def opener(path: Path) -> BinaryIO:
        file = FullDisk(20_000)
        opened.append(file)
        return file

    feed = Feed(tmp_path, reconnect_grace=0, opener=opener)
    feed.publish()
    feed.run(3)
    [done] = feed.done
    assert done.reason == "error" and done.error is not None
    assert "No space left" in done.error
    assert feed.closed == [feed.recorder] and feed.stream.consumers == []
    assert feed.recorder.failure is not None
    feed.run(1)  # the stream goes on without it
    feed.unpublish()
    assert len(feed.done) == 1 and len(opened) == 1


def test_a_full_queue_drops_the_recording(tmp_path: Path) -> None:
    """A writer that never gets to run: past its bound the recording is dropped, with numbers."""
    writer = ManualWriter(max_bytes=100_000)
    feed = Feed(tmp_path, reconnect_grace=0, writer=writer, frame_size=3000)
    feed.publish()
    feed.flush = lambda: None  # type: ignore[method-assign]
    feed.run(3)
    [done] = feed.done
    assert done.reason == "error" and done.error is not None
    assert "queue is full" in done.error and "bound 100000" in done.error
    assert writer.refused == 1
    assert feed.stream.consumers == []
    writer.run()
    assert writer.queued_bytes == 0
