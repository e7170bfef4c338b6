"""A strict MPEG-TS reader for the tests, written from ISO/IEC 13818-1 apart from the muxer.

:func:`read_ts` checks what a muxer must get right and raises
:class:`TsFormatError` where it does not: packets of exactly 188 bytes with
the sync byte, no transport errors or scrambling, adaptation field lengths
and stuffing (only 0xFF), continuity counters per PID (each payload-carrying
packet one more than the last, modulo 16), PSI sections with valid
section_length and CRC_32, PES packets starting with a start code and as long
as their PES_packet_length says.  It returns the PAT, the PMT and every PES
packet reassembled, with its PTS, DTS, PCR and random access flag.

Also :func:`split_annex_b` and :func:`split_adts` to look inside the PES data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PACKET_SIZE = 188


class TsFormatError(Exception):
    """The stream breaks a rule of 13818-1 the reader checks."""


@dataclass
class Pes:
    """One reassembled PES packet.

    :ivar pcr: the PCR base (90 kHz) in the adaptation field of its first
        packet, or ``None``.
    :ivar random_access: the first packet's random_access_indicator.
    """

    pid: int
    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes
    pcr: int | None
    random_access: bool
    data_alignment: bool

    @property
    def decode_time(self) -> int | None:
        """The DTS, or the PTS when the DTS is left out (they are equal)."""
        return self.dts if self.dts is not None else self.pts


@dataclass
class TransportStream:
    """What :func:`read_ts` found.

    :ivar programs: the PAT: program_number -> PMT PID.
    :ivar pcr_pid: the PMT's PCR_PID.
    :ivar streams: the PMT's elementary streams: PID -> stream_type.
    :ivar pes: every complete PES packet, in stream order.
    :ivar psi_count: sections read per PID.
    :ivar first_continuity: the first continuity_counter seen per PID.
    :ivar packets: the number of packets.
    """

    programs: dict[int, int] = field(default_factory=dict)
    pcr_pid: int | None = None
    streams: dict[int, int] = field(default_factory=dict)
    pes: list[Pes] = field(default_factory=list)
    psi_count: dict[int, int] = field(default_factory=dict)
    first_continuity: dict[int, int] = field(default_factory=dict)
    last_continuity: dict[int, int] = field(default_factory=dict)
    packets: int = 0

    def pes_of(self, pid: int) -> list[Pes]:
        return [p for p in self.pes if p.pid == pid]


def crc32_mpeg2(data: bytes) -> int:
    """CRC_32 of 13818-1 annex A, bit by bit (slow, obviously right)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1)
    return crc & 0xFFFFFFFF


def _timestamp(raw: bytes, prefix: int) -> int:
    if raw[0] >> 4 != prefix:
        raise TsFormatError(f"timestamp prefix {raw[0] >> 4:04b}, expected {prefix:04b}")
    if not (raw[0] & 1 and raw[2] & 1 and raw[4] & 1):
        raise TsFormatError("timestamp marker bit missing")
    return (
        ((raw[0] >> 1) & 0x07) << 30
        | raw[1] << 22
        | (raw[2] >> 1) << 15
        | raw[3] << 7
        | raw[4] >> 1
    )


class _PesAssembler:
    def __init__(self) -> None:
        self.data = bytearray()
        self.pcr: int | None = None
        self.random_access = False


def _parse_pes(pid: int, assembler: _PesAssembler) -> Pes:
    data = bytes(assembler.data)
    if data[:3] != b"\x00\x00\x01":
        raise TsFormatError(f"PES on PID {pid:#x} has no start code")
    stream_id = data[3]
    length = int.from_bytes(data[4:6], "big")
    if length and length != len(data) - 6:
        raise TsFormatError(f"PES_packet_length {length}, but {len(data) - 6} bytes follow")
    if not length and not 0xE0 <= stream_id <= 0xEF:
        raise TsFormatError(f"unbounded PES on non-video stream {stream_id:#x}")
    if data[6] >> 6 != 0b10:
        raise TsFormatError("PES header does not start with '10'")
    flags = data[7] >> 6
    header_length = data[8]
    fields = data[9 : 9 + header_length]
    pts = dts = None
    if flags == 0b10:
        pts = _timestamp(fields[:5], 0b0010)
    elif flags == 0b11:
        pts = _timestamp(fields[:5], 0b0011)
        dts = _timestamp(fields[5:10], 0b0001)
    elif flags == 0b01:
        raise TsFormatError("PTS_DTS_flags '01' is forbidden")
    return Pes(
        pid=pid,
        stream_id=stream_id,
        pts=pts,
        dts=dts,
        data=data[9 + header_length :],
        pcr=assembler.pcr,
        random_access=assembler.random_access,
        data_alignment=bool(data[6] & 0x04),
    )


def _parse_section(pid: int, payload: bytes, ts: TransportStream) -> None:
    pointer = payload[0]
    section = payload[1 + pointer :]
    length = ((section[1] & 0x0F) << 8) | section[2]
    if not section[1] & 0x80:
        raise TsFormatError("section_syntax_indicator not set")
    section = section[: 3 + length]
    if len(section) != 3 + length:
        raise TsFormatError("PSI section longer than its packet")
    if any(b != 0xFF for b in payload[1 + pointer + 3 + length :]):
        raise TsFormatError("PSI stuffing after the section is not 0xFF")
    if crc32_mpeg2(section) != 0:
        raise TsFormatError(f"bad CRC_32 in the section on PID {pid:#x}")
    table_id = section[0]
    body = section[8:-4]
    ts.psi_count[pid] = ts.psi_count.get(pid, 0) + 1
    if table_id == 0x00:
        for i in range(0, len(body), 4):
            program = int.from_bytes(body[i : i + 2], "big")
            ts.programs[program] = int.from_bytes(body[i + 2 : i + 4], "big") & 0x1FFF
    elif table_id == 0x02:
        ts.pcr_pid = int.from_bytes(body[0:2], "big") & 0x1FFF
        info_length = int.from_bytes(body[2:4], "big") & 0x0FFF
        pos = 4 + info_length
        streams = {}
        while pos < len(body):
            stream_type = body[pos]
            es_pid = int.from_bytes(body[pos + 1 : pos + 3], "big") & 0x1FFF
            es_info = int.from_bytes(body[pos + 3 : pos + 5], "big") & 0x0FFF
            streams[es_pid] = stream_type
            pos += 5 + es_info
        ts.streams = streams
    else:
        raise TsFormatError(f"unexpected table_id {table_id:#x}")


def read_ts(data: bytes) -> TransportStream:
    """Read and check *data*, a whole number of transport packets.

    :raises TsFormatError: a rule is broken.
    """
    if len(data) % PACKET_SIZE:
        raise TsFormatError(f"{len(data)} bytes is not a whole number of packets")
    ts = TransportStream()
    assemblers: dict[int, _PesAssembler] = {}
    for offset in range(0, len(data), PACKET_SIZE):
        packet = data[offset : offset + PACKET_SIZE]
        ts.packets += 1
        if packet[0] != 0x47:
            raise TsFormatError(f"no sync byte at offset {offset}")
        if packet[1] & 0x80:
            raise TsFormatError("transport_error_indicator set")
        start = bool(packet[1] & 0x40)
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if packet[3] >> 6:
            raise TsFormatError("scrambled packet")
        control = (packet[3] >> 4) & 0x03
        continuity = packet[3] & 0x0F
        if control == 0:
            raise TsFormatError("adaptation_field_control 00 is reserved")
        pos = 4
        pcr = None
        random_access = False
        if control & 0x02:
            af_length = packet[4]
            # With a payload at most 182 bytes (one payload byte left); alone exactly 183.
            if af_length > (182 if control == 0x03 else 183):
                raise TsFormatError(f"adaptation field of {af_length} bytes")
            if control == 0x02 and af_length != 183:
                raise TsFormatError("an adaptation-only packet must fill the packet")
            af = packet[5 : 5 + af_length]
            if af:
                flags = af[0]
                random_access = bool(flags & 0x40)
                at = 1
                if flags & 0x10:
                    pcr = int.from_bytes(af[1:7], "big") >> 15
                    if (int.from_bytes(af[1:7], "big") >> 9) & 0x3F != 0x3F:
                        raise TsFormatError("PCR reserved bits not set")
                    at = 7
                if flags & 0x2F:
                    raise TsFormatError(f"unexpected adaptation field flags {flags:#x}")
                if any(b != 0xFF for b in af[at:]):
                    raise TsFormatError("adaptation field stuffing is not 0xFF")
            pos = 5 + af_length
        if not control & 0x01:
            continue
        if pos >= PACKET_SIZE:
            raise TsFormatError("a packet with a payload flag but no payload")
        if pid in ts.last_continuity:
            expected = (ts.last_continuity[pid] + 1) & 0x0F
            if continuity != expected:
                raise TsFormatError(
                    f"continuity_counter {continuity} on PID {pid:#x}, expected {expected}"
                )
        else:
            ts.first_continuity[pid] = continuity
        ts.last_continuity[pid] = continuity
        payload = packet[pos:]
        if pid == 0 or pid in ts.programs.values():
            if not start:
                raise TsFormatError("PSI section spanning packets (not produced by us)")
            _parse_section(pid, payload, ts)
            continue
        if start:
            if pid in assemblers:
                ts.pes.append(_parse_pes(pid, assemblers[pid]))
            assembler = assemblers[pid] = _PesAssembler()
            assembler.pcr = pcr
            assembler.random_access = random_access
        elif pid not in assemblers:
            raise TsFormatError(f"PES continuation on PID {pid:#x} without a start")
        elif pcr is not None or random_access:
            raise TsFormatError("PCR or random access flag after the first packet of a PES")
        assemblers[pid].data += payload
    for pid, assembler in assemblers.items():
        ts.pes.append(_parse_pes(pid, assembler))
    return ts


def split_annex_b(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes).

    Zero bytes before a start code are taken as its leading zero_byte (or
    trailing_zero_8bits), so a NAL unit ending in 0x00 loses it: test NAL
    units never end so, as real ones (ending with the rbsp stop bit) rarely do.
    """
    if not data.startswith(b"\x00\x00\x01") and not data.startswith(b"\x00\x00\x00\x01"):
        raise TsFormatError("Annex B stream does not start with a start code")
    parts = data.split(b"\x00\x00\x01")
    return [part.rstrip(b"\x00") if i < len(parts) - 1 else part for i, part in enumerate(parts)][
        1:
    ]


def split_adts(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (7-byte header, raw frame) pairs of an ADTS stream."""
    frames = []
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 7]
        if header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
            raise TsFormatError(f"no ADTS sync at {pos}")
        length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
        if pos + length > len(data) or length < 7:
            raise TsFormatError("ADTS frame_length runs past the PES")
        frames.append((header, data[pos + 7 : pos + length]))
        pos += length
    return frames
