"""Fan-out benchmark: one publisher, N viewers, one RTMP server, one JSON line.

Works against any RTMP server (streamserver, nginx-rtmp…) given its URL and,
for the server-side numbers, its process id; the viewers play RTMP or, from a
server that serves it, HTTP-FLV (``--protocol``).  The run:

1. reads the server's RSS, connects N viewers (and ``--slow K`` throttled ones)
   that ``play`` the stream while nobody publishes it, waits until every one got
   its ``onStatus`` answer, lets the server settle and reads the RSS again:
   *memory per idle connected viewer* is the difference divided by the viewers;
2. publishes a stream at real-time pace (a synthetic H.264 + AAC shaped stream at
   ``--bitrate`` kbit/s, or the FLV ``--file`` looped), waits ``--warmup`` s,
   then measures for ``--duration`` s: server CPU (``utime + stime`` from
   ``/proc``) and RSS every second, bytes delivered to every viewer, end-to-end
   latency, the load generator's own CPU;
3. stops publishing, lets the viewers drain, counts every frame each viewer
   missed, and prints one JSON line on stdout (progress goes to stderr).

Every coded frame carries a stamp, 25 ASCII bytes ``FOUT`` + sequence number (8
hex digits, per media type) + the publisher's wall-clock send time in µs (13 hex
digits), in a place decoders skip: a user-data-unregistered SEI NAL unit in front
of the H.264 NAL units, and an AAC data stream element (DSE) in front of the raw
AAC frame.  So a ``--file`` stream stays decodable (``ffmpeg -i rtmp://… -f null
-`` shows no errors), and each viewer can tell, per frame, what it is, whether
one was skipped and how late it arrived.  ASCII digits mean no zero bytes, so
no H.264 emulation prevention is needed inside the SEI.

The load generator is one process with one asyncio event loop.  Viewers are raw
non-blocking sockets read with ``recv_into`` into one shared 256 KiB buffer; the
chunk parser looks at chunk headers only (message boundaries, type, timestamp)
and at the first bytes of each media message (the stamp), skipping payloads
without copying them.  Only ``--probes`` viewers (spread evenly over the join
order) read eagerly and time every frame; the other fast viewers set
``SO_RCVLOWAT`` (``--rcvlowat``, default 32 KiB, spread over 0.5-1.5x so that
they do not all wake in the same loop turn) so the kernel wakes them a few times
a second instead of once per frame, with a 1 MiB ``SO_RCVBUF`` so that
the bytes waiting for the wake-up never close the TCP window.  The server cannot
tell: on loopback its writes never wait for such a reader.  All viewers count
lost frames and delivered bytes (read + ``FIONREAD``); only probes give latency.

``--protocol http-flv`` makes the viewers HTTP-FLV players of the same stream
(still published over RTMP at ``--url``): each sends ``GET /APP/NAME.flv
HTTP/1.1`` with a ``Host`` header to ``--http-port`` and reads the chunked
response with the same socket options, reads and probes as an RTMP viewer;
``bench/http_flv.py`` walks the chunk-size lines and FLV tag headers and skips
tag bodies past the stamp.  Delivered bytes are wire bytes in both protocols
(RTMP chunk headers; HTTP chunk framing and FLV tag headers), so the summary also
gives server CPU per delivered frame and the wire bytes per frame.

Example (streamserver on port 1935, HTTP on 8080, its twistd pid in $PID)::

    .venv/bin/python bench/fanout.py --url rtmp://127.0.0.1:1935/live/bench \\
        --viewers 400 --bitrate 1000 --duration 60 --warmup 10 --server-pid $PID
    .venv/bin/python bench/fanout.py --url rtmp://127.0.0.1:1935/live/bench \\
        --protocol http-flv --http-port 8080 --viewers 400 --server-pid $PID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import struct
import sys
import termios
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from http_flv import HttpFlvError, HttpFlvReader, request_bytes

from streamserver.client import parse_rtmp_url
from streamserver.codec import amf0, messages
from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
from streamserver.codec.flv import FLVTag, read_file
from streamserver.codec.handshake import ClientHandshake
from streamserver.codec.messages import (
    CSID_AUDIO,
    CSID_COMMAND,
    CSID_CONTROL,
    CSID_DATA,
    CSID_VIDEO,
    Message,
    MessageType,
    UserControlEvent,
)
from streamserver.errors import ProtocolError

# --- the stamp ------------------------------------------------------------------------

MAGIC = b"FOUT"
#: magic, sequence number (8 hex digits), wall-clock send time in µs (13 hex digits:
#: enough until 2112).
STAMP_SIZE = 4 + 8 + 13
_STAMP_FORMAT = b"FOUT%08x%013x"

#: user_data_unregistered SEI (H.264 7.3.2.3, D.1.6): NAL header 6, payloadType 5,
#: payloadSize, a 16-byte UUID, the stamp, rbsp_trailing_bits.  Decoders skip it.
_SEI_UUID = b"streamserver-fan"
_SEI_PREFIX = b"\x06\x05" + bytes((16 + STAMP_SIZE,)) + _SEI_UUID
_SEI_NAL_SIZE = len(_SEI_PREFIX) + STAMP_SIZE + 1

#: AAC data_stream_element (ISO 14496-3 4.4.2.1): id_syn_ele ID_DSE (3 bits, 4),
#: element_instance_tag 0 (4 bits), data_byte_align_flag 1, count.  16 bits, so the
#: raw frame that follows stays byte-aligned and decodes unchanged.
_DSE_PREFIX = bytes((0x81, STAMP_SIZE))

#: Where the stamp starts in an AAC raw frame message: 2-byte audio tag header, DSE header.
AUDIO_STAMP_AT = 2 + len(_DSE_PREFIX)


def video_stamp_at(nal_length_size: int) -> int:
    """Where the stamp starts in an AVC NALU message: tag header, NAL length, SEI prefix."""
    return 5 + nal_length_size + len(_SEI_PREFIX)


def stamp(seq: int) -> bytes:
    """The stamp for frame *seq*, sent now."""
    return _STAMP_FORMAT % (seq & 0xFFFFFFFF, time.time_ns() // 1000)


def stamp_video(payload: bytes, seq: int, nal_length_size: int) -> bytes:
    """*payload* (an AVC NALU video message) with an SEI NAL carrying the stamp in front."""
    sei = _SEI_NAL_SIZE.to_bytes(nal_length_size, "big") + _SEI_PREFIX + stamp(seq) + b"\x80"
    return payload[:5] + sei + payload[5:]


def stamp_audio(payload: bytes, seq: int) -> bytes:
    """*payload* (an AAC raw frame message) with a DSE carrying the stamp in front."""
    return payload[:2] + _DSE_PREFIX + stamp(seq) + payload[2:]


# --- small helpers ----------------------------------------------------------------------


def log(text: str) -> None:
    """Progress on stderr (stdout carries only the JSON line)."""
    sys.stderr.write(f"[fanout {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max (nearest rank) of *values* (ms), rounded, and their count."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))]

    return {
        "p50": round(rank(0.50), 2),
        "p99": round(rank(0.99), 2),
        "max": round(ordered[-1], 2),
        "n": n,
    }


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class ProcessProbe:
    """CPU time and RSS of a process, read from ``/proc/PID``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")

    def cpu_times(self) -> tuple[float, float] | None:
        """``(utime, stime)`` in seconds, or ``None`` if the process is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return int(fields[11]) / self._ticks, int(fields[12]) / self._ticks

    def cpu_s(self) -> float | None:
        """utime + stime in seconds, or ``None`` if the process is gone."""
        times = self.cpu_times()
        return times[0] + times[1] if times is not None else None

    def rss_mb(self) -> float | None:
        """VmRSS in MB (10**6 bytes), or ``None`` if the process is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            return None
        return None


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def tcp_out_segments() -> int | None:
    """TCP segments the machine sent since boot (``OutSegs`` of ``/proc/net/snmp``), or ``None``."""
    try:
        with open("/proc/net/snmp") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("OutSegs")])
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``), or ``None``."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


# --- what is published ---------------------------------------------------------------------

FPS = 30
GOP_FRAMES = 60  # a keyframe every 2 s
AAC_SAMPLES = 1024
AAC_RATE = 44100  # 43.07 packets/s
AUDIO_KBPS = 64
#: Keyframe size / inter frame size; ~8 is typical of a static-camera H.264 stream.
KEYFRAME_FACTOR = 8

#: AVC decoder configuration (SPS/PPS for 640x360 High profile, 4-byte NAL lengths)
#: and AAC-LC 44.1 kHz stereo AudioSpecificConfig, as in tests/integration/support.py.
AVC_SEQUENCE_HEADER = bytes.fromhex("1700000000" + "0164001fffe1000467640015" + "01000468ee3cb0")
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"


class MediaFrame:
    """One media message to publish: type, timestamp (ms), payload, whether it gets a stamp."""

    __slots__ = ("payload", "stamped", "timestamp", "type_id")

    def __init__(self, type_id: int, timestamp: int, payload: bytes, stamped: bool) -> None:
        self.type_id = type_id
        self.timestamp = timestamp
        self.payload = payload
        self.stamped = stamped


class SyntheticSource:
    """An H.264 + AAC shaped stream: 30 fps, a keyframe every 2 s, AAC 43 packets/s.

    Video payloads are the stamp SEI plus one filler-data NAL unit (type 12) sized so
    that keyframes are :data:`KEYFRAME_FACTOR` times inter frames and video + 64 kbit/s
    of audio add up to the bitrate.  Timestamps run forever.
    """

    nal_length_size = 4

    def __init__(self, bitrate_kbps: float) -> None:
        total = bitrate_kbps * 1000 / 8  # bytes/s
        audio_rate = AAC_RATE / AAC_SAMPLES
        stamp_audio_size = AUDIO_STAMP_AT + STAMP_SIZE
        self.audio_bytes = max(stamp_audio_size + 8, round(AUDIO_KBPS * 125 / audio_rate))
        video_total = max(total - self.audio_bytes * audio_rate, FPS * 100)
        inter = video_total * GOP_FRAMES / FPS / (GOP_FRAMES - 1 + KEYFRAME_FACTOR)
        overhead = 5 + 4 + _SEI_NAL_SIZE + 4 + 2  # header, SEI, filler length, type, trailing
        self.inter_bytes = max(overhead, round(inter))
        self.key_bytes = max(overhead, round(inter * KEYFRAME_FACTOR))
        self._key = self._video(b"\x17\x01\x00\x00\x00", self.key_bytes - _SEI_NAL_SIZE - 4)
        self._inter = self._video(b"\x27\x01\x00\x00\x00", self.inter_bytes - _SEI_NAL_SIZE - 4)
        # An AAC raw frame after the DSE: not a real frame, nobody decodes it.
        self._audio = b"\xaf\x01" + b"\x21" * (self.audio_bytes - stamp_audio_size)

    @staticmethod
    def _video(header: bytes, size: int) -> bytes:
        """A video message of *size* bytes before stamping: header + one filler NAL."""
        nal = b"\x0c" + b"\xff" * (size - 5 - 4 - 2) + b"\x80"
        return header + len(nal).to_bytes(4, "big") + nal

    def nominal_kbps(self) -> float:
        video = (self.key_bytes + (GOP_FRAMES - 1) * self.inter_bytes) * FPS / GOP_FRAMES
        audio = self.audio_bytes * AAC_RATE / AAC_SAMPLES
        return round((video + audio) * 8 / 1000, 1)

    def describe(self) -> str:
        return (
            f"synthetic {self.nominal_kbps()} kbit/s (key {self.key_bytes} B, "
            f"inter {self.inter_bytes} B, audio {self.audio_bytes} B)"
        )

    def headers(self) -> list[MediaFrame]:
        metadata = amf0.encode(
            "@setDataFrame",
            "onMetaData",
            amf0.ECMAArray(
                {
                    "width": 640.0,
                    "height": 360.0,
                    "framerate": float(FPS),
                    "videocodecid": 7.0,
                    "audiocodecid": 10.0,
                    "audiosamplerate": float(AAC_RATE),
                    "videodatarate": float(self.nominal_kbps()),
                }
            ),
        )
        return [
            MediaFrame(MessageType.DATA_AMF0, 0, metadata, False),
            MediaFrame(MessageType.VIDEO, 0, AVC_SEQUENCE_HEADER, False),
            MediaFrame(MessageType.AUDIO, 0, AAC_SEQUENCE_HEADER, False),
        ]

    def frames(self) -> Any:
        """Media frames in timestamp order, forever."""
        video = audio = 0
        while True:
            video_ms = video * 1000 / FPS
            audio_ms = audio * AAC_SAMPLES * 1000 / AAC_RATE
            if video_ms <= audio_ms:
                payload = self._key if video % GOP_FRAMES == 0 else self._inter
                yield MediaFrame(MessageType.VIDEO, int(video_ms), payload, True)
                video += 1
            else:
                yield MediaFrame(MessageType.AUDIO, int(audio_ms), self._audio, True)
                audio += 1


class FileSource:
    """An FLV file, looped: metadata and sequence headers once, media forever.

    AVC NALU messages and AAC raw frames get a stamp; other codecs are relayed
    unstamped and not counted.
    """

    def __init__(self, path: Path) -> None:
        tags = read_file(path)
        self.path = path
        self._headers: list[MediaFrame] = []
        self._media: list[MediaFrame] = []
        self.nal_length_size = 4
        for tag in tags:
            frame = self._frame(tag)
            if frame is not None:
                self._media.append(frame)
        if not self._media:
            raise SystemExit(f"{path}: no audio or video tags")
        first = self._media[0].timestamp
        for frame in self._media:
            frame.timestamp -= first
        # One frame interval after the last one, so the loop keeps the frame rate.
        video = [f.timestamp for f in self._media if f.type_id == MessageType.VIDEO]
        step = (video[-1] - video[0]) / max(1, len(video) - 1) if len(video) > 1 else 33
        self._span = self._media[-1].timestamp + max(1, round(step))
        size = sum(len(f.payload) for f in self._media)
        self._kbps = size * 8 / max(1, self._span)  # bytes/ms * 8 = kbit/s

    def _frame(self, tag: FLVTag) -> MediaFrame | None:
        payload = tag.payload
        if tag.tag_type == MessageType.DATA_AMF0:
            if not payload.startswith(b"\x02\x00\x0d@setDataFrame"):
                payload = b"\x02\x00\x0d@setDataFrame" + payload
            self._headers.append(MediaFrame(tag.tag_type, 0, payload, False))
            return None
        if tag.tag_type == MessageType.VIDEO and len(payload) >= 5 and payload[0] & 0x0F == 7:
            if payload[1] == 0:  # AVC sequence header: keep the first, learn the NAL length size
                if not any(h.type_id == MessageType.VIDEO for h in self._headers):
                    if len(payload) > 9:
                        self.nal_length_size = (payload[9] & 0x03) + 1
                    self._headers.append(MediaFrame(tag.tag_type, 0, payload, False))
                return None
            return MediaFrame(tag.tag_type, tag.timestamp, payload, payload[1] == 1)
        if tag.tag_type == MessageType.AUDIO and len(payload) >= 2 and payload[0] >> 4 == 10:
            if payload[1] == 0:  # AAC sequence header
                if not any(h.type_id == MessageType.AUDIO for h in self._headers):
                    self._headers.append(MediaFrame(tag.tag_type, 0, payload, False))
                return None
            return MediaFrame(tag.tag_type, tag.timestamp, payload, True)
        return MediaFrame(tag.tag_type, tag.timestamp, payload, False)

    def nominal_kbps(self) -> float:
        return round(self._kbps, 1)

    def describe(self) -> str:
        return f"file {self.path} ({self.nominal_kbps()} kbit/s, looped every {self._span} ms)"

    def headers(self) -> list[MediaFrame]:
        return list(self._headers)

    def frames(self) -> Any:
        offset = 0
        while True:
            for frame in self._media:
                yield MediaFrame(
                    frame.type_id, frame.timestamp + offset, frame.payload, frame.stamped
                )
            offset += self._span


# --- the publisher ----------------------------------------------------------------------------


_HEADER_CSID: dict[int, int] = {MessageType.VIDEO: CSID_VIDEO, MessageType.AUDIO: CSID_AUDIO}


class Publisher(asyncio.Protocol):
    """Publishes a source at real-time pace once ``publish`` succeeded.

    :ivar sent: stamped frames sent per media type (the next sequence number).
    :ivar send_delays: how late each write was against its schedule (ms).
    """

    transport: asyncio.Transport

    def __init__(self, source: SyntheticSource | FileSource, app: str, name: str, tc_url: str):
        self.source = source
        self.app = app
        self.name = name
        self.tc_url = tc_url
        self._handshake: ClientHandshake | None = ClientHandshake()
        self._decoder = ChunkDecoder()
        self._encoder = ChunkEncoder(128)
        self._ack_window = 0
        self._acked = 0
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.stream_id = 0
        self.sent: dict[int, int] = {MessageType.VIDEO: 0, MessageType.AUDIO: 0}
        self.payload_bytes = 0
        self.send_delays: array[float] = array("d")
        self.record_delays = False
        self._frames = source.frames()
        self._next: MediaFrame | None = None
        self._start = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.stopped = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self._handshake is not None
        self.transport.write(self._handshake.initial_bytes())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"publisher connection lost: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        handshake = self._handshake
        if handshake is not None:
            reply = handshake.receive_data(data)
            if not handshake.complete:
                return
            self.transport.write(reply)
            data = handshake.leftover
            self._handshake = None
            self.send(self._encoder.set_chunk_size(4096))
            obj = {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; fanout)",
                "tcUrl": self.tc_url,
            }
            self.send(messages.command("connect", 1.0, obj))
            if not data:
                return
        try:
            received = self._decoder.receive_data(data)
        except ProtocolError as error:
            self.fail(f"chunk error: {error}")
            return
        for message in received:
            self.message_received(message)
        total = self._decoder.bytes_received
        if self._ack_window and total - self._acked >= self._ack_window:
            self._acked = total
            self.send(messages.acknowledgement(total & 0xFFFFFFFF))

    def message_received(self, message: Message) -> None:
        type_id = message.type_id
        if type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            command = messages.parse_command(message)
            info = command.args[0] if command.args and isinstance(command.args[0], dict) else {}
            if command.name == "_result" and command.transaction_id == 1.0:
                self.send(messages.command("releaseStream", 2.0, None, self.name))
                self.send(messages.command("FCPublish", 3.0, None, self.name))
                self.send(messages.command("createStream", 4.0, None))
            elif command.name == "_result" and command.transaction_id == 4.0:
                self.stream_id = int(command.args[0])
                self.send(
                    messages.command(
                        "publish", 5.0, None, self.name, "live", stream_id=self.stream_id
                    )
                )
            elif command.name == "_error" and command.transaction_id in (1.0, 4.0):
                self.fail(f"_error for txn {command.transaction_id}: {info.get('code')}")
            elif command.name == "onStatus":
                if info.get("level") == "error":
                    self.fail(f"publish failed: {info.get('code')}")
                elif info.get("code") == "NetStream.Publish.Start" and not self.started.done():
                    self._begin()
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            self._ack_window = messages.parse_uint32(message)
        elif type_id == MessageType.USER_CONTROL:
            event, values = messages.parse_user_control(message)
            if event == UserControlEvent.PING_REQUEST and values:
                self.send(messages.ping_response(values[0]))

    def send(self, message: Message, csid: int = CSID_COMMAND) -> None:
        if message.type_id in messages.PROTOCOL_CONTROL_TYPES or (
            message.type_id == MessageType.USER_CONTROL
        ):
            csid = CSID_CONTROL
        self.transport.write(self._encoder.encode(message, csid))

    def fail(self, reason: str) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))
        log(f"publisher: {reason}")
        self.transport.abort()

    def _begin(self) -> None:
        sid = self.stream_id
        for frame in self.source.headers():
            csid = _HEADER_CSID.get(frame.type_id, CSID_DATA)
            self.send(Message(frame.type_id, sid, frame.timestamp, frame.payload), csid)
        self._start = asyncio.get_running_loop().time()
        self._next = next(self._frames)
        self.started.set_result(None)
        self._pace()

    def _pace(self) -> None:
        """Send every frame that is due, then sleep until the next one."""
        self._timer = None
        if self.stopped or self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        sid = self.stream_id
        encode = self._encoder.encode
        nal_length_size = self.source.nal_length_size
        sent = self.sent
        pieces = []
        frame = self._next
        assert frame is not None
        while True:
            due = self._start + frame.timestamp / 1000
            if due > now:
                break
            if self.record_delays:
                self.send_delays.append((now - due) * 1000)
            payload = frame.payload
            type_id = frame.type_id
            if frame.stamped:
                seq = sent[type_id]
                sent[type_id] = seq + 1
                if type_id == MessageType.VIDEO:
                    payload = stamp_video(payload, seq, nal_length_size)
                else:
                    payload = stamp_audio(payload, seq)
            csid = CSID_VIDEO if type_id == MessageType.VIDEO else CSID_AUDIO
            pieces.append(encode(Message(type_id, sid, frame.timestamp, payload), csid))
            self.payload_bytes += len(payload)
            frame = next(self._frames)
        self._next = frame
        if pieces:
            self.transport.write(b"".join(pieces))
        self._timer = loop.call_at(due, self._pace)

    def stop(self) -> None:
        """Stop sending media; the connection stays open."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# --- viewers --------------------------------------------------------------------------------

#: One read takes up to this much; the buffer also holds a partial chunk left over.
RECV_SIZE = 256 * 1024
_MAX_LEFTOVER = 128 * 1024 + 32
_SHARED = bytearray(RECV_SIZE + _MAX_LEFTOVER)
_SHARED_VIEW = memoryview(_SHARED)

#: Receive buffer and token bucket depth of slow viewers: small, so a throttled
#: reader closes its TCP window within a fraction of a second (as in soak.py).
SMALL_RCVBUF = 16 * 1024
SLOW_BURST = 16 * 1024
#: Receive buffer of the viewers that read in batches (``--rcvlowat``); the kernel
#: caps it at net.core.rmem_max and doubles it for bookkeeping.
BATCH_RCVBUF = 1024 * 1024

_VIDEO = int(MessageType.VIDEO)
_AUDIO = int(MessageType.AUDIO)
_U32 = 0xFFFFFFFF
_MEDIA_IDS = (_VIDEO, _AUDIO)


class BenchError(Exception):
    """The run cannot go on (no viewer could play, publishing failed)."""


class ViewerError(Exception):
    """The server broke the protocol as this viewer sees it, or refused the play."""


class Viewer:
    """One playing connection on a raw non-blocking socket: what every protocol's viewer shares.

    A subclass opens the play (:meth:`_opened`) and reads (:meth:`_readable`),
    calling :meth:`_frame` at the start of each media frame it finds.

    :ivar kind: ``"fast"`` or ``"slow"``.
    :ivar probe: whether this viewer reads eagerly and times every frame.
    :ivar playing: the server took the play (RTMP: ``NetStream.Play.Start``;
        HTTP-FLV: the request is sent, the server holds it until the stream is
        published).
    :ivar bytes_read: bytes read from the socket in total.
    :ivar first/last/count/lost/dup: per media type (index 0 video, 1 audio): the
        first and last sequence numbers seen, frames received, frames skipped
        (gaps), frames at or below the last one.
    """

    protocol = ""

    def __init__(self, bench: Bench, index: int, kind: str, probe: bool) -> None:
        self.bench = bench
        self.index = index
        self.kind = kind
        self.probe = probe
        self.sock: socket.socket | None = None
        self.fd = -1
        self._out = bytearray()
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[str] = loop.create_future()
        # a failure after the connect phase gave up waiting is not an unretrieved error
        self.answered.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._read_us = 0
        self.playing = False
        self.closed_reason: str | None = None
        self.closed_at: float | None = None
        self.bytes_read = 0
        self.first = [-1, -1]
        self.last = [-1, -1]
        self.count = [0, 0]
        self.lost = [0, 0]
        self.dup = [0, 0]
        self.unstamped = 0
        self.window_bytes: list[int] = []
        # slow viewers: token bucket
        self._rate = bench.slow_bytes_per_s
        self._tokens = float(SLOW_BURST)
        self._refilled = 0.0
        self._resume: asyncio.TimerHandle | None = None

    # --- connection ----------------------------------------------------------------------

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # before connect, so the window scale is negotiated for the buffer size
        if self.kind == "slow":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
        elif not self.probe and self.bench.options.rcvlowat > 0:
            # Room for far more than SO_RCVLOWAT, so the bytes waiting for the
            # wake-up never close the TCP window on the server.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BATCH_RCVBUF)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self._opened()
        loop.add_reader(self.fd, self._readable)

    def close(self, reason: str) -> None:
        if self.sock is None:
            return
        loop = self.bench.loop
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        with contextlib.suppress(OSError):
            self.sock.close()
        self.sock = None
        if self.closed_reason is None:
            self.closed_reason = reason
            self.closed_at = self.bench.now()
        if not self.answered.done():
            self.answered.set_exception(ViewerError(f"closed before play: {reason}"))

    def fail(self, reason: str) -> None:
        if not self.answered.done():
            self.answered.set_exception(ViewerError(reason))
        self.close(reason)

    def set_rcvlowat(self, size: int) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, size))

    def inq(self) -> int:
        """Bytes the kernel received for us that we have not read yet."""
        if self.sock is None:
            return 0
        try:
            raw = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", raw)[0])

    def delivered_bytes(self) -> int:
        """Bytes the server got to this viewer's socket so far."""
        return self.bytes_read + self.inq()

    # --- writing (commands and acks only: tiny) --------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.sock is None:
            return
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self.close(f"send: {errno.errorcode.get(error.errno or 0, error)}")
            return
        if sent < len(data):
            self._out += data[sent:]
            self.bench.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        if self.sock is None:
            return
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(f"send: {errno.errorcode.get(error.errno or 0, error)}")
            return
        del self._out[:sent]
        if not self._out:
            self.bench.loop.remove_writer(self.fd)

    # --- what a protocol does ------------------------------------------------------------

    def _opened(self) -> None:
        """Connected: start the play (the first bytes to the server)."""
        raise NotImplementedError

    def _readable(self) -> None:
        """The socket is readable (or, batched, holds ``SO_RCVLOWAT`` bytes)."""
        raise NotImplementedError

    def _frame(self, type_id: int, buf: bytearray | bytes, at: int, size: int) -> None:
        """A media frame (RTMP message, FLV tag body) starts at ``buf[at]``, *size* bytes there."""
        if type_id == _VIDEO:
            o = at + self.bench.video_stamp_at
            index = 0
        else:
            o = at + AUDIO_STAMP_AT
            index = 1
        if o + STAMP_SIZE > at + size or buf[o : o + 4] != MAGIC:
            self.unstamped += 1
            return
        seq = int(buf[o + 4 : o + 12], 16)
        last = self.last[index]
        if last < 0:
            self.first[index] = seq
        elif seq > last + 1:
            self.lost[index] += seq - last - 1
        elif seq <= last:
            self.dup[index] += 1
            return
        self.last[index] = seq
        self.count[index] += 1
        bench = self.bench
        if self.probe and bench.recording:
            sent_us = int(buf[o + 12 : o + 25], 16)
            latency = (self._read_us - sent_us) / 1000
            if self.kind == "fast":
                bench.latencies.append(latency)
            else:
                bench.slow_latencies.append(latency)

    def _throttle(self, size: int) -> None:
        now = time.monotonic()
        tokens = min(SLOW_BURST, self._tokens + (now - self._refilled) * self._rate) - size
        self._refilled = now
        self._tokens = tokens
        if tokens < 0 and self._resume is None and self.sock is not None:
            self.bench.loop.remove_reader(self.fd)
            self._resume = self.bench.loop.call_later(-tokens / self._rate, self._go_on)

    def _go_on(self) -> None:
        self._resume = None
        if self.sock is not None:
            self.bench.loop.add_reader(self.fd, self._readable)


class RtmpViewer(Viewer):
    """An RTMP play: handshake, ``connect``, ``createStream``, ``play``, then media.

    Handshake and commands go through the project's codecs; after the handshake
    :meth:`_parse` reads chunk headers itself and skips media payloads.
    """

    protocol = "rtmp"

    def __init__(self, bench: Bench, index: int, kind: str, probe: bool) -> None:
        super().__init__(bench, index, kind, probe)
        self._handshake: ClientHandshake | None = ClientHandshake()
        self._encoder = ChunkEncoder(128)
        self._leftover = b""
        self._skip = 0
        self._chunk_size = 128
        self._streams: dict[int, list[Any]] = {}
        self._ack_window = 0
        self._acked = 0
        self.stream_id = 0

    def _opened(self) -> None:
        assert self._handshake is not None
        self._write(self._handshake.initial_bytes())

    def send(self, message: Message) -> None:
        type_id = message.type_id
        if type_id in messages.PROTOCOL_CONTROL_TYPES or type_id == MessageType.USER_CONTROL:
            csid = CSID_CONTROL
        else:
            csid = CSID_COMMAND
        self._write(self._encoder.encode(message, csid))

    # --- reading ----------------------------------------------------------------------------

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        if self._handshake is not None:
            self._read_handshake(sock)
            return
        leftover = self._leftover
        keep = len(leftover)
        if keep:
            _SHARED[:keep] = leftover
        size = SLOW_BURST if self.kind == "slow" else RECV_SIZE
        try:
            n = sock.recv_into(_SHARED_VIEW[keep : keep + size], size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(errno.errorcode.get(error.errno or 0, str(error)))
            return
        if n == 0:
            self.close("eof")
            return
        self.bytes_read += n
        if self.probe:
            self._read_us = time.time_ns() // 1000
        if self.kind == "slow" and self.playing:
            self._throttle(n)
        end = keep + n
        pos = 0
        skip = self._skip
        if skip:
            # leftover is empty while skipping: we are inside a media payload
            if skip >= end:
                self._skip = skip - end
                self._maybe_ack()
                return
            pos = skip
            self._skip = 0
        try:
            self._parse(end, pos)
        except ViewerError as error:
            self.fail(str(error))
            return
        self._maybe_ack()

    def _maybe_ack(self) -> None:
        if self._ack_window and self.bytes_read - self._acked >= self._ack_window:
            self._acked = self.bytes_read
            self.send(messages.acknowledgement(self.bytes_read & _U32))

    def _read_handshake(self, sock: socket.socket) -> None:
        handshake = self._handshake
        assert handshake is not None
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(errno.errorcode.get(error.errno or 0, str(error)))
            return
        if not data:
            self.close("eof in handshake")
            return
        self.bytes_read += len(data)
        try:
            reply = handshake.receive_data(data)
        except ProtocolError as error:
            self.fail(f"handshake: {error}")
            return
        if not handshake.complete:
            return
        self._write(reply)
        self._handshake = None
        self._leftover = handshake.leftover
        bench = self.bench
        obj = {
            "app": bench.app,
            "type": "nonprivate",
            "flashVer": "LNX 9,0,124,2",
            "tcUrl": bench.tc_url,
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 3191.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        }
        self.send(messages.command("connect", 1.0, obj))
        if self._leftover:
            leftover = self._leftover
            self._leftover = b""
            _SHARED[: len(leftover)] = leftover
            try:
                self._parse(len(leftover), 0)
            except ViewerError as error:
                self.fail(str(error))

    def _parse(self, end: int, pos: int) -> None:
        """Walk the chunks in ``_SHARED[pos:end]``; keep an incomplete header as leftover.

        Media messages (audio, video) need their header and first
        ``stamp end`` bytes in the buffer; the rest of the payload is skipped,
        across reads if need be (``_skip``).  Other messages are collected whole
        and handled by :meth:`_control`.  Per chunk stream: ``[timestamp, delta,
        length, type id, extended, received, collected payload]``.
        """
        buf = _SHARED
        streams = self._streams
        chunk_size = self._chunk_size
        bench = self.bench
        video_need = bench.video_stamp_end
        while pos < end:
            first_byte = buf[pos]
            fmt = first_byte >> 6
            csid = first_byte & 0x3F
            p = pos + 1
            if csid < 2:
                if csid == 0:
                    if end - pos < 2:
                        break
                    csid = 64 + buf[pos + 1]
                    p = pos + 2
                else:
                    if end - pos < 3:
                        break
                    csid = 64 + buf[pos + 1] + (buf[pos + 2] << 8)
                    p = pos + 3
            state = streams.get(csid)
            if state is None:
                if fmt != 0:
                    raise ViewerError(f"chunk stream {csid} starts with a type {fmt} header")
                state = [0, 0, 0, 0, False, 0, None]
                streams[csid] = state
            if fmt == 0 or fmt == 1:
                hend = p + (11 if fmt == 0 else 7)
                if end < hend:
                    break
                field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                type_id = buf[p + 6]
                extended = field == 0xFFFFFF
            elif fmt == 2:
                hend = p + 3
                if end < hend:
                    break
                field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
                length = state[2]
                type_id = state[3]
                extended = field == 0xFFFFFF
            else:
                hend = p
                field = 0
                length = state[2]
                type_id = state[3]
                extended = state[4]
            if extended:
                if end < hend + 4:
                    break
                field = int.from_bytes(buf[hend : hend + 4], "big")
                hend += 4
            received = state[5]
            continuation = fmt == 3 and received > 0
            remaining = length - received if continuation else length
            size = chunk_size if remaining > chunk_size else remaining
            media = type_id in _MEDIA_IDS
            if media:
                if not continuation:
                    need = video_need if type_id == _VIDEO else AUDIO_STAMP_END
                    if size < need:
                        need = size
                    if end < hend + need:
                        break
            elif end < hend + size:
                break
            # The chunk's header (and what we need of its data) is here: commit.
            if fmt == 0:
                state[0] = field
                state[1] = field
                state[2] = length
                state[3] = type_id
                state[4] = extended
            elif fmt == 1:
                state[1] = field
                state[0] = (state[0] + field) & _U32
                state[2] = length
                state[3] = type_id
                state[4] = extended
            elif fmt == 2:
                state[1] = field
                state[0] = (state[0] + field) & _U32
                state[4] = extended
            elif not continuation:
                if extended:
                    state[1] = field
                state[0] = (state[0] + state[1]) & _U32
            received += size
            state[5] = 0 if received >= length else received
            if media:
                if not continuation:
                    self._frame(type_id, buf, hend, size)
                available = end - hend
                if available < size:
                    self._skip = size - available
                    pos = end
                    break
                pos = hend + size
                continue
            piece = bytes(buf[hend : hend + size])
            if continuation:
                state[6] += piece
            else:
                state[6] = bytearray(piece)
            pos = hend + size
            if received >= length:
                payload = bytes(state[6])
                state[6] = None
                self._control(type_id, payload)
                chunk_size = self._chunk_size
        if pos < end:
            if end - pos > _MAX_LEFTOVER:
                raise ViewerError(f"chunk of more than {_MAX_LEFTOVER} bytes")
            self._leftover = bytes(buf[pos:end])
        else:
            self._leftover = b""

    def _control(self, type_id: int, payload: bytes) -> None:
        """A whole non-media message arrived."""
        if type_id == MessageType.SET_CHUNK_SIZE:
            if len(payload) < 4:
                raise ViewerError("short Set Chunk Size")
            size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= _MAX_LEFTOVER - 32:
                raise ViewerError(f"chunk size {size} not supported")
            self._chunk_size = size
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            if len(payload) >= 4:
                self._ack_window = int.from_bytes(payload[:4], "big")
        elif type_id == MessageType.USER_CONTROL:
            if len(payload) >= 6 and payload[:2] == b"\x00\x06":  # ping request
                self.send(messages.ping_response(int.from_bytes(payload[2:6], "big")))
        elif type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            try:
                command = messages.parse_command(Message(type_id, 0, 0, payload))
            except ProtocolError as error:
                raise ViewerError(f"bad command: {error}") from error
            self._command(command)

    def _command(self, command: messages.Command) -> None:
        info = command.args[0] if command.args and isinstance(command.args[0], dict) else {}
        bench = self.bench
        if command.name == "_result":
            if command.transaction_id == 1.0:
                self.send(messages.command("createStream", 2.0, None))
            elif command.transaction_id == 2.0:
                self.stream_id = int(command.args[0]) if command.args else 1
                self.send(
                    messages.command(
                        "play", 0.0, None, bench.name, -1000.0, stream_id=self.stream_id
                    )
                )
                self.send(messages.set_buffer_length(self.stream_id, 1000))
        elif command.name == "_error":
            raise ViewerError(f"_error for txn {command.transaction_id}: {info.get('code')}")
        elif command.name == "onStatus":
            code = str(info.get("code"))
            if info.get("level") == "error":
                raise ViewerError(f"onStatus {code}")
            if code in ("NetStream.Play.Start", "NetStream.Play.Reset") and not self.playing:
                self.playing = True
                self._refilled = time.monotonic()
                if not self.answered.done():
                    self.answered.set_result(code)


class HttpFlvViewer(Viewer):
    """An HTTP-FLV play: ``GET /APP/NAME.flv HTTP/1.1``, then a chunked body of FLV tags.

    Reads exactly as :class:`RtmpViewer` does (the same socket options, one
    ``recv_into`` of up to 256 KiB into the shared buffer per wake-up); the
    chunk-size lines and tag headers are walked by
    :class:`http_flv.HttpFlvReader`, which skips tag bodies past the stamp.

    :ivar http_status: the response's status code, once its head is in.
    """

    protocol = "http-flv"

    def __init__(self, bench: Bench, index: int, kind: str, probe: bool) -> None:
        super().__init__(bench, index, kind, probe)
        self.http_status: int | None = None
        self._reader = HttpFlvReader(self._frame, bench.stamp_ends)

    def _opened(self) -> None:
        bench = self.bench
        self._write(request_bytes(bench.host, bench.play_port, bench.play_path))
        if self.sock is None:
            return
        # The server answers only once the stream is published: the request is the play.
        self.playing = True
        self._refilled = time.monotonic()
        self.answered.set_result("request sent")

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        size = SLOW_BURST if self.kind == "slow" else RECV_SIZE
        try:
            n = sock.recv_into(_SHARED_VIEW[:size], size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close(errno.errorcode.get(error.errno or 0, str(error)))
            return
        if n == 0:
            self.close("eof")
            return
        self.bytes_read += n
        if self.probe:
            self._read_us = time.time_ns() // 1000
        if self.kind == "slow" and self.playing:
            self._throttle(n)
        reader = self._reader
        try:
            reader.receive(_SHARED, 0, n)
        except HttpFlvError as error:
            self.http_status = reader.status
            self.fail(str(error))
            return
        if self.http_status is None:
            self.http_status = reader.status
        if reader.ended:
            self.close("end of response")


#: Audio stamps end here (fixed); video stamps depend on the NAL length size.
AUDIO_STAMP_END = AUDIO_STAMP_AT + STAMP_SIZE


# --- the run --------------------------------------------------------------------------------


class Bench:
    """One run: idle viewers, publisher, warm-up, measurement, drain, summary."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.app, self.name = parse_rtmp_url(options.url)
        self.tc_url = f"rtmp://{self.host}:{self.port}/{self.app}"
        self.source: SyntheticSource | FileSource = (
            FileSource(options.file) if options.file else SyntheticSource(options.bitrate)
        )
        self.video_stamp_at = video_stamp_at(self.source.nal_length_size)
        self.video_stamp_end = self.video_stamp_at + STAMP_SIZE
        #: the body bytes an HTTP-FLV viewer must see of a tag, per type: up to the stamp's end
        self.stamp_ends = {_VIDEO: self.video_stamp_end, _AUDIO: AUDIO_STAMP_END}
        self.viewer_class: type[Viewer] = RtmpViewer
        self.play_port = self.port
        self.play_path = ""
        self.play_url = options.url
        if options.protocol == "http-flv":
            self.viewer_class = HttpFlvViewer
            self.play_port = options.http_port
            self.play_path = f"/{quote(self.app)}/{quote(self.name)}.flv"
            self.play_url = f"http://{self.host}:{self.play_port}{self.play_path}"
        self.slow_bytes_per_s = options.slow_kbps * 1000 / 8
        self.server = ProcessProbe(options.server_pid) if options.server_pid else None
        self.t0 = self.loop.time()
        self.recording = False
        self.latencies: array[float] = array("d")
        self.slow_latencies: array[float] = array("d")
        self.samples: list[dict[str, Any]] = []
        self.viewers: list[Viewer] = []
        self.connect_failures: list[str] = []
        self.publisher: Publisher | None = None

    def now(self) -> float:
        return self.loop.time() - self.t0

    # --- phases ---------------------------------------------------------------------------

    def make_viewers(self) -> None:
        options = self.options
        fast, slow = options.viewers, options.slow
        total = fast + slow
        # slow viewers interleaved evenly among the fast ones
        kinds = ["fast"] * total
        for j in range(slow):
            kinds[(j * total) // max(1, slow) + (total // max(1, slow)) // 2] = "slow"
        probes = probe_count(options.probes, fast)
        fast_positions = [i for i, kind in enumerate(kinds) if kind == "fast"]
        probe_set = (
            {fast_positions[(j * fast) // probes] for j in range(probes)} if probes else set()
        )
        for index, kind in enumerate(kinds):
            probe = kind == "slow" or index in probe_set
            viewer = self.viewer_class(self, index, kind, probe)
            self.viewers.append(viewer)

    async def connect_viewers(self) -> None:
        gate = asyncio.Semaphore(self.options.connect_concurrency)

        async def one(viewer: Viewer) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(viewer.open(self.host, self.play_port), 30)
                    await asyncio.wait_for(asyncio.shield(viewer.answered), 30)
                except (OSError, ViewerError, TimeoutError) as error:
                    self.connect_failures.append(f"viewer {viewer.index}: {error!r}")
                    viewer.close(f"connect failed: {error!r}")

        await asyncio.gather(*(one(v) for v in self.viewers))

    async def start_publisher(self) -> Publisher:
        publisher = Publisher(self.source, self.app, self.name, self.tc_url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self.loop.sock_connect(sock, (self.host, self.port))
        await self.loop.create_connection(lambda: publisher, sock=sock)
        try:
            await asyncio.wait_for(publisher.started, 15)
        except (RuntimeError, TimeoutError) as error:
            raise BenchError(f"could not publish to {self.options.url}: {error!r}") from error
        return publisher

    def sample(self) -> dict[str, Any]:
        server = self.server
        rss = server.rss_mb() if server else None
        times = server.cpu_times() if server else None
        gen = own_cpu_s()
        return {
            "t": round(self.now(), 2),
            "rss_mb": round(rss, 2) if rss is not None else None,
            "cpu_s": times[0] + times[1] if times is not None else None,
            "system_cpu_s": times[1] if times is not None else None,
            "gen_cpu_s": gen,
            "connected": sum(1 for v in self.viewers if v.sock is not None and v.playing),
        }

    async def run(self) -> dict[str, Any]:
        options = self.options
        server = self.server
        rss_before = server.rss_mb() if server else None
        self.make_viewers()
        log(
            f"connecting {options.viewers} fast + {options.slow} slow viewers to "
            f"{self.play_url} ({probe_count(options.probes, options.viewers)} probes)"
        )
        t_connect = self.loop.time()
        await self.connect_viewers()
        playing = [v for v in self.viewers if v.playing and v.sock is not None]
        connect_s = self.loop.time() - t_connect
        log(f"{len(playing)} viewers playing (idle) after {connect_s:.1f} s")
        for failure in self.connect_failures[:5]:
            log(f"connect failure: {failure}")
        if self.viewers and not playing:
            raise BenchError(f"no viewer could play {self.play_url}")
        await asyncio.sleep(options.idle_settle)
        rss_idle = server.rss_mb() if server else None
        per_viewer = (
            (rss_idle - rss_before) * 1e6 / len(playing)
            if rss_idle is not None and rss_before is not None and playing
            else None
        )
        if options.rcvlowat > 0:
            for viewer in playing:
                if viewer.kind == "fast" and not viewer.probe:
                    # Every viewer gets the same bytes at the same moment: with one
                    # threshold they would all wake together, and one loop turn would
                    # read them all while the probes wait.  Thresholds spread over
                    # 0.5-1.5x (golden-ratio steps) make the wake-ups drift apart.
                    spread = 0.5 + (viewer.index * 0.6180339887) % 1.0
                    viewer.set_rcvlowat(int(options.rcvlowat * spread))

        publisher = await self.start_publisher()
        self.publisher = publisher
        self.t0 = publisher._start
        log(
            f"publishing {self.source.describe()} as {self.app}/{self.name}; "
            f"warm-up {options.warmup} s, measuring {options.duration} s"
        )
        # warm-up: sample once a second for the RSS peak and the log
        first = self.sample()
        self.samples.append(first)
        second = 0
        window: dict[str, Any] = {}
        total_s = options.warmup + options.duration
        while second < total_s:
            second += 1
            delay = self.t0 + second - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late_ms = (self.loop.time() - (self.t0 + second)) * 1000
            sample = self.sample()
            sample["late_ms"] = round(late_ms, 1)
            self.samples.append(sample)
            if second == options.warmup:
                window["start"] = self.snapshot(sample)
                self.recording = True
                publisher.record_delays = True
                if self.viewer_class is HttpFlvViewer:
                    log(f"HTTP responses by status: {dict(self.http_statuses())}")
            if second % 10 == 0 or second == 1:
                previous = self.samples[-2]
                cpu = (
                    round(sample["cpu_s"] - previous["cpu_s"], 3)
                    if sample["cpu_s"] is not None and previous["cpu_s"] is not None
                    else None
                )
                log(
                    f"t={second:4d}s server rss={sample['rss_mb']} MB cpu={cpu} s/s "
                    f"gen={sample['gen_cpu_s'] - previous['gen_cpu_s']:.2f} s/s "
                    f"playing={sample['connected']} loop late {late_ms:.0f} ms"
                )
            if server and server.rss_mb() is None:
                log("server process gone")
                break
        window["end"] = self.snapshot(self.samples[-1])
        self.recording = False
        publisher.record_delays = False
        publisher.stop()
        await self.drain()
        summary = self.summary(rss_before, rss_idle, per_viewer, connect_s, window)
        for viewer in self.viewers:
            viewer.close("end of run")
        publisher.transport.close()
        return summary

    def snapshot(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {
            "t": self.now(),
            "cpu_s": sample["cpu_s"],
            "system_cpu_s": sample["system_cpu_s"],
            "gen_cpu_s": own_cpu_s(),
            "machine_busy_s": machine_busy_s(),
            "tcp_out_segments": tcp_out_segments(),
            "rss_mb": sample["rss_mb"],
            "delivered": [v.delivered_bytes() for v in self.viewers],
            "frames": sum(v.count[0] + v.count[1] for v in self.viewers),
            "publisher_payload": self.publisher.payload_bytes if self.publisher else 0,
        }

    def http_statuses(self) -> Counter[str]:
        """HTTP-FLV viewers by the status of their response ("none": no head yet)."""
        return Counter(
            str(v.http_status or "none") for v in self.viewers if isinstance(v, HttpFlvViewer)
        )

    async def drain(self) -> None:
        """After the last frame: read what is still in flight, up to a few seconds."""
        publisher = self.publisher
        assert publisher is not None
        for viewer in self.viewers:
            if viewer.kind == "fast" and not viewer.probe:
                viewer.set_rcvlowat(1)
                if viewer.sock is not None:
                    viewer._readable()
        want = [publisher.sent[MessageType.VIDEO] - 1, publisher.sent[MessageType.AUDIO] - 1]
        deadline = self.loop.time() + self.options.drain
        while self.loop.time() < deadline:
            pending = [
                v
                for v in self.viewers
                if v.kind == "fast" and v.sock is not None and v.last[0] < want[0]
            ]
            if not pending:
                break
            await asyncio.sleep(0.1)

    # --- the summary ----------------------------------------------------------------------------

    def summary(
        self,
        rss_before: float | None,
        rss_idle: float | None,
        per_viewer: float | None,
        connect_s: float,
        window: dict[str, Any],
    ) -> dict[str, Any]:
        options = self.options
        publisher = self.publisher
        assert publisher is not None
        start, end = window.get("start"), window.get("end")
        span = (end["t"] - start["t"]) if start and end else 0.0
        server_cpu = (
            end["cpu_s"] - start["cpu_s"]
            if start and end and start["cpu_s"] is not None and end["cpu_s"] is not None
            else None
        )
        gen_cpu = end["gen_cpu_s"] - start["gen_cpu_s"] if start and end else None
        system_cpu = (
            end["system_cpu_s"] - start["system_cpu_s"]
            if server_cpu is not None and start and end
            else None
        )
        machine = (
            end["machine_busy_s"] - start["machine_busy_s"]
            if start and end and start["machine_busy_s"] is not None
            else None
        )
        # what neither the server nor this process used: other load on the machine
        other = (
            machine - (server_cpu or 0) - (gen_cpu or 0)
            if machine is not None and gen_cpu is not None
            else None
        )
        segments = (
            end["tcp_out_segments"] - start["tcp_out_segments"]
            if start and end and None not in (start["tcp_out_segments"], end["tcp_out_segments"])
            else None
        )
        rss_values = [s["rss_mb"] for s in self.samples if s["rss_mb"] is not None]
        published = [publisher.sent[MessageType.VIDEO], publisher.sent[MessageType.AUDIO]]

        def group(kind: str) -> dict[str, Any]:
            viewers = [v for v in self.viewers if v.kind == kind]
            if not viewers:
                return {"viewers": 0}
            delivered = (
                [
                    (end["delivered"][v.index] - start["delivered"][v.index]) * 8 / 1000 / span
                    for v in viewers
                ]
                if start and end and span > 0
                else []
            )
            lost: list[int | None] = []
            tail = 0
            for v in viewers:
                if v.first[0] < 0:
                    lost.append(None)
                    continue
                missing = 0
                for index in (0, 1):
                    if v.first[index] < 0:
                        continue
                    # everything published from the first frame on, minus what arrived;
                    # a viewer the server disconnected is judged up to its last frame
                    expected = published[index] - v.first[index]
                    if v.closed_at is not None:
                        expected = v.last[index] - v.first[index] + 1
                    missing += max(0, expected - v.count[index])
                    tail += (
                        max(0, published[index] - 1 - v.last[index]) if v.closed_at is None else 0
                    )
                lost.append(missing)
            counted = [x for x in lost if x is not None]
            closed = Counter(
                v.closed_reason for v in viewers if v.closed_reason and v.closed_at is not None
            )
            return {
                "viewers": len(viewers),
                "playing": sum(1 for v in viewers if v.playing),
                "got_media": len(counted),
                "disconnected": sum(closed.values()),
                "disconnect_reasons": dict(closed),
                "delivered_kbps": {
                    "min": round(min(delivered), 1) if delivered else None,
                    "median": round(median(delivered) or 0, 1) if delivered else None,
                    "max": round(max(delivered), 1) if delivered else None,
                },
                "frames_lost": {
                    "max": max(counted, default=None),
                    "total": sum(counted),
                    "viewers_with_loss": sum(1 for x in counted if x),
                    "skipped_video": sum(v.lost[0] for v in viewers),
                    "skipped_audio": sum(v.lost[1] for v in viewers),
                    "not_received_by_end": tail,
                    "never_got_media": len(lost) - len(counted),
                },
                "duplicates": sum(v.dup[0] + v.dup[1] for v in viewers),
            }

        fast = group("fast")
        slow = group("slow")
        delivered_total = (
            sum(e - s for s, e in zip(start["delivered"], end["delivered"], strict=True))
            if start and end
            else 0
        )
        delivered_mb = delivered_total / 1e6
        frames = end["frames"] - start["frames"] if start and end else 0
        peak = max(rss_values, default=None)
        return {
            "label": options.label,
            "url": options.url,
            "protocol": options.protocol,
            "play_url": self.play_url,
            "viewers": options.viewers,
            "slow": options.slow,
            "slow_kbps": options.slow_kbps if options.slow else None,
            "source": self.source.describe(),
            "bitrate_kbps": self.source.nominal_kbps(),
            "warmup_s": options.warmup,
            "duration_s": round(span, 2),
            "server_pid": options.server_pid,
            "server_cpu_s_per_s": round(server_cpu / span, 4) if server_cpu is not None else None,
            "server_cpu_system_share": (
                round(system_cpu / server_cpu, 3) if system_cpu is not None and server_cpu else None
            ),
            "server_cpu_ms_per_mb": (
                round(server_cpu * 1000 / delivered_mb, 2)
                if server_cpu is not None and delivered_mb
                else None
            ),
            "delivered_mb_per_s": round(delivered_mb / span, 3) if span else None,
            "frames_delivered": frames,
            "server_cpu_us_per_frame": (
                round(server_cpu * 1e6 / frames, 3) if server_cpu is not None and frames else None
            ),
            "wire_bytes_per_frame": round(delivered_total / frames, 1) if frames else None,
            "rss_mb": {
                "before": round(rss_before, 2) if rss_before is not None else None,
                "idle_viewers": round(rss_idle, 2) if rss_idle is not None else None,
                "start": start["rss_mb"] if start else None,
                "peak": peak,
                "end": end["rss_mb"] if end else None,
            },
            "rss_bytes_per_idle_viewer": round(per_viewer) if per_viewer is not None else None,
            "delivered_kbps_per_viewer": fast.get("delivered_kbps"),
            "frames_lost_per_viewer": fast.get("frames_lost"),
            "latency_ms": {
                **percentiles(self.latencies),
                "probes": sum(1 for v in self.viewers if v.probe and v.kind == "fast"),
            },
            "fast": fast,
            "slow_viewers": (
                {**slow, "latency_ms": percentiles(self.slow_latencies)} if options.slow else None
            ),
            "published": {
                "video_frames": published[0],
                "audio_frames": published[1],
                "payload_kbps": round(
                    (end["publisher_payload"] - start["publisher_payload"]) * 8 / 1000 / span, 1
                )
                if start and end and span
                else None,
                "send_late_ms": percentiles(publisher.send_delays),
            },
            "generator": {
                "cpu_s_per_s": round(gen_cpu / span, 4) if gen_cpu is not None and span else None,
                "tick_late_ms_max": max(
                    (s.get("late_ms", 0) for s in self.samples[1:]), default=None
                ),
                "probes": options.probes,
                "rcvlowat": options.rcvlowat,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "busy_s_per_s": round(machine / span, 3) if machine is not None and span else None,
                "other_cpu_s_per_s": round(other / span, 3) if other is not None and span else None,
                # loopback: the server's segments and the viewers' ACKs (and anyone else's)
                "tcp_segments_per_frame": (
                    round(segments / frames, 3) if segments is not None and frames else None
                ),
                "loadavg": os.getloadavg(),
            },
            "connect": {
                "seconds": round(connect_s, 2),
                "failures": len(self.connect_failures),
                "failure_examples": self.connect_failures[:3],
                "http_status": dict(self.http_statuses()) or None,
            },
            "command": options.command,
        }


# --- command line -------------------------------------------------------------------------


def probe_count(spec: str, fast: int) -> int:
    """How many of *fast* viewers are probes: ``all``, ``N`` or ``P%`` (at least 10)."""
    if spec == "all":
        return fast
    if spec.endswith("%"):
        return min(fast, max(10, round(fast * float(spec[:-1]) / 100)))
    return min(fast, int(spec))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default="rtmp://127.0.0.1:1935/live/bench",
        help="the stream: the publisher's RTMP URL (and the RTMP viewers')",
    )
    parser.add_argument(
        "--protocol",
        choices=("rtmp", "http-flv"),
        default="rtmp",
        help="how the viewers play: RTMP at --url, or HTTP-FLV "
        "(GET http://HOST:HTTP_PORT/APP/NAME.flv, HOST, APP and NAME from --url)",
    )
    parser.add_argument(
        "--http-port", type=int, default=None, help="the server's HTTP port (--protocol http-flv)"
    )
    parser.add_argument("--viewers", type=int, default=100, help="fast viewers")
    parser.add_argument("--slow", type=int, default=0, help="slow viewers (token bucket)")
    parser.add_argument("--slow-kbps", type=float, default=300.0)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--bitrate", type=float, default=1000.0, help="synthetic stream bitrate, kbit/s"
    )
    source.add_argument("--file", type=Path, help="an FLV (H.264 + AAC) to publish, looped")
    parser.add_argument("--duration", type=int, default=60, help="seconds measured")
    parser.add_argument("--warmup", type=int, default=10, help="seconds before measuring")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument(
        "--probes",
        default="10%",
        help="fast viewers that read eagerly and time every frame: N, P%% of the viewers "
        "(at least 10), or 'all' (default 10%%)",
    )
    parser.add_argument(
        "--rcvlowat",
        type=int,
        default=32 * 1024,
        help="SO_RCVLOWAT of the other fast viewers, bytes (0: read eagerly too)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument(
        "--idle-settle", type=float, default=2.0, help="seconds before the idle RSS sample"
    )
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait at the end")
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    options = parser.parse_args(argv)
    if options.viewers < 0 or options.slow < 0:
        parser.error("--viewers and --slow must not be negative")
    if options.protocol == "http-flv" and options.http_port is None:
        parser.error("--protocol http-flv needs --http-port")
    try:
        probe_count(options.probes, 1)
    except ValueError:
        parser.error(f"--probes: not N, P% or 'all': {options.probes!r}")
    options.command = shlex.join([Path(sys.executable).name, *sys.argv])
    return options


async def _run(options: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(options)
    return await bench.run()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        summary = asyncio.run(_run(options))
    except BenchError as error:
        log(f"error: {error}")
        return 1
    line = json.dumps(summary, separators=(",", ":"))
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
