"""Fragmented MP4 (CMAF-style) muxing: init segments and ``moof``+``mdat`` fragments.

Implements the parts of ISO/IEC 14496-12 (ISO base media file format) that an
HLS/LL-HLS server writes: an init segment (``ftyp`` + ``moov`` with ``mvhd``,
one ``trak`` per track and ``mvex``/``trex``, §8.2-8.8) and movie fragments
(``moof`` with ``mfhd`` and one ``traf`` per track: ``tfhd`` with
default-base-is-moof, a version 1 ``tfdt`` and a version 1 ``trun``; then one
``mdat``, §8.8).  Init segment followed by fragments is a valid fragmented MP4
file; each fragment alone is an LL-HLS part, a run of them a segment.

The sample entries carry the codec configuration as RTMP carries it:

- ``avc1`` + ``avcC``: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15
  §5.3.3), i.e. the body of an AVC sequence header after its 5-byte FLV video
  tag header;
- ``hvc1`` + ``hvcC``: the HEVCDecoderConfigurationRecord (14496-15 §8.3.3);
- ``av01`` + ``av1C``: the AV1CodecConfigurationRecord (AV1 Codec ISO Media
  File Format Binding §2.3);
- ``mp4a`` + ``esds``: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) in a
  DecoderSpecificInfo (14496-1 §7.2.6);
- ``Opus`` + ``dOps``: made from the Opus ID header ``OpusHead`` (RFC 7845
  §5.1, little-endian) that Enhanced RTMP carries, rewritten big-endian as
  Encapsulation of Opus in ISO Base Media File Format §4.3.2 asks.

The records are copied as they are (a segmenter may parse them further with
the AVC/AAC modules); they are only walked far enough that a truncated or
garbage record raises :class:`CodecError` when the track is described, never
later and never anything else.  Samples are in MP4 form: AVC and HEVC as
length-prefixed NAL units (the length size of the record, as RTMP sends them),
AV1 as a temporal unit of low-overhead OBUs, AAC as raw access units without
ADTS, Opus as one packet per sample.

Timescales: 90000 for video (the MPEG clock: a millisecond is exactly 90
ticks); the sample rate for AAC and 48000 for Opus (which always decodes at
48 kHz).  With the sample rate an AAC frame lasts exactly 1024 ticks, so a
segmenter that counts frames can give every frame its exact duration and keep
audio gapless; at 1000 Hz a 44.1 kHz frame (23.22 ms) has to be rounded to 23
or 24 ms whatever the segmenter does.  Millisecond timestamps converted one by
one (:func:`ms_to_ticks`) also work: the durations then jitter by up to a
millisecond, which decoders accept, and nothing accumulates.

A muxed init segment (video and audio in one ``moov``) is what an HLS
``EXT-X-MAP`` may point to (RFC 8216 §3.3) and what hls.js plays; a CMAF
header holds exactly one track (ISO/IEC 23000-19 §7.3.2.1), so the ``cmfc``
brand is claimed only when there is one track.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamserver.codec.avc import parse_avc_config, parse_hevc_config
from streamserver.codec.isobmff import (
    UNITY_MATRIX,
    box,
    descriptor,
    fixed_16_16,
    full_box,
    language_code,
)
from streamserver.errors import CodecError, UsageError

# --- codecs and clocks -------------------------------------------------------------

#: Video sample entries this module writes (FourCCs as Enhanced RTMP names them).
VIDEO_CODECS = frozenset({b"avc1", b"hvc1", b"av01"})

#: Audio sample entries this module writes.
AUDIO_CODECS = frozenset({b"mp4a", b"Opus"})

#: The timescale of every video track (ticks per second).
VIDEO_TIMESCALE = 90000

#: The timescale of an Opus track: Opus always decodes at 48 kHz.
OPUS_TIMESCALE = 48000

_U8_MAX = 0xFF
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_S32_MIN = -(1 << 31)
_S32_MAX = (1 << 31) - 1


def ms_to_ticks(ms: int, timescale: int) -> int:
    """Convert *ms* milliseconds to ticks of *timescale*, rounding halves up.

    Exact for 90000 and 48000; for 44100 a timestamp is off by at most half a
    tick, which does not accumulate (every timestamp is converted on its own).
    """
    return (ms * timescale + 500) // 1000


# --- codec configuration records ---------------------------------------------------


def _need(record: bytes, size: int, what: str) -> None:
    if len(record) < size:
        raise CodecError(f"{what} of {len(record)} bytes is truncated (needs {size})")


def _check_avcc(record: bytes) -> None:
    """Check an AVCDecoderConfigurationRecord (14496-15 §5.3.3.1) with
    :func:`~streamserver.codec.avc.parse_avc_config`: a sample entry needs an SPS
    and a PPS in it."""
    config = parse_avc_config(record)
    if not config.sps:
        raise CodecError("AVCDecoderConfigurationRecord holds no SPS")
    if not config.pps:
        raise CodecError("AVCDecoderConfigurationRecord holds no PPS")


#: marker, version, profile/level, tier/bit depths/chroma, presentation delay.
_AV1C_HEADER_SIZE = 4


def _check_av1c(record: bytes) -> None:
    """Check an AV1CodecConfigurationRecord's fixed header (AV1-ISOBMFF §2.3.3)."""
    what = "AV1CodecConfigurationRecord"
    _need(record, _AV1C_HEADER_SIZE, what)
    # marker (1 bit, always 1) and version (7 bits, 1).
    if record[0] != 0x81:
        raise CodecError(f"{what} starts with {record[0]:#04x} (expected marker 1, version 1)")


def _aac_object_type(config: bytes) -> int:
    """The audioObjectType of an AudioSpecificConfig (14496-3 §1.6.2.1): 5 bits, 31 escapes."""
    what = "AudioSpecificConfig"
    _need(config, 2, what)
    object_type = config[0] >> 3
    if object_type == 31:
        object_type = 32 + (((config[0] & 0x07) << 3) | (config[1] >> 5))
    if object_type == 0:
        raise CodecError(f"{what} has audio object type 0 (null)")
    return object_type


_OPUS_MAGIC = b"OpusHead"

#: magic, version, channels, u16 pre-skip, u32 input rate, s16 gain, family.
_OPUS_HEAD_SIZE = 19

#: Pre-skip of a header made up for a stream that sent none: the 80 ms the
#: Opus-in-ISOBMFF binding (§4.3.2) asks for at the least, at 48 kHz.
_DEFAULT_PRE_SKIP = 3840


def _opus_config(head: bytes, channels: int, sample_rate: int) -> bytes:
    """Return the OpusDecoderConfigurationRecord (the ``dOps`` payload) for *head*.

    *head* is the Ogg Opus ID header (RFC 7845 §5.1) of the stream, or empty:
    Enhanced RTMP allows an empty sequence start for mono and stereo, and then
    a family-0 record for *channels* and *sample_rate* is made up.
    """
    what = "Opus ID header"
    if not head:
        if channels > 2:
            raise CodecError(f"an Opus stream of {channels} channels sent no ID header")
        return struct.pack(">BBHIhB", 0, channels, _DEFAULT_PRE_SKIP, sample_rate, 0, 0)
    _need(head, _OPUS_HEAD_SIZE, what)
    if head[:8] != _OPUS_MAGIC:
        raise CodecError(f"{what} does not start with 'OpusHead'")
    version, out_channels, pre_skip, input_rate, gain, family = struct.unpack_from(
        "<BBHIhB", head, 8
    )
    # RFC 7845: the major version is the high nibble; only 0 is defined.
    if version >> 4 or out_channels == 0:
        raise CodecError(f"{what} version {version} with {out_channels} channels")
    record = struct.pack(">BBHIhB", 0, out_channels, pre_skip, input_rate, gain, family)
    if family == 0:
        return record
    _need(head, _OPUS_HEAD_SIZE + 2 + out_channels, what)
    streams, coupled = head[_OPUS_HEAD_SIZE], head[_OPUS_HEAD_SIZE + 1]
    if streams == 0 or coupled > streams:
        raise CodecError(f"{what} maps {coupled} coupled of {streams} streams")
    table = head[_OPUS_HEAD_SIZE : _OPUS_HEAD_SIZE + 2 + out_channels]
    return record + table


# --- RFC 6381 codec strings (the CODECS attribute of an HLS playlist) ---------------


def _av1_codec_string(record: bytes) -> str:
    """``av01.P.LLT.DD`` (AV1-ISOBMFF "Codecs Parameter String") from the record."""
    profile = record[1] >> 5
    level = record[1] & 0x1F
    tier = "H" if record[2] & 0x80 else "M"
    high_bitdepth = record[2] & 0x40
    twelve_bit = record[2] & 0x20
    depth = (12 if twelve_bit else 10) if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


# --- track descriptions ------------------------------------------------------------


def _check_track_id(track_id: int) -> None:
    if not 1 <= track_id <= _U32_MAX:
        raise UsageError(f"track id {track_id} is not in 1..2^32-1")


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """A video track: its id, sample entry FourCC, configuration record and picture size.

    :ivar track_id: the MP4 track id, 1 or more, unique in an init segment.
    :ivar codec: ``b"avc1"``, ``b"hvc1"`` or ``b"av01"``.
    :ivar config: the decoder configuration record as RTMP carries it (avcC,
        hvcC or av1C payload).
    :ivar width: the picture width in pixels (from ``onMetaData`` or the SPS).
    :ivar height: the picture height in pixels.
    :raises UsageError: an unknown codec, or an id or size out of range.
    :raises CodecError: the configuration record is malformed.
    """

    track_id: int
    codec: bytes
    config: bytes
    width: int
    height: int

    def __post_init__(self) -> None:
        _check_track_id(self.track_id)
        if self.codec not in VIDEO_CODECS:
            raise UsageError(f"no MP4 video sample entry for {self.codec!r}")
        if not (1 <= self.width <= _U16_MAX and 1 <= self.height <= _U16_MAX):
            raise UsageError(f"picture size {self.width}x{self.height} does not fit 16 bits")
        if self.codec == b"avc1":
            _check_avcc(self.config)
        elif self.codec == b"hvc1":
            parse_hevc_config(self.config)
        else:
            _check_av1c(self.config)

    @property
    def timescale(self) -> int:
        """Ticks per second of this track's timestamps: always 90000."""
        return VIDEO_TIMESCALE

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codec string (``avc1.64001F``…) for an HLS ``CODECS`` attribute."""
        if self.codec == b"avc1":
            return f"avc1.{self.config[1:4].hex().upper()}"
        if self.codec == b"hvc1":
            return parse_hevc_config(self.config).codec_string("hvc1")
        return _av1_codec_string(self.config)


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """An audio track: its id, sample entry FourCC, configuration and format.

    :ivar track_id: the MP4 track id, 1 or more, unique in an init segment.
    :ivar codec: ``b"mp4a"`` (AAC) or ``b"Opus"``.
    :ivar config: the AudioSpecificConfig for AAC; the Opus ID header
        (``OpusHead``) for Opus, or empty for a mono or stereo Opus stream
        that sent none.
    :ivar sample_rate: samples per second: AAC's timescale; for Opus only the
        input rate written when *config* is empty.
    :ivar channels: the channel count of the sample entry (for Opus with an
        ID header, the header's count is written instead).
    :ivar _opus_config: for Opus, the ``dOps`` payload, made once here.
    :raises UsageError: an unknown codec, or an id, rate or count out of range.
    :raises CodecError: the configuration is malformed.
    """

    track_id: int
    codec: bytes
    config: bytes
    sample_rate: int
    channels: int
    _opus_config: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_track_id(self.track_id)
        if self.codec not in AUDIO_CODECS:
            raise UsageError(f"no MP4 audio sample entry for {self.codec!r}")
        if not 1 <= self.sample_rate <= _U32_MAX:
            raise UsageError(f"sample rate {self.sample_rate} is not in 1..2^32-1")
        if not 1 <= self.channels <= _U8_MAX:
            raise UsageError(f"channel count {self.channels} is not in 1..255")
        if self.codec == b"mp4a":
            _aac_object_type(self.config)
        else:
            config = _opus_config(self.config, self.channels, self.sample_rate)
            object.__setattr__(self, "_opus_config", config)

    @property
    def timescale(self) -> int:
        """Ticks per second of this track's timestamps: the sample rate, 48000 for Opus."""
        return OPUS_TIMESCALE if self.codec == b"Opus" else self.sample_rate

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codec string (``mp4a.40.2``, ``opus``) for an HLS ``CODECS`` attribute."""
        if self.codec == b"mp4a":
            return f"mp4a.40.{_aac_object_type(self.config)}"
        return "opus"


Track = VideoTrack | AudioTrack


# --- init segment ------------------------------------------------------------------


def _visual_sample_entry(track: VideoTrack) -> bytes:
    """VisualSampleEntry (14496-12 §12.1.3) with the codec's configuration box."""
    config_box = {b"avc1": b"avcC", b"hvc1": b"hvcC", b"av01": b"av1C"}[track.codec]
    header = struct.pack(
        ">6xH16xHHIIIH32xHh",
        1,  # data_reference_index
        track.width,
        track.height,
        0x00480000,  # 72 dpi horizontally
        0x00480000,  # and vertically
        0,  # reserved
        1,  # frame_count
        0x0018,  # depth: colour, no alpha
        -1,  # pre_defined
    )
    return box(track.codec, header, box(config_box, track.config))


def _audio_sample_entry(track: AudioTrack) -> bytes:
    """AudioSampleEntry (14496-12 §12.2.3) with ``esds`` or ``dOps``."""
    if track.codec == b"mp4a":
        channels = track.channels
        rate = fixed_16_16(track.sample_rate)
        # ES_Descriptor: ES_ID 0 (14496-14 §3.1.2), no flags; DecoderConfigDescriptor:
        # objectTypeIndication 0x40 (MPEG-4 audio), streamType 5 (audio) << 2 | 1
        # (reserved bit), buffer size and bitrates unknown (0); then the ASC; then
        # SLConfigDescriptor predefined 2 (MP4 files).
        decoder_config = descriptor(
            0x04, struct.pack(">BB3xII", 0x40, 0x15, 0, 0), descriptor(0x05, track.config)
        )
        es = descriptor(0x03, struct.pack(">HB", 0, 0), decoder_config, descriptor(0x06, b"\x02"))
        config_box = full_box(b"esds", 0, 0, es)
    else:
        channels = track._opus_config[1]
        rate = OPUS_TIMESCALE << 16
        config_box = box(b"dOps", track._opus_config)
    header = struct.pack(">6xH8xHHHHI", 1, channels, 16, 0, 0, rate)
    return box(track.codec, header, config_box)


def _trak(track: Track) -> bytes:
    """One ``trak``: header, media header, handler, and an empty sample table."""
    is_video = isinstance(track, VideoTrack)
    width, height = (track.width, track.height) if isinstance(track, VideoTrack) else (0, 0)
    tkhd = full_box(
        b"tkhd",
        0,
        0x000003,  # track_enabled | track_in_movie
        # times 0, track_ID, reserved, duration 0, reserved, layer 0, alternate_group 0,
        # volume (1.0 for audio), reserved.
        struct.pack(">III4xI8xhhhH", 0, 0, track.track_id, 0, 0, 0, 0 if is_video else 0x0100, 0),
        UNITY_MATRIX,
        struct.pack(">II", fixed_16_16(width), fixed_16_16(height)),
    )
    mdhd = full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIIIHH", 0, 0, track.timescale, 0, language_code("und"), 0),
    )
    handler, name = (b"vide", b"VideoHandler") if is_video else (b"soun", b"SoundHandler")
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), name, b"\x00")
    if isinstance(track, VideoTrack):
        media_header = full_box(b"vmhd", 0, 1, bytes(8))  # graphicsmode copy, opcolor 0
        entry = _visual_sample_entry(track)
    else:
        media_header = full_box(b"smhd", 0, 0, bytes(4))  # balance 0
        entry = _audio_sample_entry(track)
    # One self-contained data reference ('url ' with flag 1: the media is in this file).
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _check_tracks(tracks: Sequence[Track]) -> None:
    if not tracks:
        raise UsageError("an MP4 needs at least one track")
    ids = [track.track_id for track in tracks]
    if len(set(ids)) != len(ids):
        raise UsageError(f"track ids {ids} are not unique")


def brands(tracks: Sequence[Track]) -> list[bytes]:
    """The compatible brands of the ``ftyp`` for *tracks*.

    ``iso6`` (version 1 ``trun`` and ``tfdt``, default-base-is-moof), ``mp41``;
    ``cmfc`` for a single track (a CMAF header holds one); ``av01`` and
    ``Opus`` when such a track is present, as their bindings ask.
    """
    result = [b"iso6", b"mp41"]
    if len(tracks) == 1:
        result.append(b"cmfc")
    codecs = {track.codec for track in tracks}
    result += [brand for brand in (b"av01", b"Opus") if brand in codecs]
    return result


def init_segment(tracks: Sequence[Track]) -> bytes:
    """Return the init segment (``ftyp`` + ``moov``) of *tracks*, in their order.

    Durations are 0 (unknown: the media are in fragments); the movie timescale
    is 1000 and unused.

    :raises UsageError: no tracks, or two with the same id.
    """
    _check_tracks(tracks)
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), *brands(tracks))
    next_track_id = max(track.track_id for track in tracks) + 1
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        # times 0, timescale 1000, duration 0, rate 1.0, volume 1.0, reserved.
        struct.pack(">IIIIIH10x", 0, 0, 1000, 0, 0x00010000, 0x0100),
        UNITY_MATRIX,
        bytes(24),  # pre_defined
        struct.pack(">I", min(next_track_id, _U32_MAX)),
    )
    # trex: sample description 1; no defaults (every trun states its samples').
    mvex = box(
        b"mvex",
        *(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks),
    )
    return ftyp + box(b"moov", mvhd, *(_trak(track) for track in tracks), mvex)


# --- fragments -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mp4Sample:
    """One sample of a track, with its times in the track's timescale.

    :ivar dts: decode time in ticks: unwrapped, 0 or more, up to 64 bits.
    :ivar data: the sample in MP4 form (length-prefixed NAL units, a raw AAC
        access unit…).
    :ivar is_sync: whether decoding can start here: a keyframe; every audio
        sample.
    :ivar composition_offset: pts - dts in ticks; may be negative (the
        ``trun`` is version 1, its offsets signed).
    :ivar duration: ticks until the next sample, read only for the last sample
        of a fragment written without a ``next_dts`` for its track; ``None``
        to let :meth:`FragmentWriter.write` estimate it.
    """

    dts: int
    data: bytes
    is_sync: bool = True
    composition_offset: int = 0
    duration: int | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Fragment:
    """A ``moof`` + ``mdat`` fragment and what a playlist needs to know of it.

    :ivar data: the bytes, to serve as they are.
    :ivar sequence_number: its ``mfhd`` sequence number.
    :ivar independent: every track in it starts with a sync sample (for video,
        a keyframe), so decoding can start here: an LL-HLS part with
        ``INDEPENDENT=YES``, or the start of a segment.
    :ivar decode_times: by track id, the ``tfdt`` (the first sample's dts) of
        each track the fragment holds.
    :ivar durations: by track id, the sum of that track's sample durations,
        in ticks.
    :ivar duration: the longest track's duration in seconds.
    """

    data: bytes
    sequence_number: int
    independent: bool
    decode_times: dict[int, int]
    durations: dict[int, int]
    duration: float


#: The last sample's duration when nothing better is known (see
#: :meth:`FragmentWriter.write`): one frame at 30 fps, one AAC frame of 1024
#: samples, one 20 ms Opus frame (what encoders send by default).
_FALLBACK_DURATIONS = {b"avc1": 3000, b"hvc1": 3000, b"av01": 3000, b"mp4a": 1024, b"Opus": 960}

#: trun flags (14496-12 §8.8.8.1).
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATIONS = 0x000100
_TRUN_SIZES = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_COMPOSITION_OFFSETS = 0x000800

#: tfhd flag: data offsets are relative to the start of the moof (§8.8.7.1),
#: which makes every fragment self-contained (CMAF requires it).
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000

#: sample_flags (§8.8.3.1): sample_depends_on = 2 (depends on no other
#: sample) for a sync sample; sample_depends_on = 1 and
#: sample_is_non_sync_sample for the others.
_SYNC_SAMPLE_FLAGS = 0x02000000
_NON_SYNC_SAMPLE_FLAGS = 0x01010000


class FragmentWriter:
    """Writes the fragments of the tracks of one init segment, in decode order.

    Keeps the ``mfhd`` sequence number (one counter for the fragments, from
    *sequence_number*) and, for each track, the last sample's decode time and
    duration: every fragment's decode times must go on from there.  Start a new
    writer with a new init segment (a republish, a codec change), passing the
    next sequence number on if the playlist wants it to keep increasing.

    :ivar _tracks: the tracks, by id, in init segment order.
    :ivar _sequence_number: the sequence number of the next fragment.
    :ivar _last_dts: by track id, the dts of the last sample written.
    :ivar _last_duration: by track id, the duration given to that sample.
    """

    def __init__(self, tracks: Sequence[Track], *, sequence_number: int = 1) -> None:
        _check_tracks(tracks)
        if not 0 <= sequence_number <= _U32_MAX:
            raise UsageError(f"sequence number {sequence_number} does not fit 32 bits")
        self._tracks = {track.track_id: track for track in tracks}
        self._sequence_number = sequence_number
        self._last_dts: dict[int, int] = {}
        self._last_duration: dict[int, int] = {}

    @property
    def sequence_number(self) -> int:
        """The sequence number the next fragment gets."""
        return self._sequence_number

    def decode_end(self, track_id: int) -> int | None:
        """Where the samples written so far for *track_id* end (last dts + duration), if any."""
        if track_id not in self._last_dts:
            return None
        return self._last_dts[track_id] + self._last_duration[track_id]

    def write(
        self,
        samples: Mapping[int, Sequence[Mp4Sample]],
        *,
        next_dts: Mapping[int, int] | None = None,
    ) -> Fragment:
        """Return the fragment holding *samples* (by track id, each list in decode order).

        A track with no samples gets no ``traf``.  A sample lasts until the
        next sample's dts.  The last sample of a track lasts until
        ``next_dts[track_id]`` when given (a segmenter that holds back one
        sample per track knows it, and every duration is then exact); else its
        own :attr:`~Mp4Sample.duration`; else as long as the sample before it
        (in this fragment or the previous one); else one frame of the codec's
        usual size (3000 ticks of video, 1024 of AAC, 960 of Opus).  An
        estimate can only make a track's timeline overlap or leave a gap at the
        next fragment: that one's ``tfdt`` is its first sample's dts, always.

        Nothing changes in the writer when this raises.

        :raises UsageError: no samples, an unknown track id, a dts below the
            previous one (or below 0), or a value that does not fit its field
            (durations and sizes 32 bits, composition offsets signed 32
            bits, a fragment beyond 2 GiB).
        """
        unknown = set(samples) - set(self._tracks)
        if unknown:
            raise UsageError(f"no track with id {sorted(unknown)}")
        runs: list[tuple[Track, Sequence[Mp4Sample], list[int]]] = []
        for track_id, track in self._tracks.items():
            track_samples = samples.get(track_id)
            if track_samples:
                following = None if next_dts is None else next_dts.get(track_id)
                run_durations = self._durations(track, track_samples, following)
                runs.append((track, track_samples, run_durations))
        if not runs:
            raise UsageError("a fragment needs at least one sample")

        sequence_number = self._sequence_number
        if sequence_number > _U32_MAX:
            raise UsageError("the fragment sequence number passed 2^32 - 1")
        mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))
        # The data offsets depend on the moof's size, which does not depend on
        # them: measure with offset 0, then write the real ones.
        moof_size = len(box(b"moof", mfhd, *(_traf(*run, 0) for run in runs)))
        data_size = sum(len(s.data) for _, track_samples, _ in runs for s in track_samples)
        mdat_header = 8 if data_size + 8 <= _U32_MAX else 16
        if moof_size + mdat_header + data_size > _S32_MAX:
            raise UsageError(f"a fragment of {data_size} bytes does not fit 2 GiB")
        trafs = []
        offset = moof_size + mdat_header
        for run in runs:
            trafs.append(_traf(*run, offset))
            offset += sum(len(s.data) for s in run[1])
        moof = box(b"moof", mfhd, *trafs)
        mdat = box(b"mdat", *(s.data for _, track_samples, _ in runs for s in track_samples))

        decode_times = {track.track_id: s[0].dts for track, s, _ in runs}
        durations = {track.track_id: sum(d) for track, _, d in runs}
        for track, track_samples, track_durations in runs:
            self._last_dts[track.track_id] = track_samples[-1].dts
            self._last_duration[track.track_id] = track_durations[-1]
        self._sequence_number += 1
        return Fragment(
            data=moof + mdat,
            sequence_number=sequence_number,
            independent=all(s[0].is_sync for _, s, _ in runs),
            decode_times=decode_times,
            durations=durations,
            duration=max(durations[t.track_id] / t.timescale for t, _, _ in runs),
        )

    def _durations(
        self, track: Track, samples: Sequence[Mp4Sample], following: int | None
    ) -> list[int]:
        """Check *samples*' decode times and return their durations (see :meth:`write`)."""
        track_id = track.track_id
        previous = self._last_dts.get(track_id, 0)
        for sample in samples:
            if sample.dts < previous:
                raise UsageError(
                    f"track {track_id}: dts {sample.dts} is below the previous one, {previous}"
                )
            previous = sample.dts
        if previous > _U64_MAX:
            raise UsageError(f"track {track_id}: dts {previous} does not fit 64 bits")
        durations = [b.dts - a.dts for a, b in itertools.pairwise(samples)]
        last = samples[-1]
        if following is not None:
            if following < last.dts:
                raise UsageError(
                    f"track {track_id}: next dts {following} is below the last one, {last.dts}"
                )
            durations.append(following - last.dts)
        elif last.duration is not None:
            durations.append(last.duration)
        elif durations:
            durations.append(durations[-1])
        else:
            durations.append(self._last_duration.get(track_id, _FALLBACK_DURATIONS[track.codec]))
        for sample, duration in zip(samples, durations, strict=True):
            if not 0 <= duration <= _U32_MAX:
                raise UsageError(f"track {track_id}: duration {duration} does not fit 32 bits")
            if not _S32_MIN <= sample.composition_offset <= _S32_MAX:
                raise UsageError(
                    f"track {track_id}: composition offset {sample.composition_offset} "
                    "does not fit 32 bits"
                )
            if len(sample.data) > _U32_MAX:
                raise UsageError(f"track {track_id}: a sample of {len(sample.data)} bytes")
        return durations


def _traf(
    track: Track, samples: Sequence[Mp4Sample], durations: list[int], data_offset: int
) -> bytes:
    """One ``traf``: ``tfhd``, ``tfdt`` (version 1: 64 bits) and a version 1 ``trun``."""
    with_offsets = any(sample.composition_offset for sample in samples)
    flags = _TRUN_DATA_OFFSET | _TRUN_DURATIONS | _TRUN_SIZES | _TRUN_FLAGS
    values: list[int] = []
    for sample, duration in zip(samples, durations, strict=True):
        values += (
            duration,
            len(sample.data),
            _SYNC_SAMPLE_FLAGS if sample.is_sync else _NON_SYNC_SAMPLE_FLAGS,
        )
        if with_offsets:
            values.append(sample.composition_offset)
    if with_offsets:
        flags |= _TRUN_COMPOSITION_OFFSETS
    entry = "IIIi" if with_offsets else "III"
    trun = full_box(
        b"trun",
        1,
        flags,
        struct.pack(">Ii", len(samples), data_offset),
        struct.pack(">" + entry * len(samples), *values),
    )
    tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", track.track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].dts))
    return box(b"traf", tfhd, tfdt, trun)
