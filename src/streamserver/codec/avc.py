"""H.264/AVC and H.265/HEVC: decoder configuration records and NAL units.

Implements, of ISO/IEC 14496-15 (NAL-unit-structured video in the ISO base
media file format):

- 5.3.3.1, the AVCDecoderConfigurationRecord: the body of an RTMP/FLV AVC
  sequence header after its 5-byte VideoTagHeader (:func:`parse_avc_config`);
- 8.3.3.1, the HEVCDecoderConfigurationRecord (``hvcC``): the body of an
  Enhanced RTMP ``hvc1`` SequenceStart (:func:`parse_hevc_config`);
- the length-prefixed NAL unit format both use in coded frames ("AVCC": every
  NAL unit preceded by its size in 1, 2 or 4 big-endian bytes), read by
  :func:`split_nalus`;

and, of ITU-T H.264 / H.265 Annex B, the byte-stream format MPEG-TS carries:
:func:`annex_b` writes a start code before each NAL unit.  NAL unit types
(H.264 Table 7-1, H.265 Table 7-1) are read by :func:`avc_nal_type` and
:func:`hevc_nal_type`; :class:`AvcNalType` and :class:`HevcNalType` name the
ones a muxer cares about.

Contract: whatever bytes they are given, the parsers raise only
:class:`~streamserver.errors.CodecError` (a
:class:`~streamserver.errors.ProtocolError`): a wrong configuration version,
truncation, a NAL unit length running past the end, an empty parameter set.
Bytes after the last field a parser reads are ignored (the high-profile
extension of an AVC record, a padded record).  Parsers never look inside a
parameter set: they return the NAL units as they are, emulation prevention
bytes included, ready for :func:`annex_b`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from streamserver.errors import CodecError, UsageError

__all__ = [
    "START_CODE",
    "AVCDecoderConfig",
    "AvcNalType",
    "HEVCDecoderConfig",
    "HevcNalType",
    "annex_b",
    "avc_nal_type",
    "hevc_nal_type",
    "parse_avc_config",
    "parse_hevc_config",
    "split_nalus",
]

#: The Annex B start code written before every NAL unit.  The 4-byte form
#: (a zero_byte, then the 3-byte start code prefix) is what H.264 B.1.2 asks
#: for before parameter sets and the first NAL unit of an access unit, and is
#: valid before any other; one form everywhere keeps the writer simple.
START_CODE = b"\x00\x00\x00\x01"

#: The only configurationVersion of both records (14496-15 5.3.3.1, 8.3.3.1).
_CONFIGURATION_VERSION = 1


class AvcNalType(IntEnum):
    """H.264 nal_unit_type values (H.264 Table 7-1) that a muxer looks at."""

    SLICE = 1
    IDR = 5
    SEI = 6
    SPS = 7
    PPS = 8
    AUD = 9
    END_OF_SEQUENCE = 10
    END_OF_STREAM = 11
    FILLER = 12


class HevcNalType(IntEnum):
    """H.265 nal_unit_type values (H.265 Table 7-1) that a muxer looks at.

    Types 16 to 23 are IRAP pictures (BLA, IDR, CRA and reserved IRAP types):
    a decoder can start on them.
    """

    BLA_W_LP = 16
    IDR_W_RADL = 19
    IDR_N_LP = 20
    CRA = 21
    IRAP_RESERVED_23 = 23
    VPS = 32
    SPS = 33
    PPS = 34
    AUD = 35
    END_OF_SEQUENCE = 36
    END_OF_BITSTREAM = 37
    FILLER = 38
    PREFIX_SEI = 39
    SUFFIX_SEI = 40


def avc_nal_type(nalu: bytes) -> int:
    """The nal_unit_type of an H.264 NAL unit: the low 5 bits of its first byte.

    :raises CodecError: *nalu* is empty.
    """
    if not nalu:
        raise CodecError("empty H.264 NAL unit")
    return nalu[0] & 0x1F


def hevc_nal_type(nalu: bytes) -> int:
    """The nal_unit_type of an H.265 NAL unit: bits 1-6 of its 2-byte header.

    :raises CodecError: *nalu* is shorter than its 2-byte header.
    """
    if len(nalu) < 2:
        raise CodecError(f"H.265 NAL unit of {len(nalu)} bytes has no 2-byte header")
    return (nalu[0] >> 1) & 0x3F


def split_nalus(data: bytes, length_size: int) -> list[bytes]:
    """The NAL units of a length-prefixed ("AVCC") frame, in order.

    Zero-length NAL units (padding some muxers write) are skipped.

    :param length_size: bytes of each length prefix, 1 to 4 (the record's
        ``nalu_length_size``).
    :raises CodecError: a length prefix is cut off or runs past the end.
    :raises UsageError: *length_size* is not 1 to 4.
    """
    if not 1 <= length_size <= 4:
        raise UsageError(f"NAL unit length size {length_size} is not 1 to 4")
    nalus: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        start = pos + length_size
        if start > end:
            raise CodecError(f"NAL unit length cut off at offset {pos}")
        size = int.from_bytes(data[pos:start], "big")
        pos = start + size
        if pos > end:
            raise CodecError(
                f"NAL unit of {size} bytes at offset {start} runs past the {end}-byte frame"
            )
        if size:
            nalus.append(bytes(data[start:pos]))
    return nalus


def annex_b(nalus: Iterable[bytes]) -> bytes:
    """The Annex B byte stream of *nalus*: each one after a :data:`START_CODE`."""
    return b"".join(START_CODE + nalu for nalu in nalus)


class _RecordReader:
    """Reads big-endian fields from a configuration record, or raises CodecError."""

    __slots__ = ("_data", "_what", "pos")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._what = what
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self._data):
            raise CodecError(
                f"{self._what} truncated: {size} bytes needed at offset {self.pos}, "
                f"{len(self._data) - self.pos} left"
            )
        chunk = bytes(self._data[self.pos : end])
        self.pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def parameter_set(self) -> bytes:
        """A u16 length then that many bytes: one NAL unit of a record's list."""
        offset = self.pos
        nalu = self.take(self.uint(2))
        if not nalu:
            raise CodecError(f"{self._what}: empty parameter set at offset {offset}")
        return nalu


@dataclass(frozen=True, slots=True)
class AVCDecoderConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).

    :ivar profile: AVCProfileIndication (66 baseline, 77 main, 100 high…).
    :ivar compatibility: profile_compatibility (the constraint_set flags).
    :ivar level: AVCLevelIndication (31 for level 3.1…).
    :ivar nalu_length_size: bytes of each NAL unit length prefix in the
        coded frames, 1 to 4 (lengthSizeMinusOne + 1).
    :ivar sps: the sequence parameter set NAL units.
    :ivar pps: the picture parameter set NAL units.
    """

    profile: int
    compatibility: int
    level: int
    nalu_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def parameter_sets(self) -> tuple[bytes, ...]:
        """The SPS then the PPS NAL units: what a decoder needs before a keyframe."""
        return self.sps + self.pps

    @property
    def codec_string(self) -> str:
        """The RFC 6381 ``codecs`` value, for example ``avc1.64001f``."""
        return f"avc1.{self.profile:02x}{self.compatibility:02x}{self.level:02x}"


def parse_avc_config(data: bytes) -> AVCDecoderConfig:
    """Parse an AVCDecoderConfigurationRecord.

    :param data: the record: an AVC sequence header's body after its 5-byte
        FLV VideoTagHeader.
    :raises CodecError: not configurationVersion 1, truncated, or an empty
        parameter set.
    """
    reader = _RecordReader(data, "AVCDecoderConfigurationRecord")
    version, profile, compatibility, level, length_byte, sps_count = reader.take(6)
    if version != _CONFIGURATION_VERSION:
        raise CodecError(f"AVCDecoderConfigurationRecord version {version}, expected 1")
    sps = tuple(reader.parameter_set() for _ in range(sps_count & 0x1F))
    pps = tuple(reader.parameter_set() for _ in range(reader.uint(1)))
    return AVCDecoderConfig(
        profile=profile,
        compatibility=compatibility,
        level=level,
        nalu_length_size=(length_byte & 0x03) + 1,
        sps=sps,
        pps=pps,
    )


#: general_profile_space as the letter that starts an HEVC codecs string
#: (14496-15 E.3); space 0 has none.
_PROFILE_SPACE_LETTERS = ("", "A", "B", "C")


@dataclass(frozen=True, slots=True)
class HEVCDecoderConfig:
    """An HEVCDecoderConfigurationRecord, ``hvcC`` (ISO/IEC 14496-15 8.3.3.1).

    :ivar profile_space: general_profile_space (0 for every profile in use).
    :ivar tier: general_tier_flag (0 Main tier, 1 High tier).
    :ivar profile: general_profile_idc (1 Main, 2 Main 10…).
    :ivar compatibility: general_profile_compatibility_flags (32 bits, flag
        0 in the most significant bit).
    :ivar constraints: general_constraint_indicator_flags (48 bits).
    :ivar level: general_level_idc (30 times the level: 93 is level 3.1).
    :ivar chroma_format: chroma_format_idc (1 is 4:2:0).
    :ivar bit_depth_luma: luma bit depth (8, 10…).
    :ivar bit_depth_chroma: chroma bit depth.
    :ivar nalu_length_size: bytes of each NAL unit length prefix in the
        coded frames, 1 to 4.
    :ivar vps: the video parameter set NAL units.
    :ivar sps: the sequence parameter set NAL units.
    :ivar pps: the picture parameter set NAL units.

    Arrays of other NAL unit types (SEI) are skipped.
    """

    profile_space: int
    tier: int
    profile: int
    compatibility: int
    constraints: int
    level: int
    chroma_format: int
    bit_depth_luma: int
    bit_depth_chroma: int
    nalu_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]

    @property
    def parameter_sets(self) -> tuple[bytes, ...]:
        """The VPS, SPS then PPS NAL units: what a decoder needs before a keyframe."""
        return self.vps + self.sps + self.pps

    def codec_string(self, sample_entry: str = "hvc1") -> str:
        """The codecs value of ISO/IEC 14496-15 annex E, for example ``hvc1.1.6.L93.B0``.

        :param sample_entry: ``hvc1`` (parameter sets only in the sample
            entry) or ``hev1`` (also in band).
        """
        reversed_compatibility = int(f"{self.compatibility:032b}"[::-1], 2)
        constraint_bytes = self.constraints.to_bytes(6, "big").rstrip(b"\x00")
        parts = [
            sample_entry,
            f"{_PROFILE_SPACE_LETTERS[self.profile_space]}{self.profile}",
            f"{reversed_compatibility:X}",
            f"{'H' if self.tier else 'L'}{self.level}",
            *(f"{byte:X}" for byte in constraint_bytes),
        ]
        return ".".join(parts)


def parse_hevc_config(data: bytes) -> HEVCDecoderConfig:
    """Parse an HEVCDecoderConfigurationRecord (``hvcC``).

    :param data: the record: the body of an Enhanced RTMP ``hvc1``
        SequenceStart after its FourCC (or of a legacy codec-id-12 sequence
        header after its 5-byte VideoTagHeader).
    :raises CodecError: not configurationVersion 1, truncated, or an empty
        parameter set.
    """
    reader = _RecordReader(data, "HEVCDecoderConfigurationRecord")
    version, profile_byte = reader.take(2)
    if version != _CONFIGURATION_VERSION:
        raise CodecError(f"HEVCDecoderConfigurationRecord version {version}, expected 1")
    compatibility = reader.uint(4)
    constraints = reader.uint(6)
    level = reader.uint(1)
    # min_spatial_segmentation_idc (u16) and parallelismType (u8): unused.
    reader.take(3)
    chroma_format, luma_byte, chroma_byte = reader.take(3)
    # avgFrameRate (u16): unused.
    reader.take(2)
    length_byte, array_count = reader.take(2)
    arrays: dict[int, list[bytes]] = {HevcNalType.VPS: [], HevcNalType.SPS: [], HevcNalType.PPS: []}
    for _ in range(array_count):
        nal_type = reader.uint(1) & 0x3F
        nalus = [reader.parameter_set() for _ in range(reader.uint(2))]
        if nal_type in arrays:
            arrays[nal_type] += nalus
    return HEVCDecoderConfig(
        profile_space=profile_byte >> 6,
        tier=(profile_byte >> 5) & 0x01,
        profile=profile_byte & 0x1F,
        compatibility=compatibility,
        constraints=constraints,
        level=level,
        chroma_format=chroma_format & 0x03,
        bit_depth_luma=(luma_byte & 0x07) + 8,
        bit_depth_chroma=(chroma_byte & 0x07) + 8,
        nalu_length_size=(length_byte & 0x03) + 1,
        vps=tuple(arrays[HevcNalType.VPS]),
        sps=tuple(arrays[HevcNalType.SPS]),
        pps=tuple(arrays[HevcNalType.PPS]),
    )
