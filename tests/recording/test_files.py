"""The bytes of recording files: fMP4 and FLV writers, their patches, and the crash scanners."""

from __future__ import annotations

import io
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec import amf0
from streamserver.codec.flv import TAG_AUDIO, TAG_VIDEO, FLVReader
from streamserver.codec.fmp4 import Mp4Sample
from streamserver.codec.samples import Track, parse_tag
from streamserver.media.tracks import AUDIO_TRACK_ID, VIDEO_TRACK_ID, mp4_track
from streamserver.recording.files import (
    FLV_METADATA_OFFSET,
    METADATA_FIELDS,
    FlvFile,
    Fmp4File,
    flv_metadata,
    scan_flv,
    scan_fmp4,
)
from tests.codec.mp4_reader import parse_boxes, read_file
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER


def tracks() -> list:
    video = parse_tag(TAG_VIDEO, AVC_SEQUENCE_HEADER, 0)
    audio = parse_tag(TAG_AUDIO, AAC_SEQUENCE_HEADER, 0)
    assert video is not None and audio is not None
    result = [mp4_track(Track.VIDEO, video, (640, 360)), mp4_track(Track.AUDIO, audio, (0, 0))]
    assert all(result)
    return result


def fmp4_bytes(fragments: int = 3) -> tuple[bytes, list[int]]:
    """A recording of *fragments* fragments of 1 s (30 video frames, 43 AAC frames at 44.1 kHz).

    Returns the bytes (duration patched) and the end offset of each fragment.
    """
    muxer = Fmp4File(tracks())
    data = bytearray(muxer.header)
    ends = []
    for n in range(fragments):
        video = [
            Mp4Sample(n * 90000 + i * 3000, b"\x00\x00\x00\x02\x65\x01", i == 0) for i in range(30)
        ]
        audio = [Mp4Sample(n * 44032 + i * 1024, b"\x21" * 8) for i in range(43)]
        data += muxer.fragment(
            {VIDEO_TRACK_ID: video, AUDIO_TRACK_ID: audio},
            {VIDEO_TRACK_ID: (n + 1) * 90000, AUDIO_TRACK_ID: (n + 1) * 44032},
        )
        ends.append(len(data))
    offset, patch = muxer.duration_patch(float(fragments))
    data[offset : offset + len(patch)] = patch
    return bytes(data), ends


def mvhd_duration(data: bytes) -> int:
    moov = next(b for b in parse_boxes(data) if b.type == b"moov")
    mvhd = moov.one(b"mvhd")
    return int(struct.unpack_from(">I", mvhd.payload, 16)[0])


def test_an_fmp4_recording_is_an_init_segment_then_fragments_stating_its_duration() -> None:
    """Init + fragments read back; the patched mvhd says 3000 ms."""
    data, ends = fmp4_bytes(3)
    init, fragments = read_file(data)
    assert [t.track_id for t in init.tracks] == [VIDEO_TRACK_ID, AUDIO_TRACK_ID]
    assert len(fragments) == 3
    assert mvhd_duration(data) == 3000
    assert ends[-1] == len(data)


def test_scan_fmp4_keeps_the_complete_fragments_of_a_cut_file() -> None:
    """Cut inside the third fragment: two fragments are whole, 2 s of media."""
    data, ends = fmp4_bytes(3)
    cut = data[: ends[2] - 100]
    found = scan_fmp4(io.BytesIO(cut), len(cut))
    assert found is not None
    assert found.length == ends[1]
    assert abs(found.duration - 2.0) < 0.01
    assert found.patch is not None
    offset, patch = found.patch
    fixed = bytearray(cut[: found.length])
    fixed[offset : offset + 4] = patch
    assert mvhd_duration(bytes(fixed)) == 2000
    assert len(read_file(bytes(fixed))[1]) == 2


def test_scan_fmp4_of_a_whole_file_keeps_it_all() -> None:
    data, _ = fmp4_bytes(2)
    found = scan_fmp4(io.BytesIO(data), len(data))
    assert found is not None and found.length == len(data)
    assert abs(found.duration - 2.0) < 0.01


def test_scan_fmp4_without_a_moov_finds_nothing() -> None:
    data, _ = fmp4_bytes(1)
    ftyp_size = struct.unpack_from(">I", data)[0]
    assert scan_fmp4(io.BytesIO(data[: ftyp_size + 20]), ftyp_size + 20) is None
    assert scan_fmp4(io.BytesIO(b""), 0) is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_scan_fmp4_of_any_truncation_or_corruption_never_raises(data: st.DataObject) -> None:
    """Cut anywhere, bytes flipped anywhere: a Recovered within the bytes, or None."""
    whole, _ = fmp4_bytes(2)
    cut = data.draw(st.integers(0, len(whole)))
    damaged = bytearray(whole[:cut])
    for _ in range(data.draw(st.integers(0, 3))):
        if damaged:
            at = data.draw(st.integers(0, len(damaged) - 1))
            damaged[at] = data.draw(st.integers(0, 255))
    found = scan_fmp4(io.BytesIO(bytes(damaged)), len(damaged))
    if found is not None:
        assert 0 < found.length <= len(damaged)
        assert found.duration >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_scanners_take_garbage(garbage: bytes) -> None:
    for scan in (scan_fmp4, scan_flv):
        found = scan(io.BytesIO(garbage), len(garbage))
        assert found is None or found.length <= len(garbage)


# --- FLV


def flv_bytes(tags: int = 50) -> tuple[bytes, list[int]]:
    muxer = FlvFile({"width": 640, "height": 360, "framerate": 25, "videocodecid": 7})
    data = bytearray(muxer.header)
    data += muxer.tag(TAG_VIDEO, 0, AVC_SEQUENCE_HEADER)
    ends = []
    for i in range(tags):
        data += muxer.tag(TAG_VIDEO, i * 40, b"\x27\x01\x00\x00\x00" + bytes(20))
        ends.append(len(data))
    offset, patch = muxer.metadata_patch(duration=(tags - 1) * 0.04, filesize=len(data))
    data[offset : offset + len(patch)] = patch
    return bytes(data), ends


def metadata_of(data: bytes) -> dict:
    tags = FLVReader().receive_data(data)
    values = amf0.decode_all(tags[0].payload)
    assert values[0] == "onMetaData"
    return dict(values[1])


def test_the_flv_metadata_has_every_field_at_a_fixed_size() -> None:
    small = flv_metadata({})
    large = flv_metadata({"duration": 1e9, "width": 3840, "stereo": True, "filesize": 2**40})
    assert len(small) == len(large)
    assert list(metadata_of(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + large)) == list(
        METADATA_FIELDS
    )
    assert flv_metadata({"duration": float("nan")}) == small


def test_an_flv_recording_states_its_duration_and_size_once_patched() -> None:
    data, _ = flv_bytes(50)
    meta = metadata_of(data)
    assert meta["duration"] == 49 * 0.04
    assert meta["filesize"] == len(data)
    assert meta["width"] == 640
    assert len(FLVReader().receive_data(data)) == 52


def test_scan_flv_keeps_the_complete_tags_and_patches_the_metadata() -> None:
    data, ends = flv_bytes(50)
    unpatched = bytearray(data)
    unpatched[FLV_METADATA_OFFSET : FLV_METADATA_OFFSET + len(flv_metadata({}))] = flv_metadata({})
    cut = bytes(unpatched[: ends[29] + 7])
    found = scan_flv(io.BytesIO(cut), len(cut))
    assert found is not None
    assert found.length == ends[29]
    assert found.duration == 29 * 0.04
    assert found.patch is not None
    fixed = bytearray(cut[: found.length])
    offset, patch = found.patch
    fixed[offset : offset + len(patch)] = patch
    meta = metadata_of(bytes(fixed))
    assert meta["duration"] == 29 * 0.04
    assert meta["filesize"] == ends[29]


def test_scan_flv_without_our_metadata_has_no_patch() -> None:
    muxer = FlvFile({})
    data = muxer.header[:13] + muxer.tag(TAG_VIDEO, 80, b"\x17\x01\x00\x00\x00")
    found = scan_flv(io.BytesIO(data), len(data))
    assert found is not None and found.patch is None
    assert found.length == len(data) and found.duration == 0.08
    assert scan_flv(io.BytesIO(b"FLX" + data[3:]), len(data)) is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_scan_flv_of_any_truncation_or_corruption_never_raises(data: st.DataObject) -> None:
    whole, _ = flv_bytes(10)
    cut = data.draw(st.integers(0, len(whole)))
    damaged = bytearray(whole[:cut])
    for _ in range(data.draw(st.integers(0, 3))):
        if damaged:
            at = data.draw(st.integers(0, len(damaged) - 1))
            damaged[at] = data.draw(st.integers(0, 255))
    found = scan_flv(io.BytesIO(bytes(damaged)), len(damaged))
    if found is not None:
        assert 0 < found.length <= len(damaged)
        if found.patch is not None:
            offset, patch = found.patch
            assert offset + len(patch) <= found.length
