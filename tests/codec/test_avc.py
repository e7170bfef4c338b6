"""Tests for AVC and HEVC configuration records and NAL units (ISO/IEC 14496-15)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.avc import (
    START_CODE,
    AVCDecoderConfig,
    AvcNalType,
    HEVCDecoderConfig,
    HevcNalType,
    annex_b,
    avc_nal_type,
    hevc_nal_type,
    parse_avc_config,
    parse_hevc_config,
    split_nalus,
)
from streamserver.errors import CodecError, UsageError

#: The avcC box of a 320x240 High-profile libx264 encode (ffmpeg into mp4):
#: one SPS, one PPS, then the high-profile extension (chroma format, bit depths).
X264_AVCC = bytes.fromhex(
    "0164000dffe100196764000dacd94141fb011000000300100000030320f142996001000668ebe3cb22c0fdf8f800"
)

#: The hvcC box of a 320x240 Main-profile libx265 encode, with its VPS, SPS
#: and PPS arrays but without its fourth array (an SEI holding x265's 2 KB
#: settings string): numOfArrays, the last header byte, says 3 here.
X265_HVCC = bytes.fromhex(
    "0101600000009000000000003cf000fcfdf8f800000f03"
    "200001001840010c01ffff01600000030090000003000003003c95980921"
    "0001002a42010101600000030090000003000003003ca00a080f165959a4"
    "932bc05a02000003000200000300321022"
    "000100074401c172b46240"
)


def avc_record(
    sps: list[bytes],
    pps: list[bytes],
    *,
    profile: int = 100,
    compatibility: int = 0,
    level: int = 31,
    length_size: int = 4,
) -> bytes:
    """An AVCDecoderConfigurationRecord written by hand (14496-15 5.3.3.1)."""
    out = bytearray([1, profile, compatibility, level, 0xFC | (length_size - 1)])
    out.append(0xE0 | len(sps))
    for nalu in sps:
        out += len(nalu).to_bytes(2, "big") + nalu
    out.append(len(pps))
    for nalu in pps:
        out += len(nalu).to_bytes(2, "big") + nalu
    return bytes(out)


def hevc_record(arrays: list[tuple[int, list[bytes]]], *, length_size: int = 4) -> bytes:
    """An hvcC written by hand (14496-15 8.3.3.1): Main profile, level 3.1, 4:2:0, 8 bits."""
    out = bytearray([1, 0x01])
    out += (0x60000000).to_bytes(4, "big") + (0xB00000000000).to_bytes(6, "big")
    out += bytes([93, 0xF0, 0x00, 0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00])
    out += bytes([0x0C | (length_size - 1), len(arrays)])
    for nal_type, nalus in arrays:
        out += bytes([0x80 | nal_type]) + len(nalus).to_bytes(2, "big")
        for nalu in nalus:
            out += len(nalu).to_bytes(2, "big") + nalu
    return bytes(out)


def length_prefixed(nalus: list[bytes], length_size: int) -> bytes:
    """An AVCC frame: each NAL unit after its big-endian length."""
    return b"".join(len(nalu).to_bytes(length_size, "big") + nalu for nalu in nalus)


# --- AVCDecoderConfigurationRecord ------------------------------------------------


def test_x264_record() -> None:
    """A real x264 record gives its profile, level, 4-byte lengths and one SPS and PPS."""
    config = parse_avc_config(X264_AVCC)
    assert (config.profile, config.compatibility, config.level) == (100, 0, 13)
    assert config.nalu_length_size == 4
    assert [avc_nal_type(n) for n in config.sps] == [AvcNalType.SPS]
    assert [avc_nal_type(n) for n in config.pps] == [AvcNalType.PPS]
    assert len(config.sps[0]) == 25 and config.pps[0] == bytes.fromhex("68ebe3cb22c0")
    assert config.parameter_sets == config.sps + config.pps
    assert config.codec_string == "avc1.64000d"


def test_record_without_parameter_sets() -> None:
    """A record listing no SPS and no PPS parses to empty lists."""
    config = parse_avc_config(avc_record([], [], profile=66, level=30, length_size=2))
    assert config == AVCDecoderConfig(66, 0, 30, 2, (), ())
    assert config.codec_string == "avc1.42001e"


def test_record_version_refused() -> None:
    """Only configurationVersion 1 exists."""
    with pytest.raises(CodecError, match="version 0"):
        parse_avc_config(b"\x00" + X264_AVCC[1:])


def test_record_empty_parameter_set_refused() -> None:
    """A zero-length SPS is a broken record."""
    with pytest.raises(CodecError, match="empty parameter set"):
        parse_avc_config(avc_record([b""], [b"\x68"]))


def test_every_truncation_of_a_record_is_a_codec_error() -> None:
    """Cutting a record anywhere before its last parameter set ends raises CodecError."""
    record = avc_record([b"\x67" + bytes(10)], [b"\x68\x01", b"\x68\x02"])
    for size in range(len(record)):
        with pytest.raises(CodecError):
            parse_avc_config(record[:size])


nalu_strategy = st.binary(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(nalu_strategy, max_size=31),
    st.lists(nalu_strategy, max_size=255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([1, 2, 3, 4]),
    st.binary(max_size=8),
)
def test_avc_record_round_trip(
    sps: list[bytes],
    pps: list[bytes],
    profile: int,
    compatibility: int,
    level: int,
    length_size: int,
    trailing: bytes,
) -> None:
    """A record written by hand parses back to its fields; trailing bytes are ignored."""
    record = avc_record(
        sps,
        pps,
        profile=profile,
        compatibility=compatibility,
        level=level,
        length_size=length_size,
    )
    config = parse_avc_config(record + trailing)
    assert config == AVCDecoderConfig(
        profile, compatibility, level, length_size, tuple(sps), tuple(pps)
    )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_avc_record_garbage_raises_only_codec_errors(data: bytes) -> None:
    """Random bytes either parse or raise CodecError."""
    with contextlib.suppress(CodecError):
        parse_avc_config(data)


# --- HEVCDecoderConfigurationRecord --------------------------------------------------


def test_x265_record() -> None:
    """A real x265 hvcC gives Main profile, level 2, 4:2:0, 8 bits, VPS/SPS/PPS; SEI skipped."""
    sei = b"\x4e\x01\x05" + bytes(20)
    record = bytearray(X265_HVCC + b"\xa7\x00\x01" + len(sei).to_bytes(2, "big") + sei)
    record[22] = 4  # numOfArrays: VPS, SPS, PPS and the SEI
    config = parse_hevc_config(bytes(record))
    assert (config.profile_space, config.tier, config.profile) == (0, 0, 1)
    assert config.compatibility == 0x60000000
    assert config.constraints == 0x900000000000
    assert config.level == 60
    assert (config.chroma_format, config.bit_depth_luma, config.bit_depth_chroma) == (1, 8, 8)
    assert config.nalu_length_size == 4
    assert [hevc_nal_type(n) for n in config.parameter_sets] == [
        HevcNalType.VPS,
        HevcNalType.SPS,
        HevcNalType.PPS,
    ]
    assert config.codec_string() == "hvc1.1.6.L60.90"
    assert config.codec_string("hev1").startswith("hev1.")


def test_hevc_codec_string_high_tier_and_profile_space() -> None:
    """The codecs string spells the profile space, High tier and every nonzero constraint byte."""
    config = HEVCDecoderConfig(
        profile_space=1,
        tier=1,
        profile=2,
        compatibility=0x20000000,
        constraints=0x000000000001,
        level=120,
        chroma_format=1,
        bit_depth_luma=10,
        bit_depth_chroma=10,
        nalu_length_size=4,
        vps=(),
        sps=(),
        pps=(),
    )
    assert config.codec_string() == "hvc1.A2.4.H120.0.0.0.0.0.1"


def test_hevc_record_version_refused() -> None:
    """Only configurationVersion 1 exists."""
    with pytest.raises(CodecError, match="version 2"):
        parse_hevc_config(b"\x02" + X265_HVCC[1:])


def test_every_truncation_of_an_hevc_record_is_a_codec_error() -> None:
    """Cutting an hvcC anywhere before its last NAL unit ends raises CodecError."""
    assert len(parse_hevc_config(X265_HVCC).pps) == 1
    for size in range(len(X265_HVCC)):
        with pytest.raises(CodecError):
            parse_hevc_config(X265_HVCC[:size])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 63), st.lists(nalu_strategy, max_size=4)),
        max_size=6,
    ),
    st.sampled_from([1, 2, 4]),
)
def test_hevc_record_round_trip(arrays: list[tuple[int, list[bytes]]], length_size: int) -> None:
    """VPS, SPS and PPS arrays come back in order, merged by type; other arrays are skipped."""
    config = parse_hevc_config(hevc_record(arrays, length_size=length_size))

    def of_type(nal_type: int) -> tuple[bytes, ...]:
        return tuple(n for t, nalus in arrays if t == nal_type for n in nalus)

    assert config.vps == of_type(32)
    assert config.sps == of_type(33)
    assert config.pps == of_type(34)
    assert config.nalu_length_size == length_size
    assert (config.profile, config.level, config.tier) == (1, 93, 0)
    assert config.codec_string() == "hvc1.1.6.L93.B0"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_hevc_record_garbage_raises_only_codec_errors(data: bytes) -> None:
    """Random bytes (or random bytes after a valid version byte) parse or raise CodecError."""
    for candidate in (data, b"\x01" + data):
        with contextlib.suppress(CodecError):
            parse_hevc_config(candidate)


# --- NAL units ------------------------------------------------------------------------


def test_nal_types() -> None:
    """H.264 types are the low 5 bits; H.265 types bits 1-6 of the first header byte."""
    assert avc_nal_type(b"\x65\x88") == AvcNalType.IDR
    assert avc_nal_type(b"\x09\xf0") == AvcNalType.AUD
    assert hevc_nal_type(b"\x26\x01") == HevcNalType.IDR_W_RADL
    assert hevc_nal_type(b"\x46\x01\x50") == HevcNalType.AUD
    with pytest.raises(CodecError):
        avc_nal_type(b"")
    with pytest.raises(CodecError):
        hevc_nal_type(b"\x40")


def test_split_vector() -> None:
    """A 4-byte-length frame splits into its NAL units; zero-length ones are skipped."""
    frame = bytes.fromhex("00000002 09f0 00000000 00000003 658880")
    assert split_nalus(frame, 4) == [b"\x09\xf0", b"\x65\x88\x80"]
    assert annex_b(split_nalus(frame, 4)) == bytes.fromhex("0000000109f0 00000001658880")
    assert split_nalus(b"", 4) == []


def test_split_overrun_refused() -> None:
    """A length running past the frame, or cut off, raises CodecError."""
    with pytest.raises(CodecError, match="runs past"):
        split_nalus(bytes.fromhex("00000005 6588"), 4)
    with pytest.raises(CodecError, match="cut off"):
        split_nalus(bytes.fromhex("0002 6588 00"), 2)


def test_split_length_size_is_checked() -> None:
    """A length size outside 1-4 is our misuse."""
    with pytest.raises(UsageError):
        split_nalus(b"\x00", 0)
    with pytest.raises(UsageError):
        split_nalus(b"\x00", 5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=10), st.sampled_from([1, 2, 3, 4]))
def test_split_round_trip(nalus: list[bytes], length_size: int) -> None:
    """Length-prefixed NAL units split back to the same list; Annex B puts start codes before."""
    nalus = [n[:255] if length_size == 1 else n for n in nalus]
    assert split_nalus(length_prefixed(nalus, length_size), length_size) == nalus
    assert annex_b(nalus) == b"".join(START_CODE + n for n in nalus)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=100), st.sampled_from([1, 2, 3, 4]))
def test_split_garbage_raises_only_codec_errors(data: bytes, length_size: int) -> None:
    """Random frames split into non-empty NAL units that fit, or raise CodecError."""
    with contextlib.suppress(CodecError):
        nalus = split_nalus(data, length_size)
        assert all(nalus)
        assert sum(len(n) for n in nalus) <= len(data)
