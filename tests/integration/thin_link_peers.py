"""The peers of the thin-link scenario, as child processes: a publisher and viewers.

Run with the venv's interpreter from the checkout (``python -m
tests.integration.thin_link_peers publish|play ...``), each inside a network
namespace (``tests/integration/netns.py``).  On our own client
(:mod:`streamserver.client`) and Twisted's default reactor.

- ``publish``: a synthetic H.264 + AAC shaped stream at real-time pace (30 fps, a
  keyframe every 2 s, AAC at 44.1 kHz / 1024 samples), ``onMetaData`` and the AVC
  and AAC sequence headers first.  Every coded frame's payload carries, right
  after its FLV header bytes, a magic, its sequence number (video and audio
  counted apart) and the publisher's wall-clock send time (``>4sId``).  After
  ``--seconds`` of media it closes the connection (the server then tells viewers
  ``NetStream.Play.UnpublishNotify``).
- ``play``: ``--viewers`` clients play the stream and read as fast as their
  sockets allow (no pacing: on a thin link the link is the bottleneck).  Each
  counts frames and sequence gaps, checks that video starts and resumes after any
  gap at a keyframe, and measures every frame's age on arrival (arrival - send
  time: one machine, one clock).  With ``--record`` the summary has the largest
  age in the first 10 s, after them and in the last 10 s, the frames older than
  ``--budget-ms`` after the first 10 s, the longest time without a frame, and
  per second since play start the arrivals and their largest age.  A viewer
  ends at ``UnpublishNotify`` or when its connection is lost; the program exits
  when all have ended (or on SIGTERM/SIGINT).

stdout carries JSON lines only: ``{"event": "ready", ...}`` once publishing (or
all viewers playing), then ``{"event": "summary", ...}`` at the end.  Progress
and errors go to stderr.  Exit status 0 unless setting up failed.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error, task
from twisted.python.failure import Failure

from streamserver.client import RTMPClientProtocol, connect_client, parse_rtmp_url
from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER

#: After the FLV tag header of every coded frame: magic, sequence number, wall-clock send time.
STAMP = struct.Struct(">4sId")
MAGIC = b"THIN"
VIDEO_KEY = b"\x17\x01\x00\x00\x00"  # AVC keyframe, NALU, composition time 0
VIDEO_INTER = b"\x27\x01\x00\x00\x00"  # AVC inter frame, NALU, composition time 0
AUDIO_RAW = b"\xaf\x01"  # AAC raw frame
VIDEO_STAMP_AT = len(VIDEO_KEY)
AUDIO_STAMP_AT = len(AUDIO_RAW)

FPS = 30
GOP_FRAMES = 60  # a keyframe every 2 s
AAC_SAMPLES = 1024
AAC_RATE = 44100
AUDIO_KBPS = 64
#: Keyframe size over inter frame size, typical of a static-camera H.264 stream (as bench/soak.py).
KEYFRAME_FACTOR = 8

#: A viewer's start-up (the GOP burst, the first drops): the summary gives the
#: largest frame age within it and after it apart.
SETTLE_SECONDS = 10

#: Viewers connecting at once: enough to be quick, few enough not to be a SYN flood.
CONNECT_LANES = 20


def log(text: str) -> None:
    sys.stderr.write(f"[thin-link {os.getpid()} {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """User + system CPU this process used so far."""
    times = os.times()
    return times.user + times.system


def frame_sizes(kbps: float) -> tuple[int, int, int]:
    """Keyframe, inter frame and AAC frame payload sizes for a stream of *kbps* kbit/s."""
    total = kbps * 1000 / 8
    audio_rate = AAC_RATE / AAC_SAMPLES
    audio = max(AUDIO_STAMP_AT + STAMP.size, round(AUDIO_KBPS * 125 / audio_rate))
    video_total = max(total - audio * audio_rate, FPS * 64)
    inter = video_total * GOP_FRAMES / FPS / (GOP_FRAMES - 1 + KEYFRAME_FACTOR)
    minimum = VIDEO_STAMP_AT + STAMP.size
    return max(minimum, round(inter * KEYFRAME_FACTOR)), max(minimum, round(inter)), audio


async def connect_within(
    reactor: Any, url: str, seconds: float, **kwargs: Any
) -> RTMPClientProtocol:
    """Connect to *url*, retrying refused connections for up to *seconds* (server starting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await connect_client(reactor, url, **kwargs)
        except (error.ConnectionRefusedError, error.ConnectError):
            if time.monotonic() > deadline:
                raise
            await task.deferLater(reactor, 0.1, lambda: None)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of *values* (seconds) in ms."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)
    return {
        "p50": round(ordered[(n - 1) // 2] * 1000, 1),
        "p99": round(ordered[min(n - 1, int(0.99 * n))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


# --- the publisher -------------------------------------------------------------------


class Publisher:
    """Sends the stamped stream at real-time pace on a publishing client.

    :ivar video_sent: video frames sent; the last had sequence number ``video_sent - 1``.
    :ivar late: how late each write was against its schedule, in seconds.
    """

    def __init__(
        self, reactor: Any, client: RTMPClientProtocol, stream_id: int, kbps: float
    ) -> None:
        self._reactor = reactor
        self._client = client
        self._stream_id = stream_id
        self._kbps = kbps
        self.key_bytes, self.inter_bytes, self.audio_bytes = frame_sizes(kbps)
        self._pads = {
            "key": bytes(self.key_bytes - VIDEO_STAMP_AT - STAMP.size),
            "inter": bytes(self.inter_bytes - VIDEO_STAMP_AT - STAMP.size),
            "audio": b"\x21" * (self.audio_bytes - AUDIO_STAMP_AT - STAMP.size),
        }
        self.started_wall = 0.0
        self.ended_wall = 0.0
        self.video_sent = 0
        self.audio_sent = 0
        self.keyframes_sent = 0
        self.payload_bytes = 0
        self.late: array[float] = array("d")
        self._start = 0.0
        self._stop_after_ms = 0.0
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self, seconds: float) -> None:
        """Send metadata and sequence headers, then *seconds* of media in real time."""
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
                    "videodatarate": float(self._kbps),
                }
            ),
        )
        sid = self._stream_id
        self._client.send(Message(MessageType.DATA_AMF0, sid, 0, metadata))
        self._client.send(Message(MessageType.VIDEO, sid, 0, AVC_SEQUENCE_HEADER))
        self._client.send(Message(MessageType.AUDIO, sid, 0, AAC_SEQUENCE_HEADER))
        self._start = time.monotonic()
        self._stop_after_ms = seconds * 1000
        self.started_wall = time.time()
        self._pace()

    def nominal_kbps(self) -> float:
        video = (self.key_bytes + (GOP_FRAMES - 1) * self.inter_bytes) * FPS / GOP_FRAMES
        audio = self.audio_bytes * AAC_RATE / AAC_SAMPLES
        return round((video + audio) * 8 / 1000, 1)

    def _pace(self) -> None:
        """Send every frame that is due, then sleep until the next one."""
        client = self._client
        if client.transport is None or not client.connected:
            self._finish()
            return
        now = time.monotonic()
        sid = self._stream_id
        while True:
            video_ms = self.video_sent * 1000 / FPS
            audio_ms = self.audio_sent * AAC_SAMPLES * 1000 / AAC_RATE
            due_ms = min(video_ms, audio_ms)
            if due_ms >= self._stop_after_ms:
                self._finish()
                return
            due = self._start + due_ms / 1000
            if due > now:
                self._reactor.callLater(due - now, self._pace)
                return
            self.late.append(now - due)
            wall = time.time()
            if video_ms <= audio_ms:
                seq = self.video_sent
                key = seq % GOP_FRAMES == 0
                head, pad = (
                    (VIDEO_KEY, self._pads["key"]) if key else (VIDEO_INTER, self._pads["inter"])
                )
                payload = b"".join((head, STAMP.pack(MAGIC, seq, wall), pad))
                client.send(Message(MessageType.VIDEO, sid, int(video_ms), payload))
                self.video_sent += 1
                self.keyframes_sent += key
            else:
                seq = self.audio_sent
                payload = b"".join((AUDIO_RAW, STAMP.pack(MAGIC, seq, wall), self._pads["audio"]))
                client.send(Message(MessageType.AUDIO, sid, int(audio_ms), payload))
                self.audio_sent += 1
            self.payload_bytes += len(payload)

    def _finish(self) -> None:
        if not self.done.called:
            self.ended_wall = time.time()
            self.done.callback(None)

    def summary(self) -> dict[str, Any]:
        elapsed = max(1e-9, self.ended_wall - self.started_wall)
        return {
            "video_sent": self.video_sent,
            "audio_sent": self.audio_sent,
            "keyframes_sent": self.keyframes_sent,
            "sizes_key_inter_audio": [self.key_bytes, self.inter_bytes, self.audio_bytes],
            "nominal_kbps": self.nominal_kbps(),
            "payload_kbps": round(self.payload_bytes * 8 / 1000 / elapsed, 1),
            "started_wall": self.started_wall,
            "ended_wall": self.ended_wall,
            "seconds": round(elapsed, 3),
            "late_ms": percentiles(self.late),
            "cpu_s": round(cpu_seconds(), 2),
        }


async def publish(reactor: Any, options: argparse.Namespace) -> int:
    _, _, _, name = parse_rtmp_url(options.url)
    client = await connect_within(reactor, options.url, options.connect_within)
    stream_id = await client.create_stream()
    await client.publish(name, stream_id)
    publisher = Publisher(reactor, client, stream_id, options.kbps)
    publisher.start(options.seconds)
    emit("ready", nominal_kbps=publisher.nominal_kbps(), started_wall=publisher.started_wall)
    log(f"publishing {options.url} at {publisher.nominal_kbps()} kbit/s for {options.seconds} s")
    await publisher.done
    lost_early = not client.connected
    client.close()
    await client.disconnected
    emit("summary", **publisher.summary(), connection_lost_early=lost_early)
    return 0


# --- the viewers ---------------------------------------------------------------------


class Viewer:
    """One playing client's counts, gaps and frame ages.

    :ivar ended_by: ``"unpublished"`` (the stream ended), ``"disconnected"`` or ``None``.
    :ivar bad_starts: video runs (the first, or one after a gap) not opening at a keyframe.
    :ivar out_of_order: frames at or below the last sequence number of their kind.
    :ivar ages: every frame's age on arrival (s).
    :ivar bins: per second since play start, ``[frames, video, keyframes, max age (s)]``.
    """

    def __init__(self, index: int, record: bool, budget_ms: float = 3000.0) -> None:
        self.index = index
        self.record = record
        self.budget = budget_ms / 1000
        self.client: RTMPClientProtocol | None = None
        self.play_started_wall: float | None = None
        self.ended_wall: float | None = None
        self.ended_by: str | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.video = 0
        self.keyframes = 0
        self.audio = 0
        self.first_video: int | None = None
        self.last_video = -1
        self.last_audio = -1
        self.video_gaps = 0
        self.video_gap_frames = 0
        self.audio_gap_frames = 0
        self.bad_starts = 0
        self.out_of_order = 0
        self.ages: array[float] = array("d")
        self.arrivals: array[float] = array("d")
        self.bins: list[list[float]] = []

    def attach(self, client: RTMPClientProtocol) -> None:
        self.client = client
        client.on_media = self.media_received
        client.disconnected.addCallback(lambda _: self.end("disconnected"))

    def playing(self) -> None:
        self.play_started_wall = time.time()
        assert self.client is not None
        unpublished = self.client.wait_for_status("NetStream.Play.UnpublishNotify")
        unpublished.addCallbacks(lambda _: self.end("unpublished"), lambda _: None)

    def end(self, how: str) -> None:
        if self.ended_by is None:
            self.ended_by = how
            self.ended_wall = time.time()
            self.ended.callback(None)

    def media_received(self, message: Message) -> None:
        if self.ended_by is not None:
            return
        now = time.time()
        payload = message.payload
        if message.type_id == MessageType.VIDEO:
            if payload[VIDEO_STAMP_AT : VIDEO_STAMP_AT + 4] != MAGIC:
                return  # the sequence header
            _, seq, sent = STAMP.unpack_from(payload, VIDEO_STAMP_AT)
            key = payload[0] == 0x17
            self.video += 1
            self.keyframes += key
            if seq <= self.last_video:
                self.out_of_order += 1
            else:
                if self.first_video is None:
                    self.first_video = seq
                    self.bad_starts += not key
                elif seq > self.last_video + 1:
                    self.video_gaps += 1
                    self.video_gap_frames += seq - self.last_video - 1
                    self.bad_starts += not key
                self.last_video = seq
        elif message.type_id == MessageType.AUDIO:
            if payload[AUDIO_STAMP_AT : AUDIO_STAMP_AT + 4] != MAGIC:
                return
            _, seq, sent = STAMP.unpack_from(payload, AUDIO_STAMP_AT)
            key = False
            self.audio += 1
            if seq <= self.last_audio:
                self.out_of_order += 1
            else:
                if self.last_audio >= 0 and seq > self.last_audio + 1:
                    self.audio_gap_frames += seq - self.last_audio - 1
                self.last_audio = seq
        else:
            return
        age = now - sent
        self.ages.append(age)
        if self.record and self.play_started_wall is not None:
            since = now - self.play_started_wall
            self.arrivals.append(since)
            second = int(since)
            while len(self.bins) <= second:
                self.bins.append([0, 0, 0, 0.0])
            row = self.bins[second]
            row[0] += 1
            row[1] += message.type_id == MessageType.VIDEO
            row[2] += key
            row[3] = max(row[3], age)

    def lost_frames(self) -> int:
        return self.video_gap_frames + self.audio_gap_frames

    def summary(self) -> dict[str, Any]:
        """Counts and, when recording, the age windows and per-second bins."""
        result: dict[str, Any] = {
            "index": self.index,
            "ended_by": self.ended_by,
            "video": self.video,
            "keyframes": self.keyframes,
            "audio": self.audio,
            "first_video_seq": self.first_video,
            "last_video_seq": self.last_video,
            "last_audio_seq": self.last_audio,
            "video_gaps": self.video_gaps,
            "video_gap_frames": self.video_gap_frames,
            "audio_gap_frames": self.audio_gap_frames,
            "bad_starts": self.bad_starts,
            "out_of_order": self.out_of_order,
            "bytes": self.client.media_bytes if self.client is not None else 0,
        }
        if self.record and self.play_started_wall is not None:
            result.update(self._windows())
        return result

    def _windows(self) -> dict[str, Any]:
        assert self.play_started_wall is not None
        end = (self.ended_wall or time.time()) - self.play_started_wall
        pairs = list(zip(self.arrivals, self.ages, strict=True))

        def max_age_ms(low: float, high: float) -> float | None:
            ages = [age for since, age in pairs if low <= since < high]
            return round(max(ages) * 1000, 1) if ages else None

        silences = [
            b - a for a, b in zip([0.0, *self.arrivals], [*self.arrivals, end], strict=True)
        ]
        return {
            "played_s": round(end, 3),
            "max_age_ms": max_age_ms(0, end + 1),
            "max_age_first_10s_ms": max_age_ms(0, SETTLE_SECONDS),
            "max_age_after_10s_ms": max_age_ms(SETTLE_SECONDS, end + 1),
            "max_age_last_10s_ms": max_age_ms(end - 10, end + 1),
            "frames_over_budget_after_10s": sum(
                1 for since, age in pairs if since >= SETTLE_SECONDS and age > self.budget
            ),
            "longest_silence_s": round(max(silences), 3),
            "last_arrival_s": round(self.arrivals[-1], 3) if self.arrivals else None,
            "age_ms": percentiles(self.ages),
            "keyframes_after_10s": sum(int(row[2]) for row in self.bins[SETTLE_SECONDS:]),
            # [second since play start, frames, video frames, keyframes, max age in ms or None]
            "per_second": [
                [t, int(f), int(v), int(k), round(a * 1000) if f else None]
                for t, (f, v, k, a) in enumerate(self.bins)
            ],
        }


class Audience:
    """The viewers of one ``play`` process and their combined summary."""

    def __init__(self, count: int, record: bool, budget_ms: float) -> None:
        self.viewers = [Viewer(index, record, budget_ms) for index in range(count)]
        self.failures: list[str] = []
        self.started_wall = time.time()
        self._cpu_at_start = cpu_seconds()

    async def join(self, reactor: Any, options: argparse.Namespace) -> None:
        _, _, _, name = parse_rtmp_url(options.url)
        pending = iter(self.viewers)

        async def lane() -> None:
            for viewer in pending:
                try:
                    client = await connect_within(
                        reactor, options.url, options.connect_within, keep_media=False
                    )
                    viewer.attach(client)
                    stream_id = await client.create_stream()
                    await client.play(name, stream_id)
                    viewer.playing()
                except Exception as failure:  # reported in the summary, not raised
                    self.failures.append(f"viewer {viewer.index}: {failure!r}")
                    viewer.end("failed")

        lanes = [defer.ensureDeferred(lane()) for _ in range(min(CONNECT_LANES, len(self.viewers)))]
        await defer.gatherResults(lanes)

    def summary(self, why: str) -> dict[str, Any]:
        viewers = self.viewers
        ages = array("d")
        for viewer in viewers:
            ages.extend(viewer.ages)
        ended: dict[str, int] = {}
        for viewer in viewers:
            key = viewer.ended_by or "running"
            ended[key] = ended.get(key, 0) + 1
        return {
            "why": why,
            "viewers": len(viewers),
            "playing": sum(1 for v in viewers if v.play_started_wall is not None),
            "ended_by": ended,
            "failures": self.failures[:10],
            "lost_frames": sum(v.lost_frames() for v in viewers),
            "viewers_with_losses": [v.index for v in viewers if v.lost_frames()][:20],
            "bad_starts": sum(v.bad_starts for v in viewers),
            "out_of_order": sum(v.out_of_order for v in viewers),
            "video_min": min((v.video for v in viewers), default=0),
            "first_video_seq_max": max(
                (v.first_video for v in viewers if v.first_video is not None), default=None
            ),
            "last_video_seq_min": min((v.last_video for v in viewers), default=-1),
            "last_audio_seq_min": min((v.last_audio for v in viewers), default=-1),
            "age_ms": percentiles(ages),
            "cpu_s": round(cpu_seconds() - self._cpu_at_start, 2),
            "wall_s": round(time.time() - self.started_wall, 2),
            "each": [v.summary() for v in viewers] if len(viewers) == 1 else None,
        }


async def play(reactor: Any, options: argparse.Namespace) -> int:
    audience = Audience(options.viewers, options.record, options.budget_ms)
    printed: list[bool] = []

    def print_summary(why: str) -> None:
        if not printed:
            printed.append(True)
            emit("summary", **audience.summary(why))

    # SIGTERM/SIGINT stop the reactor: the summary of what was measured still goes out.
    reactor.addSystemEventTrigger("before", "shutdown", print_summary, "signal")
    await audience.join(reactor, options)
    playing = sum(1 for v in audience.viewers if v.play_started_wall is not None)
    emit("ready", playing=playing, failures=len(audience.failures))
    log(f"{playing} of {options.viewers} viewers playing {options.url}")
    await defer.gatherResults([v.ended for v in audience.viewers])
    print_summary("ended")
    for viewer in audience.viewers:
        if viewer.client is not None:
            viewer.client.close()
    return 0


# --- command line --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="publish the stamped stream in real time")
    pub.add_argument("--url", required=True, help="rtmp://HOST:PORT/APP/NAME")
    pub.add_argument("--seconds", type=float, default=60.0, help="media to send")
    pub.add_argument("--kbps", type=float, default=950.0, help="stream bitrate")
    pub.add_argument("--connect-within", type=float, default=20.0, help="retry refused connects")
    viewers = commands.add_parser("play", help="play the stream with N viewers")
    viewers.add_argument("--url", required=True)
    viewers.add_argument("--viewers", type=int, default=1)
    viewers.add_argument("--record", action="store_true", help="per-second ages in the summary")
    viewers.add_argument(
        "--budget-ms", type=float, default=3000.0, help="count frames older than this"
    )
    viewers.add_argument("--connect-within", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    from twisted.internet import reactor

    outcome: list[int] = []

    async def run() -> None:
        command = publish if options.command == "publish" else play
        outcome.append(await command(reactor, options))

    def stop(result: Failure | None) -> None:
        if isinstance(result, Failure):
            log(f"failed: {result.getErrorMessage()}\n{result.getTraceback()}")
            outcome.append(1)
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()).addBoth(stop))
    reactor.run()
    return outcome[-1] if outcome else 1


if __name__ == "__main__":
    sys.exit(main())
