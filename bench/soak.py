"""Soak benchmark: one publisher, many viewers of three kinds, the server's memory over time.

Starts ``twistd -n streamserver`` as a real process on a free loopback port, publishes
a synthetic H.264 + AAC shaped stream at real-time pace, and connects N viewers:

- *fast* viewers read everything as it comes (default socket buffers);
- *slow* viewers read through a token bucket at ``--slow-kbps`` with a 16 KiB
  ``SO_RCVBUF``, so the server really sees a slow link (TCP window closes);
- *stalled* viewers stop reading right after ``NetStream.Play.Start`` (16 KiB
  ``SO_RCVBUF``); the server should disconnect them at its stall timeout.

Every coded frame's payload carries a magic, its sequence number and the publisher's
wall-clock send time (``>4sId`` after the FLV tag header), so each viewer measures its
lag behind live (receive time - publish time) and the gaps in what it got.

Each second the server process's RSS (``VmRSS``) and CPU (``utime + stime``) are
sampled from ``/proc``, with the viewers connected per kind and each kind's lag over
that second.  The per-second samples and the summary go to ``--out`` (JSON); the
summary is also printed as one JSON line on stdout.  Progress goes to stderr.

The load generator is one process with one asyncio event loop; it decodes chunks with
the project's :class:`~streamserver.codec.chunk.ChunkDecoder` and reads nothing but
the stamp of each media payload.  Its own CPU use and the publisher's pacing delay are
reported, so a saturated generator shows up in the numbers.

Example::

    .venv/bin/python bench/soak.py --duration 300 --out bench/results/policy-on.json
    .venv/bin/python bench/soak.py --duration 300 --server-arg=--no-drop \\
        --out bench/results/no-drop.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamserver.codec import amf0, messages
from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
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

APP = "live"
STREAM = "soak"

#: Stamp after the FLV tag header of every coded frame: magic, sequence number,
#: publisher wall-clock send time in seconds.
_STAMP = struct.Struct(">4sId")
_MAGIC = b"SOAK"
_VIDEO_KEY = b"\x17\x01\x00\x00\x00"  # AVC keyframe, NALU, composition time 0
_VIDEO_INTER = b"\x27\x01\x00\x00\x00"  # AVC inter frame, NALU, composition time 0
_AUDIO = b"\xaf\x01"  # AAC raw frame
_VIDEO_STAMP_AT = len(_VIDEO_KEY)
_AUDIO_STAMP_AT = len(_AUDIO)

#: AVC / AAC sequence headers as in tests/integration/support.py.
AVC_SEQUENCE_HEADER = bytes.fromhex("1700000000" + "0164001fffe1000467640015" + "01000468ee3cb0")
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"

FPS = 30
GOP_FRAMES = 60  # a keyframe every 2 s at 30 fps
AAC_SAMPLES = 1024
AAC_RATE = 44100  # 43.07 packets/s
AUDIO_KBPS = 64
#: Keyframe size / inter frame size; ~8 is typical of a static-camera H.264 stream.
KEYFRAME_FACTOR = 8

#: Receive buffer of slow and stalled viewers: small, so that a throttled or
#: stopped reader closes its TCP window within a fraction of a second instead of
#: hiding megabytes in the kernel (Linux doubles the value for bookkeeping).
SMALL_RCVBUF = 16 * 1024
#: Token bucket depth of slow viewers: one read of a small receive buffer.
SLOW_BURST = 16 * 1024

TCP_INFO_STATE_CLOSE = 7  # include/net/tcp_states.h: TCP_CLOSE

KINDS = ("fast", "slow", "stalled")


def log(text: str) -> None:
    """Progress on stderr (stdout carries only the JSON summary)."""
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p99/max (nearest rank) of *values* in ms, rounded, and their count."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))]

    return {
        "p50": round(rank(0.50) * 1000, 1),
        "p99": round(rank(0.99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
        "n": n,
    }


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- the server process ----------------------------------------------------------------


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """The ``twistd`` child: start, wait for its port, sample ``/proc``, stop."""

    def __init__(self, twistd: str, port: int, extra: Sequence[str], logfile: Path) -> None:
        self.port = port
        self.logfile = logfile
        self.argv = [
            twistd,
            "-n",
            "--pidfile=",
            f"--logfile={logfile}",
            "streamserver",
            "--rtmp",
            f"tcp:{port}:interface=127.0.0.1",
            "--no-http",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._stdio = logfile.with_suffix(".stdio")

    def start(self, deadline_s: float = 30.0) -> None:
        """Start twistd and wait until its port accepts connections.

        :raises RuntimeError: the process exited, or the port did not open in time.
        """
        with contextlib.suppress(FileNotFoundError):
            self.logfile.unlink()
        stdio = self._stdio.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdio,
            stderr=subprocess.STDOUT,
            cwd=self.logfile.parent,
        )
        stdio.close()
        deadline = time.monotonic() + deadline_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.process.returncode}: {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} not open after {deadline_s} s: {self.tail()}")
            time.sleep(0.05)

    def tail(self) -> str:
        text = ""
        for path in (self._stdio, self.logfile):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-2000:]
        return text

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_mb(self) -> float | None:
        """VmRSS of the server in MB (10**6 bytes), or ``None`` if it is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            return None
        return None

    def cpu_s(self) -> float | None:
        """utime + stime of the server in seconds, or ``None`` if it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after *grace_s*; return the exit status."""
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log(f"twistd did not exit {grace_s} s after SIGTERM; SIGKILL")
            process.kill()
            return process.wait(10)


# --- RTMP client connections --------------------------------------------------------------


class RTMPConnection(asyncio.Protocol):
    """The common part of publisher and viewer: handshake, chunks, commands, acks.

    Subclasses implement :meth:`command_result`, :meth:`status_received` and
    :meth:`media_received`.
    """

    transport: asyncio.Transport

    def __init__(self) -> None:
        self._handshake: ClientHandshake | None = ClientHandshake()
        self._decoder = ChunkDecoder()
        self._encoder = ChunkEncoder(128)
        self._ack_window = 0
        self._acked = 0
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.error: str | None = None

    # asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self._handshake is not None
        transport.write(self._handshake.initial_bytes())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(type(exc).__name__ if exc else "closed")

    def data_received(self, data: bytes) -> None:
        handshake = self._handshake
        if handshake is not None:
            reply = handshake.receive_data(data)
            if not handshake.complete:
                return
            self.transport.write(reply)
            data = handshake.leftover
            self._handshake = None
            self.handshake_completed()
            if not data:
                return
        try:
            received = self._decoder.receive_data(data)
        except ProtocolError as error:
            self.fail(f"chunk error: {error}")
            return
        self.messages_received(received)
        if self._ack_window:
            total = self._decoder.bytes_received
            if total - self._acked >= self._ack_window:
                self._acked = total
                self.send(messages.acknowledgement(total))

    # what subclasses use ------------------------------------------------------------

    def handshake_completed(self) -> None:
        """The handshake finished; send ``connect``."""
        obj = {
            "app": APP,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; soak)",
            "tcUrl": f"rtmp://127.0.0.1/{APP}",
        }
        self.send(messages.command("connect", 1.0, obj))

    def messages_received(self, received: list[Message]) -> None:
        for message in received:
            self.control_received(message)

    def control_received(self, message: Message) -> None:
        """Handle a non-media message: commands, Window Ack Size, pings."""
        type_id = message.type_id
        if type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            try:
                command = messages.parse_command(message)
            except ProtocolError as error:
                self.fail(f"bad command: {error}")
                return
            info = command.args[0] if command.args and isinstance(command.args[0], dict) else {}
            if command.name == "_result":
                self.command_result(command.transaction_id, command.args)
            elif command.name == "_error":
                self.fail(f"_error for txn {command.transaction_id}: {info.get('code')}")
            elif command.name == "onStatus":
                if info.get("level") == "error":
                    self.fail(f"onStatus error {info.get('code')}")
                else:
                    self.status_received(str(info.get("code")))
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
        if self.error is None:
            self.error = reason
        self.transport.abort()

    def command_result(self, transaction_id: float, args: list[Any]) -> None:
        raise NotImplementedError

    def status_received(self, code: str) -> None:
        raise NotImplementedError


class Publisher(RTMPConnection):
    """Publishes the synthetic stream at real-time pace once ``publish`` succeeded.

    :ivar video_sent: video frames sent; the last one had sequence number ``video_sent - 1``.
    :ivar video_sent_at: loop time each video frame was sent, by sequence number.
    :ivar send_delays: how late each write was against its schedule (s).
    """

    def __init__(self, bitrate_kbps: float) -> None:
        super().__init__()
        self.stream_id = 0
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.video_sent = 0
        self.audio_sent = 0
        self.bytes_sent = 0
        self.video_sent_at: array[float] = array("d")
        self.send_delays: array[float] = array("d")
        self._start = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.sizes(bitrate_kbps)

    def sizes(self, bitrate_kbps: float) -> None:
        """Split *bitrate_kbps* into AAC, keyframe and inter frame payload sizes."""
        total = bitrate_kbps * 1000 / 8  # bytes/s
        audio_rate = AAC_RATE / AAC_SAMPLES
        self.audio_bytes = max(_AUDIO_STAMP_AT + _STAMP.size, round(AUDIO_KBPS * 125 / audio_rate))
        video_total = max(total - self.audio_bytes * audio_rate, FPS * 64)
        per_gop = video_total * GOP_FRAMES / FPS
        inter = per_gop / (GOP_FRAMES - 1 + KEYFRAME_FACTOR)
        minimum = _VIDEO_STAMP_AT + _STAMP.size
        self.inter_bytes = max(minimum, round(inter))
        self.key_bytes = max(minimum, round(inter * KEYFRAME_FACTOR))
        self._pad_key = b"\x00" * (self.key_bytes - minimum)
        self._pad_inter = b"\x00" * (self.inter_bytes - minimum)
        self._pad_audio = b"\x21" * (self.audio_bytes - _AUDIO_STAMP_AT - _STAMP.size)

    def nominal_kbps(self) -> float:
        video = (self.key_bytes + (GOP_FRAMES - 1) * self.inter_bytes) * FPS / GOP_FRAMES
        audio = self.audio_bytes * AAC_RATE / AAC_SAMPLES
        return round((video + audio) * 8 / 1000, 1)

    def handshake_completed(self) -> None:
        self.send(self._encoder.set_chunk_size(4096))
        super().handshake_completed()

    def command_result(self, transaction_id: float, args: list[Any]) -> None:
        if transaction_id == 1.0:
            self.send(messages.command("releaseStream", 2.0, None, STREAM))
            self.send(messages.command("FCPublish", 3.0, None, STREAM))
            self.send(messages.command("createStream", 4.0, None))
        elif transaction_id == 4.0:
            self.stream_id = int(args[0])
            self.send(
                messages.command("publish", 0.0, None, STREAM, "live", stream_id=self.stream_id)
            )

    def status_received(self, code: str) -> None:
        if code == "NetStream.Publish.Start" and not self.started.done():
            self._send_headers()
            self._start = asyncio.get_running_loop().time()
            self.started.set_result(None)
            self._pace()

    def fail(self, reason: str) -> None:
        if not self.started.done():
            self.started.set_exception(RuntimeError(reason))
        super().fail(reason)

    def _send_headers(self) -> None:
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
        sid = self.stream_id
        self.send(Message(MessageType.DATA_AMF0, sid, 0, metadata), CSID_DATA)
        self.send(Message(MessageType.VIDEO, sid, 0, AVC_SEQUENCE_HEADER), CSID_VIDEO)
        self.send(Message(MessageType.AUDIO, sid, 0, AAC_SEQUENCE_HEADER), CSID_AUDIO)

    def _pace(self) -> None:
        """Send every frame that is due, then sleep until the next one."""
        if self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        sid = self.stream_id
        write = self.transport.write
        encode = self._encoder.encode
        while True:
            video_ms = self.video_sent * 1000 / FPS
            audio_ms = self.audio_sent * AAC_SAMPLES * 1000 / AAC_RATE
            due_ms = min(video_ms, audio_ms)
            due = self._start + due_ms / 1000
            if due > now:
                self._timer = loop.call_at(due, self._pace)
                return
            self.send_delays.append(now - due)
            wall = time.time()
            if video_ms <= audio_ms:
                seq = self.video_sent
                if seq % GOP_FRAMES == 0:
                    payload = b"".join((_VIDEO_KEY, _STAMP.pack(_MAGIC, seq, wall), self._pad_key))
                else:
                    payload = b"".join(
                        (_VIDEO_INTER, _STAMP.pack(_MAGIC, seq, wall), self._pad_inter)
                    )
                data = encode(Message(MessageType.VIDEO, sid, int(video_ms), payload), CSID_VIDEO)
                self.video_sent += 1
                self.video_sent_at.append(now)
            else:
                seq = self.audio_sent
                payload = b"".join((_AUDIO, _STAMP.pack(_MAGIC, seq, wall), self._pad_audio))
                data = encode(Message(MessageType.AUDIO, sid, int(audio_ms), payload), CSID_AUDIO)
                self.audio_sent += 1
            self.bytes_sent += len(payload)
            write(data)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()


class Viewer(RTMPConnection):
    """Plays the stream and measures lag and gaps; *kind* says how it reads.

    :ivar video_received: coded video frames received (stamped ones).
    :ivar first_seq: sequence number of the first video frame received.
    :ivar last_seq: highest video sequence number received.
    :ivar gap_frames: video frames skipped (sequence jumps), summed.
    :ivar bad_starts: video runs after a gap (or at the start) not opening with a keyframe.
    :ivar out_of_order: video frames at or below ``last_seq`` (duplicates or reordering).
    """

    def __init__(self, bench: Soak, index: int, kind: str) -> None:
        super().__init__()
        self.bench = bench
        self.index = index
        self.kind = kind
        self.stream_id = 0
        self.playing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.play_started_at: float | None = None
        self.stopped_reading_at: float | None = None
        self.disconnected_at: float | None = None
        self.disconnect_reason: str | None = None
        self.video_received = 0
        self.video_received_after_warmup = 0
        self.audio_received = 0
        self.bytes_received = 0
        self.first_seq: int | None = None
        self.last_seq = -1
        self.gap_frames = 0
        self.gaps = 0
        self.bad_starts = 0
        self.out_of_order = 0
        self.last_audio_seq = -1
        self.audio_gap_frames = 0
        self.published_at_end: int | None = None
        # token bucket (slow viewers)
        self._rate = bench.slow_bytes_per_s
        self._tokens = float(SLOW_BURST)
        self._refilled = 0.0
        self._resume: asyncio.TimerHandle | None = None
        self.paused = False

    # reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.kind == "slow" and self.play_started_at is not None:
            self._throttle(len(data))
        super().data_received(data)

    def _throttle(self, size: int) -> None:
        now = time.monotonic()
        tokens = min(SLOW_BURST, self._tokens + (now - self._refilled) * self._rate) - size
        self._refilled = now
        self._tokens = tokens
        if tokens < 0 and not self.paused and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()
            self._resume = asyncio.get_running_loop().call_later(-tokens / self._rate, self._go_on)

    def _go_on(self) -> None:
        self._resume = None
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def messages_received(self, received: list[Message]) -> None:
        now = time.time()
        bench = self.bench
        for message in received:
            type_id = message.type_id
            if type_id == MessageType.VIDEO:
                payload = message.payload
                if payload[5:9] != _MAGIC:
                    continue  # sequence header
                _, seq, sent = _STAMP.unpack_from(payload, _VIDEO_STAMP_AT)
                self.video_received += 1
                if seq > self.last_seq:
                    if self.first_seq is None:
                        self.first_seq = seq
                        if payload[0] != 0x17:
                            self.bad_starts += 1
                    elif seq > self.last_seq + 1:
                        self.gaps += 1
                        self.gap_frames += seq - self.last_seq - 1
                        if payload[0] != 0x17:
                            self.bad_starts += 1
                    self.last_seq = seq
                else:
                    self.out_of_order += 1
                lag = now - sent
                bench.window_lags[self.kind].append(lag)
                if now >= bench.warmup_wall:
                    bench.run_lags[self.kind].append(lag)
                    self.video_received_after_warmup += 1
            elif type_id == MessageType.AUDIO:
                payload = message.payload
                if payload[2:6] != _MAGIC:
                    continue
                seq = _STAMP.unpack_from(payload, _AUDIO_STAMP_AT)[1]
                self.audio_received += 1
                if self.last_audio_seq >= 0 and seq > self.last_audio_seq + 1:
                    self.audio_gap_frames += seq - self.last_audio_seq - 1
                self.last_audio_seq = max(seq, self.last_audio_seq)
            elif type_id != MessageType.DATA_AMF0:
                self.control_received(message)

    # session ---------------------------------------------------------------------------

    def command_result(self, transaction_id: float, args: list[Any]) -> None:
        if transaction_id == 1.0:
            self.send(messages.command("createStream", 2.0, None))
        elif transaction_id == 2.0:
            self.stream_id = int(args[0])
            self.send(
                messages.command("play", 0.0, None, STREAM, -2000.0, stream_id=self.stream_id)
            )
            self.send(messages.set_buffer_length(self.stream_id, 1000))

    def status_received(self, code: str) -> None:
        if code == "NetStream.Play.Start" and not self.playing.done():
            self.play_started_at = self.bench.now()
            self._refilled = time.monotonic()
            if self.kind == "stalled":
                self.transport.pause_reading()
                self.paused = True
                self.stopped_reading_at = self.play_started_at
            self.playing.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.playing.done():
            self.playing.set_exception(RuntimeError(reason))
        super().fail(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mark_disconnected(type(exc).__name__ if exc else "closed")
        if self._resume is not None:
            self._resume.cancel()
        if not self.playing.done():
            self.playing.set_exception(RuntimeError(f"connection lost: {exc}"))
        super().connection_lost(exc)

    def mark_disconnected(self, reason: str) -> None:
        if self.disconnected_at is None and not self.bench.closing:
            self.disconnected_at = self.bench.now()
            self.disconnect_reason = reason
            self.published_at_end = self.bench.publisher_video_sent()

    @property
    def connected(self) -> bool:
        return self.play_started_at is not None and self.disconnected_at is None

    def peer_closed(self) -> bool:
        """Whether the kernel says the connection is closed (seen while not reading).

        A viewer that does not read is not told by asyncio that the server reset
        the connection; the socket's TCP state is.
        """
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        except OSError:
            return True
        return info[0] == TCP_INFO_STATE_CLOSE


# --- the benchmark ---------------------------------------------------------------------------


class Soak:
    """One soak run: publisher, viewers, the per-second sampler, the summary."""

    def __init__(self, options: argparse.Namespace, server: ServerProcess) -> None:
        self.options = options
        self.server = server
        self.slow_bytes_per_s = options.slow_kbps * 1000 / 8
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.warmup_wall = float("inf")
        self.window_lags: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.run_lags: dict[str, array[float]] = {kind: array("d") for kind in KINDS}
        self.samples: list[dict[str, Any]] = []
        self.viewers: list[Viewer] = []
        self.publisher: Publisher | None = None
        self.aborted: str | None = None
        self.rss_idle = server.rss_mb()
        self.connect_failures: list[str] = []
        #: set when the run is over: disconnects after that are our own doing
        self.closing = False

    def now(self) -> float:
        """Seconds since the publisher started."""
        return self.loop.time() - self.t0

    def publisher_video_sent(self) -> int:
        return self.publisher.video_sent if self.publisher is not None else 0

    async def open(self, protocol: RTMPConnection, rcvbuf: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            # before connect, so the window scale is negotiated for the small buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self.loop.sock_connect(sock, ("127.0.0.1", self.server.port))
        except OSError:
            sock.close()
            raise
        await self.loop.create_connection(lambda: protocol, sock=sock)

    def kinds(self) -> list[str]:
        """The kind of each viewer, interleaved in a fixed pseudo-random order."""
        count = self.options.viewers
        slow = round(count * self.options.slow_fraction)
        stalled = round(count * self.options.stalled_fraction)
        kinds = ["slow"] * slow + ["stalled"] * stalled
        kinds += ["fast"] * (count - len(kinds))
        random.Random(1935).shuffle(kinds)
        return kinds

    async def connect_viewer(self, viewer: Viewer, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                rcvbuf = SMALL_RCVBUF if viewer.kind != "fast" else 0
                await self.open(viewer, rcvbuf)
                await asyncio.wait_for(asyncio.shield(viewer.playing), 15)
            except (OSError, RuntimeError, TimeoutError) as error:
                self.connect_failures.append(f"viewer {viewer.index} ({viewer.kind}): {error!r}")

    async def run(self) -> dict[str, Any]:
        options = self.options
        publisher = Publisher(options.bitrate_kbps)
        await self.open(publisher)
        await asyncio.wait_for(publisher.started, 15)
        self.publisher = publisher
        self.t0 = publisher._start
        self.warmup_wall = time.time() + options.warmup
        log(
            f"publishing {publisher.nominal_kbps()} kbit/s (key {publisher.key_bytes} B, "
            f"inter {publisher.inter_bytes} B, audio {publisher.audio_bytes} B); "
            f"server pid {self.server.pid}, port {self.server.port}"
        )
        self.viewers = [Viewer(self, i, kind) for i, kind in enumerate(self.kinds())]
        sampler = asyncio.ensure_future(self.sample_every_second())
        watcher = asyncio.ensure_future(self.watch_stalled())
        gate = asyncio.Semaphore(20)
        await asyncio.gather(*(self.connect_viewer(v, gate) for v in self.viewers))
        connected = Counter(v.kind for v in self.viewers if v.connected)
        log(f"viewers playing after {self.now():.1f} s: {dict(connected)}")
        for failure in self.connect_failures[:10]:
            log(f"connect failure: {failure}")
        try:
            await sampler
        finally:
            watcher.cancel()
            self.closing = True
            for viewer in self.viewers:
                if viewer.disconnected_at is None:
                    viewer.published_at_end = publisher.video_sent
            publisher.stop()
            for viewer in self.viewers:
                if viewer.disconnected_at is None:
                    viewer.transport.abort()
        return self.summary()

    async def watch_stalled(self) -> None:
        """Every 0.1 s, ask the kernel whether a stalled viewer's connection was reset."""
        while True:
            await asyncio.sleep(0.1)
            for viewer in self.viewers:
                if viewer.paused and viewer.connected and viewer.peer_closed():
                    viewer.mark_disconnected("reset while not reading")
                    viewer.transport.abort()

    async def sample_every_second(self) -> None:
        options = self.options
        server = self.server
        cpu_before = server.cpu_s() or 0.0
        gen_before = sum(os.times()[:2])
        second = 0
        while second < options.duration:
            second += 1
            delay = self.t0 + second - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = self.loop.time() - (self.t0 + second)
            rss = server.rss_mb()
            cpu = server.cpu_s()
            gen = sum(os.times()[:2])
            sample: dict[str, Any] = {
                "t": second,
                "rss_mb": round(rss, 2) if rss is not None else None,
                "cpu_s_per_s": round(cpu - cpu_before, 3) if cpu is not None else None,
                "gen_cpu_s_per_s": round(gen - gen_before, 3),
                "tick_late_ms": round(late * 1000, 1),
                "video_sent": self.publisher_video_sent(),
                "connected": {kind: 0 for kind in KINDS},
                "lag_ms": {},
            }
            cpu_before = cpu if cpu is not None else cpu_before
            gen_before = gen
            for viewer in self.viewers:
                if viewer.connected:
                    sample["connected"][viewer.kind] += 1
            for kind in KINDS:
                sample["lag_ms"][kind] = percentiles(self.window_lags[kind])
                self.window_lags[kind] = []
            self.samples.append(sample)
            if second % 10 == 0 or second == 1:
                lag = sample["lag_ms"]
                log(
                    f"t={second:4d}s rss={sample['rss_mb']} MB cpu={sample['cpu_s_per_s']} "
                    f"gen={sample['gen_cpu_s_per_s']} connected={sample['connected']} "
                    f"lag p99 fast={lag['fast']['p99']} slow={lag['slow']['p99']} ms"
                )
            if rss is None or not server.alive():
                self.aborted = f"server process gone at t={second} s"
                log(self.aborted)
                return
            if rss > options.abort_rss_mb:
                self.aborted = f"RSS {rss:.0f} MB passed {options.abort_rss_mb} MB at t={second} s"
                log(self.aborted)
                return

    # --- the summary ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        options = self.options
        samples = self.samples
        publisher = self.publisher
        assert publisher is not None
        warm = [s for s in samples if s["t"] >= options.warmup]
        rss_series = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
        rss_warm = warm[0]["rss_mb"] if warm else None
        rss_end = rss_series[-1] if rss_series else None
        elapsed = samples[-1]["t"] if samples else 0
        server_cpu = sum(s["cpu_s_per_s"] or 0 for s in samples)
        gen_cpu = sum(s["gen_cpu_s_per_s"] for s in samples)
        warm_cpu = sum(s["cpu_s_per_s"] or 0 for s in warm[1:])
        warm_gen = sum(s["gen_cpu_s_per_s"] for s in warm[1:])
        warm_span = max(1, len(warm) - 1)
        published_after_warmup = sum(
            1 for t in publisher.video_sent_at if t - self.t0 >= options.warmup
        )
        classes: dict[str, Any] = {}
        for kind in KINDS:
            group = [v for v in self.viewers if v.kind == kind]
            received = [v.video_received for v in group]
            after = [v.video_received_after_warmup for v in group]
            fractions = [
                v.video_received / (v.published_at_end - v.first_seq)
                for v in group
                if v.first_seq is not None
                and v.published_at_end is not None
                and v.published_at_end > v.first_seq
            ]
            rates = [
                v.bytes_received * 8 / 1000 / (end - v.play_started_at)
                for v in group
                if v.play_started_at is not None
                and (end := v.disconnected_at if v.disconnected_at is not None else elapsed)
                > v.play_started_at + 1
            ]
            disconnected = sorted(
                (round(v.disconnected_at, 2), v.disconnect_reason or "?")
                for v in group
                if v.disconnected_at is not None
            )
            entry: dict[str, Any] = {
                "viewers": len(group),
                "playing": sum(1 for v in group if v.play_started_at is not None),
                "connected_at_end": sum(
                    1 for v in group if v.play_started_at is not None and v.disconnected_at is None
                ),
                "video_frames_received_per_viewer": {
                    "min": min(received, default=None),
                    "median": median(received),
                },
                "video_frames_received_after_warmup_per_viewer": {
                    "min": min(after, default=None),
                    "median": median(after),
                },
                "receive_kbps_per_viewer": {
                    "min": round(min(rates), 1) if rates else None,
                    "median": round(median(rates) or 0, 1) if rates else None,
                    "max": round(max(rates), 1) if rates else None,
                },
                "video_frames_published": publisher.video_sent,
                "video_frames_published_after_warmup": published_after_warmup,
                "delivered_fraction_while_connected": {
                    "min": round(min(fractions), 4) if fractions else None,
                    "median": round(median(fractions) or 0, 4) if fractions else None,
                },
                "video_gap_frames": sum(v.gap_frames for v in group),
                "video_gaps": sum(v.gaps for v in group),
                "audio_gap_frames": sum(v.audio_gap_frames for v in group),
                "viewers_with_gaps": sum(1 for v in group if v.gap_frames or v.audio_gap_frames),
                "runs_not_starting_at_keyframe": sum(v.bad_starts for v in group),
                "out_of_order_or_duplicate": sum(v.out_of_order for v in group),
                "behind_live_at_end_frames_max": max(
                    (
                        (v.published_at_end or 0) - 1 - v.last_seq
                        for v in group
                        if v.disconnected_at is None and v.first_seq is not None
                    ),
                    default=None,
                ),
                "lag_ms_after_warmup": percentiles(self.run_lags[kind]),
                "disconnected": len(disconnected),
                "disconnect_times_s": [t for t, _ in disconnected],
                "disconnect_reasons": dict(Counter(r for _, r in disconnected)),
            }
            if kind == "fast":
                entry["lost_frames"] = entry["video_gap_frames"] + entry["audio_gap_frames"]
            if kind == "stalled":
                after_stop = sorted(
                    round(v.disconnected_at - v.stopped_reading_at, 2)
                    for v in group
                    if v.disconnected_at is not None and v.stopped_reading_at is not None
                )
                entry["disconnected_s_after_stop_reading"] = {
                    "min": after_stop[0] if after_stop else None,
                    "median": median(after_stop),
                    "max": after_stop[-1] if after_stop else None,
                    "all": after_stop,
                }
            classes[kind] = entry
        delays = percentiles(publisher.send_delays)
        return {
            "label": options.label,
            "server_args": options.server_arg,
            "command": options.command,
            "viewers": options.viewers,
            "duration_s": options.duration,
            "elapsed_s": elapsed,
            "warmup_s": options.warmup,
            "aborted": self.aborted,
            "connect_failures": len(self.connect_failures),
            "server": {
                "pid": self.server.pid,
                "rss_mb": {
                    "idle": round(self.rss_idle, 2) if self.rss_idle else None,
                    "start": rss_series[0] if rss_series else None,
                    "after_warmup": rss_warm,
                    "end": rss_end,
                    "max": max(rss_series, default=None),
                },
                "rss_growth_after_warmup_mb": (
                    round(rss_end - rss_warm, 2)
                    if rss_end is not None and rss_warm is not None
                    else None
                ),
                "rss_growth_after_warmup_max_mb": (
                    round(max(s["rss_mb"] for s in warm) - rss_warm, 2)
                    if warm and rss_warm is not None
                    else None
                ),
                "cpu_s_per_s": round(server_cpu / max(1, elapsed), 3),
                "cpu_s_per_s_after_warmup": round(warm_cpu / warm_span, 3),
            },
            "publisher": {
                "nominal_kbps": publisher.nominal_kbps(),
                "measured_payload_kbps": round(
                    publisher.bytes_sent * 8 / 1000 / max(1e-9, self.now()), 1
                ),
                "video_frames_sent": publisher.video_sent,
                "audio_frames_sent": publisher.audio_sent,
                "key_inter_audio_bytes": [
                    publisher.key_bytes,
                    publisher.inter_bytes,
                    publisher.audio_bytes,
                ],
                "send_delay_ms": delays,
            },
            "classes": classes,
            "generator": {
                "cpu_s_per_s": round(gen_cpu / max(1, elapsed), 3),
                "cpu_s_per_s_after_warmup": round(warm_gen / warm_span, 3),
                "tick_late_ms_max": max((s["tick_late_ms"] for s in samples), default=None),
            },
        }


# --- the server log --------------------------------------------------------------------------

_DISCONNECT = re.compile(r"disconnecting viewer (\S+) of \S+: (\S+) \(")


def scan_server_log(path: Path) -> dict[str, Any]:
    """Count what the server logged: policy disconnects, warnings, tracebacks."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return {"error": str(error)}
    lines = text.splitlines()
    reasons = Counter(m.group(2) for m in map(_DISCONNECT.search, lines) if m)
    problems = [
        line
        for line in lines
        if re.search(
            r"Traceback|Unhandled|unexpected error|Error|dropping |CRITICAL|exception",
            line,
        )
        and "disconnecting viewer" not in line
    ]
    return {
        "lines": len(lines),
        "policy_disconnects": dict(reasons),
        "problem_lines": len(problems),
        "problem_examples": problems[:10],
        "first_disconnect_lines": [line for line in lines if "disconnecting viewer" in line][:3],
    }


# --- provenance -------------------------------------------------------------------------------


def code_provenance() -> dict[str, Any]:
    """Which streamserver code the server runs: its path, the git HEAD, dirty files.

    The server is a child with this process's environment, so it imports the same
    ``streamserver`` as we do (a ``PYTHONPATH`` snapshot, or the editable checkout).
    A snapshot directory may hold a ``COMMIT`` file naming what it was exported from.
    """
    import streamserver

    package = Path(streamserver.__file__).resolve().parent
    info: dict[str, Any] = {
        "streamserver_path": str(package),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }
    marker = package.parent.parent / "COMMIT"
    if marker.exists():
        info["snapshot_of"] = marker.read_text().strip()
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout if result.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    info["checkout_head"] = head.strip() if head else None
    if package.is_relative_to(repo):
        status = git("status", "--porcelain", "--", "src", "twistd_plugins")
        info["checkout_src_changes"] = status.splitlines() if status else []
    return info


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--slow-fraction", type=float, default=0.20)
    parser.add_argument("--slow-kbps", type=float, default=300.0)
    parser.add_argument("--stalled-fraction", type=float, default=0.05)
    parser.add_argument("--bitrate-kbps", type=float, default=500.0)
    parser.add_argument("--duration", type=int, default=300, help="seconds of publishing")
    parser.add_argument("--warmup", type=int, default=30, help="seconds left out of the stats")
    parser.add_argument("--out", type=Path, default=None, help="per-second samples (JSON)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="passed to 'twistd streamserver' (repeatable), e.g. --server-arg=--no-drop",
    )
    parser.add_argument("--label", default=None, help="name of the run in the plots")
    parser.add_argument(
        "--abort-rss-mb", type=float, default=4000.0, help="stop early when server RSS passes this"
    )
    parser.add_argument(
        "--twistd",
        default=str(Path(sys.executable).parent / "twistd"),
        help="the twistd to run (default: next to this interpreter)",
    )
    options = parser.parse_args(argv)
    if options.label is None:
        options.label = " ".join(options.server_arg) or "policy on"
    if options.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        options.out = Path(__file__).resolve().parent / "results" / f"soak-{stamp}.json"
    interpreter = Path(sys.executable)
    with contextlib.suppress(ValueError):
        interpreter = interpreter.relative_to(Path.cwd())
    pythonpath = os.environ.get("PYTHONPATH")
    prefix = f"PYTHONPATH={shlex.quote(pythonpath)} " if pythonpath else ""
    options.command = prefix + shlex.join([str(interpreter), *sys.argv])
    return options


async def _run(
    options: argparse.Namespace, server: ServerProcess
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    soak = Soak(options, server)
    summary = await soak.run()
    return summary, soak.samples


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    options.out = options.out.resolve()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        options.twistd, free_port(), options.server_arg, options.out.with_suffix(".log")
    )

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    provenance = code_provenance()
    try:
        server.start()
        log(f"server up: {shlex.join(server.argv)}")
        summary, samples = asyncio.run(_run(options, server))
    finally:
        status = server.stop()
        log(f"server stopped (exit status {status})")
    summary["server"]["exit_status"] = status
    summary["server"]["code"] = provenance
    summary["server"]["log_file"] = str(server.logfile)
    summary["server"]["log"] = scan_server_log(server.logfile)
    options.out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1) + "\n")
    log(f"samples written to {options.out}")
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if summary["aborted"] is None else 2


if __name__ == "__main__":
    sys.exit(main())
