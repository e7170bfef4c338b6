"""Media info: what a stream carries, read from its metadata and sequence headers.

:func:`media_info` takes the payloads a stream caches -- ``onMetaData``, the
video and audio sequence headers -- and, for codecs without a sequence header
(MP3, H.263, VP6), one coded frame of each track, and says what they describe:
the video codec with its profile and level, the picture size and frame rate,
the audio codec with its profile, sample rate and channels.

Read from:

- the FLV tag headers (Adobe FLV spec v10.1, annex E.4.2.1 AudioTagHeader and
  E.4.3.1 VideoTagHeader) and Enhanced RTMP v2 (ExVideoTagHeader,
  ExAudioTagHeader: FourCC, ModEx, multitrack), as :mod:`streamserver.codec.flv`
  recognises them;
- H.264: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1):
  AVCProfileIndication, profile_compatibility, AVCLevelIndication;
- HEVC: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1):
  general_profile_idc, general_level_idc.  Only these fields, at fixed offsets,
  are read: a record without its parameter sets, which
  :mod:`streamserver.codec.avc` (parsing records whole, for the muxers)
  refuses, still names its profile;
- AV1: the AV1CodecConfigurationRecord (AV1 Codec ISO Media File Format
  Binding 2.3.3): seq_profile, seq_level_idx_0;
- VP9: the VPCodecConfigurationRecord (VP Codec ISO Media File Format Binding
  2.2: profile, level), with or without the ``vpcC`` box's version and flags
  in front (ffmpeg writes them);
- AAC: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), as
  :func:`streamserver.codec.aac.parse_audio_specific_config` reads it (object
  type, rate, channels, the explicit SBR/PS signalling of HE-AAC);
- Opus: the ``OpusHead`` identification header (RFC 7845 5.1): channel count;
- ``onMetaData``: ``width``, ``height``, ``framerate`` (or ``videoframerate``),
  ``videocodecid``, ``audiocodecid`` (legacy ids or FourCCs), ``audiosamplerate``,
  ``audiochannels``, ``stereo``.

A sequence header wins over metadata, metadata over the legacy sound header's
rate and type bits (which AAC always sets to 44 kHz stereo whatever it carries).
Picture size and frame rate come from metadata only (the SPS is not parsed).

Codec names are ffmpeg's (``h264``, ``hevc``, ``av1``, ``vp9``, ``aac``,
``mp3``, ``opus``...), as ``ffprobe`` reports them.  Whatever the bytes,
:func:`media_info` never raises: what it cannot read is ``None`` (or the codec
``"unknown"``).  Plain Python, no Twisted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streamserver.codec import amf0
from streamserver.codec.aac import ObjectType, parse_audio_specific_config
from streamserver.codec.flv import audio_codec_name, video_codec_name
from streamserver.errors import CodecError, ProtocolError, UsageError

__all__ = [
    "MAX_TITLE_LENGTH",
    "AudioInfo",
    "MediaInfo",
    "VideoInfo",
    "media_info",
    "metadata_title",
]


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """The video track of a stream.

    :ivar codec: ``h264``, ``hevc``, ``av1``, ``vp9``, ``vp8``, ``h263``, ``vp6``...
        or ``unknown``.
    :ivar profile: ``High``, ``Main 10``... (``None`` unknown).
    :ivar level: ``3.1``, ``4.0``... (``None`` unknown).
    :ivar width: pixels, from metadata.
    :ivar height: pixels, from metadata.
    :ivar fps: frames per second, from metadata.
    """

    codec: str
    profile: str | None = None
    level: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """The audio track of a stream.

    :ivar codec: ``aac``, ``mp3``, ``opus``, ``pcm``... or ``unknown``.
    :ivar profile: the AAC object type (``LC``, ``HE-AAC``, ``HE-AACv2``...).
    :ivar sample_rate: Hz (for HE-AAC the output rate, with SBR).
    :ivar channels: how many.
    """

    codec: str
    profile: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What a stream carries: ``None`` for a track nothing tells of."""

    video: VideoInfo | None = None
    audio: AudioInfo | None = None


#: No info at all (nothing cached yet).
NO_MEDIA_INFO = MediaInfo()

# Bounds of believable metadata values: anything outside is an encoder's garbage.
_MAX_DIMENSION = 65535
_MAX_FPS = 1000.0
_MAX_SAMPLE_RATE = 1_000_000
_MAX_CHANNELS = 255

# --- the FLV and Enhanced RTMP headers ----------------------------------------------

# Enhanced RTMP: IsExHeader is bit 7 of a video payload's first byte; an audio
# payload is enhanced when its SoundFormat (high nibble) is 9.
_EX_VIDEO = 0x80
_SOUND_EX_HEADER = 9
_SOUND_AAC = 10
_SEQUENCE_START = 0  # VideoPacketType and AudioPacketType
_VIDEO_MULTITRACK = 6
_AUDIO_MULTITRACK = 5
_MOD_EX = 7
_AUDIO_MULTICHANNEL_CONFIG = 4
_MAX_MOD_EX = 4  # as codec/flv.py: real streams carry one or two
# AvMultitrackType
_ONE_TRACK = 0
_MANY_TRACKS = 1
_MANY_TRACKS_MANY_CODECS = 2

# Legacy codec ids with a sequence header: AVC (7), and HEVC under the
# non-standard id 12; both with AVCPacketType 0 and a 24-bit composition time.
_LEGACY_AVC = 7
_LEGACY_HEVC = 12
_LEGACY_CONFIG_OFFSET = 5


def _ex_config(payload: bytes, *, multitrack: int) -> tuple[bytes, bytes] | None:
    """``(FourCC, configuration record)`` of an Enhanced RTMP sequence start, or ``None``.

    *payload* is an enhanced audio or video payload; *multitrack* its packet type
    for a multitrack packet.  Skips ModEx prefixes; of a multitrack packet, the
    first track is read.
    """
    packet_type = payload[0] & 0x0F
    pos = 1
    for _ in range(_MAX_MOD_EX + 1):
        if packet_type != _MOD_EX:
            break
        if pos >= len(payload):
            return None
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            size = int.from_bytes(payload[pos : pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= len(payload):
            return None
        packet_type = payload[pos] & 0x0F
        pos += 1
    else:
        return None
    if packet_type == _SEQUENCE_START:
        fourcc, record = payload[pos : pos + 4], payload[pos + 4 :]
    elif packet_type == _AUDIO_MULTICHANNEL_CONFIG and multitrack == _AUDIO_MULTITRACK:
        fourcc, record = payload[pos : pos + 4], b""  # a channel layout: no record
    elif packet_type == multitrack and pos < len(payload):
        kind, inner = payload[pos] >> 4, payload[pos] & 0x0F
        pos += 1
        if inner != _SEQUENCE_START:
            return None
        # OneTrack: FourCC, track id, body.  ManyTracks: FourCC, then per track an
        # id and a u24 size.  ManyTracksManyCodecs: per track FourCC, id, u24 size.
        fourcc = payload[pos : pos + 4]
        pos += 5
        if kind == _ONE_TRACK:
            record = payload[pos:]
        elif kind in (_MANY_TRACKS, _MANY_TRACKS_MANY_CODECS):
            size = int.from_bytes(payload[pos : pos + 3], "big")
            record = payload[pos + 3 : pos + 3 + size]
        else:
            return None
    else:
        return None
    return (bytes(fourcc), bytes(record)) if len(fourcc) == 4 else None


# --- video ---------------------------------------------------------------------------

_H264_PROFILES = {
    44: "CAVLC 4:4:4 Intra",
    66: "Baseline",
    77: "Main",
    83: "Scalable Baseline",
    86: "Scalable High",
    88: "Extended",
    100: "High",
    110: "High 10",
    118: "Multiview High",
    122: "High 4:2:2",
    128: "Stereo High",
    244: "High 4:4:4 Predictive",
}
_H264_CONSTRAINT_SET1 = 0x40
_H264_CONSTRAINT_SET3 = 0x10

_HEVC_PROFILES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Range Extensions",
    9: "Screen Content Coding",
}

_AV1_PROFILES = {0: "Main", 1: "High", 2: "Professional"}
#: seq_level_idx 31: no level constraint (AV1 spec A.3).
_AV1_LEVEL_MAX = 31
#: The av1C record's first byte: marker bit 1, version 1.
_AV1C_MARKER_VERSION = 0x81


def _h264(record: bytes) -> tuple[str | None, str | None]:
    """``(profile, level)`` of an AVCDecoderConfigurationRecord."""
    if len(record) < 4 or record[0] != 1:
        return None, None
    profile_idc, compatibility, level_idc = record[1], record[2], record[3]
    profile = _H264_PROFILES.get(profile_idc, str(profile_idc))
    if profile_idc == 66 and compatibility & _H264_CONSTRAINT_SET1:
        profile = "Constrained Baseline"
    if level_idc == 9 or (
        level_idc == 11 and profile_idc in (66, 77, 88) and compatibility & _H264_CONSTRAINT_SET3
    ):
        level = "1b"
    elif level_idc:
        level = f"{level_idc // 10}.{level_idc % 10}"
    else:
        level = None
    return profile, level


def _hevc(record: bytes) -> tuple[str | None, str | None]:
    """``(profile, level)`` of an HEVCDecoderConfigurationRecord."""
    if len(record) < 13 or record[0] != 1:
        return None, None
    profile_idc = record[1] & 0x1F
    level_idc = record[12]  # after 4 bytes of compatibility and 6 of constraint flags
    profile = _HEVC_PROFILES.get(profile_idc, str(profile_idc)) if profile_idc else None
    # general_level_idc is 30 times the level number (A.4)
    level = f"{level_idc // 30}.{level_idc % 30 // 3}" if level_idc else None
    return profile, level


def _av1(record: bytes) -> tuple[str | None, str | None]:
    """``(profile, level)`` of an AV1CodecConfigurationRecord."""
    if len(record) < 2 or record[0] != _AV1C_MARKER_VERSION:
        return None, None
    seq_profile, level_idx = record[1] >> 5, record[1] & 0x1F
    profile = _AV1_PROFILES.get(seq_profile, str(seq_profile))
    # seq_level_idx: X.Y is 4 * (X - 2) + Y (AV1 spec A.3)
    level = None if level_idx == _AV1_LEVEL_MAX else f"{2 + (level_idx >> 2)}.{level_idx & 3}"
    return profile, level


def _vp9(record: bytes) -> tuple[str | None, str | None]:
    """``(profile, level)`` of a VPCodecConfigurationRecord, maybe after vpcC's version/flags."""
    if len(record) >= 6 and record[0] == 1 and record[1:4] == b"\x00\x00\x00":
        record = record[4:]  # version 1, flags 0: no level is 0, so this is the box header
    if len(record) < 2 or record[0] > 3:
        return None, None
    level = record[1]
    return f"Profile {record[0]}", f"{level // 10}.{level % 10}" if level else None


_VIDEO_RECORDS = {
    b"avc1": _h264,
    b"hvc1": _hevc,
    b"av01": _av1,
    b"vp09": _vp9,
}


def _ffmpeg_name(name: str) -> str:
    """A :mod:`~streamserver.codec.flv` codec name as ffmpeg spells it."""
    return "h264" if name == "avc" else name


def _video_header(payload: bytes) -> tuple[str, str | None, str | None]:
    """``(codec, profile, level)`` of a video sequence header (or any video payload)."""
    codec = _ffmpeg_name(video_codec_name(payload))
    if not payload:
        return codec, None, None
    if payload[0] & _EX_VIDEO:
        found = _ex_config(payload, multitrack=_VIDEO_MULTITRACK)
        if found is None:
            return codec, None, None
        fourcc, record = found
        read = _VIDEO_RECORDS.get(fourcc)
        profile, level = read(record) if read is not None else (None, None)
        return _ffmpeg_name(video_codec_name(bytes([_EX_VIDEO]) + fourcc)), profile, level
    legacy = payload[0] & 0x0F
    if legacy in (_LEGACY_AVC, _LEGACY_HEVC) and len(payload) > 1 and payload[1] == 0:
        read = _h264 if legacy == _LEGACY_AVC else _hevc
        return (codec, *read(payload[_LEGACY_CONFIG_OFFSET:]))
    return codec, None, None


# --- audio ---------------------------------------------------------------------------

_AAC_OBJECT_TYPES = {
    1: "Main",
    2: "LC",
    3: "SSR",
    4: "LTP",
    5: "HE-AAC",
    6: "Scalable",
    17: "ER AAC LC",
    23: "LD",
    29: "HE-AACv2",
    39: "ELD",
    42: "xHE-AAC",
}

#: FLV SoundRate (E.4.2.1) for the codecs whose rate the header gives.
_FLV_SOUND_RATES = (5512, 11025, 22050, 44100)
#: Codecs with a fixed rate whatever SoundRate says: Nellymoser 16/8 kHz, G.711
#: A-law and mu-law, Speex, MP3 8 kHz (E.4.2.1 notes).
_FLV_FIXED_RATES = {4: 16000, 5: 8000, 7: 8000, 8: 8000, 11: 16000, 14: 8000}

_OPUS_HEAD = b"OpusHead"
#: Opus always decodes at 48 kHz (RFC 7845 5.1: the input rate is informative).
_OPUS_RATE = 48000


def _aac(config: bytes) -> tuple[str | None, int | None, int | None]:
    """``(profile, sample rate, channels)`` of an AudioSpecificConfig (``None``s if unreadable).

    For HE-AAC the profile and the rate are the SBR layer's (what is heard);
    parametric stereo makes a mono core stereo.
    """
    try:
        parsed = parse_audio_specific_config(config)
    except CodecError:
        return None, None, None
    kind = parsed.extension_object_type or parsed.object_type
    channels = parsed.channels
    if parsed.extension_object_type == ObjectType.PS and channels == 1:
        channels = 2
    return (
        _AAC_OBJECT_TYPES.get(kind, str(kind)),
        parsed.extension_sample_rate or parsed.sample_rate,
        channels,
    )


def _opus(head: bytes) -> int | None:
    """The channel count of an ``OpusHead``."""
    if len(head) >= 10 and head.startswith(_OPUS_HEAD):
        return head[9] or None
    return None


def _audio_header(payload: bytes) -> tuple[AudioInfo, bool]:
    """What an audio sequence header (or any audio payload) says.

    :returns: the info, and whether its rate and channels are only the legacy
        header's SoundRate and SoundType bits (a guess metadata overrides).
    """
    codec = audio_codec_name(payload)
    sound_format = payload[0] >> 4
    if sound_format == _SOUND_EX_HEADER:
        found = _ex_config(payload, multitrack=_AUDIO_MULTITRACK)
        if found is None:
            return AudioInfo(codec), False
        fourcc, record = found
        codec = audio_codec_name(bytes([_SOUND_EX_HEADER << 4]) + fourcc)
        if codec == "aac" and record:
            return AudioInfo(codec, *_aac(record)), False
        if codec == "opus":
            return AudioInfo(codec, None, _OPUS_RATE, _opus(record)), False
        return AudioInfo(codec), False
    if sound_format == _SOUND_AAC:
        if len(payload) > 2 and payload[1] == 0:
            return AudioInfo(codec, *_aac(payload[2:])), False
        return AudioInfo(codec), False  # a raw frame: its bits say 44 kHz stereo, always
    sample_rate = _FLV_FIXED_RATES.get(sound_format, _FLV_SOUND_RATES[(payload[0] >> 2) & 3])
    return AudioInfo(codec, None, sample_rate, 2 if payload[0] & 1 else 1), True


# --- metadata ------------------------------------------------------------------------


def _properties(metadata: bytes | None) -> dict[str, Any]:
    """The properties of an ``onMetaData`` payload (``{}`` if none can be read)."""
    if not metadata:
        return {}
    try:
        values = amf0.decode_all(metadata)
    except (ProtocolError, UsageError):
        return {}
    if values[:1] == ["@setDataFrame"]:
        values = values[1:]
    if values[:1] != ["onMetaData"]:
        return {}
    return next((v for v in values[1:] if isinstance(v, dict)), {})


#: Longest title shown, in characters: a page's heading, not an essay.
MAX_TITLE_LENGTH = 200


def metadata_title(metadata: bytes | None) -> str | None:
    """The ``title`` an ``onMetaData`` payload carries (OBS, ffmpeg ``-metadata title=``).

    Control characters become spaces, whitespace is trimmed, and it is cut to
    :data:`MAX_TITLE_LENGTH` characters; ``None`` when there is none (or nothing left).
    """
    value = _properties(metadata).get("title")
    if not isinstance(value, str):
        return None
    text = "".join(" " if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in value)
    text = " ".join(text.split())[:MAX_TITLE_LENGTH].strip()
    return text or None


def _number(value: Any, limit: float) -> float | None:
    """*value* if it is a finite number in ``(0, limit]``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 < number <= limit else None


def _integer(value: Any, limit: int) -> int | None:
    number = _number(value, limit)
    return round(number) if number is not None and round(number) > 0 else None


def _codec_id(value: Any, *, video: bool) -> str | None:
    """The codec a metadata ``videocodecid``/``audiocodecid`` names, or ``None``.

    A legacy codec id (7 is AVC, 10 AAC...), or an Enhanced RTMP FourCC as the
    number of its four bytes (``hvc1`` is 0x68766331) or as a string.  Named as
    :mod:`~streamserver.codec.flv` names a header carrying it.
    """
    if isinstance(value, str):
        fourcc = value.encode("latin-1", "replace")[:4]
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        number = int(value)
        if 0 <= number < 16:
            header = bytes([number]) if video else bytes([number << 4])
            name = video_codec_name(header) if video else audio_codec_name(header)
            return None if name == "unknown" else _ffmpeg_name(name)
        if not 0 <= number <= 0xFFFFFFFF:
            return None
        fourcc = number.to_bytes(4, "big")
    else:
        return None
    if len(fourcc) != 4:
        return None
    if video:
        name = video_codec_name(bytes([_EX_VIDEO]) + fourcc)
    else:
        name = audio_codec_name(bytes([_SOUND_EX_HEADER << 4]) + fourcc)
    return None if name == "unknown" else _ffmpeg_name(name)


# --- the whole ------------------------------------------------------------------------


def media_info(
    *,
    metadata: bytes | None = None,
    video_header: bytes | None = None,
    audio_header: bytes | None = None,
    video_frame: bytes | None = None,
    audio_frame: bytes | None = None,
) -> MediaInfo:
    """What a stream carries, from the payloads it caches.

    :param metadata: the ``onMetaData`` data message (with or without
        ``@setDataFrame`` in front).
    :param video_header: the video sequence header's payload.
    :param audio_header: the audio sequence header's payload.
    :param video_frame: a coded video frame, for a codec without a sequence header.
    :param audio_frame: a coded audio frame, for a codec without a sequence header.
    :returns: the tracks something tells of; never raises.
    """
    properties = _properties(metadata)
    video: VideoInfo | None = None
    source = video_header or video_frame
    codec = profile = level = None
    if source:
        codec, profile, level = _video_header(source)
    meta_video = _codec_id(properties.get("videocodecid"), video=True)
    if codec is None or (codec == "unknown" and meta_video is not None):
        codec = meta_video
    width = _integer(properties.get("width"), _MAX_DIMENSION)
    height = _integer(properties.get("height"), _MAX_DIMENSION)
    fps = _number(properties.get("framerate", properties.get("videoframerate")), _MAX_FPS)
    if codec is None and (width or height or fps):
        codec = "unknown"  # metadata describes a picture without naming its codec
    if codec is not None:
        video = VideoInfo(codec, profile, level, width, height, fps)

    audio: AudioInfo | None = None
    source = audio_header or audio_frame
    meta_audio = _codec_id(properties.get("audiocodecid"), video=False)
    sample_rate = _integer(properties.get("audiosamplerate"), _MAX_SAMPLE_RATE)
    channels = _integer(properties.get("audiochannels"), _MAX_CHANNELS)
    stereo = properties.get("stereo")
    if channels is None and isinstance(stereo, bool):
        channels = 2 if stereo else 1
    if source:
        read, guessed = _audio_header(source)
        if guessed:  # metadata over the legacy header's bits
            sample_rate = sample_rate or read.sample_rate
            channels = channels or read.channels
        else:  # a sequence header over metadata
            sample_rate = read.sample_rate or sample_rate
            channels = read.channels or channels
        codec = meta_audio if read.codec == "unknown" and meta_audio else read.codec
        audio = AudioInfo(codec, read.profile, sample_rate, channels)
    elif meta_audio is not None:
        audio = AudioInfo(meta_audio, None, sample_rate, channels)
    return MediaInfo(video, audio)
