"""The recording service: a recorder per published stream, crash recovery, retention, stats.

:class:`RecordingService` is a Twisted ``Service`` that ``tap.py`` adds to the
tree when ``--record`` is set; it sets ``factory.recorder`` to itself.

- Started: it observes the factory's sessions (``factory.events``); a publish
  of a stream whose ``APP/NAME`` matches ``--record-apps`` (every stream
  without it) gets a :class:`~streamserver.recording.recorder.StreamRecorder`,
  attached to the stream, unless one is still attached from an earlier
  publish (within its reconnect grace: it goes on).  Before anything else the
  writer finalizes the ``.part`` files a crash left under ``DIR``
  (:func:`recover`), each reported with reason ``recovered``.
- Every finished file goes to ``factory.recordings`` (the hooks listen there).
- With ``--record-delete-after``, finished files older than that are deleted
  every :data:`RETENTION_INTERVAL` seconds (on the writer's thread).
- Stopped: every file in progress is finished (reason ``shutdown``) and
  ``stopService`` waits for the writer's thread to have written everything.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from typing_extensions import override

from streamserver.events import PUBLISH, RecordingDone, SessionEvent
from streamserver.recording.files import scan_flv, scan_fmp4
from streamserver.recording.paths import EXTENSIONS, PART_SUFFIX
from streamserver.recording.recorder import RecorderSettings, StreamRecorder
from streamserver.recording.writer import DiskWriter, ThreadWriter

if TYPE_CHECKING:
    from streamserver.config import ServerConfig
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Stream

__all__ = ["RETENTION_INTERVAL", "RecordingService", "delete_expired", "recover"]

_log = Logger()

#: Seconds between two retention passes at most: a file outlives
#: ``--record-delete-after`` by at most this (or a tenth of it, if shorter).
RETENTION_INTERVAL = 60.0

_FORMATS = {extension: fmt for fmt, extension in EXTENSIONS.items()}


def recover(root: Path, wall: Callable[[], float] = time.time) -> list[RecordingDone]:
    """Finalize every ``.part`` file under *root* (run on the writer's thread).

    Each is cut to its last complete fragment or tag, its duration patched in
    when the format allows, and renamed without ``.part`` (to a free name). A
    file that cannot be read as its format is renamed as it is, with duration 0.
    """
    done: list[RecordingDone] = []
    if not root.is_dir():
        return done
    for part in sorted(root.glob(f"*/*/*{PART_SUFFIX}")):
        final = part.with_name(part.name[: -len(PART_SUFFIX)])
        fmt = _FORMATS.get(final.suffix[1:])
        if fmt is None or not part.is_file():
            continue
        try:
            with part.open("r+b") as file:
                size = os.fstat(file.fileno()).st_size
                scan = scan_fmp4 if fmt == "fmp4" else scan_flv
                found = scan(file, size)
                duration = 0.0
                if found is not None:
                    file.truncate(found.length)
                    if found.patch is not None:
                        offset, data = found.patch
                        file.seek(offset)
                        file.write(data)
                    size, duration = found.length, found.duration
                started = _start_of(final.name, os.fstat(file.fileno()).st_mtime)
            counter = 1
            while final.exists():
                final = part.with_name(f"{final.stem.rsplit('~', 1)[0]}~{counter}{final.suffix}")
                counter += 1
            os.replace(part, final)
        except OSError as error:
            _log.error("cannot recover {path}: {error}", path=str(part), error=str(error))
            continue
        done.append(
            RecordingDone(
                unquote(part.parent.parent.name),
                unquote(part.parent.name),
                final,
                fmt,
                size,
                duration,
                started,
                wall(),
                "recovered",
            )
        )
    return done


_STAMP = re.compile(r"-(\d{8}T\d{6}Z)(?:-\d+)?\.[a-z0-9]+$")


def _start_of(filename: str, default: float) -> float:
    """When the recording *filename* was opened, from its name (else *default*)."""
    match = _STAMP.search(filename)
    if match is None:
        return default
    try:
        return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return default


def delete_expired(root: Path, max_age: float, now: float) -> list[Path]:
    """Delete the finished recordings under *root* last modified over *max_age* seconds ago."""
    deleted: list[Path] = []
    if not root.is_dir():
        return deleted
    for extension in EXTENSIONS.values():
        for path in root.glob(f"*/*/*.{extension}"):
            with contextlib.suppress(OSError):
                if path.is_file() and now - path.stat().st_mtime > max_age:
                    path.unlink()
                    deleted.append(path)
    return deleted


class RecordingService(Service):
    """Records the factory's published streams under ``--record`` (see the module).

    :param writer: the disk writer; a :class:`ThreadWriter` on the reactor by default.
    :ivar recorders: the recorders attached, by stream.
    :ivar failures: recordings dropped (a full disk, a full queue).
    :ivar files_done: files finished since the start.
    :ivar recovered: files recovered at the start.
    """

    def __init__(
        self,
        factory: RTMPServerFactory,
        *,
        writer: DiskWriter | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        config = factory.config
        if config.record_dir is None:
            raise ValueError("a RecordingService needs --record")
        self.factory = factory
        self.root = Path(config.record_dir).absolute()
        self.settings = self.recorder_settings(config)
        self.patterns = config.record_patterns()
        self.delete_after = config.record_delete_after
        self.writer = writer
        self.wall = wall
        self.recorders: dict[Stream, StreamRecorder] = {}
        self.failures = 0
        self.files_done = 0
        self.recovered = 0
        self._bytes_done = 0
        self._retention: LoopingCall | None = None

    # --- the service ------------------------------------------------------------------

    @override
    def startService(self) -> None:
        super().startService()
        if self.writer is None:
            self.writer = ThreadWriter(self.factory.reactor.callFromThread)  # type: ignore[attr-defined]
        self.factory.recorder = self
        root = self.root
        self.writer.submit(lambda: recover(root, self.wall), 0, self._recovered, self._job_failed)
        self.factory.events.add(self)
        if self.delete_after > 0:
            self._retention = LoopingCall(self._expire)
            self._retention.clock = self.factory.reactor
            self._retention.start(min(RETENTION_INTERVAL, self.delete_after / 10), now=True)

    @override
    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.factory.events.remove(self)
        if self._retention is not None and self._retention.running:
            self._retention.stop()
        for recorder in list(self.recorders.values()):
            recorder.close("shutdown")
        stopped: defer.Deferred[None] = defer.Deferred()
        writer = self.writer
        if isinstance(writer, ThreadWriter):
            writer.stop(lambda: stopped.callback(None))
        else:
            stopped.callback(None)
        return stopped

    def recorder_settings(self, config: ServerConfig) -> RecorderSettings:
        """The :class:`RecorderSettings` of *config* (the server's, or an application's)."""
        return RecorderSettings(
            root=self.root,
            format=config.record_format,
            segment_seconds=config.record_segment_seconds,
            max_bytes=config.record_max_bytes,
            flush_seconds=config.record_flush_seconds,
            reconnect_grace=config.record_reconnect_grace,
        )

    def settings_for(self, app: str) -> RecorderSettings:
        """Application *app*'s recording settings (its ``record-*`` keys in ``--config``),
        as they are now (a reload changes them for the next recording)."""
        return self.recorder_settings(self.factory.settings_for(app))

    # --- sessions -----------------------------------------------------------------------

    def wants(self, app: str, name: str) -> bool:
        """Whether ``app/name`` is recorded (``--record-apps``)."""
        path = f"{app}/{name}"
        return not self.patterns or any(fnmatchcase(path, p) for p in self.patterns)

    def session_started(self, event: SessionEvent) -> None:
        """A publish started: record it (or go on recording it, within the grace)."""
        if event.role != PUBLISH or not self.running:
            return
        stream = event.stream
        existing = self.recorders.get(stream)
        if existing is not None and not existing.closed:
            existing.access = event.access
            return
        if not self.wants(stream.app, stream.name):
            return
        assert self.writer is not None
        recorder = StreamRecorder(
            stream,
            self.settings_for(stream.app),
            self.writer,
            self.factory.reactor,
            on_done=self._done,
            on_closed=self._closed,
            access=event.access,
            wall=self.wall,
        )
        self.recorders[stream] = recorder
        recorder.start()

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        """Nothing: the recorder hears of the unpublish from its stream."""

    def _closed(self, recorder: StreamRecorder) -> None:
        if self.recorders.get(recorder.stream) is recorder:
            del self.recorders[recorder.stream]
        self._bytes_done += recorder.bytes_written
        self.factory.release_stream(recorder.stream)

    def _done(self, record: RecordingDone) -> None:
        if record.reason == "error":
            self.failures += 1
        else:
            self.files_done += 1
            _log.info(
                "recording {path} done ({reason}): {size} bytes, {duration:.3f} s",
                path=str(record.path),
                reason=record.reason,
                size=record.size,
                duration=record.duration,
            )
        self.factory.recordings.done(record)

    def _recovered(self, records: list[RecordingDone]) -> None:
        for record in records:
            self.recovered += 1
            _log.warn(
                "recovered {path} left by a crash: {size} bytes, {duration:.3f} s",
                path=str(record.path),
                size=record.size,
                duration=record.duration,
            )
            self.factory.recordings.done(record)

    def _job_failed(self, error: BaseException) -> None:
        _log.error("recording directory {root}: {error}", root=str(self.root), error=str(error))

    def _expire(self) -> None:
        assert self.writer is not None
        root, age, now = self.root, self.delete_after, self.wall()
        self.writer.submit(
            lambda: delete_expired(root, age, now), 0, self._deleted, self._job_failed
        )

    def _deleted(self, paths: list[Path]) -> None:
        for path in paths:
            _log.info("deleted {path}: older than --record-delete-after", path=str(path))

    # --- stats --------------------------------------------------------------------------

    @property
    def bytes_total(self) -> int:
        """Bytes handed to the disk for recordings since the start (never goes down)."""
        return self._bytes_done + sum(r.bytes_written for r in self.recorders.values())

    def stream_snapshot(self, stream: Stream) -> dict[str, Any] | None:
        """What is being recorded of *stream*, for its API entry; ``None`` if nothing."""
        recorder = self.recorders.get(stream)
        return None if recorder is None else recorder.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The recorder's totals, for the API and ``/metrics``."""
        writer = self.writer
        return {
            "active": len(self.recorders),
            "bytes_total": self.bytes_total,
            "failures_total": self.failures,
            "files_done": self.files_done,
            "recovered": self.recovered,
            "queued_bytes": 0 if writer is None else writer.queued_bytes,
        }
