"""Tests for the AudioSpecificConfig and ADTS headers (ISO/IEC 14496-3)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.aac import (
    ADTS_HEADER_SIZE,
    SAMPLING_FREQUENCIES,
    AudioSpecificConfig,
    ObjectType,
    parse_audio_specific_config,
)
from streamserver.errors import CodecError


def bits_to_bytes(fields: list[tuple[int, int]]) -> bytes:
    """Pack ``(value, bit count)`` fields big-endian, zero-padded to whole bytes."""
    value = 0
    count = 0
    for field, width in fields:
        assert 0 <= field < 1 << width
        value = (value << width) | field
        count += width
    pad = -count % 8
    return (value << pad).to_bytes((count + pad) // 8, "big")


def parse_adts(header: bytes) -> dict[str, int]:
    """The fields of a 7-byte ADTS header (14496-3 annex 1.A), read independently."""
    value = int.from_bytes(header[:7], "big")

    def field(offset: int, width: int) -> int:
        return (value >> (56 - offset - width)) & ((1 << width) - 1)

    return {
        "syncword": field(0, 12),
        "id": field(12, 1),
        "layer": field(13, 2),
        "protection_absent": field(15, 1),
        "profile": field(16, 2),
        "sampling_index": field(18, 4),
        "channels": field(23, 3),
        "frame_length": field(30, 13),
        "buffer_fullness": field(43, 11),
        "raw_blocks": field(54, 2),
    }


# --- vectors ------------------------------------------------------------------------


def test_lc_vectors() -> None:
    """``12 10`` is AAC LC, 44.1 kHz, stereo; ffmpeg's ``12 10 56 e5 00`` adds an extension."""
    expected = AudioSpecificConfig(ObjectType.AAC_LC, 4, 44100, 2)
    assert parse_audio_specific_config(b"\x12\x10") == expected
    assert parse_audio_specific_config(bytes.fromhex("121056e500")) == expected
    config = parse_audio_specific_config(b"\x11\x88")
    assert (config.sample_rate, config.channel_configuration, config.channels) == (48000, 1, 1)
    assert expected.codec_string == "mp4a.40.2"


def test_he_aac_explicit_signalling() -> None:
    """An SBR configuration describes the core (22.05 kHz LC) and the SBR rate (44.1 kHz)."""
    config = parse_audio_specific_config(bytes.fromhex("2b920800"))
    assert config.object_type == ObjectType.AAC_LC
    assert (config.sample_rate, config.extension_sample_rate) == (22050, 44100)
    assert config.extension_object_type == ObjectType.SBR
    assert config.codec_string == "mp4a.40.5"
    # ADTS carries the LC core; the decoder finds SBR in the frames.
    assert parse_adts(config.adts_header(10))["profile"] == 1


def test_he_aac_v2_explicit_signalling() -> None:
    """A PS configuration (object type 29) with an explicit SBR frequency index."""
    data = bits_to_bytes([(29, 5), (6, 4), (1, 4), (3, 4), (2, 5), (0, 1)])
    config = parse_audio_specific_config(data)
    assert (config.object_type, config.extension_object_type) == (2, 29)
    assert (config.sample_rate, config.extension_sample_rate, config.channels) == (24000, 48000, 1)
    assert config.codec_string == "mp4a.40.29"


def test_escaped_object_type_and_explicit_frequency() -> None:
    """Object type 31 escapes to 32 + 6 bits; index 15 is followed by a 24-bit frequency."""
    data = bits_to_bytes([(31, 5), (10, 6), (15, 4), (44056, 24), (2, 4)])
    config = parse_audio_specific_config(data)
    assert (config.object_type, config.sample_rate, config.sampling_index) == (42, 44056, 15)
    with pytest.raises(CodecError, match="object type 42"):
        config.adts_header(10)


def test_frame_length_flag() -> None:
    """The GASpecificConfig's frameLengthFlag selects 960-sample frames."""
    short = bits_to_bytes([(2, 5), (3, 4), (2, 4), (1, 1)])
    assert parse_audio_specific_config(short).frame_length == 960
    # Not read for object types without a GASpecificConfig (here ER AAC ELD).
    eld = bits_to_bytes([(31, 5), (7, 6), (3, 4), (2, 4), (1, 1)])
    assert parse_audio_specific_config(eld).frame_length == 1024


def test_channel_counts() -> None:
    """Configuration 7 is 7.1 (8 channels); 0 (a program config element) has no count."""
    assert AudioSpecificConfig(2, 4, 44100, 7).channels == 8
    assert AudioSpecificConfig(2, 4, 44100, 0).channels is None


def test_refused_configurations() -> None:
    """Truncation, reserved frequency indexes and 0 Hz are CodecErrors."""
    for data in (b"", b"\x12", bits_to_bytes([(2, 5), (13, 4), (2, 4)])):
        with pytest.raises(CodecError):
            parse_audio_specific_config(data)
    with pytest.raises(CodecError, match="0 Hz"):
        parse_audio_specific_config(bits_to_bytes([(2, 5), (15, 4), (0, 24), (2, 4)]))


def test_adts_vector() -> None:
    """The ADTS header of a 100-byte LC 44.1 kHz stereo frame, as ffmpeg writes it."""
    config = parse_audio_specific_config(b"\x12\x10")
    assert config.adts_header(100).hex() == "fff150800d7ffc"
    assert ADTS_HEADER_SIZE == 7


def test_adts_limits() -> None:
    """ADTS refuses what it cannot express: 0 or 8+ channel configurations, an explicit
    frequency, frames over 8191 bytes with their header."""
    config = AudioSpecificConfig(2, 4, 44100, 2)
    assert parse_adts(config.adts_header(8184))["frame_length"] == 8191
    with pytest.raises(CodecError, match="too long"):
        config.adts_header(8185)
    for bad in (
        AudioSpecificConfig(2, 4, 44100, 0),
        AudioSpecificConfig(2, 4, 44100, 11),
        AudioSpecificConfig(2, 15, 44056, 2),
        AudioSpecificConfig(23, 4, 44100, 2),
    ):
        with pytest.raises(CodecError):
            bad.adts_header(10)


# --- properties -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(0, 12),
    st.integers(1, 7),
    st.booleans(),
    st.integers(0, 8184),
)
def test_config_and_adts_round_trip(
    object_type: int, sampling_index: int, channels: int, short_frames: bool, size: int
) -> None:
    """A configuration written bit by bit parses back; its ADTS header carries the same fields."""
    data = bits_to_bytes(
        [(object_type, 5), (sampling_index, 4), (channels, 4), (int(short_frames), 1)]
    )
    config = parse_audio_specific_config(data)
    assert config == AudioSpecificConfig(
        object_type,
        sampling_index,
        SAMPLING_FREQUENCIES[sampling_index],
        channels,
        frame_length=960 if short_frames else 1024,
    )
    header = parse_adts(config.adts_header(size))
    assert header == {
        "syncword": 0xFFF,
        "id": 0,
        "layer": 0,
        "protection_absent": 1,
        "profile": object_type - 1,
        "sampling_index": sampling_index,
        "channels": channels,
        "frame_length": size + 7,
        "buffer_fullness": 0x7FF,
        "raw_blocks": 0,
    }


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12), st.integers(0, 9000))
def test_garbage_raises_only_codec_errors(data: bytes, size: int) -> None:
    """Random configurations parse or raise CodecError; so does building their ADTS header."""
    with contextlib.suppress(CodecError):
        config = parse_audio_specific_config(data)
        assert config.sample_rate > 0
        assert len(config.adts_header(size)) == ADTS_HEADER_SIZE
