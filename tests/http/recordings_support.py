"""Recording directories for the HTTP tests: files at the layout's paths, with stated durations."""

from __future__ import annotations

import calendar
import struct
import time
from pathlib import Path

from streamserver.codec import amf0
from streamserver.codec.flv import TAG_SCRIPT_DATA, FLVTag, encode_header, encode_tag
from streamserver.codec.isobmff import box, full_box
from streamserver.recording.paths import recording_name, stream_dir

#: 2026-12-01T12:00:00Z, the start of the files these helpers make.
START = float(calendar.timegm(time.strptime("20261201T120000Z", "%Y%m%dT%H%M%SZ")))


def fmp4_bytes(duration_ms: int, media: bytes = b"") -> bytes:
    """An ftyp + moov whose mvhd states *duration_ms* (timescale 1000), then *media* as mdat."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 512), b"iso6mp41")
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, duration_ms), bytes(80))
    return ftyp + box(b"moov", mvhd) + box(b"mdat", media)


def flv_bytes(duration: float, media: bytes = b"") -> bytes:
    """An FLV header and an onMetaData stating *duration*, then *media*."""
    tag = FLVTag(TAG_SCRIPT_DATA, 0, amf0.encode("onMetaData", amf0.ECMAArray(duration=duration)))
    return encode_header() + encode_tag(tag) + media


def place(
    root: Path, app: str, name: str, data: bytes, *, extension: str = "mp4", start: float = START,
    counter: int = 0, part: bool = False,
) -> Path:  # fmt: skip
    """Write *data* where the recorder would put that file; its path."""
    directory = stream_dir(root, app, name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / recording_name(name, start, extension, counter)
    if part:
        path = path.with_name(path.name + ".part")
    path.write_bytes(data)
    return path
