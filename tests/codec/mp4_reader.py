"""A strict ISO BMFF reader for the tests of the fMP4 muxer (ISO/IEC 14496-12).

Written apart from the muxer, from the spec's box layouts, so that a muxer bug
is not read back by the same mistake.  Strict where the muxer must be exact:
every box's size must fit its parent and the children of a container must fill
it to the byte; a ``trun``'s data offset must point into the ``mdat`` that
follows its ``moof``, the runs of one fragment must cover that ``mdat``'s
payload exactly, in order, with no gap and no overlap.  Raises
``AssertionError`` (a test failure) on anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

#: Boxes that hold only boxes.
CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf", b"edts"}
)

#: Boxes that hold a fixed prefix, then boxes: full-box header + entry count,
#: VisualSampleEntry (78 bytes), AudioSampleEntry (28 bytes).
PREFIXED = {
    b"stsd": 8,
    b"dref": 8,
    b"avc1": 78,
    b"hvc1": 78,
    b"av01": 78,
    b"mp4a": 28,
    b"Opus": 28,
}


@dataclass
class Box:
    """One box: its type, where it starts in the buffer, its size and its contents."""

    type: bytes
    offset: int
    size: int
    header_size: int
    payload: bytes
    children: list[Box] = field(default_factory=list)

    @property
    def payload_offset(self) -> int:
        """Where the payload starts in the buffer."""
        return self.offset + self.header_size

    def all(self, box_type: bytes) -> list[Box]:
        """The children of type *box_type*."""
        return [child for child in self.children if child.type == box_type]

    def one(self, box_type: bytes) -> Box:
        """The one child of type *box_type*."""
        found = self.all(box_type)
        assert len(found) == 1, f"{self.type!r} holds {len(found)} {box_type!r} boxes"
        return found[0]

    def path(self, *types: bytes) -> Box:
        """The one descendant reached through *types*."""
        node = self
        for box_type in types:
            node = node.one(box_type)
        return node


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes in ``data[start:end]``, which they must fill exactly; children too."""
    end = len(data) if end is None else end
    boxes = []
    pos = start
    while pos < end:
        assert end - pos >= 8, f"{end - pos} stray bytes at {pos}"
        size, box_type = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            assert end - pos >= 16, "truncated largesize"
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        assert size != 0, f"{box_type!r} at {pos} runs to the end of the file"
        assert header <= size <= end - pos, f"{box_type!r} at {pos}: size {size} does not fit"
        payload = data[pos + header : pos + size]
        node = Box(box_type, pos, size, header, payload)
        if box_type in CONTAINERS:
            node.children = parse_boxes(data, pos + header, pos + size)
        elif box_type in PREFIXED:
            prefix = PREFIXED[box_type]
            assert len(payload) >= prefix, f"{box_type!r} shorter than its {prefix}-byte prefix"
            node.children = parse_boxes(data, pos + header + prefix, pos + size)
        boxes.append(node)
        pos += size
    return boxes


def full_box(node: Box) -> tuple[int, int, bytes]:
    """A full box's version, flags and the rest of its payload."""
    assert len(node.payload) >= 4, f"{node.type!r} has no full-box header"
    (word,) = struct.unpack_from(">I", node.payload)
    return word >> 24, word & 0xFFFFFF, node.payload[4:]


def descriptors(data: bytes) -> list[tuple[int, bytes]]:
    """The MPEG-4 descriptors (tag, body) that fill *data* (14496-1 §8.3.3)."""
    found = []
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        size = 0
        for _ in range(4):
            byte = data[pos]
            pos += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        else:
            raise AssertionError("descriptor size longer than 4 bytes")
        assert pos + size <= len(data), "descriptor overruns its parent"
        found.append((tag, data[pos : pos + size]))
        pos += size
    return found


def audio_specific_config(esds: Box) -> tuple[int, bytes]:
    """The objectTypeIndication and the DecoderSpecificInfo of an ``esds`` box."""
    version, flags, body = full_box(esds)
    assert (version, flags) == (0, 0)
    [(tag, es)] = descriptors(body)
    assert tag == 0x03
    # ES_ID (2), flags (1: no dependency, URL or OCR stream follows).
    assert es[2] == 0
    inner = dict(descriptors(es[3:]))
    assert set(inner) == {0x04, 0x06}, inner
    assert inner[0x06] == b"\x02"
    config = inner[0x04]
    object_type = config[0]
    nested = dict(descriptors(config[13:]))
    return object_type, nested[0x05]


@dataclass
class TrackInfo:
    """What the init segment says about one track."""

    track_id: int
    handler: bytes
    timescale: int
    entry: bytes
    config_type: bytes
    config: bytes
    width: int = 0
    height: int = 0
    channels: int = 0
    sample_rate: int = 0


@dataclass
class InitInfo:
    """An init segment: its brands and tracks."""

    major_brand: bytes
    brands: list[bytes]
    tracks: list[TrackInfo]
    next_track_id: int


def read_init(boxes: list[Box]) -> InitInfo:
    """Read ``ftyp`` + ``moov``, checking the structure a fragmented MP4 needs."""
    assert [b.type for b in boxes] == [b"ftyp", b"moov"], [b.type for b in boxes]
    ftyp, moov = boxes
    major = ftyp.payload[:4]
    brands = [ftyp.payload[i : i + 4] for i in range(8, len(ftyp.payload), 4)]
    assert moov.children[0].type == b"mvhd"
    version, _, mvhd = full_box(moov.one(b"mvhd"))
    assert version == 0 and len(mvhd) == 96
    (next_track_id,) = struct.unpack_from(">I", mvhd, 92)
    trex_ids = []
    for trex in moov.one(b"mvex").all(b"trex"):
        _, _, body = full_box(trex)
        track_id, description, *defaults = struct.unpack(">IIIII", body)
        assert description == 1
        assert defaults == [0, 0, 0], "no trex defaults: every trun states its samples'"
        trex_ids.append(track_id)
    tracks = [_read_trak(trak) for trak in moov.all(b"trak")]
    assert trex_ids == [t.track_id for t in tracks], "one trex per trak, same order"
    assert next_track_id > max(trex_ids)
    return InitInfo(major, brands, tracks, next_track_id)


def _read_trak(trak: Box) -> TrackInfo:
    version, flags, tkhd = full_box(trak.one(b"tkhd"))
    assert version == 0 and flags & 1 and len(tkhd) == 80
    (track_id,) = struct.unpack_from(">I", tkhd, 8)
    width, height = struct.unpack_from(">II", tkhd, 72)
    mdia = trak.one(b"mdia")
    _, _, mdhd = full_box(mdia.one(b"mdhd"))
    (timescale,) = struct.unpack_from(">I", mdhd, 8)
    assert timescale > 0
    _, _, hdlr = full_box(mdia.one(b"hdlr"))
    handler = hdlr[4:8]
    assert hdlr.endswith(b"\x00"), "hdlr name is null-terminated"
    stbl = mdia.path(b"minf", b"stbl")
    for empty in (b"stts", b"stsc", b"stco"):
        assert full_box(stbl.one(empty))[2] == bytes(4), f"{empty!r} is not empty"
    assert full_box(stbl.one(b"stsz"))[2] == bytes(8)
    stsd = stbl.one(b"stsd")
    assert struct.unpack_from(">I", stsd.payload, 4) == (1,)
    [entry] = stsd.children
    [config_box] = entry.children
    info = TrackInfo(track_id, handler, timescale, entry.type, config_box.type, config_box.payload)
    prefix = entry.payload
    (data_reference_index,) = struct.unpack_from(">H", prefix, 6)
    assert data_reference_index == 1
    if handler == b"vide":
        assert mdia.one(b"minf").all(b"vmhd")
        info.width, info.height = struct.unpack_from(">HH", prefix, 24)
        assert (width, height) == (info.width << 16, info.height << 16)
    else:
        assert handler == b"soun"
        assert mdia.one(b"minf").all(b"smhd")
        info.channels, sample_size = struct.unpack_from(">HH", prefix, 16)
        assert sample_size == 16
        (rate,) = struct.unpack_from(">I", prefix, 24)
        info.sample_rate = rate >> 16
    return info


@dataclass
class SampleInfo:
    """One sample as a ``trun`` describes it, with its bytes from the ``mdat``."""

    duration: int
    flags: int
    composition_offset: int
    data: bytes

    @property
    def is_sync(self) -> bool:
        """Not marked sample_is_non_sync_sample."""
        return not self.flags & 0x00010000


@dataclass
class TrafInfo:
    """One track's run in a fragment."""

    track_id: int
    base_decode_time: int
    samples: list[SampleInfo]


@dataclass
class FragmentInfo:
    """One ``moof`` + ``mdat``."""

    sequence_number: int
    offset: int
    size: int
    trafs: list[TrafInfo]


def read_fragment(data: bytes, moof: Box, mdat: Box) -> FragmentInfo:
    """Read a ``moof`` and check that its runs cover the ``mdat`` after it exactly."""
    assert moof.type == b"moof" and mdat.type == b"mdat"
    assert mdat.offset == moof.offset + moof.size, "mdat follows its moof"
    assert moof.children[0].type == b"mfhd"
    _, _, mfhd = full_box(moof.one(b"mfhd"))
    (sequence_number,) = struct.unpack(">I", mfhd)
    trafs = []
    cursor = mdat.payload_offset
    for traf in moof.all(b"traf"):
        assert [c.type for c in traf.children] == [b"tfhd", b"tfdt", b"trun"]
        _, tfhd_flags, tfhd = full_box(traf.one(b"tfhd"))
        assert tfhd_flags == 0x020000, "default-base-is-moof and nothing else"
        (track_id,) = struct.unpack(">I", tfhd)
        tfdt_version, _, tfdt = full_box(traf.one(b"tfdt"))
        assert tfdt_version == 1
        (base,) = struct.unpack(">Q", tfdt)
        version, flags, body = full_box(traf.one(b"trun"))
        assert version == 1
        assert flags & 0x000701 == 0x000701, f"trun flags {flags:#x}"
        count, data_offset = struct.unpack_from(">Ii", body)
        with_offsets = bool(flags & 0x000800)
        entry = ">IIIi" if with_offsets else ">III"
        entry_size = struct.calcsize(entry)
        assert len(body) == 8 + count * entry_size, "trun size matches its sample count"
        start = moof.offset + data_offset
        assert start == cursor, f"track {track_id}: data at {start}, expected {cursor}"
        samples = []
        for i in range(count):
            values = struct.unpack_from(entry, body, 8 + i * entry_size)
            duration, size, sample_flags = values[:3]
            offset = values[3] if with_offsets else 0
            assert cursor + size <= mdat.offset + mdat.size, "sample overruns the mdat"
            samples.append(SampleInfo(duration, sample_flags, offset, data[cursor : cursor + size]))
            cursor += size
        trafs.append(TrafInfo(track_id, base, samples))
    assert cursor == mdat.offset + mdat.size, "the runs cover the whole mdat"
    return FragmentInfo(sequence_number, moof.offset, moof.size + mdat.size, trafs)


def read_fragments(data: bytes, boxes: list[Box]) -> list[FragmentInfo]:
    """Read alternating ``moof`` and ``mdat`` boxes."""
    types = [b.type for b in boxes]
    assert types == [b"moof", b"mdat"] * (len(boxes) // 2), types
    return [read_fragment(data, boxes[i], boxes[i + 1]) for i in range(0, len(boxes), 2)]


def read_file(data: bytes) -> tuple[InitInfo, list[FragmentInfo]]:
    """Read an init segment followed by fragments."""
    boxes = parse_boxes(data)
    return read_init(boxes[:2]), read_fragments(data, boxes[2:])
