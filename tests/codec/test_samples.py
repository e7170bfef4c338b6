"""Tests for media samples from FLV/RTMP tags and the timestamp unwrapper."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.samples import (
    Codec,
    Sample,
    TimestampUnwrapper,
    Track,
    parse_audio,
    parse_tag,
    parse_video,
)
from streamserver.errors import CodecError

AVCC = bytes.fromhex("0164001fffe1000467640015" + "01000468ee3cb0")
FRAME = bytes.fromhex("00000003 658880")


def si24(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


def mod_ex(data: bytes, next_packet_type: int, mod_ex_type: int = 0) -> bytes:
    """One Enhanced RTMP ModEx prefix: its size, its data, then the next packet type."""
    size = len(data) - 1
    prefix = bytes([size]) if size < 255 else b"\xff" + size.to_bytes(2, "big")
    return prefix + data + bytes([(mod_ex_type << 4) | next_packet_type])


# --- legacy video ---------------------------------------------------------------------


def test_avc_sequence_header() -> None:
    """An AVC sequence header is a configuration sample holding the record."""
    sample = parse_video(b"\x17\x00\x00\x00\x00" + AVCC, 1000)
    assert sample == Sample(Track.VIDEO, Codec.AVC, 1000, 1000, AVCC, is_config=True)


def test_avc_frames_and_composition_time() -> None:
    """Coded AVC frames carry their NAL units; PTS is DTS plus the signed composition time."""
    key = parse_video(b"\x17\x01" + si24(80) + FRAME, 40)
    assert key == Sample(Track.VIDEO, Codec.AVC, 40, 120, FRAME, is_keyframe=True)
    assert key.composition_time == 80
    inter = parse_video(b"\x27\x01" + si24(-40) + FRAME, 40)
    assert inter is not None and (inter.pts, inter.is_keyframe) == (0, False)
    generated_key = parse_video(b"\x47\x01" + si24(0) + FRAME, 0)
    assert generated_key is not None and generated_key.is_keyframe
    disposable = parse_video(b"\x37\x01" + si24(0) + FRAME, 0)
    assert disposable is not None and not disposable.is_keyframe


def test_legacy_hevc_codec_id() -> None:
    """The non-standard codec id 12 is HEVC laid out like AVC."""
    sample = parse_video(b"\x1c\x01" + si24(33) + FRAME, 7)
    assert sample == Sample(Track.VIDEO, Codec.HEVC, 7, 40, FRAME, is_keyframe=True)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x17\x02\x00\x00\x00",  # AVC end of sequence
        b"\x57\x00",  # video info / command frame
        b"\x17\x01\x00\x00\x00",  # a coded frame without NAL units
        b"\x17\x05\x00\x00\x00abc",  # reserved AVCPacketType
        b"\x22abc",  # Sorenson H.263
        b"\x14abc",  # VP6
    ],
)
def test_video_without_sample(payload: bytes) -> None:
    """Tags that carry nothing to mux are None."""
    assert parse_video(payload, 0) is None


def test_truncated_avc_header() -> None:
    """An AVC tag shorter than its 5-byte header is a CodecError."""
    for size in range(1, 5):
        with pytest.raises(CodecError):
            parse_video(b"\x17\x01\x00\x00\x00"[:size], 0)


# --- Enhanced RTMP video ---------------------------------------------------------------


def test_enhanced_sequence_start() -> None:
    """An Enhanced RTMP SequenceStart is a configuration sample of the FourCC's codec."""
    assert parse_video(b"\x90hvc1" + b"record", 5) == Sample(
        Track.VIDEO, Codec.HEVC, 5, 5, b"record", is_config=True
    )
    assert parse_video(b"\x90av01\x81\x00", 0) == Sample(
        Track.VIDEO, Codec.AV1, 0, 0, b"\x81\x00", is_config=True
    )


def test_enhanced_coded_frames() -> None:
    """CodedFrames carry a composition time for avc1 and hvc1 only; CodedFramesX none."""
    hevc = parse_video(b"\x91hvc1" + si24(-33) + FRAME, 100)
    assert hevc == Sample(Track.VIDEO, Codec.HEVC, 100, 67, FRAME, is_keyframe=True)
    avc = parse_video(b"\xa1avc1" + si24(66) + FRAME, 100)
    assert avc == Sample(Track.VIDEO, Codec.AVC, 100, 166, FRAME)
    hevc_x = parse_video(b"\x93hvc1" + FRAME, 100)
    assert hevc_x == Sample(Track.VIDEO, Codec.HEVC, 100, 100, FRAME, is_keyframe=True)
    av1 = parse_video(b"\x91av01\x12\x00\x0a", 40)
    assert av1 == Sample(Track.VIDEO, Codec.AV1, 40, 40, b"\x12\x00\x0a", is_keyframe=True)
    vp9 = parse_video(b"\xa1vp09\x86\x00", 40)
    assert vp9 == Sample(Track.VIDEO, Codec.VP9, 40, 40, b"\x86\x00")


def test_enhanced_mod_ex_is_skipped() -> None:
    """ModEx prefixes (short and long sizes, chained) are skipped to the real packet type."""
    payload = b"\x97" + mod_ex(b"\x00\x01\x02", 7) + mod_ex(bytes(300), 1) + b"hvc1"
    sample = parse_video(payload + si24(10) + FRAME, 0)
    assert sample == Sample(Track.VIDEO, Codec.HEVC, 0, 10, FRAME, is_keyframe=True)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x92hvc1",  # SequenceEnd
        b"\x94hvc1\x02\x00\x09colorInfo",  # Metadata
        b"\x95hvc1abc",  # MPEG2TSSequenceStart
        b"\x96\x00hvc1\x00abc",  # Multitrack
        b"\xd1\x00",  # command frame
        b"\x9fhvc1abc",  # reserved packet type
        b"\x91vvc1" + bytes(5),  # a codec we do not mux
        b"\x93av01",  # no data
    ],
)
def test_enhanced_video_without_sample(payload: bytes) -> None:
    """Enhanced RTMP tags that carry nothing to mux are None."""
    assert parse_video(payload, 0) is None


@pytest.mark.parametrize(
    "payload",
    [b"\x91hv", b"\x91hvc1\x00\x00", b"\x97\x05ab", b"\x97\xff\x01", b"\x97\x00\x00"],
)
def test_enhanced_video_truncated(payload: bytes) -> None:
    """A cut FourCC, composition time or ModEx prefix is a CodecError."""
    with pytest.raises(CodecError):
        parse_video(payload, 0)


# --- audio -------------------------------------------------------------------------------


def test_aac() -> None:
    """AAC sequence headers are configuration samples; raw frames are keyframes."""
    assert parse_audio(b"\xaf\x00\x12\x10", 0) == Sample(
        Track.AUDIO, Codec.AAC, 0, 0, b"\x12\x10", is_config=True
    )
    assert parse_audio(b"\xaf\x01\x21\x0a", 23) == Sample(
        Track.AUDIO, Codec.AAC, 23, 23, b"\x21\x0a", is_keyframe=True
    )
    with pytest.raises(CodecError):
        parse_audio(b"\xaf", 0)


def test_mp3() -> None:
    """MP3 (sound formats 2 and 14) carries its frames after the one header byte."""
    frame = b"\xff\xfb\x90\x00" + bytes(10)
    for first in (b"\x2f", b"\xe2"):
        assert parse_audio(first + frame, 26) == Sample(
            Track.AUDIO, Codec.MP3, 26, 26, frame, is_keyframe=True
        )


def test_enhanced_audio() -> None:
    """Enhanced RTMP audio: mp4a, Opus and .mp3 sequence starts and coded frames."""
    assert parse_audio(b"\x90mp4a\x12\x10", 0) == Sample(
        Track.AUDIO, Codec.AAC, 0, 0, b"\x12\x10", is_config=True
    )
    head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    assert parse_audio(b"\x90Opus" + head, 0) == Sample(
        Track.AUDIO, Codec.OPUS, 0, 0, head, is_config=True
    )
    assert parse_audio(b"\x91Opus\xfc\xff\xfe", 20) == Sample(
        Track.AUDIO, Codec.OPUS, 20, 20, b"\xfc\xff\xfe", is_keyframe=True
    )
    assert parse_audio(b"\x97" + mod_ex(b"\x00\x00\x05", 1) + b".mp3\xff\xfb", 1) == Sample(
        Track.AUDIO, Codec.MP3, 1, 1, b"\xff\xfb", is_keyframe=True
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xaf\x01",  # raw AAC without data
        b"\xaf\x02abc",  # reserved AACPacketType
        b"\x2f",  # MP3 without data
        b"\xb6abc",  # Speex
        b"\x92Opus",  # SequenceEnd
        b"\x94mp4a\x00\x02",  # MultichannelConfig
        b"\x95\x00Opus",  # Multitrack
        b"\x91fLaC\x00",  # a codec we do not mux
        b"\x91Opus",  # no data
    ],
)
def test_audio_without_sample(payload: bytes) -> None:
    """Audio tags that carry nothing to mux are None."""
    assert parse_audio(payload, 0) is None


def test_enhanced_audio_truncated() -> None:
    """A cut FourCC or ModEx prefix is a CodecError."""
    for payload in (b"\x91Op", b"\x97\x03"):
        with pytest.raises(CodecError):
            parse_audio(payload, 0)


def test_parse_tag_dispatches_by_type() -> None:
    """Type 9 is video, 8 audio; script data and anything else carry no sample."""
    assert parse_tag(9, b"\x17\x00\x00\x00\x00" + AVCC, 0) == parse_video(
        b"\x17\x00\x00\x00\x00" + AVCC, 0
    )
    assert parse_tag(8, b"\xaf\x00\x12\x10", 0) == parse_audio(b"\xaf\x00\x12\x10", 0)
    assert parse_tag(18, b"\x02\x00\x0aonMetaData", 0) is None


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([(7, Codec.AVC), (12, Codec.HEVC)]),
    st.integers(1, 4),
    st.integers(-(1 << 23), (1 << 23) - 1),
    st.integers(0, 1 << 40),
    st.binary(min_size=1, max_size=50),
)
def test_legacy_video_round_trip(
    codec: tuple[int, Codec], frame_type: int, cts: int, dts: int, data: bytes
) -> None:
    """Any legacy coded frame gives back its codec, key flag, DTS, PTS and data."""
    codec_id, name = codec
    sample = parse_video(bytes([frame_type << 4 | codec_id, 1]) + si24(cts) + data, dts)
    assert sample == Sample(Track.VIDEO, name, dts, dts + cts, data, frame_type in (1, 4))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"avc1", b"hvc1", b"av01", b"vp09"]),
    st.sampled_from([1, 3]),
    st.integers(1, 4),
    st.integers(-(1 << 23), (1 << 23) - 1),
    st.lists(st.binary(min_size=1, max_size=300), max_size=3),
    st.binary(min_size=1, max_size=50),
)
def test_enhanced_video_round_trip(
    fourcc: bytes,
    packet_type: int,
    frame_type: int,
    cts: int,
    prefixes: list[bytes],
    data: bytes,
) -> None:
    """Any Enhanced RTMP coded frame, behind any ModEx prefixes, gives back its fields."""
    header = bytes([0x80 | frame_type << 4 | (7 if prefixes else packet_type)])
    for i, prefix in enumerate(prefixes):
        header += mod_ex(prefix, 7 if i + 1 < len(prefixes) else packet_type)
    with_cts = packet_type == 1 and fourcc in (b"avc1", b"hvc1")
    payload = header + fourcc + (si24(cts) if with_cts else b"") + data
    sample = parse_video(payload, 1000)
    assert sample is not None
    assert sample.codec == {b"avc1": "avc", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}[fourcc]
    assert (sample.dts, sample.pts) == (1000, 1000 + (cts if with_cts else 0))
    assert (sample.data, sample.is_keyframe, sample.is_config) == (
        data,
        frame_type in (1, 4),
        False,
    )


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 0xFFFFFFFF))
def test_garbage_raises_only_codec_errors(data: bytes, timestamp: int) -> None:
    """Random audio and video bodies give a sample, None or a CodecError; samples are sane."""
    for parse in (parse_video, parse_audio):
        with contextlib.suppress(CodecError):
            sample = parse(data, timestamp)
            if sample is None:
                continue
            assert sample.dts == timestamp
            assert sample.is_config or sample.data
            assert not (sample.is_config and sample.is_keyframe)
            if sample.codec not in (Codec.AVC, Codec.HEVC):
                assert sample.pts == sample.dts
            assert sample.track is (Track.VIDEO if parse is parse_video else Track.AUDIO)


# --- the timestamp unwrapper -----------------------------------------------------------------


def test_unwrap_vectors() -> None:
    """The first value is kept; a wrap goes forward; small steps back go back, not forward."""
    unwrapper = TimestampUnwrapper()
    values = [0xFFFFFFF0, 0x10, 0x08, 0x20, 0xFFFFFFFF, 5]
    assert [unwrapper.unwrap(v) for v in values] == [
        0xFFFFFFF0,
        0x100000010,
        0x100000008,
        0x100000020,
        0xFFFFFFFF,
        0x100000005,
    ]


def test_unwrap_never_reads_below_zero() -> None:
    """A step back past the first timestamp 0 reads 0, and later steps count from the true clock."""
    unwrapper = TimestampUnwrapper()
    assert [unwrapper.unwrap(v) for v in (5, 0xFFFFFFFB, 0xFFFFFFFF, 10)] == [5, 0, 0, 10]


def test_unwrap_many_wraps() -> None:
    """Steps of a day across many wraps add up to the 64-bit clock."""
    unwrapper = TimestampUnwrapper()
    day = 86_400_000
    assert [unwrapper.unwrap((i * day) & 0xFFFFFFFF) for i in range(400)] == [
        i * day for i in range(400)
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFFFFFF),
    st.lists(st.integers(-10_000, (1 << 31) - 1), max_size=60),
)
def test_unwrap_recovers_the_clock(start: int, steps: list[int]) -> None:
    """Any clock starting in the first wrap and stepping less than 2**31 either way (never
    below 0) is recovered exactly from its low 32 bits."""
    clock = [start]
    for step in steps:
        clock.append(abs(clock[-1] + step))
    unwrapper = TimestampUnwrapper()
    assert [unwrapper.unwrap(t & 0xFFFFFFFF) for t in clock] == clock


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, 100_000_000), max_size=100))
def test_unwrap_is_monotonic_for_forward_steps(start: int, steps: list[int]) -> None:
    """Forward steps, however many wraps they cross, give a non-decreasing clock."""
    unwrapper = TimestampUnwrapper()
    clock = start
    out = [unwrapper.unwrap(clock)]
    for step in steps:
        clock += step
        out.append(unwrapper.unwrap(clock & 0xFFFFFFFF))
    assert out == sorted(out)
    assert out[-1] == clock
