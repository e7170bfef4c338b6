"""The tracks of a stream as an fMP4 or MPEG-TS muxer sees them: configuration, clock, samples.

Plain Python, no Twisted; shared by the HLS segmenter (:mod:`~streamserver.media.hls`)
and the recorder (:mod:`streamserver.recording.recorder`).  A :class:`TrackState` is
made from a track's sequence header (for MP3, its first frame): its fMP4
description (:func:`mp4_track`) and MPEG-TS configuration (:func:`ts_config`),
each ``None`` when that format cannot carry the codec, its timescale, and
:meth:`TrackState.take`, which puts a sample on the track's clock: in ticks,
never going back, AAC frames counted so that each lasts exactly one frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamserver.codec import aac
from streamserver.codec.flv import TAG_AUDIO, TAG_VIDEO
from streamserver.codec.fmp4 import (
    VIDEO_TIMESCALE,
    AudioTrack,
    Mp4Sample,
    VideoTrack,
    ms_to_ticks,
)
from streamserver.codec.mpegts import AudioConfig, VideoConfig
from streamserver.codec.samples import Codec, Sample, Track, parse_tag
from streamserver.errors import ProtocolError, UsageError

if TYPE_CHECKING:
    from streamserver.media.stream import Frame

__all__ = [
    "AUDIO_TRACK_ID",
    "VIDEO_TRACK_ID",
    "PendingSample",
    "TrackState",
    "frame_sample",
    "mp4_track",
    "ts_config",
]


def frame_sample(frame: Frame) -> Sample | None:
    """The audio or video :class:`~streamserver.codec.samples.Sample` of *frame*, or ``None``.

    ``None`` for metadata and every other message type, for a tag the parser
    does not know (an unknown codec) and for one it cannot read: a muxer skips
    what it cannot mux and goes on with the next frame.
    """
    message = frame.message
    if message.type_id not in (TAG_AUDIO, TAG_VIDEO):
        return None
    try:
        return parse_tag(message.type_id, message.payload, 0)
    except ProtocolError:
        return None


_MP4_VIDEO = {Codec.AVC: b"avc1", Codec.HEVC: b"hvc1", Codec.AV1: b"av01"}
#: The fMP4 track ids of video and audio.
VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2

#: Durations guessed for a session's very last sample when the track has no
#: earlier duration to copy: one 30 fps frame, 1152 MP3 samples at 44.1 kHz.
_FALLBACK_VIDEO_MS = 33
_FALLBACK_AUDIO_MS = 26
#: 20 ms at 48 kHz: the Opus frame encoders send by default.
_OPUS_FRAME = 960


@dataclass(slots=True)
class PendingSample:
    """A sample received and not yet in a part.

    :ivar sample: with millisecond times (held at the last time if it stepped
        back): what the TS muxer writes and the cuts compare.
    :ivar ticks: its dts in the track's timescale.
    :ivar mp4: the sample for the fragment writer, if fMP4 carries the track.
    """

    sample: Sample
    ticks: int
    mp4: Mp4Sample | None


def mp4_track(kind: Track, config: Sample, size: tuple[int, int]) -> VideoTrack | AudioTrack | None:
    """The fMP4 description of a track, or ``None`` if fMP4 cannot carry it."""
    try:
        if kind is Track.VIDEO:
            fourcc = _MP4_VIDEO.get(config.codec)
            if fourcc is None:
                return None
            return VideoTrack(VIDEO_TRACK_ID, fourcc, config.data, *size)
        if config.codec is Codec.AAC:
            asc = aac.parse_audio_specific_config(config.data)
            channels = asc.channels or 2
            return AudioTrack(AUDIO_TRACK_ID, b"mp4a", config.data, asc.sample_rate, channels)
        if config.codec is Codec.OPUS:
            return AudioTrack(AUDIO_TRACK_ID, b"Opus", config.data, 48000, 2)
    except (ProtocolError, UsageError):
        pass
    return None


def ts_config(kind: Track, config: Sample) -> VideoConfig | AudioConfig | None:
    """The MPEG-TS configuration of a track, or ``None`` if TS cannot carry it."""
    try:
        if kind is Track.VIDEO:
            return VideoConfig.from_sample(config)
        return AudioConfig.from_sample(config)
    except (ProtocolError, UsageError):
        return None


class TrackState:
    """One track of a timeline: its configuration, its clock and its pending samples.

    :ivar kind: video or audio.
    :ivar config: the sequence header (for MP3, the first frame).
    :ivar mp4: its fMP4 description, or ``None``.
    :ivar ts: its MPEG-TS configuration, or ``None``.
    :ivar timescale: ticks per second (the fMP4 track's; 90000 or 1000 without one).
    :ivar pending: samples received and not yet in a part, in decode order.
    :ivar last_ms: the dts of the last sample taken, in ms.
    :ivar last_duration: the duration of the last sample written, in ticks
        (before the first, a usual frame of the codec).
    :ivar _frame: AAC samples per frame, when frames are counted.
    :ivar _anchor: (ticks, frames since) of the frame count.
    :ivar _last_ticks: the ticks of the last sample taken.
    """

    def __init__(self, kind: Track, config: Sample, size: tuple[int, int]) -> None:
        self.kind = kind
        self.config = config
        self.mp4 = mp4_track(kind, config, size)
        self.ts = ts_config(kind, config)
        if self.mp4 is not None:
            self.timescale = self.mp4.timescale
        else:
            self.timescale = VIDEO_TIMESCALE if kind is Track.VIDEO else 1000
        self._frame = 0
        if config.codec is Codec.AAC and self.mp4 is not None:
            self._frame = aac.parse_audio_specific_config(config.data).frame_length
        self._anchor: tuple[int, int] | None = None
        self._last_ticks: int | None = None
        self.pending: list[PendingSample] = []
        self.last_ms: int | None = None
        if self._frame:
            self.last_duration = self._frame
        elif config.codec is Codec.OPUS:
            self.last_duration = _OPUS_FRAME
        else:
            fallback = _FALLBACK_VIDEO_MS if kind is Track.VIDEO else _FALLBACK_AUDIO_MS
            self.last_duration = ms_to_ticks(fallback, self.timescale)

    @property
    def track_id(self) -> int:
        """Its fMP4 track id."""
        return VIDEO_TRACK_ID if self.kind is Track.VIDEO else AUDIO_TRACK_ID

    @property
    def carried(self) -> bool:
        """Whether a variant carries it."""
        return self.mp4 is not None or self.ts is not None

    @property
    def signature(self) -> tuple[Track, Codec, bytes]:
        """What makes a new configuration: kind, codec and configuration bytes."""
        data = self.config.data if self.config.is_config else b""
        return (self.kind, self.config.codec, data)

    def take(self, sample: Sample) -> PendingSample:
        """The pending form of *sample* (times already on the timeline)."""
        ticks = ms_to_ticks(sample.dts, self.timescale)
        if self._frame:
            # Count AAC frames: each lasts exactly one frame unless the
            # timestamps stray by half a frame (then follow them again).
            if self._anchor is not None:
                base, count = self._anchor
                expected = base + (count + 1) * self._frame
                if abs(expected - ticks) <= self._frame // 2:
                    self._anchor = (base, count + 1)
                    ticks = expected
                else:
                    self._anchor = (ticks, 0)
            else:
                self._anchor = (ticks, 0)
        if self._last_ticks is not None:
            ticks = max(ticks, self._last_ticks)
        self._last_ticks = ticks
        mp4 = None
        if self.mp4 is not None:
            offset = ms_to_ticks(sample.pts, self.timescale) - ms_to_ticks(
                sample.dts, self.timescale
            )
            mp4 = Mp4Sample(ticks, sample.data, sample.is_keyframe, offset)
        return PendingSample(sample, ticks, mp4)

    def ticks(self, seconds: float) -> int:
        """*seconds* in this track's ticks."""
        return round(seconds * self.timescale)
