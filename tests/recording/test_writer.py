"""The writer thread: jobs in order off the caller's thread, the byte bound, real write errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from streamserver.recording.writer import ManualWriter, RecordingFile, ThreadWriter


class Calls:
    """call_from_thread for tests: collects the calls, run them on the test's thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, function: Any, *args: Any) -> None:
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.calls.append((function, args))

    def run(self) -> None:
        with self.lock:
            calls, self.calls = self.calls, []
        for function, args in calls:
            function(*args)


def test_a_file_is_written_patched_and_renamed_on_the_writer_thread(tmp_path: Path) -> None:
    calls = Calls()
    writer = ThreadWriter(calls)
    errors: list[BaseException] = []
    file = RecordingFile(writer, tmp_path / "live" / "cam", "cam", 0.0, "mp4", errors.append)
    assert file.open(b"HEADER")
    assert file.append(b"-body-")
    done: list[tuple[Path | None, int]] = []
    file.finish([(0, b"header")], lambda path, size: done.append((path, size)))
    stopped: list[bool] = []
    writer.stop(lambda: stopped.append(True))
    writer.join(10)
    calls.run()
    assert calls.threads == {"recording-writer"}
    assert stopped == [True] and errors == []
    final = tmp_path / "live" / "cam" / "cam-19700101T000000Z.mp4"
    assert done == [(final, 12)]
    assert final.read_bytes() == b"header-body-"
    assert file.path == final.with_name(final.name + ".part")
    assert writer.queued_bytes == 0


def test_a_second_file_of_the_same_second_gets_the_next_name(tmp_path: Path) -> None:
    writer = ManualWriter()
    names = []
    for _ in range(3):
        file = RecordingFile(writer, tmp_path, "cam", 0.0, "flv", lambda error: None)
        file.open(b"x")
        file.finish([], lambda path, size: names.append(path.name if path else None))
        writer.run()
    assert names == [
        "cam-19700101T000000Z.flv",
        "cam-19700101T000000Z-1.flv",
        "cam-19700101T000000Z-2.flv",
    ]


def test_jobs_past_the_byte_bound_are_refused() -> None:
    writer = ManualWriter(max_bytes=100)
    assert writer.submit(lambda: None, 60)
    assert not writer.submit(lambda: None, 41)
    assert writer.submit(lambda: None, 40)
    assert writer.submit(lambda: None, 0), "a job without bytes always fits"
    assert writer.refused == 1 and writer.queued_bytes == 100
    assert writer.run() == 3 and writer.queued_bytes == 0


FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from streamserver.recording.writer import RecordingFile, ThreadWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
calls = []
writer = ThreadWriter(lambda f, *a: calls.append((f, a)))
errors = []
file = RecordingFile(writer, Path(sys.argv[1]), "cam", 0.0, "mp4", errors.append)
file.open(b"h" * 100)
for _ in range(30):
    file.append(b"x" * 1000)
file.finish([(0, b"H")], lambda path, size: print("finished", path))
writer.stop(lambda: None)
writer.join(10)
for f, a in calls:
    f(*a)
print("errors", [getattr(e, "errno", None) for e in errors], [str(e) for e in errors])
print("size", file.path.stat().st_size if file.path else None)
"""


def test_a_real_file_size_limit_fails_the_file_with_efbig(tmp_path: Path) -> None:
    """RLIMIT_FSIZE with SIGXFSZ ignored: write fails with EFBIG, reported once, nothing raised."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FILE_SIZE_LIMIT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "errors [27]" in result.stdout, result.stdout  # EFBIG, once
    assert "finished" not in result.stdout
    assert "size 10000" in result.stdout, result.stdout  # what the limit let through stays
