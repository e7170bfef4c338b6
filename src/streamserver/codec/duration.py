"""The duration a recording states about itself, read from the first bytes of the file.

Sans-I/O: each function takes the beginning of a file (:data:`HEAD_BYTES` are
enough for the files the recorder writes) and returns seconds, or ``None`` when
the file states none.  Whatever the bytes, only a
:class:`~streamserver.errors.ProtocolError` subclass escapes.

- fMP4 / MP4 (ISO/IEC 14496-12): the top-level ``moov`` box's ``mvhd``
  (§8.2.2: version 0 with 32-bit, version 1 with 64-bit creation, modification
  and duration fields around a 32-bit timescale), duration / timescale.  A
  fragmented file starts with a ``moov`` whose duration is 0 until the recorder
  patches it at close; then ``mvex``'s ``mehd`` (§8.8.2, fragment_duration in
  the same timescale) is tried, and 0 or all ones (unknown) is ``None``.  A
  ``moov`` after the media (``mdat`` first) is out of reach: ``None``.
- FLV (FLV spec annex E.4.4): the first tag, if it is script data named
  ``onMetaData``, and its ``duration`` number (which the recorder writes in
  place at close, as ffmpeg's FLV muxer does).
"""

from __future__ import annotations

import math
import struct

from streamserver.codec import amf0
from streamserver.codec.flv import FLV_HEADER_SIZE, TAG_HEADER_SIZE, TAG_SCRIPT_DATA
from streamserver.errors import CodecError, FLVError

__all__ = ["HEAD_BYTES", "flv_duration", "mp4_duration"]

#: Bytes from the start of a file that hold what these functions read: an
#: fMP4 ``ftyp`` + ``moov`` of two tracks is 1-2 KiB, an ``onMetaData`` tag a
#: few hundred bytes; 64 KiB leaves room for long codec configurations.
HEAD_BYTES = 64 * 1024

_UNKNOWN_32 = 0xFFFFFFFF
_UNKNOWN_64 = 0xFFFFFFFFFFFFFFFF


def _boxes(data: bytes, start: int, end: int, *, top: bool) -> list[tuple[bytes, int, int]]:
    """The boxes ``(type, payload start, payload end)`` between *start* and *end*.

    At the top level a box running past the data (the ``mdat`` of a file cut at
    :data:`HEAD_BYTES`) ends the walk; inside a box it is an error.

    :raises CodecError: a size below its header, or past its parent.
    """
    found: list[tuple[bytes, int, int]] = []
    offset = start
    while offset < end:
        if end - offset < 8:
            if top:
                break
            raise CodecError(f"{end - offset} stray bytes at the end of a box")
        size, box_type = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if end - offset < 16:
                if top:
                    break
                raise CodecError("a box's 64-bit size is cut")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            if not top:
                raise CodecError("a box 'to the end of the file' inside another box")
            size = end - offset  # to the end of the file: whatever we hold of it
        if size < header:
            raise CodecError(f"box {box_type!r} of {size} bytes, less than its header")
        if offset + size > end:
            if top:
                found.append((box_type, offset + header, -1))  # cut: known by its type only
                break
            raise CodecError(f"box {box_type!r} runs past its parent")
        found.append((box_type, offset + header, offset + size))
        offset += size
    return found


def _full_box_fields(data: bytes, start: int, end: int, v0: str, v1: str) -> tuple[int, ...]:
    """The fields after a full box's version and flags (format *v0* or *v1* by version)."""
    if end - start < 4:
        raise CodecError("a full box without its version")
    version = data[start]
    if version > 1:
        raise CodecError(f"a full box of version {version}")
    layout = v1 if version == 1 else v0
    if end - start - 4 < struct.calcsize(layout):
        raise CodecError("a full box too short for its fields")
    return struct.unpack_from(layout, data, start + 4)


def mp4_duration(data: bytes) -> float | None:
    """Seconds an MP4 or fMP4 file starting with *data* states, or ``None``.

    :raises CodecError: the boxes are malformed.
    """
    data = bytes(data)
    for box_type, start, end in _boxes(data, 0, len(data), top=True):
        if box_type != b"moov":
            continue
        if end < 0:
            raise CodecError("the moov box is cut")
        timescale = duration = fragments = 0
        for inner, istart, iend in _boxes(data, start, end, top=False):
            if inner == b"mvhd":
                _, _, timescale, duration = _full_box_fields(data, istart, iend, ">IIII", ">QQIQ")
                if duration in (_UNKNOWN_32, _UNKNOWN_64):
                    duration = 0
            elif inner == b"mvex":
                for leaf, lstart, lend in _boxes(data, istart, iend, top=False):
                    if leaf == b"mehd":
                        (fragments,) = _full_box_fields(data, lstart, lend, ">I", ">Q")
                        if fragments in (_UNKNOWN_32, _UNKNOWN_64):
                            fragments = 0
        if not timescale:
            return None
        value = duration or fragments
        return value / timescale if value else None
    return None


def flv_duration(data: bytes) -> float | None:
    """Seconds the ``onMetaData`` of an FLV file starting with *data* states, or ``None``.

    :raises FLVError: not an FLV file, or its first script tag is malformed.
    """
    data = bytes(data)
    if len(data) < FLV_HEADER_SIZE or data[:3] != b"FLV":
        raise FLVError("not an FLV file")
    (data_offset,) = struct.unpack_from(">I", data, 5)
    if data_offset < FLV_HEADER_SIZE:
        raise FLVError(f"FLV header of {data_offset} bytes")
    tag = data_offset + 4  # PreviousTagSize0
    if len(data) < tag + TAG_HEADER_SIZE:
        return None
    if data[tag] & 0x1F != TAG_SCRIPT_DATA:
        return None
    size = int.from_bytes(data[tag + 1 : tag + 4], "big")
    body = data[tag + TAG_HEADER_SIZE : tag + TAG_HEADER_SIZE + size]
    if len(body) < size:
        return None  # cut by the caller's read
    name, offset = amf0.decode_value(body)
    if name != "onMetaData" or offset >= len(body):
        return None
    metadata, _ = amf0.decode_value(body, offset)
    if not isinstance(metadata, dict):
        return None
    duration = metadata.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return None
    if not math.isfinite(duration) or duration <= 0:
        return None
    return float(duration)
