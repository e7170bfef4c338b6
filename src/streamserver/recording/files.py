"""The bytes of a recording file: fMP4 and FLV, and finding what survives of one after a crash.

Plain Python, no Twisted, no I/O: the writers return bytes (and ``(offset,
bytes)`` patches) for the writer thread to put in a file; the scanners read a
file object and say how much of it is whole.

fMP4 (:class:`Fmp4File`): the init segment (``ftyp`` + ``moov``, durations 0),
then fragments (``moof`` + ``mdat``), each one flush.  A file cut anywhere plays
up to its last complete fragment.  At close the ``mvhd`` duration (movie
timescale 1000, a 32-bit field at a fixed offset, :attr:`Fmp4File.duration_offset`)
is patched in place, so the finished file states its duration.

FLV (:class:`FlvFile`): the header, then an ``onMetaData`` script tag written
first with every field of :data:`METADATA_FIELDS` present (numbers are AMF0
doubles and ``stereo`` a boolean, so the tag's size never depends on the
values), then the media tags.  At close the tag is written again at
:data:`FLV_METADATA_OFFSET` with the real duration and filesize, the way
ffmpeg's FLV muxer patches its own; until then it carries what was known at
the start, so the file plays before the patch.

Recovery (:func:`scan_fmp4`, :func:`scan_flv`): the length up to the last
complete fragment or tag, the media duration there and the patch that states
it.  Whatever the bytes (garbage, truncation anywhere), they return a
:class:`Recovered` or ``None`` and never raise anything but ``OSError`` from
the file.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from streamserver.codec import amf0
from streamserver.codec.flv import (
    FLV_HEADER_SIZE,
    TAG_HEADER_SIZE,
    TAG_SCRIPT_DATA,
    FLVTag,
    encode_header,
    encode_tag,
)
from streamserver.codec.fmp4 import FragmentWriter, Mp4Sample, Track, init_segment
from streamserver.errors import ProtocolError, UsageError

__all__ = [
    "FLV_METADATA_OFFSET",
    "METADATA_FIELDS",
    "FlvFile",
    "Fmp4File",
    "Recovered",
    "flv_metadata",
    "scan_flv",
    "scan_fmp4",
]

#: The ``mvhd`` timescale :func:`~streamserver.codec.fmp4.init_segment` writes.
MOVIE_TIMESCALE = 1000

#: The largest box read whole while scanning (a ``moov``, a ``moof``): ours are
#: a few KiB; anything larger in a ``.part`` file is garbage, not ours.
MAX_SCANNED_BOX = 16 * 1024 * 1024

#: Where the ``onMetaData`` tag of an FLV recording starts: after the 9-byte
#: header and PreviousTagSize0.
FLV_METADATA_OFFSET = FLV_HEADER_SIZE + 4

#: The ``onMetaData`` fields of an FLV recording, in order; every one is always
#: written (``stereo`` as a boolean, the others as numbers).
METADATA_FIELDS = (
    "duration",
    "width",
    "height",
    "framerate",
    "videocodecid",
    "audiocodecid",
    "audiosamplerate",
    "stereo",
    "filesize",
)

_U32_MAX = 0xFFFFFFFF


# --- fMP4 -----------------------------------------------------------------------------


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The boxes in ``data[start:end]`` as (type, start, end); stops at the first broken one."""
    found = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                break
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        if size < header or pos + size > end:
            break
        found.append((kind, pos, pos + size))
        pos += size
    return found


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """The first box of type *kind* among the boxes in ``data[start:end]``."""
    for child, child_start, child_end in _boxes(data, start, end):
        if child == kind:
            return child_start, child_end
    return None


def mvhd_duration_offset(moov: bytes, base: int = 0) -> int | None:
    """Where the ``mvhd`` duration of *moov* (a whole ``moov`` box) is, plus *base*.

    ``None`` unless it is a version 0 ``mvhd`` (32-bit duration) with timescale
    :data:`MOVIE_TIMESCALE`, as ours are.
    """
    found = _child(moov, 8, len(moov), b"mvhd")
    if found is None:
        return None
    start, end = found
    if end - start < 28 or moov[start + 8] != 0:
        return None
    if struct.unpack_from(">I", moov, start + 20)[0] != MOVIE_TIMESCALE:
        return None
    return base + start + 24


class Fmp4File:
    """The bytes of one fMP4 recording: init segment, fragments, the duration patch.

    :ivar header: the init segment, the first bytes of the file.
    :ivar duration_offset: where the ``mvhd`` duration is in the file.
    :raises UsageError: no tracks or two with the same id.
    """

    def __init__(self, tracks: Sequence[Track]) -> None:
        self.header = init_segment(tracks)
        self._writer = FragmentWriter(tracks)
        ftyp_size = struct.unpack_from(">I", self.header, 0)[0]
        offset = mvhd_duration_offset(self.header[ftyp_size:], ftyp_size)
        if offset is None:  # pragma: no cover - init_segment always writes one
            raise UsageError("the init segment has no mvhd of version 0")
        self.duration_offset = offset

    def fragment(
        self, samples: Mapping[int, Sequence[Mp4Sample]], next_dts: Mapping[int, int]
    ) -> bytes:
        """One ``moof`` + ``mdat`` (see :meth:`FragmentWriter.write`).

        :raises UsageError: as :meth:`FragmentWriter.write`.
        """
        return self._writer.write(samples, next_dts=next_dts).data

    def duration_patch(self, seconds: float) -> tuple[int, bytes]:
        """The ``(offset, bytes)`` that make the ``mvhd`` state *seconds*."""
        return self.duration_offset, _mvhd_duration(seconds)


def _mvhd_duration(seconds: float) -> bytes:
    ticks = round(seconds * MOVIE_TIMESCALE) if math.isfinite(seconds) else 0
    return struct.pack(">I", min(max(ticks, 0), _U32_MAX))


@dataclass(frozen=True)
class Recovered:
    """What survives of a recording left by a crash.

    :ivar length: the bytes that are whole (cut the file there).
    :ivar duration: the media duration in seconds up to there.
    :ivar patch: ``(offset, bytes)`` that make the file state it, if it can.
    """

    length: int
    duration: float
    patch: tuple[int, bytes] | None


def _read_box(file: BinaryIO, pos: int, size: int) -> tuple[bytes, int, int] | None:
    """The box header at *pos*: (type, header size, box size); ``None`` if broken or cut."""
    file.seek(pos)
    head = file.read(16)
    if len(head) < 8:
        return None
    box_size, kind = struct.unpack_from(">I4s", head)
    header = 8
    if box_size == 1:
        if len(head) < 16:
            return None
        box_size = struct.unpack_from(">Q", head, 8)[0]
        header = 16
    if box_size < header or pos + box_size > size:
        return None
    return kind, header, box_size


def _timescales(moov: bytes) -> dict[int, int]:
    """By track id, the ``mdhd`` timescale of each ``trak`` of *moov*."""
    result = {}
    for kind, start, end in _boxes(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        tkhd = _child(moov, start + 8, end, b"tkhd")
        mdia = _child(moov, start + 8, end, b"mdia")
        mdhd = _child(moov, mdia[0] + 8, mdia[1], b"mdhd") if mdia else None
        if tkhd is None or mdhd is None or tkhd[1] - tkhd[0] < 32 or mdhd[1] - mdhd[0] < 32:
            continue
        v1 = moov[tkhd[0] + 8] == 1
        track_id = struct.unpack_from(">I", moov, tkhd[0] + (28 if v1 else 20))[0]
        v1 = moov[mdhd[0] + 8] == 1
        if v1 and mdhd[1] - mdhd[0] < 44:
            continue
        timescale = struct.unpack_from(">I", moov, mdhd[0] + (28 if v1 else 20))[0]
        if timescale:
            result[track_id] = timescale
    return result


def _fragment_ends(moof: bytes) -> dict[int, int] | None:
    """By track id, where each ``traf`` of *moof* ends (tfdt + durations), in ticks."""
    ends = {}
    for kind, start, end in _boxes(moof, 8, len(moof)):
        if kind != b"traf":
            continue
        tfhd = _child(moof, start + 8, end, b"tfhd")
        tfdt = _child(moof, start + 8, end, b"tfdt")
        trun = _child(moof, start + 8, end, b"trun")
        if tfhd is None or tfdt is None or trun is None or tfhd[1] - tfhd[0] < 16:
            return None
        track_id = struct.unpack_from(">I", moof, tfhd[0] + 12)[0]
        if moof[tfdt[0] + 8] == 1:
            if tfdt[1] - tfdt[0] < 20:
                return None
            base = struct.unpack_from(">Q", moof, tfdt[0] + 12)[0]
        else:
            if tfdt[1] - tfdt[0] < 16:
                return None
            base = struct.unpack_from(">I", moof, tfdt[0] + 12)[0]
        if trun[1] - trun[0] < 16:
            return None
        flags = int.from_bytes(moof[trun[0] + 9 : trun[0] + 12], "big")
        count = struct.unpack_from(">I", moof, trun[0] + 12)[0]
        pos = trun[0] + 16 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
        entry = 4 * bin(flags & 0xF00).count("1")
        if not flags & 0x100 or pos + count * entry > trun[1]:
            return None  # no durations: not one of ours
        total = sum(struct.unpack_from(">I", moof, pos + i * entry)[0] for i in range(count))
        ends[track_id] = base + total
    return ends or None


def scan_fmp4(file: BinaryIO, size: int) -> Recovered | None:
    """What of the fMP4 in *file* (*size* bytes) is whole; ``None`` if not even its header.

    The whole part is the ``ftyp`` and ``moov`` and every ``moof`` followed by
    its complete ``mdat``; the duration is the latest track end of those
    fragments.
    """
    pos = 0
    moov: bytes | None = None
    moov_at = 0
    good = 0
    ends: dict[int, int] = {}
    pending: dict[int, int] | None = None
    while True:
        found = _read_box(file, pos, size)
        if found is None:
            break
        kind, _, box_size = found
        if kind in (b"moov", b"moof"):
            if box_size > MAX_SCANNED_BOX:
                break
            file.seek(pos)
            data = file.read(box_size)
            if len(data) < box_size:
                break
            if kind == b"moov":
                if moov is not None:
                    break
                moov, moov_at, good = data, pos, pos + box_size
            else:
                pending = _fragment_ends(data)
                if pending is None or moov is None:
                    break
        elif kind == b"mdat":
            if pending is None:
                break
            for track_id, end in pending.items():
                ends[track_id] = max(end, ends.get(track_id, 0))
            pending = None
            good = pos + box_size
        elif kind != b"ftyp" or pos != 0:
            break
        pos += box_size
    if moov is None:
        return None
    timescales = _timescales(moov)
    duration = max(
        (end / timescales[track_id] for track_id, end in ends.items() if track_id in timescales),
        default=0.0,
    )
    offset = mvhd_duration_offset(moov, moov_at)
    patch = None if offset is None else (offset, _mvhd_duration(duration))
    return Recovered(good, duration, patch)


# --- FLV ------------------------------------------------------------------------------


def flv_metadata(values: Mapping[str, float | bool]) -> bytes:
    """The ``onMetaData`` script tag of an FLV recording, always the same size.

    Every field of :data:`METADATA_FIELDS` is written, from *values* (0 or
    ``False`` when absent; numbers that are not finite become 0).
    """
    fields = amf0.ECMAArray()
    for name in METADATA_FIELDS:
        value = values.get(name, False if name == "stereo" else 0.0)
        if name == "stereo":
            fields[name] = bool(value)
        else:
            number = float(value)
            fields[name] = number if math.isfinite(number) else 0.0
    body = amf0.encode("onMetaData", fields)
    return encode_tag(FLVTag(TAG_SCRIPT_DATA, 0, body))


class FlvFile:
    """The bytes of one FLV recording: header and ``onMetaData``, tags, the metadata patch.

    :param values: the ``onMetaData`` fields known at the start.
    :ivar header: the first bytes of the file.
    """

    def __init__(
        self, values: Mapping[str, float | bool], *, audio: bool = True, video: bool = True
    ) -> None:
        self.values = dict(values)
        self.header = encode_header(audio=audio, video=video) + flv_metadata(self.values)

    @staticmethod
    def tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
        """One tag with its PreviousTagSize.

        :raises UsageError: a value does not fit the format.
        """
        return encode_tag(FLVTag(tag_type, timestamp, payload))

    def metadata_patch(self, **values: float | bool) -> tuple[int, bytes]:
        """The ``(offset, bytes)`` that rewrite ``onMetaData`` with *values* changed."""
        self.values.update(values)
        return FLV_METADATA_OFFSET, flv_metadata(self.values)


def scan_flv(file: BinaryIO, size: int) -> Recovered | None:
    """What of the FLV in *file* (*size* bytes) is whole; ``None`` if not even its header.

    The whole part ends after the last tag whose body and PreviousTagSize are
    complete and agree with its header; the duration is that tag's timestamp.
    When the first tag is an ``onMetaData`` of the fixed layout (:func:`flv_metadata`),
    the patch rewrites it with that duration and filesize.
    """
    file.seek(0)
    head = file.read(FLV_HEADER_SIZE + 4)
    if len(head) < FLV_HEADER_SIZE + 4 or head[:3] != b"FLV":
        return None
    offset = struct.unpack_from(">I", head, 5)[0]
    if offset < FLV_HEADER_SIZE or offset + 4 > size:
        return None
    pos = good = offset + 4
    last_ts = 0
    first: tuple[int, bytes] | None = None
    while pos + TAG_HEADER_SIZE + 4 <= size:
        file.seek(pos)
        header = file.read(TAG_HEADER_SIZE)
        if len(header) < TAG_HEADER_SIZE:
            break
        word, stamp = struct.unpack_from(">II", header)
        tag_type, body_size = word >> 24, word & 0xFFFFFF
        end = pos + TAG_HEADER_SIZE + body_size + 4
        if tag_type not in (8, 9, 18) or end > size:
            break
        body = file.read(body_size) if first is None and tag_type == TAG_SCRIPT_DATA else b""
        file.seek(end - 4)
        previous = file.read(4)
        if len(previous) < 4 or struct.unpack(">I", previous)[0] != TAG_HEADER_SIZE + body_size:
            break
        if first is None:
            first = (tag_type, body)
        last_ts = max(last_ts, (stamp >> 8) | ((stamp & 0xFF) << 24))
        pos = good = end
    duration = last_ts / 1000
    patch = None
    if first is not None and first[0] == TAG_SCRIPT_DATA and offset == FLV_HEADER_SIZE:
        patch = _metadata_patch(first[1], duration, good)
    return Recovered(good, duration, patch)


def _metadata_patch(body: bytes, duration: float, filesize: int) -> tuple[int, bytes] | None:
    """The patch of an ``onMetaData`` body of the fixed layout, or ``None``."""
    try:
        values = amf0.decode_all(body)
    except (ProtocolError, UsageError):
        return None
    if len(values) != 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
        return None
    known = values[1]
    if list(known) != list(METADATA_FIELDS):
        return None
    fields = {name: value for name, value in known.items() if isinstance(value, int | float | bool)}
    fields.update(duration=duration, filesize=float(filesize))
    data = flv_metadata(fields)
    if len(data) != TAG_HEADER_SIZE + len(body) + 4:
        return None
    return FLV_METADATA_OFFSET, data
