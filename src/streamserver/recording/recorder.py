"""The recorder of one stream: a :class:`~streamserver.media.stream.Consumer` writing files.

A :class:`StreamRecorder` is fed every frame of its stream and writes them
to files through a :class:`~streamserver.recording.writer.DiskWriter`, never
touching the disk itself:

- a file starts at the first keyframe (a stream without video: at the first
  audio frame), its media times counted from there;
- media is written every :attr:`RecorderSettings.flush_seconds` of media (an
  fMP4 fragment holding every track's samples but the last of each, held back
  so that every duration is exact; FLV: the tags since the last write);
- a file is cut at the first keyframe once it lasted
  :attr:`RecorderSettings.segment_seconds` (reason ``segment``) or holds
  :attr:`RecorderSettings.max_bytes` (reason ``size``), and when a track's
  codec configuration changes (``segment``; after a republish: ``unpublish``);
- when the publisher leaves, what is pending is written; a publisher back
  within :attr:`RecorderSettings.reconnect_grace` continues the file at its
  next keyframe, timestamps continuous (the stream rebases them); after the
  grace the file is finished (``unpublish``) and the recorder is closed;
- a file is finished by patching its duration in place, closing it and
  renaming it without ``.part``; each finished file is reported as a
  :class:`~streamserver.events.RecordingDone`;
- a write that fails or does not fit the writer's queue drops the recording
  (reason ``error``): the recorder closes and the stream, its publisher and
  viewers go on as before.  A new publish starts a new recording.

The clock (``callLater``) and the wall clock (file names, start and end) are
given, so it runs over ``task.Clock`` in tests.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from streamserver.codec import amf0
from streamserver.codec.flv import FrameKind
from streamserver.codec.samples import Sample, TimestampUnwrapper, Track
from streamserver.errors import ProtocolError, UsageError
from streamserver.events import RecordingDone
from streamserver.media.hls import DEFAULT_PICTURE_SIZE
from streamserver.media.stream import Frame, Stream
from streamserver.media.tracks import TrackState, frame_sample
from streamserver.recording.files import FlvFile, Fmp4File
from streamserver.recording.paths import EXTENSIONS, stream_dir
from streamserver.recording.writer import DiskWriter, Opener, RecordingFile

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from streamserver.auth import AccessRequest

__all__ = ["RecorderSettings", "StreamRecorder"]

_log = Logger()

#: FLV codec ids of ``onMetaData`` (the low nibble / high nibble of the tag's
#: first byte); an Enhanced RTMP FourCC stream gets the FourCC's legacy id.
_FLV_VIDEO_IDS = {"avc": 7, "hevc": 12}


@dataclass(frozen=True)
class RecorderSettings:
    """What a recorder writes where.

    :ivar root: ``--record``.
    :ivar format: ``fmp4`` or ``flv``.
    :ivar segment_seconds: cut at the first keyframe after this.
    :ivar max_bytes: cut at the first keyframe once this big; 0 no limit.
    :ivar flush_seconds: write at least this often (of media).
    :ivar reconnect_grace: seconds a returning publisher continues the file.
    """

    root: Path
    format: str = "fmp4"
    segment_seconds: float = 3600.0
    max_bytes: int = 0
    flush_seconds: float = 1.0
    reconnect_grace: float = 10.0


@dataclass
class _Open:
    """The file being written.

    :ivar file: its writer-side operations.
    :ivar fmp4: its fMP4 bytes, or ``None`` for FLV.
    :ivar flv: its FLV bytes, or ``None`` for fMP4.
    :ivar tracks: the tracks it carries, by kind (fMP4: with their clocks).
    :ivar signature: the configurations it was made with.
    :ivar base_ms: the stream time its media time 0 is.
    :ivar flushed_ms: the media time written up to at the last flush.
    :ivar last_ms: the media time of the newest sample taken.
    :ivar end: by track kind, where the written samples end (seconds).
    :ivar buffer: FLV tags not yet written.
    """

    file: RecordingFile
    fmp4: Fmp4File | None
    flv: FlvFile | None
    tracks: dict[Track, TrackState]
    signature: dict[Track, bytes]
    base_ms: int
    flushed_ms: int = 0
    last_ms: int = 0
    end: dict[Track, float] = dataclasses.field(default_factory=dict)
    buffer: bytearray = dataclasses.field(default_factory=bytearray)

    @property
    def duration(self) -> float:
        return max(self.end.values(), default=self.last_ms / 1000)


class StreamRecorder:
    """Records one stream (see the module's docstring).

    :param on_done: told of every finished (or failed) file.
    :param on_closed: told once when the recorder is done with its stream (the
        grace ran out, a failure, :meth:`close`); it has detached already.
    :param opener: opens a new file for writing (tests give a failing one).
    :ivar access: the request of the publish being recorded (for the hooks).
    :ivar files_done: files finished.
    :ivar bytes_written: see the property.
    :ivar failure: what dropped the recording, if something did.
    :ivar closed: whether it is done with its stream.
    """

    def __init__(
        self,
        stream: Stream,
        settings: RecorderSettings,
        writer: DiskWriter,
        clock: IReactorTime,
        *,
        on_done: Callable[[RecordingDone], None],
        on_closed: Callable[[StreamRecorder], None],
        access: AccessRequest | None = None,
        wall: Callable[[], float] = time.time,
        opener: Opener | None = None,
    ) -> None:
        self.stream = stream
        self.settings = settings
        self.writer = writer
        self.clock = clock
        self.access = access
        self.wall = wall
        self._opener = opener
        self._on_done = on_done
        self._on_closed = on_closed
        self._configs: dict[Track, Sample] = {}
        self._header_frames: dict[Track, Frame] = {}
        self._metadata: dict[str, Any] = {}
        self._unwrappers: dict[Track, TimestampUnwrapper] = {}
        self._file: _Open | None = None
        self._need_key = False
        self._republished = False
        self._grace: IDelayedCall | None = None
        self.files_done = 0
        self._bytes_closed = 0
        self.failure: str | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<StreamRecorder {self.stream.app}/{self.stream.name}>"

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        """Attach to the stream and take its catch-up frames (headers, the GOP)."""
        for frame in self.stream.attach(self):
            self.consume(frame)

    def close(self, reason: str = "shutdown") -> None:
        """Finish the file in progress with *reason* and detach (nothing if closed)."""
        if self.closed:
            return
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        self._finish(reason)
        self._detach()

    def _detach(self) -> None:
        self.closed = True
        self.stream.detach(self)
        self._on_closed(self)

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the disk for this stream, every file so far (never goes down)."""
        current = self._file
        return self._bytes_closed + (0 if current is None else current.file.submitted)

    @property
    def file_path(self) -> Path | None:
        """The ``.part`` file being written, once open."""
        return None if self._file is None else self._file.file.path

    def snapshot(self) -> dict[str, Any]:
        """What is being recorded, for the API (JSON values)."""
        current = self._file
        return {
            "format": self.settings.format,
            "file": None
            if current is None or current.file.path is None
            else current.file.path.name,
            "bytes": 0 if current is None else current.file.submitted,
            "duration": 0.0 if current is None else round(current.last_ms / 1000, 3),
            "started": None if current is None else current.file.start,
            "files_done": self.files_done,
            "waiting_for_publisher": self._grace is not None,
        }

    # --- the consumer ---------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        """The publisher is back: within the grace, the file goes on at the next keyframe."""
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        self._republished = True
        self._need_key = True

    def stream_unpublished(self, stream: Stream) -> None:
        """The publisher left: write what is pending, wait the grace, then finish."""
        current = self._file
        if current is not None:
            self._flush(current, final=True)
        self._need_key = True
        grace = self.settings.reconnect_grace
        if grace <= 0:
            self.close("unpublish")
        else:
            self._grace = self.clock.callLater(grace, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        self.close("unpublish")

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        """A bug of ours detached us: the recording is dropped, the stream goes on."""
        self._drop(f"recorder failed: {error!r}", self._file)

    def consume(self, frame: Frame) -> None:
        """One frame: metadata and sequence headers are kept, media written."""
        if self.closed:
            return
        if frame.kind is FrameKind.METADATA:
            self._read_metadata(frame.message.payload)
            return
        sample = frame_sample(frame)
        if sample is None:
            return
        if sample.is_config:
            self._configure(sample, frame)
            return
        kind = sample.track
        dts = self._unwrappers.setdefault(kind, TimestampUnwrapper()).unwrap(
            frame.message.timestamp
        )
        sample = dataclasses.replace(sample, dts=dts, pts=dts + sample.composition_time)
        self._media(sample, frame)

    def _read_metadata(self, payload: bytes) -> None:
        try:
            values = amf0.decode_all(payload)
        except (ProtocolError, UsageError):
            return
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            self._metadata = dict(values[1])

    def _configure(self, sample: Sample, frame: Frame) -> None:
        kind = sample.track
        self._configs[kind] = sample
        self._header_frames[kind] = frame
        current = self._file
        if current is None or kind not in current.signature:
            return
        if current.signature[kind] != sample.data:
            self._finish("unpublish" if self._republished else "segment")

    # --- cutting ----------------------------------------------------------------------

    def _can_start(self, sample: Sample) -> bool:
        if sample.track is Track.VIDEO:
            return sample.is_keyframe and Track.VIDEO in self._configs
        return Track.VIDEO not in self._configs and not self._metadata.get("videocodecid")

    def _media(self, sample: Sample, frame: Frame) -> None:
        current = self._file
        if self._need_key:
            if sample.track is Track.VIDEO and not sample.is_keyframe:
                return
            if sample.track is Track.VIDEO or current is None or Track.VIDEO not in current.tracks:
                self._need_key = False
                self._republished = False
        if current is not None:
            lead = Track.VIDEO if Track.VIDEO in current.tracks else Track.AUDIO
            if sample.track is lead and (sample.is_keyframe or lead is Track.AUDIO):
                reason = self._cut_due(current, sample)
                if reason is not None:
                    self._finish(reason)
                    current = None
        if current is None:
            if not self._can_start(sample) or self.closed:
                return
            current = self._open(sample)
            if current is None:
                return
        if sample.track not in current.tracks:
            return
        rel = sample.dts - current.base_ms
        if rel < 0:
            return  # audio from before the keyframe the file starts with
        current.last_ms = max(current.last_ms, rel)
        if current.fmp4 is not None:
            shifted = dataclasses.replace(sample, dts=rel, pts=sample.pts - current.base_ms)
            current.tracks[sample.track].pending.append(current.tracks[sample.track].take(shifted))
        else:
            assert current.flv is not None
            try:
                current.buffer += current.flv.tag(frame.message.type_id, rel, frame.message.payload)
            except UsageError:
                return
        if rel - current.flushed_ms >= self.settings.flush_seconds * 1000:
            self._flush(current, final=False)

    def _cut_due(self, current: _Open, sample: Sample) -> str | None:
        rel = sample.dts - current.base_ms
        if rel >= self.settings.segment_seconds * 1000:
            return "segment"
        limit = self.settings.max_bytes
        if limit and current.file.submitted + len(current.buffer) >= limit:
            return "size"
        return None

    # --- files --------------------------------------------------------------------------

    def _open(self, sample: Sample) -> _Open | None:
        """A new file starting at *sample*; ``None`` if it cannot be made."""
        settings = self.settings
        kinds = [sample.track] if sample.track is Track.AUDIO else list(self._configs)
        size = self._picture_size()
        tracks = {
            kind: TrackState(kind, self._configs[kind], size)
            for kind in kinds
            if kind in self._configs
        }
        if sample.track is Track.AUDIO and Track.AUDIO not in tracks:
            return None  # audio without a sequence header (MP3) is not recorded
        fmp4 = flv = None
        try:
            if settings.format == "fmp4":
                tracks = {kind: track for kind, track in tracks.items() if track.mp4 is not None}
                if sample.track not in tracks:
                    return None
                fmp4 = Fmp4File([track.mp4 for track in tracks.values() if track.mp4 is not None])
                header = fmp4.header
            else:
                flv = FlvFile(
                    self._flv_values(),
                    audio=Track.AUDIO in tracks,
                    video=Track.VIDEO in tracks,
                )
                header = flv.header + b"".join(
                    flv.tag(
                        self._header_frames[kind].message.type_id,
                        0,
                        self._header_frames[kind].message.payload,
                    )
                    for kind in tracks
                )
        except UsageError:
            return None
        file = RecordingFile(
            self.writer,
            stream_dir(settings.root, self.stream.app, self.stream.name),
            self.stream.name,
            self.wall(),
            EXTENSIONS[settings.format],
            on_error=lambda error: None,
        )
        if self._opener is not None:
            file.opener = self._opener
        current = _Open(
            file,
            fmp4,
            flv,
            tracks,
            {kind: track.config.data for kind, track in tracks.items()},
            base_ms=sample.dts,
        )
        file.on_error = lambda error: self._drop(f"writing failed: {error}", current)
        self._file = current
        if not file.open(header):
            self._refused(len(header), current)
            return None
        return current

    def _picture_size(self) -> tuple[int, int]:
        width, height = self._metadata.get("width"), self._metadata.get("height")
        if (
            isinstance(width, int | float)
            and isinstance(height, int | float)
            and 1 <= width <= 0xFFFF
            and 1 <= height <= 0xFFFF
        ):
            return int(width), int(height)
        return DEFAULT_PICTURE_SIZE

    def _flv_values(self) -> dict[str, float | bool]:
        meta = self._metadata
        values: dict[str, float | bool] = {}
        for name in ("width", "height", "framerate", "audiosamplerate"):
            value = meta.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
        if "framerate" not in values and isinstance(meta.get("fps"), int | float):
            values["framerate"] = float(meta["fps"])
        video = self._header_frames.get(Track.VIDEO)
        if video is not None and video.message.payload:
            first = video.message.payload[0]
            values["videocodecid"] = float(first & 0x0F) if not first & 0x80 else 7.0
        audio = self._header_frames.get(Track.AUDIO)
        if audio is not None and audio.message.payload:
            values["audiocodecid"] = float(audio.message.payload[0] >> 4)
            values["stereo"] = bool(audio.message.payload[0] & 0x01)
        stereo = meta.get("stereo")
        if isinstance(stereo, bool):
            values["stereo"] = stereo
        return values

    def _flush(self, current: _Open, *, final: bool) -> None:
        """Write what is pending (fMP4: but each track's last sample, unless *final*)."""
        current.flushed_ms = current.last_ms
        if current.fmp4 is not None:
            data = self._fragment(current, final=final)
        else:
            data, current.buffer = bytes(current.buffer), bytearray()
        if data and not current.file.append(data):
            self._refused(len(data), current)

    def _fragment(self, current: _Open, *, final: bool) -> bytes:
        assert current.fmp4 is not None
        samples = {}
        next_dts = {}
        for kind, track in current.tracks.items():
            items = track.pending if final else track.pending[:-1]
            if not items:
                continue
            track.pending = [] if final else track.pending[-1:]
            if not final:
                end = track.pending[0].ticks
            elif len(items) > 1:
                # the end of a session: the last sample lasts as long as the one before
                end = 2 * items[-1].ticks - items[-2].ticks
            else:
                end = items[-1].ticks + track.last_duration
            track.last_duration = end - items[-1].ticks
            samples[track.track_id] = [item.mp4 for item in items if item.mp4 is not None]
            next_dts[track.track_id] = end
            current.end[kind] = end / track.timescale
        if not samples:
            return b""
        try:
            return current.fmp4.fragment(samples, next_dts)
        except UsageError as error:
            _log.warn(
                "recording {path}: a fragment was refused: {error}",
                path=str(current.file.path),
                error=str(error),
            )
            return b""

    def _finish(self, reason: str) -> None:
        """Finish the file in progress (patch, close, rename) and report it."""
        current, self._file = self._file, None
        if current is None:
            return
        self._flush(current, final=True)
        self._bytes_closed += current.file.submitted
        if current.file.failed is not None:
            return
        duration = current.duration
        if current.fmp4 is not None:
            patches = [current.fmp4.duration_patch(duration)]
        else:
            assert current.flv is not None
            size = current.file.submitted
            patches = [current.flv.metadata_patch(duration=duration, filesize=float(size))]
        access = self.access
        app, name = self.stream.app, self.stream.name
        fmt = self.settings.format

        def done(path: Path | None, size: int) -> None:
            self.files_done += 1
            if path is None:
                return
            self._on_done(
                RecordingDone(
                    app,
                    name,
                    path,
                    fmt,
                    size,
                    duration,
                    current.file.start,
                    self.wall(),
                    reason,
                    access=access,
                )
            )

        current.file.finish(patches, done)

    # --- failures --------------------------------------------------------------------------

    def _refused(self, size: int, current: _Open) -> None:
        writer = self.writer
        self._drop(
            f"the writer's queue is full: {writer.queued_bytes} bytes queued, "
            f"{size} more refused (bound {writer.max_bytes})",
            current,
        )

    def _drop(self, error: str, failed: _Open | None) -> None:
        """Drop the recording: report the *failed* file (and the one in progress), detach."""
        if self.failure is not None:
            return
        self.failure = error
        current, self._file = self._file, None
        if current is not None:
            self._bytes_closed += current.file.submitted
        states = [failed] if failed is not None else []
        if current is not None and current is not failed:
            states.append(current)
        for state in states:
            file = state.file
            _log.error(
                "recording of {stream} dropped: {error}; {size} bytes were submitted for "
                "{path}, {queued} bytes queued for the disk",
                stream=f"{self.stream.app}/{self.stream.name}",
                error=error,
                size=file.submitted,
                path=str(file.path),
                queued=self.writer.queued_bytes,
            )
            file.abandon()
            self._on_done(
                RecordingDone(
                    self.stream.app,
                    self.stream.name,
                    file.path or file.directory,
                    self.settings.format,
                    file.submitted,
                    state.duration,
                    file.start,
                    self.wall(),
                    "error",
                    error=error,
                    access=self.access,
                )
            )
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        if not self.closed:
            self._detach()
