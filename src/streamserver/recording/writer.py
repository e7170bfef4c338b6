"""The recorder's disk: every file operation on one writer thread, behind a queue bounded by bytes.

The reactor never opens, writes, flushes, renames or stats a recording file:
it submits *jobs* (:meth:`DiskWriter.submit`) that the writer runs in order,
one after the other, and gets each job's result back on the reactor
(``reactor.callFromThread``).  The queue is bounded by the bytes its jobs
carry (:data:`MAX_QUEUED_BYTES`): a job that does not fit is refused at once
(``submit`` returns ``False``) and the recording it belongs to is dropped by
its owner; nothing waits.

:class:`RecordingFile` is one file as the reactor sees it: open (choosing
the ``NAME-START[-N].EXT.part`` name that is free), append, patch in place,
finish (flush, close, rename without ``.part``) or abandon.  The first error
(``ENOSPC``, ``EFBIG``, ``EIO``...) stops every later job of that file and is
reported once to its ``on_error``; the file is closed and left as it is.

Two writers: :class:`ThreadWriter` (the server's: one daemon thread) and
:class:`ManualWriter` (for tests: jobs wait until :meth:`ManualWriter.run`, on
the caller's thread).  No Twisted here but the ``call_from_thread`` given.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from streamserver.recording.paths import PART_SUFFIX, recording_name

__all__ = [
    "MAX_QUEUED_BYTES",
    "DiskWriter",
    "ManualWriter",
    "Opener",
    "RecordingFile",
    "ThreadWriter",
]

#: What the writer may hold, all recordings together.  32 MiB is 40 s of one
#: 6 Mbit/s stream, or seconds of a dozen: a disk that far behind is not
#: catching up, and the memory of a server recording many streams stays bounded.
MAX_QUEUED_BYTES = 32 * 1024 * 1024

#: Names tried in one second of one stream before giving up (``-1`` ... ``-N``).
MAX_NAME_COUNTER = 1000

Job = Callable[[], Any]
Opener = Callable[[Path], BinaryIO]


def _open_new(path: Path) -> BinaryIO:
    """Create *path* (never an existing file) for writing, with the parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return os.fdopen(fd, "wb")


class DiskWriter:
    """Runs jobs in order off the reactor; refuses what does not fit its byte bound.

    :ivar max_bytes: the bound.
    :ivar queued_bytes: the bytes of the jobs submitted and not yet done.
    :ivar refused: jobs refused for the bound.
    """

    def __init__(self, call_from_thread: Callable[..., Any], max_bytes: int) -> None:
        self.call_from_thread = call_from_thread
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.refused = 0
        self._lock = threading.Lock()

    def submit(
        self,
        job: Job,
        size: int = 0,
        done: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> bool:
        """Queue *job* carrying *size* bytes; ``False`` (and nothing queued) if it does not fit.

        *done* gets its result, *failed* the exception it raised, on the reactor.
        A job of 0 bytes always fits.
        """
        with self._lock:
            if size and self.queued_bytes + size > self.max_bytes:
                self.refused += 1
                return False
            self.queued_bytes += size
        self._put((job, size, done, failed))
        return True

    def _put(self, item: tuple[Job, int, Any, Any]) -> None:
        raise NotImplementedError

    def _run(self, item: tuple[Job, int, Any, Any]) -> None:
        """Run one job (on the writer's thread) and send its outcome to the reactor."""
        job, size, done, failed = item
        try:
            result = job()
        except BaseException as error:  # the job's owner decides; the writer goes on
            outcome: tuple[Any, Any] = (failed, error)
        else:
            outcome = (done, result)
        with self._lock:
            self.queued_bytes -= size
        callback, value = outcome
        if callback is not None:
            self.call_from_thread(callback, value)


class ThreadWriter(DiskWriter):
    """The server's writer: one daemon thread, started at once."""

    def __init__(
        self, call_from_thread: Callable[..., Any], max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        super().__init__(call_from_thread, max_bytes)
        self._queue: queue.SimpleQueue[tuple[Job, int, Any, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="recording-writer", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Job, int, Any, Any]) -> None:
        self._queue.put(item)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(item)

    def stop(self, done: Callable[[], None]) -> None:
        """Run what is queued, end the thread, then call *done* on the reactor."""

        def finish() -> None:
            self.call_from_thread(done)

        self._queue.put((finish, 0, None, None))
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after :meth:`stop`)."""
        self._thread.join(timeout)


class ManualWriter(DiskWriter):
    """A writer for tests: jobs wait until :meth:`run`; results are delivered at once."""

    def __init__(self, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        super().__init__(lambda f, *a: f(*a), max_bytes)
        self.pending: list[tuple[Job, int, Any, Any]] = []

    def _put(self, item: tuple[Job, int, Any, Any]) -> None:
        self.pending.append(item)

    def run(self) -> int:
        """Run every queued job (and those they queue); return how many ran."""
        count = 0
        while self.pending:
            self._run(self.pending.pop(0))
            count += 1
        return count


@dataclass
class _Handle:
    """A recording file on the writer's side (touched by its jobs only)."""

    file: BinaryIO | None = None
    path: Path | None = None
    size: int = 0
    error: BaseException | None = None
    closed: bool = False


@dataclass
class RecordingFile:
    """One recording file as the reactor sees it; every operation a job of *writer*.

    :ivar directory: where it goes (the stream's directory).
    :ivar name: the stream name the file is named after.
    :ivar start: when it was opened, Unix seconds (names it).
    :ivar extension: ``mp4`` or ``flv``.
    :ivar on_error: told once, on the reactor, of the first failed operation.
    :ivar submitted: bytes handed to the writer so far (the file's size once written).
    :ivar path: the ``.part`` path once opened (set on the reactor).
    :ivar failed: the error, once reported.
    """

    writer: DiskWriter
    directory: Path
    name: str
    start: float
    extension: str
    on_error: Callable[[BaseException], None]
    opener: Opener = _open_new
    submitted: int = 0
    path: Path | None = None
    failed: BaseException | None = None
    _handle: _Handle = field(default_factory=_Handle)

    def open(self, header: bytes) -> bool:
        """Create the file (the first free name) and write *header*; ``False`` if refused."""
        handle = self._handle

        def job() -> Path:
            for counter in range(MAX_NAME_COUNTER):
                final = self.directory / recording_name(
                    self.name, self.start, self.extension, counter
                )
                part = final.with_name(final.name + PART_SUFFIX)
                if final.exists():
                    continue
                try:
                    handle.file = self.opener(part)
                except FileExistsError:
                    continue
                handle.path = part
                break
            else:
                raise FileExistsError(f"no free name in {self.directory} for {self.name}")
            self._write(handle, header)
            return part

        self.submitted += len(header)
        return self.writer.submit(job, len(header), self._opened, self._failed)

    def _opened(self, path: Path) -> None:
        self.path = path

    def append(self, data: bytes, *, flush: bool = True) -> bool:
        """Write *data* at the end (and flush it to the OS); ``False`` if refused."""
        handle = self._handle

        def job() -> None:
            self._write(handle, data, flush=flush)

        self.submitted += len(data)
        return self.writer.submit(job, len(data), None, self._failed)

    @staticmethod
    def _write(handle: _Handle, data: bytes, *, flush: bool = True) -> None:
        if handle.error is not None or handle.file is None:
            return
        try:
            handle.file.write(data)
            if flush:
                handle.file.flush()
        except BaseException as error:
            handle.error = error
            with contextlib.suppress(Exception):
                handle.file.close()
            handle.file = None
            raise
        handle.size += len(data)

    def finish(
        self,
        patches: list[tuple[int, bytes]],
        done: Callable[[Path | None, int], None],
    ) -> None:
        """Write *patches* in place, close and rename without ``.part``; then ``done(path, size)``.

        *path* is the finished file (the ``.part`` file if the rename failed,
        ``None`` if the file was never opened).  Never refused: it carries no bytes.
        """
        handle = self._handle

        def job() -> tuple[Path | None, int]:
            file, handle.file = handle.file, None
            handle.closed = True
            if file is None:
                if handle.error is not None:
                    raise handle.error
                return handle.path, handle.size
            try:
                for offset, data in patches:
                    file.seek(offset)
                    file.write(data)
                file.close()
            except BaseException as error:
                handle.error = error
                with contextlib.suppress(Exception):
                    file.close()
                raise
            assert handle.path is not None
            final = handle.path.with_name(handle.path.name[: -len(PART_SUFFIX)])
            os.replace(handle.path, final)
            return final, handle.size

        def finished(result: tuple[Path | None, int]) -> None:
            done(*result)

        self.writer.submit(job, 0, finished, self._failed)

    def abandon(self) -> None:
        """Close the file where it is (a ``.part`` file stays: recovery finalizes it)."""
        handle = self._handle

        def job() -> None:
            file, handle.file = handle.file, None
            handle.closed = True
            if file is not None:
                file.close()

        self.writer.submit(job, 0, None, None)

    def _failed(self, error: BaseException) -> None:
        if self.failed is None:
            self.failed = error
            self.on_error(error)
