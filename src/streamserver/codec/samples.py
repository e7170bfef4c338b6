"""Media samples: the coded frame or decoder configuration an RTMP/FLV tag carries.

A muxer (MPEG-TS, fragmented MP4) needs, for each audio or video message,
which track and codec it belongs to, its decode and presentation times, and
the codec's own bytes without the FLV framing.  :func:`parse_video`,
:func:`parse_audio` and :func:`parse_tag` read that into a :class:`Sample`;
:class:`TimestampUnwrapper` turns RTMP's 32-bit millisecond timestamps into a
clock that does not wrap.

Implements the AudioTagHeader and VideoTagHeader of the Adobe Flash Video
File Format Specification v10.1, annex E (E.4.2.1 with AACPacketType; E.4.3.1
with AVCPacketType and its SI24 CompositionTime), and of Enhanced RTMP
(veovera enhanced-rtmp v1 and v2) the ExVideoTagHeader (VideoPacketType
SequenceStart, CodedFrames with an SI24 composition time for ``avc1`` and
``hvc1``, CodedFramesX without) and the ExAudioTagHeader (AudioPacketType
SequenceStart, CodedFrames), skipping ModEx prefixes (a nanosecond timestamp
offset is below the millisecond clock and is dropped).

Codecs (:class:`Codec`): legacy AVC (codec id 7) and the non-standard legacy
HEVC id 12 (same layout as AVC, with an hvcC); Enhanced RTMP ``avc1``,
``hvc1``, ``av01`` and ``vp09``; legacy AAC (sound format 10) and MP3 (2, and
14 for 8 kHz); Enhanced RTMP ``mp4a``, ``Opus`` and ``.mp3``.

Contract: the parsers return ``None`` for a tag that carries no sample to mux
(an empty body, a video command or info frame, metadata, an end of sequence,
a multitrack tag, an MPEG-2 TS sequence start, a multichannel configuration,
reserved packet types, a coded frame without data, a codec not listed
above), raise :class:`~streamserver.errors.CodecError` for a header cut short,
and nothing else whatever the bytes.  They do not look into the codec data:
a sequence header's configuration is parsed by :mod:`~streamserver.codec.avc`
or :mod:`~streamserver.codec.aac` when a muxer needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from streamserver.codec.flv import TAG_AUDIO, TAG_VIDEO
from streamserver.errors import CodecError

__all__ = [
    "Codec",
    "Sample",
    "TimestampUnwrapper",
    "Track",
    "parse_audio",
    "parse_tag",
    "parse_video",
]


class Track(Enum):
    """Which track of a stream a sample belongs to."""

    VIDEO = "video"
    AUDIO = "audio"


class Codec(StrEnum):
    """The codecs a sample can carry; the values are :mod:`~streamserver.codec.flv`'s names."""

    AVC = "avc"
    HEVC = "hevc"
    AV1 = "av1"
    VP9 = "vp9"
    AAC = "aac"
    MP3 = "mp3"
    OPUS = "opus"


@dataclass(frozen=True, slots=True)
class Sample:
    """One coded frame, or a codec's decoder configuration, with its times.

    :ivar track: video or audio.
    :ivar codec: the codec of :attr:`data`.
    :ivar dts: decode time in milliseconds: the message timestamp given to
        the parser (unwrap it first with :class:`TimestampUnwrapper`).
    :ivar pts: presentation time in milliseconds: *dts* plus the signed
        composition time for AVC and HEVC (B-frames), else *dts*.  A
        malformed stream can make it smaller than *dts*; muxers decide.
    :ivar data: for a configuration (:attr:`is_config`): the decoder
        configuration record (avcC, hvcC, av1C, vpcC), AudioSpecificConfig
        or Opus ID header (``OpusHead``).  Otherwise the coded frame: AVC and
        HEVC NAL units each after its length (the size given by the
        configuration), AV1 OBUs, a VP9 frame, a raw AAC frame (no ADTS
        header), MP3 frames, an Opus packet.
    :ivar is_keyframe: a video frame a decoder can start on (FLV frame type
        1, or 4: generated keyframe); every audio frame.  False for a
        configuration.
    :ivar is_config: a sequence header: :attr:`data` is the configuration.
    """

    track: Track
    codec: Codec
    dts: int
    pts: int
    data: bytes
    is_keyframe: bool = False
    is_config: bool = False

    @property
    def composition_time(self) -> int:
        """``pts - dts`` in milliseconds."""
        return self.pts - self.dts


# --- timestamps ------------------------------------------------------------------

_WRAP = 1 << 32
_HALF_WRAP = 1 << 31


class TimestampUnwrapper:
    """Turns 32-bit RTMP millisecond timestamps into a 64-bit clock that does not wrap.

    RTMP timestamps count milliseconds in 32 bits and wrap after 49.7 days
    (RTMP 5.3.1.1).  Each timestamp is placed at the 64-bit value nearest to
    the previous one that agrees with it modulo 2**32: a step of less than
    2**31 ms (24.8 days) either way is taken as a step.  So 0xFFFFFFF0 then
    0x10 is 32 ms forward across a wrap, and 1000 then 990 (a publisher's
    clock stepping back, audio and video interleaved slightly out of order)
    is 10 ms back, not a wrap.  The first timestamp is taken as it is; the
    clock never reads below 0 (a step back past the start reads 0).

    Use one per published stream: audio and video share the RTMP clock.

    :ivar _last: the 64-bit value of the last timestamp, before the 0 floor.
    """

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, timestamp: int) -> int:
        """The 64-bit millisecond time of the 32-bit *timestamp* (only its low 32 bits count)."""
        timestamp &= _WRAP - 1
        if self._last is None:
            self._last = timestamp
        else:
            step = (timestamp - self._last) % _WRAP
            if step >= _HALF_WRAP:
                step -= _WRAP
            self._last += step
        return max(self._last, 0)


# --- FLV and Enhanced RTMP headers --------------------------------------------------

_EX_HEADER = 0x80

# Legacy VideoTagHeader (E.4.3.1).
_FT_KEY = 1
_FT_GENERATED_KEY = 4
_FT_COMMAND = 5
_KEY_FRAME_TYPES = (_FT_KEY, _FT_GENERATED_KEY)
_VIDEO_CODEC_IDS = {7: Codec.AVC, 12: Codec.HEVC}
_AVC_SEQUENCE_HEADER = 0
_AVC_NALU = 1
#: VideoTagHeader + AVCPacketType + SI24 CompositionTime.
_AVC_HEADER_SIZE = 5

# Enhanced RTMP packet types; ModEx (7) is the same value for audio and video.
_VPT_SEQUENCE_START = 0
_VPT_CODED_FRAMES = 1
_VPT_CODED_FRAMES_X = 3
_VPT_METADATA = 4
_PT_MOD_EX = 7
_APT_SEQUENCE_START = 0
_APT_CODED_FRAMES = 1

_VIDEO_FOURCCS = {b"avc1": Codec.AVC, b"hvc1": Codec.HEVC, b"av01": Codec.AV1, b"vp09": Codec.VP9}
_AUDIO_FOURCCS = {b"mp4a": Codec.AAC, b"Opus": Codec.OPUS, b".mp3": Codec.MP3}
#: The codecs whose CodedFrames carry an SI24 composition time.
_COMPOSITION_TIME_CODECS = (Codec.AVC, Codec.HEVC)

# Legacy AudioTagHeader (E.4.2.1): SoundFormat in the high nibble.
_SOUND_MP3 = 2
_SOUND_EX_HEADER = 9
_SOUND_AAC = 10
_SOUND_MP3_8KHZ = 14
_AAC_SEQUENCE_HEADER = 0
_AAC_RAW = 1


def _si24(payload: bytes, pos: int) -> int:
    """The signed 24-bit big-endian integer at *pos* (a composition time)."""
    value = int.from_bytes(payload[pos : pos + 3], "big")
    return value - (1 << 24) if value & 0x800000 else value


def _skip_mod_ex(payload: bytes, packet_type: int, what: str) -> tuple[int, int]:
    """Skip Enhanced RTMP ModEx prefixes after the first byte.

    Each prefix is a size (u8 + 1, or u16 + 1 after 255), that many bytes,
    then a byte holding the ModEx type and the next packet type.

    :returns: the real packet type and the offset after it.
    :raises CodecError: a prefix runs past the end.
    """
    pos = 1
    while packet_type == _PT_MOD_EX:
        if pos >= len(payload):
            raise CodecError(f"{what}: ModEx size cut off")
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > len(payload):
                raise CodecError(f"{what}: ModEx size cut off")
            size = int.from_bytes(payload[pos : pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= len(payload):
            raise CodecError(f"{what}: ModEx prefix runs past the end")
        packet_type = payload[pos] & 0x0F
        pos += 1
    return packet_type, pos


def _fourcc(payload: bytes, pos: int, what: str) -> bytes:
    fourcc = payload[pos : pos + 4]
    if len(fourcc) < 4:
        raise CodecError(f"{what}: FourCC cut off")
    return bytes(fourcc)


def parse_video(payload: bytes, timestamp: int) -> Sample | None:
    """The sample of a video message body, or ``None`` if it carries none to mux.

    :param payload: the video tag body, from its VideoTagHeader on.
    :param timestamp: its time in milliseconds, the sample's DTS.
    :raises CodecError: the header is cut short.
    """
    if not payload:
        return None
    first = payload[0]
    if first & _EX_HEADER:
        return _parse_ex_video(payload, timestamp)
    frame_type = first >> 4
    codec = _VIDEO_CODEC_IDS.get(first & 0x0F)
    if codec is None or frame_type == _FT_COMMAND:
        return None
    if len(payload) < _AVC_HEADER_SIZE:
        raise CodecError(f"{codec} video tag of {len(payload)} bytes has no full header")
    packet_type = payload[1]
    data = bytes(payload[_AVC_HEADER_SIZE:])
    if packet_type == _AVC_SEQUENCE_HEADER:
        return Sample(Track.VIDEO, codec, timestamp, timestamp, data, is_config=True)
    if packet_type != _AVC_NALU or not data:
        return None
    pts = timestamp + _si24(payload, 2)
    return Sample(Track.VIDEO, codec, timestamp, pts, data, frame_type in _KEY_FRAME_TYPES)


def _parse_ex_video(payload: bytes, timestamp: int) -> Sample | None:
    first = payload[0]
    frame_type = (first >> 4) & 0x07
    packet_type, pos = _skip_mod_ex(payload, first & 0x0F, "Enhanced RTMP video tag")
    # A command frame holds one command byte, no FourCC (except as metadata).
    if frame_type == _FT_COMMAND and packet_type != _VPT_METADATA:
        return None
    if packet_type not in (_VPT_SEQUENCE_START, _VPT_CODED_FRAMES, _VPT_CODED_FRAMES_X):
        return None
    codec = _VIDEO_FOURCCS.get(_fourcc(payload, pos, "Enhanced RTMP video tag"))
    if codec is None:
        return None
    pos += 4
    if packet_type == _VPT_SEQUENCE_START:
        data = bytes(payload[pos:])
        return Sample(Track.VIDEO, codec, timestamp, timestamp, data, is_config=True)
    pts = timestamp
    if packet_type == _VPT_CODED_FRAMES and codec in _COMPOSITION_TIME_CODECS:
        if pos + 3 > len(payload):
            raise CodecError("Enhanced RTMP video tag: composition time cut off")
        pts += _si24(payload, pos)
        pos += 3
    data = bytes(payload[pos:])
    if not data:
        return None
    return Sample(Track.VIDEO, codec, timestamp, pts, data, frame_type in _KEY_FRAME_TYPES)


def parse_audio(payload: bytes, timestamp: int) -> Sample | None:
    """The sample of an audio message body, or ``None`` if it carries none to mux.

    :param payload: the audio tag body, from its AudioTagHeader on.
    :param timestamp: its time in milliseconds, the sample's DTS and PTS.
    :raises CodecError: the header is cut short.
    """
    if not payload:
        return None
    sound_format = payload[0] >> 4
    if sound_format == _SOUND_AAC:
        if len(payload) < 2:
            raise CodecError("AAC audio tag has no AACPacketType")
        packet_type = payload[1]
        data = bytes(payload[2:])
        if packet_type == _AAC_SEQUENCE_HEADER:
            return Sample(Track.AUDIO, Codec.AAC, timestamp, timestamp, data, is_config=True)
        if packet_type != _AAC_RAW or not data:
            return None
        return Sample(Track.AUDIO, Codec.AAC, timestamp, timestamp, data, is_keyframe=True)
    if sound_format in (_SOUND_MP3, _SOUND_MP3_8KHZ):
        data = bytes(payload[1:])
        if not data:
            return None
        return Sample(Track.AUDIO, Codec.MP3, timestamp, timestamp, data, is_keyframe=True)
    if sound_format == _SOUND_EX_HEADER:
        return _parse_ex_audio(payload, timestamp)
    return None


def _parse_ex_audio(payload: bytes, timestamp: int) -> Sample | None:
    packet_type, pos = _skip_mod_ex(payload, payload[0] & 0x0F, "Enhanced RTMP audio tag")
    if packet_type not in (_APT_SEQUENCE_START, _APT_CODED_FRAMES):
        return None
    codec = _AUDIO_FOURCCS.get(_fourcc(payload, pos, "Enhanced RTMP audio tag"))
    if codec is None:
        return None
    data = bytes(payload[pos + 4 :])
    if packet_type == _APT_SEQUENCE_START:
        return Sample(Track.AUDIO, codec, timestamp, timestamp, data, is_config=True)
    if not data:
        return None
    return Sample(Track.AUDIO, codec, timestamp, timestamp, data, is_keyframe=True)


def parse_tag(tag_type: int, payload: bytes, timestamp: int) -> Sample | None:
    """The sample of an FLV tag or RTMP message of type *tag_type* (8 audio, 9 video).

    Any other type (script data…) carries no sample: ``None``.

    :raises CodecError: an audio or video header is cut short.
    """
    if tag_type == TAG_VIDEO:
        return parse_video(payload, timestamp)
    if tag_type == TAG_AUDIO:
        return parse_audio(payload, timestamp)
    return None
