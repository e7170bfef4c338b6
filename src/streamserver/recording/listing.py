"""What the recording directory holds, per stream, read from its layout alone.

Plain Python, no Twisted: :func:`list_recordings` walks ``DIR/APP/NAME/``
(:mod:`streamserver.recording.paths`) and describes every recording file in
it: the finished ones (with the URL ``/recordings/APP/NAME/FILE`` that serves
them) and the ones being written (``.part``, ``"recording": true``, no URL).
Nothing is trusted but the names: a directory or file that the layout cannot
have made is skipped, and so is a symlink.

A file's start comes from the UTC stamp in its name, its duration from the
file itself (:mod:`streamserver.codec.duration`: the first
:data:`~streamserver.codec.duration.HEAD_BYTES`), 0 when it states none.  A
finished file does not change, so its duration is read once and kept
(:class:`RecordingIndex`, bounded); a file being written is read each time.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from streamserver.codec.duration import HEAD_BYTES, flv_duration, mp4_duration
from streamserver.errors import ProtocolError
from streamserver.recording.paths import EXTENSIONS, PART_SUFFIX, safe_component

__all__ = [
    "MAX_CACHED",
    "RecordingIndex",
    "RecordingName",
    "parse_recording_name",
    "recording_url",
]

#: Finished files whose duration is kept: a day of one-hour segments of 400
#: streams; each entry is a path and a number.
MAX_CACHED = 10_000

_FORMATS = {extension: fmt for fmt, extension in EXTENSIONS.items()}

_READERS: dict[str, Callable[[bytes], float | None]] = {
    "fmp4": mp4_duration,
    "flv": flv_duration,
}

_NAME = re.compile(
    r"^(?P<stem>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<counter>[1-9]\d*))?"
    r"\.(?P<ext>[a-z0-9]+)(?P<part>" + re.escape(PART_SUFFIX) + r")?$"
)


class RecordingName(NamedTuple):
    """What a recording's file name says.

    :ivar start: Unix seconds, from the name's UTC stamp.
    :ivar counter: 0 for the first file of that second, then 1, 2...
    :ivar format: ``fmp4`` or ``flv``, from the extension.
    :ivar writing: whether it is a file being written (``.part``).
    """

    start: float
    counter: int
    format: str
    writing: bool


def parse_recording_name(filename: str) -> RecordingName | None:
    """What the recording file name *filename* says, or ``None`` if it is none."""
    found = _NAME.match(filename)
    if found is None or found["ext"] not in _FORMATS:
        return None
    try:
        start = calendar.timegm(time.strptime(found["stamp"], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None
    return RecordingName(
        float(start),
        int(found["counter"] or 0),
        _FORMATS[found["ext"]],
        found["part"] is not None,
    )


def recording_url(app: str, name: str, filename: str) -> str:
    """The path serving the finished file *filename* of *app*/*name*.

    ``APP`` keeps its segments (``live/sub`` is ``/recordings/live/sub/...``);
    each segment is percent-encoded, so the file name's own ``%`` escapes
    survive the decoding of the URL.
    """
    segments = [*app.split("/"), name, filename]
    return "/recordings/" + "/".join(quote(segment, safe="") for segment in segments)


def _names(app_dir: str, name_dir: str) -> tuple[str, str, bool]:
    """The stream's app and name, and whether they name these directories exactly.

    A name cut to :data:`~streamserver.recording.paths.MAX_COMPONENT` (and
    ended with a hash) cannot be recovered; it is shown decoded, without a URL.
    """
    app, name = unquote(app_dir), unquote(name_dir)
    exact = safe_component(app) == app_dir and safe_component(name) == name_dir
    return app, name, exact


def _subdirectories(directory: Path) -> list[str]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return sorted(
        e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
    )


class RecordingIndex:
    """The recordings under one directory, described for the API.

    :ivar root: the recording directory (``--record``).
    :ivar _durations: finished files' durations by (path, size, mtime).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._durations: dict[tuple[str, int, int], float] = {}

    def streams(self) -> list[dict[str, Any]]:
        """Every stream with a file, sorted by app and name, each with its files by name."""
        listed: list[dict[str, Any]] = []
        for app_dir in _subdirectories(self.root):
            for name_dir in _subdirectories(self.root / app_dir):
                app, name, exact = _names(app_dir, name_dir)
                files = self._files(self.root / app_dir / name_dir, app, name, exact)
                if files:
                    listed.append({"app": app, "name": name, "files": files})
        listed.sort(key=lambda stream: (stream["app"], stream["name"]))
        return listed

    def _files(self, directory: Path, app: str, name: str, exact: bool) -> list[dict[str, Any]]:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return []
        named = [(parse_recording_name(entry.name), entry) for entry in entries]
        files = []
        for parsed, entry in sorted(
            ((p, e) for p, e in named if p is not None and not e.name.startswith(".")),
            key=lambda item: (item[0].start, item[0].counter, item[1].name),
        ):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            start, _, fmt, writing = parsed
            files.append(
                {
                    "file": entry.name,
                    "url": None if writing or not exact else recording_url(app, name, entry.name),
                    "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                    "duration": round(self._duration(Path(entry.path), fmt, info, writing), 3),
                    "size": info.st_size,
                    "format": fmt,
                    "recording": writing,
                }
            )
        return files

    def _duration(self, path: Path, fmt: str, info: os.stat_result, writing: bool) -> float:
        key = (str(path), info.st_size, info.st_mtime_ns)
        kept = self._durations.get(key)
        if kept is not None:
            return kept
        try:
            with path.open("rb") as file:
                head = file.read(HEAD_BYTES)
            duration = _READERS[fmt](head) or 0.0
        except (OSError, ProtocolError):
            duration = 0.0
        if not writing:
            if len(self._durations) >= MAX_CACHED:
                self._durations.clear()
            self._durations[key] = duration
        return duration
