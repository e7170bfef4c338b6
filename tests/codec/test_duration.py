"""The duration a recording states: fMP4 mvhd / mehd, FLV onMetaData; garbage is a ProtocolError."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec import amf0
from streamserver.codec.duration import HEAD_BYTES, flv_duration, mp4_duration
from streamserver.codec.flv import TAG_SCRIPT_DATA, TAG_VIDEO, FLVTag, encode_header, encode_tag
from streamserver.codec.isobmff import box, full_box
from streamserver.errors import ProtocolError

_FTYP = box(b"ftyp", b"iso6", struct.pack(">I", 512), b"iso6mp41")


def _mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        fields = struct.pack(">QQIQ", 0, 0, timescale, duration)
    else:
        fields = struct.pack(">IIII", 0, 0, timescale, duration)
    return full_box(b"mvhd", version, 0, fields, bytes(80))


def _mehd(duration: int, version: int = 0) -> bytes:
    return full_box(b"mehd", version, 0, struct.pack(">Q" if version else ">I", duration))


def _mp4(*moov: bytes, tail: bytes = b"") -> bytes:
    return _FTYP + box(b"moov", *moov) + tail


def test_mvhd_duration_over_timescale() -> None:
    """mvhd's duration / timescale, in version 0 and 1; mdat after the moov is not read."""
    assert mp4_duration(_mp4(_mvhd(1000, 12_345))) == 12.345
    assert mp4_duration(_mp4(_mvhd(90_000, 90_000 * 3600, version=1))) == 3600.0
    cut = _mp4(_mvhd(1000, 6000)) + struct.pack(">I4s", 10**9, b"mdat") + bytes(100)
    assert mp4_duration(cut) == 6.0


def test_a_fragmented_file_without_a_patched_duration() -> None:
    """mvhd 0 falls back on mvex/mehd; neither (or 'unknown' all ones) is None."""
    assert mp4_duration(_mp4(_mvhd(1000, 0), box(b"mvex", _mehd(2500)))) == 2.5
    assert mp4_duration(_mp4(_mvhd(1000, 0), box(b"mvex", _mehd(7000, version=1)))) == 7.0
    assert mp4_duration(_mp4(_mvhd(1000, 0))) is None
    assert mp4_duration(_mp4(_mvhd(1000, 0xFFFFFFFF))) is None
    assert mp4_duration(_mp4(_mvhd(0, 1000))) is None
    assert mp4_duration(_FTYP) is None
    assert mp4_duration(b"") is None
    # the media first, the moov at the end (out of reach of the head read)
    assert mp4_duration(_FTYP + struct.pack(">I4s", 10**9, b"mdat")) is None


@pytest.mark.parametrize(
    "data",
    [
        _FTYP + struct.pack(">I4s", 4, b"moov"),  # smaller than its header
        _FTYP + struct.pack(">I4s", 100, b"moov") + bytes(20),  # the moov cut
        _mp4(struct.pack(">I4s", 64, b"mvhd")),  # runs past its parent
        _mp4(full_box(b"mvhd", 2, 0, bytes(100))),  # unknown version
        _mp4(full_box(b"mvhd", 0, 0, bytes(8))),  # too short for its fields
        _mp4(box(b"mvex", b"\x00\x00\x00")),  # stray bytes
    ],
)
def test_malformed_boxes_raise_protocol_errors(data: bytes) -> None:
    """Sizes that lie and fields that are missing are CodecErrors."""
    with pytest.raises(ProtocolError):
        mp4_duration(data)


def _flv(*tags: FLVTag) -> bytes:
    return encode_header() + b"".join(encode_tag(tag) for tag in tags)


def _metadata(value: object) -> FLVTag:
    return FLVTag(TAG_SCRIPT_DATA, 0, amf0.encode("onMetaData", value))


def test_flv_onmetadata_duration() -> None:
    """The first tag's onMetaData duration; no metadata or no duration is None."""
    assert flv_duration(_flv(_metadata(amf0.ECMAArray(duration=12.5, width=320.0)))) == 12.5
    assert flv_duration(_flv(_metadata({"duration": 3.0}))) == 3.0
    assert flv_duration(_flv(_metadata({"duration": 0.0}))) is None
    assert flv_duration(_flv(_metadata({"duration": "long"}))) is None
    assert flv_duration(_flv(_metadata({"width": 1.0}))) is None
    assert flv_duration(_flv(FLVTag(TAG_VIDEO, 0, b"\x17\x00"))) is None
    assert flv_duration(_flv()) is None
    assert flv_duration(_flv(_metadata({"duration": 4.0}))[:30]) is None  # cut by the read
    with pytest.raises(ProtocolError):
        flv_duration(b"MP4 not flv")
    with pytest.raises(ProtocolError):
        flv_duration(_flv(FLVTag(TAG_SCRIPT_DATA, 0, b"\x02\xff\xff")))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_protocol_errors(data: bytes) -> None:
    """Random bytes, alone or after a valid head, yield a number, None or a ProtocolError."""
    for reader, head in ((mp4_duration, _FTYP), (flv_duration, encode_header() + b"\x00" * 4)):
        for candidate in (data, head + data, b"FLV" + data):
            try:
                result = reader(candidate)
            except ProtocolError:
                continue
            assert result is None or result > 0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_a_valid_file_with_one_byte_changed(position: int, value: int) -> None:
    """A valid moov or onMetaData with a byte overwritten never raises anything else."""
    for reader, valid in (
        (mp4_duration, _mp4(_mvhd(1000, 5000), box(b"mvex", _mehd(5000)))),
        (flv_duration, _flv(_metadata({"duration": 5.0}))),
    ):
        data = bytearray(valid)
        data[position % len(data)] = value
        with contextlib.suppress(ProtocolError):
            reader(bytes(data))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg")
def test_files_written_by_ffmpeg(tmp_path: Path) -> None:
    """ffmpeg's fragmented MP4 (empty_moov) states no duration; its FLV states 2 s."""
    source = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-t", "2", "-c:v", "libx264"]
    mp4, flv = tmp_path / "a.mp4", tmp_path / "a.flv"
    for argv in (
        [*source, "-movflags", "+frag_keyframe+empty_moov+default_base_moof", str(mp4)],
        [*source, str(flv)],
    ):
        subprocess.run(["ffmpeg", "-v", "error", "-y", *argv], check=True, timeout=60)
    assert mp4_duration(mp4.read_bytes()[:HEAD_BYTES]) is None
    duration = flv_duration(flv.read_bytes()[:HEAD_BYTES])
    assert duration is not None and abs(duration - 2.0) < 0.1
