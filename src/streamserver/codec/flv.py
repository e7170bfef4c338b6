"""FLV files and peeking at the media inside RTMP audio, video and data messages.

Implements the FLV container of the Adobe Flash Video File Format
Specification v10.1, annex E (E.2 header, E.3 body, E.4.1 tag header), plus
the audio and video tag headers (E.4.2.1, E.4.3.1) as extended by Enhanced
RTMP (veovera enhanced-rtmp v1 and v2: ExVideoTagHeader with FourCC codecs,
ExAudioTagHeader, multitrack, ModEx).

An FLV tag and an RTMP media message are the same thing: the tag types 8
(audio), 9 (video) and 18 (script data) are the RTMP message type ids, and the
tag body is the message payload.  :func:`tag_to_message` and
:func:`message_to_tag` convert between them.

:func:`classify` is called by the server once per published frame to decide
what a frame is (sequence header, keyframe, droppable inter frame…).  It and
the ``*_codec_name`` helpers look at the first few bytes only, never raise, and
classify empty or unknown payloads conservatively: as something not to drop
(:attr:`FrameKind.OTHER`), never as a keyframe.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from pathlib import Path

from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType
from streamserver.errors import FLVError, ProtocolError, UsageError

# --- FLV file layout (annex E.2, E.3, E.4.1) ----------------------------------

#: The FLV header: 'FLV', version, flags, u32 DataOffset (E.2).
FLV_HEADER_SIZE = 9

#: The only FLV version (E.2).
FLV_VERSION = 1

#: Tag type ids (E.4.1); equal to the RTMP message type ids.
TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT_DATA = 18
_KNOWN_TAG_TYPES = frozenset({TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT_DATA})

#: A tag header: type, u24 DataSize, u24 Timestamp, u8 TimestampExtended,
#: u24 StreamID (E.4.1).
TAG_HEADER_SIZE = 11

#: The u32 PreviousTagSize that follows the header and every tag (E.3).
_PREVIOUS_TAG_SIZE = 4

#: Largest tag body :class:`FLVReader` accepts by default.  DataSize is 24 bits
#: so nothing above 16 MiB can be expressed anyway; 8 MiB still holds an
#: intra-coded 4K frame at a very high bitrate, and caps what one bogus header
#: makes the reader buffer.
MAX_TAG_SIZE = 8 * 1024 * 1024

#: Largest DataOffset (header length) accepted.  Version 1 headers are 9
#: bytes; a larger value is allowed by E.2 for future versions but anything
#: this far off is garbage, not a header we could skip usefully.
MAX_DATA_OFFSET = 64 * 1024

_FLAG_AUDIO = 0x04
_FLAG_VIDEO = 0x01

#: Tag header bit 5: the body is encrypted (E.4.1 Filter); we cannot read it.
_FILTER_BIT = 0x20
_TAG_TYPE_MASK = 0x1F


def encode_header(*, audio: bool = True, video: bool = True) -> bytes:
    """Return the 9-byte FLV header followed by PreviousTagSize0 (0)."""
    flags = (_FLAG_AUDIO if audio else 0) | (_FLAG_VIDEO if video else 0)
    return b"FLV" + struct.pack(">BBII", FLV_VERSION, flags, FLV_HEADER_SIZE, 0)


class FLVTag:
    """One FLV tag: its type (8, 9 or 18), 32-bit millisecond timestamp and body."""

    __slots__ = ("payload", "tag_type", "timestamp")

    def __init__(self, tag_type: int, timestamp: int, payload: bytes) -> None:
        self.tag_type = tag_type
        self.timestamp = timestamp
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FLVTag):
            return NotImplemented
        return (
            self.tag_type == other.tag_type
            and self.timestamp == other.timestamp
            and self.payload == other.payload
        )

    def __hash__(self) -> int:
        return hash((self.tag_type, self.timestamp, self.payload))

    def __repr__(self) -> str:
        return (
            f"FLVTag(tag_type={self.tag_type}, timestamp={self.timestamp}, "
            f"payload=<{len(self.payload)} bytes>)"
        )


def encode_tag(tag: FLVTag) -> bytes:
    """Return *tag* as an 11-byte tag header, the body and its PreviousTagSize.

    :raises UsageError: the type, timestamp or body size does not fit the format.
    """
    size = len(tag.payload)
    if not 0 <= tag.tag_type <= _TAG_TYPE_MASK:
        raise UsageError(f"FLV tag type {tag.tag_type} does not fit 5 bits")
    if size > 0xFFFFFF:
        raise UsageError(f"FLV tag body of {size} bytes does not fit 24 bits")
    if not 0 <= tag.timestamp <= 0xFFFFFFFF:
        raise UsageError(f"FLV timestamp {tag.timestamp} does not fit 32 bits")
    ts = tag.timestamp
    # type + DataSize, Timestamp (low 24 bits) + TimestampExtended, StreamID 0.
    header = struct.pack(
        ">IIHB", (tag.tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24), 0, 0
    )
    return header + tag.payload + struct.pack(">I", TAG_HEADER_SIZE + size)


class FLVReader:
    """Incremental FLV file parser: feed bytes, get the complete tags so far.

    Checks the signature and version, skips DataOffset and every
    PreviousTagSize (writers get it wrong often enough that it is not checked),
    and skips tags of unknown type as ffmpeg does.  Tolerates the reserved
    header bits; refuses encrypted (filtered) tags and oversized ones.

    :ivar has_audio: the header's audio flag (``None`` before the header).
    :ivar has_video: the header's video flag (``None`` before the header).
    :ivar _received: bytes not parsed yet.
    :ivar _skip: bytes still to discard (rest of the header, PreviousTagSize).
    """

    def __init__(self, *, max_tag_size: int = MAX_TAG_SIZE) -> None:
        self.max_tag_size = max_tag_size
        self.has_audio: bool | None = None
        self.has_video: bool | None = None
        self._received = bytearray()
        self._skip = 0

    @property
    def at_tag_boundary(self) -> bool:
        """True when the header was read and no partial tag is buffered."""
        return self.has_audio is not None and not self._received

    def receive_data(self, data: bytes) -> list[FLVTag]:
        """Consume *data* and return the tags it completed.

        :raises FLVError: not an FLV stream, an encrypted tag, or a tag body
            larger than ``max_tag_size``.
        """
        received = self._received
        received += data
        pos = 0
        end = len(received)
        tags: list[FLVTag] = []
        try:
            if self.has_audio is None:
                pos = self._read_header(received)
                if self.has_audio is None:
                    return tags
            while True:
                if self._skip:
                    step = min(self._skip, end - pos)
                    pos += step
                    self._skip -= step
                    if self._skip:
                        break
                if end - pos < TAG_HEADER_SIZE:
                    break
                type_and_size, ts_field = struct.unpack_from(">II", received, pos)
                first = type_and_size >> 24
                size = type_and_size & 0xFFFFFF
                if first & _FILTER_BIT:
                    raise FLVError("encrypted (filtered) FLV tags are not supported")
                if size > self.max_tag_size:
                    raise FLVError(f"FLV tag of {size} bytes exceeds the {self.max_tag_size} limit")
                body_start = pos + TAG_HEADER_SIZE
                if end - body_start < size:
                    break
                tag_type = first & _TAG_TYPE_MASK
                if tag_type in _KNOWN_TAG_TYPES:
                    # 24 low bits, then TimestampExtended: the high 8 bits.
                    timestamp = (ts_field >> 8) | (ts_field & 0xFF) << 24
                    payload = bytes(received[body_start : body_start + size])
                    tags.append(FLVTag(tag_type, timestamp, payload))
                pos = body_start + size
                self._skip = _PREVIOUS_TAG_SIZE
        finally:
            del received[:pos]
        return tags

    def _read_header(self, received: bytearray) -> int:
        """Parse the header if enough bytes are there; return bytes consumed."""
        have = len(received)
        # Check the signature byte by byte so garbage fails on its first bytes.
        if received[: min(have, 3)] != b"FLV"[: min(have, 3)]:
            raise FLVError("not an FLV stream (no 'FLV' signature)")
        if have >= 4 and received[3] != FLV_VERSION:
            raise FLVError(f"unsupported FLV version {received[3]}")
        if have < FLV_HEADER_SIZE:
            return 0
        flags = received[4]
        (data_offset,) = struct.unpack_from(">I", received, 5)
        if not FLV_HEADER_SIZE <= data_offset <= MAX_DATA_OFFSET:
            raise FLVError(f"bad FLV header size {data_offset}")
        self.has_audio = bool(flags & _FLAG_AUDIO)
        self.has_video = bool(flags & _FLAG_VIDEO)
        # Skip the rest of a longer header, then PreviousTagSize0.
        self._skip = data_offset - FLV_HEADER_SIZE + _PREVIOUS_TAG_SIZE
        return FLV_HEADER_SIZE


def read_file(path: str | Path, *, max_tag_size: int = MAX_TAG_SIZE) -> list[FLVTag]:
    """Read every tag of the FLV file at *path*.

    A truncated last tag (a recording cut off) is dropped, not an error.

    :raises FLVError: the file is not FLV, or is shorter than its header.
    """
    reader = FLVReader(max_tag_size=max_tag_size)
    tags = reader.receive_data(Path(path).read_bytes())
    if reader.has_audio is None:
        raise FLVError("file ends inside the FLV header")
    return tags


def tag_to_message(tag: FLVTag, stream_id: int) -> Message:
    """Return the RTMP message carrying *tag* on message stream *stream_id*."""
    return Message(tag.tag_type, stream_id, tag.timestamp, tag.payload)


def message_to_tag(message: Message) -> FLVTag:
    """Return the FLV tag for an audio, video or data message.

    An AMF3 data message (15) is stored as an AMF0 one (18) without its format
    byte, the way every encoder actually fills it.

    :raises UsageError: the message is not audio, video or data.
    """
    type_id = message.type_id
    payload = message.payload
    if type_id == MessageType.DATA_AMF3:
        type_id = TAG_SCRIPT_DATA
        if payload[:1] == b"\x00":
            payload = payload[1:]
    elif type_id not in _KNOWN_TAG_TYPES:
        raise UsageError(f"message type {type_id} has no FLV tag type")
    return FLVTag(int(type_id), message.timestamp & 0xFFFFFFFF, payload)


# --- media peeking (E.4.2.1, E.4.3.1, Enhanced RTMP) -----------------------------


class FrameKind(IntEnum):
    """What a media or data message is, as far as relaying it is concerned."""

    #: ``onMetaData`` (with or without ``@setDataFrame``): kept for late joiners.
    METADATA = 0
    #: Decoder configuration (AVCDecoderConfigurationRecord, hvcC, av1C…).
    VIDEO_SEQUENCE_HEADER = 1
    #: Decoder configuration (AudioSpecificConfig, Opus header, channel layout).
    AUDIO_SEQUENCE_HEADER = 2
    #: A seekable video frame: a viewer can start decoding here.
    KEYFRAME = 3
    #: A video frame that depends on earlier frames.
    INTER = 4
    #: An inter frame nothing depends on (H.263 only): the first to drop.
    DISPOSABLE = 5
    #: Coded audio.
    AUDIO = 6
    #: Video info / command frame or Enhanced RTMP video metadata: never dropped,
    #: never a keyframe.
    VIDEO_INFO = 7
    #: AVC end of sequence / Enhanced RTMP SequenceEnd: a control item.
    VIDEO_END = 8
    #: Any other data message (``onTextData``, ``onCuePoint``…).
    DATA = 9
    #: Empty, unknown or malformed: relay as is, never drop, never start on it.
    OTHER = 10


# Legacy VideoTagHeader (E.4.3.1): frame type in the high nibble.
_FT_KEY = 1
_FT_INTER = 2
_FT_DISPOSABLE = 3
_FT_GENERATED_KEY = 4
_FT_COMMAND = 5

#: Coded frames by frame type; reserved types (0, 6, 7) are OTHER.
_VIDEO_BY_FRAME_TYPE = (
    FrameKind.OTHER,
    FrameKind.KEYFRAME,
    FrameKind.INTER,
    FrameKind.DISPOSABLE,
    FrameKind.KEYFRAME,  # generated keyframe (server-side seeking)
    FrameKind.VIDEO_INFO,
    FrameKind.OTHER,
    FrameKind.OTHER,
)

# Legacy video codec ids (E.4.3.1).  12 (HEVC) and 13 (AV1) are not in the
# spec: Chinese CDNs and ffmpeg forks used them before Enhanced RTMP existed,
# with the same AVCPacketType byte for HEVC.
_CODEC_AVC = 7
_CODEC_HEVC_LEGACY = 12
_AVC_SEQUENCE_HEADER = 0
_AVC_END_OF_SEQUENCE = 2

# Enhanced RTMP: IsExHeader is bit 7 of the first video byte; the low nibble
# is a VideoPacketType instead of a codec id.
_EX_HEADER = 0x80
_VPT_SEQUENCE_START = 0
_VPT_CODED_FRAMES = 1
_VPT_SEQUENCE_END = 2
_VPT_CODED_FRAMES_X = 3
_VPT_METADATA = 4
_VPT_MPEG2TS_SEQUENCE_START = 5
_VPT_MULTITRACK = 6
_PT_MOD_EX = 7

# Audio (E.4.2.1): sound format in the high nibble.
_SOUND_EX_HEADER = 9
_SOUND_AAC = 10
_AAC_SEQUENCE_HEADER = 0
_APT_SEQUENCE_START = 0
_APT_MULTICHANNEL_CONFIG = 4
_APT_MULTITRACK = 5

#: A ModEx prefix is followed by at most this many more ModEx prefixes before
#: we give up and classify by what we know; real streams carry one or two.
_MAX_MOD_EX = 4

# Data messages: AMF0 string marker, u16 length, UTF-8 bytes.
_ON_METADATA = b"\x02\x00\x0aonMetaData"
_SET_DATA_FRAME_ON_METADATA = b"\x02\x00\x0d@setDataFrame" + _ON_METADATA


def _unwrap_mod_ex(payload: bytes, packet_type: int) -> tuple[int, int]:
    """Skip Enhanced RTMP ModEx prefixes after the first byte.

    :returns: the real packet type and the offset of the byte after it, or
        ``(-1, 0)`` when the payload is truncated or nests too deep.
    """
    pos = 1
    for _ in range(_MAX_MOD_EX + 1):
        if packet_type != _PT_MOD_EX:
            return packet_type, pos
        if pos >= len(payload):
            return -1, 0
        size = payload[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > len(payload):
                return -1, 0
            size = ((payload[pos] << 8) | payload[pos + 1]) + 1
            pos += 2
        pos += size
        if pos >= len(payload):
            return -1, 0
        packet_type = payload[pos] & 0x0F
        pos += 1
    return -1, 0


def _classify_video(payload: bytes) -> FrameKind:
    if not payload:
        return FrameKind.OTHER
    first = payload[0]
    if not first & _EX_HEADER:
        frame_type = first >> 4
        if frame_type == _FT_COMMAND:
            return FrameKind.VIDEO_INFO
        codec = first & 0x0F
        if codec in (_CODEC_AVC, _CODEC_HEVC_LEGACY) and len(payload) > 1:
            packet_type = payload[1]
            if packet_type == _AVC_SEQUENCE_HEADER:
                return FrameKind.VIDEO_SEQUENCE_HEADER
            if packet_type == _AVC_END_OF_SEQUENCE:
                return FrameKind.VIDEO_END
        return _VIDEO_BY_FRAME_TYPE[frame_type]
    frame_type = (first >> 4) & 0x07
    packet_type = first & 0x0F
    if packet_type == _PT_MOD_EX:
        packet_type, pos = _unwrap_mod_ex(payload, packet_type)
    else:
        pos = 1
    if packet_type in (_VPT_CODED_FRAMES, _VPT_CODED_FRAMES_X):
        return _VIDEO_BY_FRAME_TYPE[frame_type]
    # Metadata ignores the frame type; a command frame carries no video.
    if packet_type == _VPT_METADATA or frame_type == _FT_COMMAND:
        return FrameKind.VIDEO_INFO
    if packet_type in (_VPT_SEQUENCE_START, _VPT_MPEG2TS_SEQUENCE_START):
        return FrameKind.VIDEO_SEQUENCE_HEADER
    if packet_type == _VPT_SEQUENCE_END:
        return FrameKind.VIDEO_END
    if packet_type == _VPT_MULTITRACK:
        # Next byte: AvMultitrackType (high nibble), the tracks' packet type (low).
        if pos < len(payload):
            inner = payload[pos] & 0x0F
            if inner in (_VPT_SEQUENCE_START, _VPT_MPEG2TS_SEQUENCE_START):
                return FrameKind.VIDEO_SEQUENCE_HEADER
            if inner == _VPT_SEQUENCE_END:
                return FrameKind.VIDEO_END
            if inner == _VPT_METADATA:
                return FrameKind.VIDEO_INFO
        return _VIDEO_BY_FRAME_TYPE[frame_type]
    return FrameKind.OTHER


def _classify_audio(payload: bytes) -> FrameKind:
    if not payload:
        return FrameKind.OTHER
    first = payload[0]
    sound_format = first >> 4
    if sound_format == _SOUND_AAC:
        if len(payload) > 1 and payload[1] == _AAC_SEQUENCE_HEADER:
            return FrameKind.AUDIO_SEQUENCE_HEADER
        return FrameKind.AUDIO
    if sound_format == _SOUND_EX_HEADER:
        packet_type = first & 0x0F
        pos = 1
        if packet_type == _PT_MOD_EX:
            packet_type, pos = _unwrap_mod_ex(payload, packet_type)
        if packet_type == _APT_MULTITRACK and pos < len(payload):
            packet_type = payload[pos] & 0x0F
        if packet_type in (_APT_SEQUENCE_START, _APT_MULTICHANNEL_CONFIG):
            return FrameKind.AUDIO_SEQUENCE_HEADER
    return FrameKind.AUDIO


def _classify_data(payload: bytes) -> FrameKind:
    if payload.startswith(_SET_DATA_FRAME_ON_METADATA) or payload.startswith(_ON_METADATA):
        return FrameKind.METADATA
    return FrameKind.DATA


def classify(type_id: int, payload: bytes) -> FrameKind:
    """Say what the message of type *type_id* with *payload* is.

    Looks at the first bytes only; never raises.  Reads the legacy FLV tag
    headers (AVC and the non-standard legacy HEVC id 12 with their
    AVCPacketType), Enhanced RTMP video (VideoPacketType, multitrack, ModEx)
    and audio (AudioPacketType), and recognises ``onMetaData`` data messages.
    """
    if type_id == TAG_VIDEO:
        return _classify_video(payload)
    if type_id == TAG_AUDIO:
        return _classify_audio(payload)
    if type_id == TAG_SCRIPT_DATA:
        return _classify_data(payload)
    if type_id == MessageType.DATA_AMF3:
        return _classify_data(payload[1:] if payload[:1] == b"\x00" else payload)
    return FrameKind.OTHER


# --- codec names for statistics ------------------------------------------------

_VIDEO_CODEC_NAMES = {
    2: "h263",  # Sorenson H.263
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
    7: "avc",
    12: "hevc",  # non-standard, pre-Enhanced RTMP
    13: "av1",  # non-standard, pre-Enhanced RTMP
}

_VIDEO_FOURCC_NAMES = {
    b"avc1": "avc",
    b"hvc1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
    b"vvc1": "vvc",
}

_AUDIO_CODEC_NAMES = {
    0: "pcm",
    1: "adpcm",
    2: "mp3",
    3: "pcm_le",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
    7: "g711a",
    8: "g711u",
    10: "aac",
    11: "speex",
    14: "mp3",
    15: "native",
}

_AUDIO_FOURCC_NAMES = {
    b"mp4a": "aac",
    b"Opus": "opus",
    b"fLaC": "flac",
    b".mp3": "mp3",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
}

_FOURCC_SIZE = 4


def _ex_fourcc(payload: bytes, *, is_video: bool) -> bytes | None:
    """Return the FourCC of a non-empty Enhanced RTMP payload, if present."""
    packet_type = payload[0] & 0x0F
    pos = 1
    if packet_type == _PT_MOD_EX:
        packet_type, pos = _unwrap_mod_ex(payload, packet_type)
        if packet_type < 0:
            return None
    if is_video and (payload[0] >> 4) & 0x07 == _FT_COMMAND and packet_type != _VPT_METADATA:
        return None  # a command frame: one command byte, no FourCC
    multitrack = _VPT_MULTITRACK if is_video else _APT_MULTITRACK
    if packet_type == multitrack:
        # Multitrack byte, then the FourCC (for ManyTracksManyCodecs: the first
        # track's FourCC, which also comes first).
        pos += 1
    fourcc = payload[pos : pos + _FOURCC_SIZE]
    return bytes(fourcc) if len(fourcc) == _FOURCC_SIZE else None


def video_fourcc(payload: bytes) -> bytes | None:
    """Return the FourCC of an Enhanced RTMP video payload (``b"hvc1"``…), else None."""
    if not payload or not payload[0] & _EX_HEADER:
        return None
    return _ex_fourcc(payload, is_video=True)


def video_codec_name(payload: bytes) -> str:
    """Name the video codec of *payload* (``"avc"``, ``"hevc"``, ``"av1"``…) or ``"unknown"``."""
    if not payload:
        return "unknown"
    if payload[0] & _EX_HEADER:
        fourcc = _ex_fourcc(payload, is_video=True)
        return _VIDEO_FOURCC_NAMES.get(fourcc, "unknown") if fourcc else "unknown"
    return _VIDEO_CODEC_NAMES.get(payload[0] & 0x0F, "unknown")


def audio_codec_name(payload: bytes) -> str:
    """Name the audio codec of *payload* (``"aac"``, ``"mp3"``, ``"opus"``…) or ``"unknown"``."""
    if not payload:
        return "unknown"
    sound_format = payload[0] >> 4
    if sound_format == _SOUND_EX_HEADER:
        fourcc = _ex_fourcc(payload, is_video=False)
        return _AUDIO_FOURCC_NAMES.get(fourcc, "unknown") if fourcc else "unknown"
    return _AUDIO_CODEC_NAMES.get(sound_format, "unknown")


# --- the tracks an onMetaData announces ------------------------------------------


def metadata_tracks(payload: bytes) -> tuple[bool, bool] | None:
    """``(audio, video)``: the tracks an ``onMetaData`` payload announces, or ``None``.

    *payload* is the data message as the stream caches it (``onMetaData`` then
    its object or ECMA array).  ``hasAudio``/``hasVideo`` when present (FLV
    files, some encoders); else whether ``audiocodecid``/``videocodecid`` are
    there, as ffmpeg, OBS and GStreamer write them for the tracks they send.
    ``None`` when the payload is no readable ``onMetaData`` or names no track
    at all.  Never raises.
    """
    try:
        values = amf0.decode_all(payload)
    except (ProtocolError, UsageError):
        return None
    properties = next((v for v in values[1:] if isinstance(v, dict)), None)
    if not values or values[0] != "onMetaData" or properties is None:
        return None
    has_audio, has_video = properties.get("hasAudio"), properties.get("hasVideo")
    if isinstance(has_audio, bool) and isinstance(has_video, bool):
        return has_audio, has_video
    audio = "audiocodecid" in properties
    video = "videocodecid" in properties
    return (audio, video) if audio or video else None
