"""MPEG-TS: a muxer of samples into transport stream packets, for HLS segments.

Implements, of ISO/IEC 13818-1 (MPEG-2 Systems): the transport packet
(2.4.3.2) and its adaptation field with PCR, random_access_indicator and
stuffing (2.4.3.4); the PES packet header with PTS and DTS (2.4.3.6); the
program association and TS program map sections (2.4.4.3, 2.4.4.8) with the
stream_type values of Table 2-34 and the CRC_32 of annex A.  For the
elementary streams: H.264 (stream type 0x1B) and H.265 (0x24) as Annex B
byte streams with an access unit delimiter opening every access unit
(13818-1 2.14 asks for one in every H.264 access unit), AAC in ADTS frames (0x0F), MPEG-1
and MPEG-2 audio (0x03, 0x04), as HLS (RFC 8216 3.2) carries them.

:class:`TsMuxer` is sans-I/O: :meth:`~TsMuxer.segment_start` returns the
PAT and PMT that open a segment, :meth:`~TsMuxer.write` the packets of one
:class:`~streamserver.codec.samples.Sample`.  What it writes:

- one program; PIDs :data:`PMT_PID`, :data:`VIDEO_PID` and :data:`AUDIO_PID`
  (ffmpeg's defaults); PCR on the video PID, or the audio PID without video;
- one PES per video access unit: an access unit delimiter first, the
  configuration's parameter sets (SPS and PPS; VPS, SPS and PPS for HEVC)
  before every keyframe that does not carry them in band, the frame's NAL
  units without their own delimiters;
- one PES per audio frame (or several frames per PES with ``audio_group_ms``),
  each AAC frame behind a 7-byte ADTS header;
- PTS and DTS in 90 kHz units from the sample's 64-bit millisecond times, plus
  :data:`DECODE_DELAY_MS`, taken modulo 2**33 only as they are written (the
  counter wraps every 26.5 hours); DTS only when it differs from the PTS; a
  PTS before its DTS (a malformed stream) is written as the DTS;
- a PCR in the first packet of every PES on the PCR PID, at the sample's DTS:
  :data:`DECODE_DELAY_MS` before its written DTS;
- continuity counters per PID that keep counting across segments; every
  packet exactly 188 bytes, short ones padded with adaptation field stuffing.

Contract: :meth:`TsMuxer.write` raises :class:`~streamserver.errors.CodecError`
(a :class:`~streamserver.errors.ProtocolError`) for a frame the peer got
wrong (NAL unit lengths running past the frame, an AAC frame too long for
ADTS, an audio frame too long for a PES packet) and for a configuration
sample that does not parse; :class:`~streamserver.errors.UsageError` for our
own mistakes (a sample of a track or codec the muxer was not set up for).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from streamserver.codec import aac, avc
from streamserver.codec.samples import Codec, Sample, Track
from streamserver.errors import CodecError, UsageError

__all__ = [
    "AUDIO_PID",
    "DECODE_DELAY_MS",
    "PACKET_SIZE",
    "PAT_PID",
    "PMT_PID",
    "VIDEO_PID",
    "AudioConfig",
    "StreamType",
    "TsMuxer",
    "VideoConfig",
    "crc32_mpeg2",
]

#: Every transport packet: a 4-byte header and 184 bytes of adaptation field
#: and payload (13818-1 2.4.3.2).
PACKET_SIZE = 188
_HEADER_SIZE = 4
_BODY_SIZE = PACKET_SIZE - _HEADER_SIZE
_SYNC_BYTE = 0x47

PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101

#: The one program, and the transport_stream_id (any value; 1 as ffmpeg).
_PROGRAM_NUMBER = 1
_TRANSPORT_STREAM_ID = 1

#: PES stream_id values (13818-1 Table 2-22): the first video and audio streams.
_VIDEO_STREAM_ID = 0xE0
_AUDIO_STREAM_ID = 0xC0

#: How far after its DTS a PES's PTS and DTS are written, and so how long a
#: decoder buffers before decoding: the PCR is written at the sample's own
#: DTS.  700 ms is what ffmpeg's muxer (max_delay) and nginx-rtmp allow, well
#: inside the 1 s that T-STD gives a video buffer; and a clock starting at 0
#: never asks for a PCR below 0.
DECODE_DELAY_MS = 700

_TICKS_PER_MS = 90
_DECODE_DELAY = DECODE_DELAY_MS * _TICKS_PER_MS
#: PTS, DTS and the PCR base count 90 kHz ticks in 33 bits.
_TIMESTAMP_MASK = (1 << 33) - 1

#: The largest audio PES payload: PES_packet_length is 16 bits and counts the
#: 3 header bytes after it and the 5-byte PTS too.  Audio PES packets must
#: say their length; only video may write 0 for "unbounded" (2.4.3.7).
_MAX_AUDIO_PES_PAYLOAD = 0xFFFF - 3 - 5

# Adaptation field flags (2.4.3.4).
_RANDOM_ACCESS = 0x40
_PCR_FLAG = 0x10

#: Access unit delimiters: H.264 primary_pic_type 7 (any slice type) and
#: H.265 pic_type 2 (I, P or B slices), each with its rbsp stop bit.
_AVC_AUD = b"\x09\xf0"
_HEVC_AUD = b"\x46\x01\x50"


class StreamType(IntEnum):
    """stream_type values of the PMT (13818-1 Table 2-34)."""

    MPEG1_AUDIO = 0x03
    MPEG2_AUDIO = 0x04
    AAC_ADTS = 0x0F
    H264 = 0x1B
    H265 = 0x24


# --- CRC_32 (annex A) ---------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """The CRC_32 of 13818-1 annex A: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no
    reflection, no final XOR.  The CRC of a section including its CRC field is 0."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


# --- track configurations ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """What the muxer needs of a video track.

    :ivar codec: :attr:`Codec.AVC <streamserver.codec.samples.Codec.AVC>` or
        :attr:`Codec.HEVC <streamserver.codec.samples.Codec.HEVC>`.
    :ivar nalu_length_size: bytes of each NAL unit length in the frames.
    :ivar parameter_sets: the NAL units put before a keyframe that lacks
        them: SPS and PPS, or VPS, SPS and PPS.
    """

    codec: Codec
    nalu_length_size: int
    parameter_sets: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.codec not in (Codec.AVC, Codec.HEVC):
            raise UsageError(f"{self.codec} video has no MPEG-TS mapping here")
        if not 1 <= self.nalu_length_size <= 4:
            raise UsageError(f"NAL unit length size {self.nalu_length_size} is not 1 to 4")

    @classmethod
    def from_sample(cls, sample: Sample) -> VideoConfig:
        """The configuration of a video sequence header sample (avcC or hvcC).

        :raises CodecError: the configuration record is malformed.
        :raises UsageError: *sample* is no video configuration, or of a codec
            this muxer does not write (AV1, VP9).
        """
        if sample.track is not Track.VIDEO or not sample.is_config:
            raise UsageError("a VideoConfig is made from a video configuration sample")
        if sample.codec is Codec.AVC:
            return cls.from_record(avc.parse_avc_config(sample.data))
        if sample.codec is Codec.HEVC:
            return cls.from_record(avc.parse_hevc_config(sample.data))
        raise UsageError(f"{sample.codec} video has no MPEG-TS mapping here")

    @classmethod
    def from_record(cls, record: avc.AVCDecoderConfig | avc.HEVCDecoderConfig) -> VideoConfig:
        """The configuration of a parsed AVC or HEVC decoder configuration record."""
        codec = Codec.AVC if isinstance(record, avc.AVCDecoderConfig) else Codec.HEVC
        return cls(codec, record.nalu_length_size, record.parameter_sets)

    @property
    def stream_type(self) -> int:
        """The PMT stream_type: 0x1B (H.264) or 0x24 (H.265)."""
        return StreamType.H264 if self.codec is Codec.AVC else StreamType.H265


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """What the muxer needs of an audio track.

    :ivar codec: :attr:`Codec.AAC <streamserver.codec.samples.Codec.AAC>` or
        :attr:`Codec.MP3 <streamserver.codec.samples.Codec.MP3>`.
    :ivar aac: the AudioSpecificConfig of AAC (for the ADTS headers).
    :ivar mpeg2: MP3 at 16, 22.05 or 24 kHz (MPEG-2 or 2.5 audio, stream type
        0x04) rather than MPEG-1 audio (0x03).
    """

    codec: Codec
    aac: aac.AudioSpecificConfig | None = None
    mpeg2: bool = False

    def __post_init__(self) -> None:
        if self.codec is Codec.AAC:
            if self.aac is None:
                raise UsageError("an AAC AudioConfig needs its AudioSpecificConfig")
            # Refuse a configuration ADTS cannot carry now, not at every frame.
            self.aac.adts_header(0)
        elif self.codec is not Codec.MP3:
            raise UsageError(f"{self.codec} audio has no MPEG-TS mapping here")

    @classmethod
    def from_sample(cls, sample: Sample) -> AudioConfig:
        """The configuration of an AAC sequence header sample, or of an MP3 frame.

        MP3 has no sequence header: pass its first frame, whose MPEG audio
        header (11172-3 2.4.1.3, 13818-3 2.4.2.3) says the MPEG version.

        :raises CodecError: the AudioSpecificConfig is malformed or cannot be
            carried in ADTS, or the MP3 frame has no valid header.
        :raises UsageError: *sample* is no audio sample, or of a codec this
            muxer does not write (Opus).
        """
        if sample.track is not Track.AUDIO:
            raise UsageError("an AudioConfig is made from an audio sample")
        if sample.codec is Codec.AAC and sample.is_config:
            return cls(Codec.AAC, aac=aac.parse_audio_specific_config(sample.data))
        if sample.codec is Codec.MP3 and not sample.is_config:
            return cls(Codec.MP3, mpeg2=_is_mpeg2_audio(sample.data))
        raise UsageError(f"no MPEG-TS audio configuration in {sample!r}")

    @property
    def stream_type(self) -> int:
        """The PMT stream_type: 0x0F (AAC in ADTS), 0x03 or 0x04 (MP3)."""
        if self.codec is Codec.AAC:
            return StreamType.AAC_ADTS
        return StreamType.MPEG2_AUDIO if self.mpeg2 else StreamType.MPEG1_AUDIO


def _is_mpeg2_audio(frame: bytes) -> bool:
    """Whether an MPEG audio frame header says MPEG-2 or 2.5 (not MPEG-1).

    :raises CodecError: no frame sync, or the reserved version.
    """
    if len(frame) < 2 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        raise CodecError("MP3 frame does not start with an MPEG audio frame sync")
    version = (frame[1] >> 3) & 0x03
    if version == 1:
        raise CodecError("MP3 frame header gives the reserved MPEG version")
    return version != 3


# --- packets ----------------------------------------------------------------------------


def _timestamp_field(prefix: int, ticks: int) -> bytes:
    """A 5-byte PTS or DTS field: 4-bit prefix, 33 bits split 3/15/15 by marker bits."""
    ticks &= _TIMESTAMP_MASK
    return bytes(
        (
            (prefix << 4) | ((ticks >> 29) & 0x0E) | 1,
            (ticks >> 22) & 0xFF,
            ((ticks >> 14) & 0xFE) | 1,
            (ticks >> 7) & 0xFF,
            ((ticks << 1) & 0xFE) | 1,
        )
    )


def _pcr_field(ticks: int) -> bytes:
    """A 6-byte PCR: a 33-bit 90 kHz base, 6 reserved bits, a 9-bit extension of 0."""
    return (((ticks & _TIMESTAMP_MASK) << 15) | (0x3F << 9)).to_bytes(6, "big")


def _pes_header(stream_id: int, pts: int, dts: int, payload_size: int, *, bounded: bool) -> bytes:
    """A PES header with PTS, and DTS when it differs (2.4.3.6, 2.4.3.7).

    :param bounded: write PES_packet_length (else 0, "unbounded": video only).
    """
    if pts == dts:
        fields = _timestamp_field(0b0010, pts)
        flags = 0x80
    else:
        fields = _timestamp_field(0b0011, pts) + _timestamp_field(0b0001, dts)
        flags = 0xC0
    length = 3 + len(fields) + payload_size if bounded else 0
    # '10' marker, data_alignment_indicator (each PES starts with an access
    # unit); then the PTS_DTS_flags; then PES_header_data_length.
    return (
        b"\x00\x00\x01"
        + bytes((stream_id, length >> 8, length & 0xFF, 0x84, flags, len(fields)))
        + fields
    )


def _psi_packet(pid: int, continuity: int, section: bytes) -> bytes:
    """One packet carrying a whole PSI section after a 0 pointer_field, padded with 0xFF."""
    section += crc32_mpeg2(section).to_bytes(4, "big")
    header = bytes((_SYNC_BYTE, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | continuity, 0x00))
    return (header + section).ljust(PACKET_SIZE, b"\xff")


def _section_header(table_id: int, table_id_extension: int, body_size: int) -> bytes:
    """table_id, section_length (counting the CRC), the extension, version 0, current."""
    length = 5 + body_size + 4
    return bytes(
        (
            table_id,
            0xB0 | (length >> 8),  # section_syntax_indicator, '0', reserved
            length & 0xFF,
            table_id_extension >> 8,
            table_id_extension & 0xFF,
            0xC1,  # reserved, version_number 0, current_next_indicator
            0x00,  # section_number
            0x00,  # last_section_number
        )
    )


# --- the muxer ------------------------------------------------------------------------------


class TsMuxer:
    """Muxes samples of at most one video and one audio track into TS packets.

    Call :meth:`segment_start` first and at the start of every HLS segment
    (segments then start with a keyframe to play on their own), then
    :meth:`write` for every sample in the order they should appear.

    :param video: the video track, or ``None`` for audio only.
    :param audio: the audio track, or ``None`` for video only.
    :param audio_group_ms: put the audio frames that start within this many
        milliseconds of the first into one PES packet; 0 writes one PES per
        frame.  Grouping saves most of the PES and stuffing overhead (a
        64 kbit/s AAC frame of ~190 bytes takes two 188-byte packets alone)
        at the price of holding frames back: :meth:`write` returns them with
        a later sample, :meth:`flush` at once.
    :raises UsageError: no track at all, or a negative ``audio_group_ms``.

    :ivar video: the video track's configuration (a new sequence header of
        the same codec replaces it).
    :ivar audio: the audio track's configuration.
    :ivar audio_group_ms: the ``audio_group_ms`` given.
    :ivar _continuity: the next continuity_counter of each PID.
    :ivar _audio_pending: audio frames held for the next audio PES.
    :ivar _audio_pending_size: their bytes.
    :ivar _audio_pending_pts: the PTS (ms) of the first of them.
    """

    def __init__(
        self,
        video: VideoConfig | None,
        audio: AudioConfig | None,
        *,
        audio_group_ms: int = 0,
    ) -> None:
        if video is None and audio is None:
            raise UsageError("a TsMuxer needs a video or an audio track")
        if audio_group_ms < 0:
            raise UsageError(f"audio_group_ms {audio_group_ms} is negative")
        self.video = video
        self.audio = audio
        self.audio_group_ms = audio_group_ms
        self._continuity = {PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
        self._audio_pending: list[bytes] = []
        self._audio_pending_size = 0
        self._audio_pending_pts = 0

    @property
    def pcr_pid(self) -> int:
        """The PID carrying the PCR: video if there is video, else audio."""
        return VIDEO_PID if self.video is not None else AUDIO_PID

    def segment_start(self) -> bytes:
        """The PAT and PMT packets that open a segment.

        Audio frames still held by ``audio_group_ms`` stay held; :meth:`flush`
        first to end the previous segment with them.
        """
        pat = _section_header(0x00, _TRANSPORT_STREAM_ID, 4) + bytes(
            (_PROGRAM_NUMBER >> 8, _PROGRAM_NUMBER & 0xFF, 0xE0 | (PMT_PID >> 8), PMT_PID & 0xFF)
        )
        streams = b""
        for config, pid in ((self.video, VIDEO_PID), (self.audio, AUDIO_PID)):
            if config is not None:
                # stream_type, reserved + elementary_PID, reserved + ES_info_length 0.
                streams += bytes((config.stream_type, 0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0x00))
        pcr_pid = self.pcr_pid
        pmt = (
            _section_header(0x02, _PROGRAM_NUMBER, 4 + len(streams))
            + bytes((0xE0 | (pcr_pid >> 8), pcr_pid & 0xFF, 0xF0, 0x00))  # no program_info
            + streams
        )
        return _psi_packet(PAT_PID, self._next_continuity(PAT_PID), pat) + _psi_packet(
            PMT_PID, self._next_continuity(PMT_PID), pmt
        )

    def write(self, sample: Sample) -> bytes:
        """The packets of *sample*: a frame, or a configuration (which writes nothing).

        A configuration sample of the track's codec replaces the track's
        configuration (new parameter sets go before the next keyframe).  An
        empty frame writes nothing.

        :raises CodecError: the frame or configuration is malformed.
        :raises UsageError: the muxer has no such track, or it has another codec.
        """
        if sample.track is Track.VIDEO:
            if self.video is None or sample.codec is not self.video.codec:
                raise UsageError(f"this TsMuxer has no {sample.codec} video track")
            if sample.is_config:
                self.video = VideoConfig.from_sample(sample)
                return b""
            return self._write_video(self.video, sample)
        if self.audio is None or sample.codec is not self.audio.codec:
            raise UsageError(f"this TsMuxer has no {sample.codec} audio track")
        if sample.is_config:
            self.audio = AudioConfig.from_sample(sample)
            return b""
        return self._write_audio(self.audio, sample)

    def flush(self) -> bytes:
        """The PES of the audio frames ``audio_group_ms`` still holds (if any)."""
        if not self._audio_pending:
            return b""
        payload = b"".join(self._audio_pending)
        pts = self._audio_pending_pts
        self._audio_pending.clear()
        self._audio_pending_size = 0
        ticks = pts * _TICKS_PER_MS
        header = _pes_header(
            _AUDIO_STREAM_ID,
            ticks + _DECODE_DELAY,
            ticks + _DECODE_DELAY,
            len(payload),
            bounded=True,
        )
        pcr = ticks if self.video is None else None
        return self._packetize(AUDIO_PID, header + payload, pcr=pcr, random_access=True)

    # -- video --------------------------------------------------------------------

    def _write_video(self, config: VideoConfig, sample: Sample) -> bytes:
        nalus = avc.split_nalus(sample.data, config.nalu_length_size)
        if not nalus:
            return b""
        delimiter_type: int
        if config.codec is Codec.AVC:
            types = [avc.avc_nal_type(nalu) for nalu in nalus]
            delimiter, delimiter_type = _AVC_AUD, avc.AvcNalType.AUD
            keyframe = sample.is_keyframe or avc.AvcNalType.IDR in types
            in_band = avc.AvcNalType.SPS in types
        else:
            types = [avc.hevc_nal_type(nalu) for nalu in nalus]
            delimiter, delimiter_type = _HEVC_AUD, avc.HevcNalType.AUD
            keyframe = sample.is_keyframe or any(
                avc.HevcNalType.BLA_W_LP <= t <= avc.HevcNalType.IRAP_RESERVED_23 for t in types
            )
            in_band = avc.HevcNalType.SPS in types
        unit = [delimiter]
        if keyframe and not in_band:
            unit += config.parameter_sets
        unit += [nalu for nalu, t in zip(nalus, types, strict=True) if t != delimiter_type]
        payload = avc.annex_b(unit)
        dts = sample.dts * _TICKS_PER_MS
        pts = max(sample.pts, sample.dts) * _TICKS_PER_MS
        header = _pes_header(
            _VIDEO_STREAM_ID, pts + _DECODE_DELAY, dts + _DECODE_DELAY, len(payload), bounded=False
        )
        return self._packetize(VIDEO_PID, header + payload, pcr=dts, random_access=keyframe)

    # -- audio --------------------------------------------------------------------

    def _write_audio(self, config: AudioConfig, sample: Sample) -> bytes:
        if not sample.data:
            return b""
        frame = sample.data
        if config.aac is not None:
            frame = config.aac.adts_header(len(frame)) + frame
        if len(frame) > _MAX_AUDIO_PES_PAYLOAD:
            raise CodecError(f"audio frame of {len(frame)} bytes does not fit a PES packet")
        out = b""
        pending = self._audio_pending
        if pending and not (
            0 <= sample.pts - self._audio_pending_pts < self.audio_group_ms
            and self._audio_pending_size + len(frame) <= _MAX_AUDIO_PES_PAYLOAD
        ):
            out = self.flush()
        if not pending:
            self._audio_pending_pts = sample.pts
        pending.append(frame)
        self._audio_pending_size += len(frame)
        if not self.audio_group_ms:
            out += self.flush()
        return out

    # -- packetization ------------------------------------------------------------

    def _next_continuity(self, pid: int) -> int:
        continuity = self._continuity[pid]
        self._continuity[pid] = (continuity + 1) & 0x0F
        return continuity

    def _packetize(self, pid: int, pes: bytes, *, pcr: int | None, random_access: bool) -> bytes:
        """Cut *pes* into packets on *pid*; the first carries the PCR and random access flag."""
        out = bytearray()
        pid_high = pid >> 8
        pid_low = pid & 0xFF
        pos = 0
        end = len(pes)
        flags = (_RANDOM_ACCESS if random_access else 0) | (_PCR_FLAG if pcr is not None else 0)
        # The adaptation field's flags byte and optional fields (first packet only).
        fields = b""
        if flags:
            fields = bytes((flags,)) + (_pcr_field(pcr) if pcr is not None else b"")
        start = 0x40
        while pos < end:
            room = _BODY_SIZE - (1 + len(fields) if fields else 0)
            size = min(room, end - pos)
            stuffing = room - size
            if fields:
                adaptation = bytes((len(fields) + stuffing,)) + fields + b"\xff" * stuffing
            elif stuffing == 1:
                adaptation = b"\x00"  # an adaptation field of length 0: one byte
            elif stuffing:
                adaptation = bytes((stuffing - 1, 0x00)) + b"\xff" * (stuffing - 2)
            else:
                adaptation = b""
            control = 0x30 if adaptation else 0x10
            out += bytes(
                (_SYNC_BYTE, start | pid_high, pid_low, control | self._next_continuity(pid))
            )
            out += adaptation
            out += pes[pos : pos + size]
            pos += size
            fields = b""
            start = 0
        return bytes(out)
