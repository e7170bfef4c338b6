"""Tests for FLV file I/O and media peeking (FLV spec annex E, Enhanced RTMP)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.flv import (
    FLV_HEADER_SIZE,
    FLVReader,
    FLVTag,
    FrameKind,
    audio_codec_name,
    classify,
    encode_header,
    encode_tag,
    message_to_tag,
    read_file,
    tag_to_message,
    video_codec_name,
    video_fourcc,
)
from streamserver.codec.messages import Message
from streamserver.errors import FLVError, UsageError


def amf0_string(text: str) -> bytes:
    """AMF0 string by hand: marker 0x02, u16 length, UTF-8 bytes."""
    raw = text.encode()
    return b"\x02" + len(raw).to_bytes(2, "big") + raw


# --- header and tag vectors ------------------------------------------------------


def test_header_vector() -> None:
    """The header is 'FLV', version 1, flags 5, DataOffset 9, then PreviousTagSize0 = 0."""
    assert encode_header().hex() == "464c5601050000000900000000"
    assert encode_header(audio=False).hex() == "464c5601010000000900000000"
    assert encode_header(video=False).hex() == "464c5601040000000900000000"
    assert FLV_HEADER_SIZE == 9


def test_tag_vector() -> None:
    """A tag is type, u24 size, u24 timestamp, timestamp-extended, u24 stream 0, body, u32 size."""
    tag = FLVTag(9, 0x12345678, b"\x17\x00")
    assert encode_tag(tag).hex() == "09000002345678120000001700" + "0000000d"


def test_read_vector() -> None:
    """A hand-written file decodes to its tags, including the extended timestamp byte."""
    data = bytes.fromhex(
        "464c5601 05 00000009 00000000"
        "08 000003 000010 00 000000 af0102 0000000e"
        "09 000002 ffffff 7f 000000 2701 0000000d"
    )
    reader = FLVReader()
    assert reader.receive_data(data) == [
        FLVTag(8, 0x10, b"\xaf\x01\x02"),
        FLVTag(9, 0x7FFFFFFF, b"\x27\x01"),
    ]
    assert reader.has_audio and reader.has_video
    assert reader.at_tag_boundary


def test_encode_tag_rejects_misuse() -> None:
    """Values that do not fit the format are our misuse, not the peer's."""
    with pytest.raises(UsageError):
        encode_tag(FLVTag(9, -1, b""))
    with pytest.raises(UsageError):
        encode_tag(FLVTag(9, 1 << 32, b""))
    with pytest.raises(UsageError):
        encode_tag(FLVTag(64, 0, b""))


def test_larger_data_offset_is_skipped() -> None:
    """A header with DataOffset > 9 has its extra bytes skipped."""
    header = bytes.fromhex("464c5601050000000d") + b"XXXX" + bytes(4)
    tag = FLVTag(18, 0, amf0_string("onMetaData"))
    reader = FLVReader()
    assert reader.receive_data(header + encode_tag(tag)) == [tag]


def test_unknown_tag_type_skipped() -> None:
    """Tags of unknown type are skipped; reserved bits 6-7 are tolerated."""
    odd = bytearray(encode_tag(FLVTag(8, 5, b"\x2f\x00")))
    odd[0] |= 0xC0
    data = encode_header() + encode_tag(FLVTag(7, 0, b"abc")) + bytes(odd)
    assert FLVReader().receive_data(data) == [FLVTag(8, 5, b"\x2f\x00")]


def test_bad_signature() -> None:
    """Something that is not FLV fails on its first byte."""
    with pytest.raises(FLVError):
        FLVReader().receive_data(b"G")


def test_bad_version() -> None:
    """FLV version other than 1 is refused."""
    with pytest.raises(FLVError):
        FLVReader().receive_data(b"FLV\x02\x05\x00\x00\x00\x09")


def test_bad_data_offset() -> None:
    """A DataOffset smaller than the header is refused."""
    with pytest.raises(FLVError):
        FLVReader().receive_data(b"FLV\x01\x05\x00\x00\x00\x03")


def test_encrypted_tag_refused() -> None:
    """A tag with the Filter bit set (encrypted) is an FLVError."""
    tag = bytearray(encode_tag(FLVTag(9, 0, b"\x17\x01")))
    tag[0] |= 0x20
    with pytest.raises(FLVError):
        FLVReader().receive_data(encode_header() + bytes(tag))


def test_oversized_tag_refused() -> None:
    """A tag larger than the reader's limit is refused from its header alone."""
    tag = encode_tag(FLVTag(9, 0, bytes(100)))
    with pytest.raises(FLVError):
        FLVReader(max_tag_size=99).receive_data(encode_header() + tag[:11])


tags_strategy = st.lists(
    st.builds(
        FLVTag,
        st.sampled_from([8, 9, 18]),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(tags_strategy, st.lists(st.integers(1, 500), min_size=1, max_size=10))
def test_round_trip_random_splits(tags: list[FLVTag], cuts: list[int]) -> None:
    """Encoded tags decode to the same tags whatever the read sizes."""
    data = encode_header() + b"".join(encode_tag(t) for t in tags)
    reader = FLVReader()
    decoded: list[FLVTag] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        decoded += reader.receive_data(data[pos : pos + step])
        pos += step
        i += 1
    assert decoded == tags
    assert reader.at_tag_boundary


def test_byte_by_byte() -> None:
    """Feeding one byte at a time yields the same tags."""
    tags = [FLVTag(9, 40 * i, bytes([0x27, 0x01]) + bytes(i)) for i in range(5)]
    data = encode_header() + b"".join(encode_tag(t) for t in tags)
    reader = FLVReader()
    decoded: list[FLVTag] = []
    for i in range(len(data)):
        decoded += reader.receive_data(data[i : i + 1])
    assert decoded == tags


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_reader_garbage_raises_only_flv_errors(data: bytes, with_header: bool) -> None:
    """Random bytes, with or without a valid header in front, raise only FLVError."""
    reader = FLVReader(max_tag_size=1000)
    with contextlib.suppress(FLVError):
        reader.receive_data((encode_header() if with_header else b"") + data)


def test_read_file(tmp_path: Path) -> None:
    """read_file returns every tag and drops a truncated last one."""
    tags = [FLVTag(18, 0, amf0_string("onMetaData")), FLVTag(9, 0, b"\x17\x00abc")]
    path = tmp_path / "a.flv"
    data = encode_header() + b"".join(encode_tag(t) for t in tags)
    path.write_bytes(data + encode_tag(FLVTag(9, 40, b"\x27\x01xyz"))[:-6])
    assert read_file(path) == tags
    path.write_bytes(data[:5])
    with pytest.raises(FLVError):
        read_file(path)


def test_tag_message_conversion() -> None:
    """FLV tags and RTMP media messages convert both ways; AMF3 data loses its format byte."""
    tag = FLVTag(9, 1234, b"\x17\x01")
    message = tag_to_message(tag, 1)
    assert message == Message(9, 1, 1234, b"\x17\x01")
    assert message_to_tag(message) == tag
    amf3_data = Message(15, 1, 0, b"\x00\x02\x00\x01x")
    assert message_to_tag(amf3_data) == FLVTag(18, 0, b"\x02\x00\x01x")
    with pytest.raises(UsageError):
        message_to_tag(Message(20, 0, 0, b""))


# --- classify ------------------------------------------------------------------------

ON_METADATA = amf0_string("onMetaData") + b"\x08\x00\x00\x00\x00\x00\x00\x09"
SET_DATA_FRAME = amf0_string("@setDataFrame") + ON_METADATA


@pytest.mark.parametrize(
    ("type_id", "payload", "kind"),
    [
        # legacy video
        (9, bytes.fromhex("1700000000014d401e"), FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, bytes.fromhex("170100004400000010"), FrameKind.KEYFRAME),
        (9, bytes.fromhex("2701000044"), FrameKind.INTER),
        (9, bytes.fromhex("3201"), FrameKind.DISPOSABLE),
        (9, bytes.fromhex("37"), FrameKind.DISPOSABLE),
        (9, bytes.fromhex("4701000000"), FrameKind.KEYFRAME),
        (9, bytes.fromhex("5700"), FrameKind.VIDEO_INFO),
        (9, bytes.fromhex("1702000000"), FrameKind.VIDEO_END),
        (9, bytes.fromhex("1c00000000"), FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, bytes.fromhex("2c01000000"), FrameKind.INTER),
        (9, bytes.fromhex("12"), FrameKind.KEYFRAME),
        (9, bytes.fromhex("17"), FrameKind.KEYFRAME),
        (9, bytes.fromhex("07"), FrameKind.OTHER),
        (9, b"", FrameKind.OTHER),
        # enhanced video
        (9, b"\x90hvc1\x01\x02", FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, b"\x93hvc1\x00", FrameKind.KEYFRAME),
        (9, b"\x91hvc1\x00\x00\x00", FrameKind.KEYFRAME),
        (9, b"\xa1av01\x00", FrameKind.INTER),
        (9, b"\xa3vp09", FrameKind.INTER),
        (9, b"\x92hvc1", FrameKind.VIDEO_END),
        (9, b"\x94hvc1\x02\x00\x09colorInfo", FrameKind.VIDEO_INFO),
        (9, b"\xa4av01", FrameKind.VIDEO_INFO),
        (9, b"\x95hvc1", FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, b"\xd1\x00", FrameKind.VIDEO_INFO),
        (9, b"\x96\x00hvc1\x00", FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, b"\x96\x13hvc1\x00", FrameKind.KEYFRAME),
        (9, b"\xa6\x11av01\x00", FrameKind.INTER),
        (9, b"\x96", FrameKind.KEYFRAME),
        (9, b"\x97\x02abc\x00hvc1", FrameKind.VIDEO_SEQUENCE_HEADER),
        (9, b"\xa7\x00a\x01av01", FrameKind.INTER),
        (9, b"\x97\x02ab", FrameKind.OTHER),
        (9, b"\x9f", FrameKind.OTHER),
        # legacy audio
        (8, bytes.fromhex("af001210"), FrameKind.AUDIO_SEQUENCE_HEADER),
        (8, bytes.fromhex("af01210a"), FrameKind.AUDIO),
        (8, bytes.fromhex("af"), FrameKind.AUDIO),
        (8, bytes.fromhex("2fff"), FrameKind.AUDIO),
        (8, bytes.fromhex("2f"), FrameKind.AUDIO),
        (8, b"", FrameKind.OTHER),
        # enhanced audio
        (8, b"\x90Opus\x01", FrameKind.AUDIO_SEQUENCE_HEADER),
        (8, b"\x91Opus\x00", FrameKind.AUDIO),
        (8, b"\x92Opus", FrameKind.AUDIO),
        (8, b"\x94Opus\x00\x02", FrameKind.AUDIO_SEQUENCE_HEADER),
        (8, b"\x95\x00mp4a\x12\x10", FrameKind.AUDIO_SEQUENCE_HEADER),
        (8, b"\x95\x11mp4a", FrameKind.AUDIO),
        (8, b"\x97\x00x\x00fLaC", FrameKind.AUDIO_SEQUENCE_HEADER),
        # data
        (18, ON_METADATA, FrameKind.METADATA),
        (18, SET_DATA_FRAME, FrameKind.METADATA),
        (18, amf0_string("@setDataFrame") + amf0_string("onTextData"), FrameKind.DATA),
        (18, amf0_string("onTextData") + b"\x03\x00\x00\x09", FrameKind.DATA),
        (18, amf0_string("onMetaDat"), FrameKind.DATA),
        (18, b"", FrameKind.DATA),
        (15, b"\x00" + SET_DATA_FRAME, FrameKind.METADATA),
        (15, ON_METADATA, FrameKind.METADATA),
        (15, b"\x00" + amf0_string("onCuePoint"), FrameKind.DATA),
        (15, b"", FrameKind.DATA),
        # anything else
        (20, amf0_string("onMetaData"), FrameKind.OTHER),
        (22, b"\x09\x00", FrameKind.OTHER),
    ],
)
def test_classify(type_id: int, payload: bytes, kind: FrameKind) -> None:
    """Each vector classifies as the FLV / Enhanced RTMP specs say."""
    assert classify(type_id, payload) is kind


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([8, 9, 15, 18, 20, 22]), st.binary(max_size=40))
def test_classify_never_raises(type_id: int, payload: bytes) -> None:
    """classify returns a FrameKind for any bytes."""
    assert isinstance(classify(type_id, payload), FrameKind)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_codec_helpers_never_raise(payload: bytes) -> None:
    """The codec-name helpers return a value for any bytes."""
    assert isinstance(video_codec_name(payload), str)
    assert isinstance(audio_codec_name(payload), str)
    fourcc = video_fourcc(payload)
    assert fourcc is None or len(fourcc) == 4


@pytest.mark.parametrize(
    ("payload", "name", "fourcc"),
    [
        (b"\x17\x00", "avc", None),
        (b"\x1c\x00", "hevc", None),
        (b"\x22", "h263", None),
        (b"\x14", "vp6", None),
        (b"\x90hvc1", "hevc", b"hvc1"),
        (b"\xa1av01\x00", "av1", b"av01"),
        (b"\x93vp09", "vp9", b"vp09"),
        (b"\x91avc1\x00\x00\x00", "avc", b"avc1"),
        (b"\x96\x00hvc1", "hevc", b"hvc1"),
        (b"\x97\x00z\x01av01", "av1", b"av01"),
        (b"\xd1\x00", "unknown", None),
        (b"\x90hv", "unknown", None),
        (b"\x91xxxx", "unknown", b"xxxx"),
        (b"", "unknown", None),
    ],
)
def test_video_codec(payload: bytes, name: str, fourcc: bytes | None) -> None:
    """Video codec names come from the legacy codec id or the Enhanced RTMP FourCC."""
    assert video_codec_name(payload) == name
    assert video_fourcc(payload) == fourcc


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (b"\xaf\x00", "aac"),
        (b"\x2f", "mp3"),
        (b"\xb6", "speex"),
        (b"\x72", "g711a"),
        (b"\x91Opus", "opus"),
        (b"\x90fLaC", "flac"),
        (b"\x91mp4a", "aac"),
        (b"\x95\x00ec-3", "eac3"),
        (b"\x9c", "unknown"),
        (b"\xc0", "unknown"),
        (b"", "unknown"),
    ],
)
def test_audio_codec(payload: bytes, name: str) -> None:
    """Audio codec names come from the sound format or the Enhanced RTMP FourCC."""
    assert audio_codec_name(payload) == name


# --- interop with a real muxer ------------------------------------------------------


def test_ffmpeg_generated_flv(tmp_path: Path) -> None:
    """A 3 s H.264 + AAC FLV from ffmpeg reads back with headers first and a keyframe every 60."""
    if shutil.which("ffmpeg") is None:
        if os.environ.get("STREAMSERVER_REQUIRE_INTEROP") == "1":
            pytest.fail("ffmpeg is required (STREAMSERVER_REQUIRE_INTEROP=1) but not found")
        pytest.skip("ffmpeg not installed")
    out = tmp_path / "out.flv"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440",
            "-t", "3", "-c:v", "libx264", "-g", "60", "-c:a", "aac",
            "-f", "flv", str(out),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    tags = read_file(out)
    kinds = [(t.tag_type, classify(t.tag_type, t.payload)) for t in tags]
    assert (18, FrameKind.METADATA) in kinds
    video = [k for ty, k in kinds if ty == 9]
    audio = [k for ty, k in kinds if ty == 8]
    assert video[0] is FrameKind.VIDEO_SEQUENCE_HEADER
    assert audio[0] is FrameKind.AUDIO_SEQUENCE_HEADER
    assert FrameKind.VIDEO_SEQUENCE_HEADER not in video[1:]
    # ffmpeg closes the stream with an AVC end-of-sequence tag.
    assert video[-1] is FrameKind.VIDEO_END
    frames = video[1:-1]
    assert 85 <= len(frames) <= 95
    keyframes = [i for i, k in enumerate(frames) if k is FrameKind.KEYFRAME]
    assert keyframes[:2] == [0, 60]
    assert all(k in (FrameKind.KEYFRAME, FrameKind.INTER) for k in frames)
    assert video_codec_name(tags[[t.tag_type for t in tags].index(9)].payload) == "avc"
    assert audio_codec_name(tags[[t.tag_type for t in tags].index(8)].payload) == "aac"
