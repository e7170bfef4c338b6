"""AAC: the AudioSpecificConfig and the ADTS header.

Implements, of ISO/IEC 14496-3 (MPEG-4 Audio):

- 1.6.2.1, AudioSpecificConfig: the body of an RTMP/FLV AAC sequence header
  after its 2-byte AudioTagHeader, or of an Enhanced RTMP ``mp4a``
  SequenceStart (:func:`parse_audio_specific_config`), with the explicit SBR
  and PS signalling of HE-AAC (audioObjectType 5 and 29), the escape for
  object types above 30, the sampling frequency table (1.6.3.4) and, of the
  GASpecificConfig (4.4.1), the frameLengthFlag;
- annex 1.A, the ADTS frame header (adts_fixed_header and
  adts_variable_header, without CRC) that MPEG-TS and HLS carry before every
  raw AAC frame (:meth:`AudioSpecificConfig.adts_header`).

Contract: whatever bytes it is given, :func:`parse_audio_specific_config`
raises only :class:`~streamserver.errors.CodecError` (a
:class:`~streamserver.errors.ProtocolError`): truncation, a reserved sampling
frequency index, an explicit frequency of 0.  A valid configuration that ADTS
cannot express (an object type other than AAC Main, LC, SSR or LTP once SBR
and PS are set aside, an explicit frequency, channel configuration 0 or above
7) parses, and :meth:`~AudioSpecificConfig.adts_header` raises
:class:`~streamserver.errors.CodecError` for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from streamserver.errors import CodecError

__all__ = [
    "ADTS_HEADER_SIZE",
    "SAMPLING_FREQUENCIES",
    "AudioSpecificConfig",
    "ObjectType",
    "parse_audio_specific_config",
]

#: samplingFrequencyIndex 0 to 12 (14496-3 1.6.3.4); 13 and 14 are reserved
#: and 15 means an explicit 24-bit frequency follows.
SAMPLING_FREQUENCIES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
_EXPLICIT_FREQUENCY = 0x0F

#: Channels by channelConfiguration (14496-3 1.6.3.5, as amended for 11 to
#: 14); 0 means "defined in a program config element", not a channel count.
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}

#: A 7-byte ADTS header: no CRC (protection_absent = 1).
ADTS_HEADER_SIZE = 7

#: frame_length is 13 bits and counts the header too.
_MAX_ADTS_FRAME = 0x1FFF


class ObjectType(IntEnum):
    """audioObjectType values (14496-3 1.5.1.1 Table 1.1) streams carry."""

    AAC_MAIN = 1
    AAC_LC = 2
    AAC_SSR = 3
    AAC_LTP = 4
    SBR = 5
    PS = 29
    ESCAPE = 31


#: Object types whose configuration is a GASpecificConfig (14496-3 1.6.2.1),
#: which starts with the frameLengthFlag.
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})

#: ADTS carries profile = object type - 1 in 2 bits: AAC Main, LC, SSR, LTP.
_ADTS_OBJECT_TYPES = range(ObjectType.AAC_MAIN, ObjectType.AAC_LTP + 1)


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """An AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).

    For HE-AAC signalled explicitly the fields describe the AAC core (what
    ADTS carries; decoders find the SBR and PS data in the frames), and the
    ``extension_*`` fields the SBR layer.

    :ivar object_type: audioObjectType of the AAC core (2 for AAC LC, also
        under HE-AAC).
    :ivar sampling_index: samplingFrequencyIndex (15: explicit frequency).
    :ivar sample_rate: the core's sampling frequency in Hz.
    :ivar channel_configuration: channelConfiguration (0: in a program config
        element; see :attr:`channels`).
    :ivar extension_object_type: 5 (SBR, HE-AAC) or 29 (PS, HE-AAC v2) when
        the configuration signals it explicitly, else ``None``.
    :ivar extension_sample_rate: the SBR output frequency in Hz, or ``None``.
    :ivar frame_length: samples per frame of the core: 960 when the
        GASpecificConfig's frameLengthFlag is set, else 1024 (also for object
        types without a GASpecificConfig, whose flag is not read).
    """

    object_type: int
    sampling_index: int
    sample_rate: int
    channel_configuration: int
    extension_object_type: int | None = None
    extension_sample_rate: int | None = None
    frame_length: int = 1024

    @property
    def channels(self) -> int | None:
        """The channel count of :attr:`channel_configuration`, or ``None`` if not given."""
        return _CHANNELS.get(self.channel_configuration)

    @property
    def codec_string(self) -> str:
        """The RFC 6381 ``codecs`` value: ``mp4a.40.2`` (LC), ``mp4a.40.5`` (HE-AAC)…"""
        return f"mp4a.40.{self.extension_object_type or self.object_type}"

    def adts_header(self, payload_size: int) -> bytes:
        """The 7-byte ADTS header (no CRC) for a raw AAC frame of *payload_size* bytes.

        :raises CodecError: ADTS cannot express this configuration, or the
            frame is too long for its 13-bit frame_length.
        """
        if self.object_type not in _ADTS_OBJECT_TYPES:
            raise CodecError(f"AAC object type {self.object_type} has no ADTS profile")
        if self.sampling_index >= len(SAMPLING_FREQUENCIES):
            raise CodecError(f"AAC sampling frequency {self.sample_rate} Hz has no ADTS index")
        if not 1 <= self.channel_configuration <= 7:
            raise CodecError(
                f"AAC channel configuration {self.channel_configuration} has no ADTS form"
            )
        frame_length = ADTS_HEADER_SIZE + payload_size
        if frame_length > _MAX_ADTS_FRAME:
            raise CodecError(f"AAC frame of {payload_size} bytes is too long for ADTS")
        channels = self.channel_configuration
        return bytes(
            (
                0xFF,  # syncword 0xFFF...
                0xF1,  # ...ID 0 (MPEG-4), layer 0, protection_absent 1
                ((self.object_type - 1) << 6) | (self.sampling_index << 2) | (channels >> 2),
                ((channels & 0x03) << 6) | (frame_length >> 11),
                (frame_length >> 3) & 0xFF,
                # buffer fullness 0x7FF (variable bitrate), one raw data block.
                ((frame_length & 0x07) << 5) | 0x1F,
                0xFC,
            )
        )


class _BitReader:
    """Reads big-endian bit fields, or raises CodecError past the end."""

    __slots__ = ("_bits", "_value", "pos")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self._bits - self.pos

    def read(self, count: int) -> int:
        end = self.pos + count
        if end > self._bits:
            raise CodecError(f"AudioSpecificConfig truncated at bit {self.pos}")
        self.pos = end
        return (self._value >> (self._bits - end)) & ((1 << count) - 1)

    def object_type(self) -> int:
        """GetAudioObjectType(): 5 bits, escaped to 32 + 6 bits by the value 31."""
        value = self.read(5)
        return 32 + self.read(6) if value == ObjectType.ESCAPE else value

    def frequency(self) -> tuple[int, int]:
        """A samplingFrequencyIndex and its frequency (explicit after index 15)."""
        index = self.read(4)
        if index == _EXPLICIT_FREQUENCY:
            frequency = self.read(24)
            if not frequency:
                raise CodecError("AudioSpecificConfig gives a sampling frequency of 0 Hz")
            return index, frequency
        if index >= len(SAMPLING_FREQUENCIES):
            raise CodecError(f"reserved AAC samplingFrequencyIndex {index}")
        return index, SAMPLING_FREQUENCIES[index]


def parse_audio_specific_config(data: bytes) -> AudioSpecificConfig:
    """Parse an AudioSpecificConfig.

    :param data: the configuration: an AAC sequence header's body after its
        2-byte FLV AudioTagHeader.  Fields after the frameLengthFlag are not
        read; a missing frameLengthFlag reads as 0.
    :raises CodecError: truncated, a reserved frequency index, or 0 Hz.
    """
    bits = _BitReader(data)
    object_type = bits.object_type()
    sampling_index, sample_rate = bits.frequency()
    channel_configuration = bits.read(4)
    extension_object_type: int | None = None
    extension_sample_rate: int | None = None
    if object_type in (ObjectType.SBR, ObjectType.PS):
        extension_object_type = object_type
        _, extension_sample_rate = bits.frequency()
        object_type = bits.object_type()
    frame_length = 1024
    # Encoders pad the configuration to whole bytes, so the flag is always
    # there in practice; a configuration cut just before it still says enough.
    if object_type in _GA_OBJECT_TYPES and bits.remaining and bits.read(1):
        frame_length = 960
    return AudioSpecificConfig(
        object_type=object_type,
        sampling_index=sampling_index,
        sample_rate=sample_rate,
        channel_configuration=channel_configuration,
        extension_object_type=extension_object_type,
        extension_sample_rate=extension_sample_rate,
        frame_length=frame_length,
    )
