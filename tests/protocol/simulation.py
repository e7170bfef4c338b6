"""A deterministic slow-viewer simulation over FakeTransport and task.Clock.

One publisher sends a synthetic H.264+AAC stream at real-time pace on a Clock;
viewers drain their transports at set rates (fast: everything at once; slow: a
byte rate; stalled: never).  Each viewer's transport reports every write to a
:class:`ViewerRecord`, which identifies the frame by the identity of the shared
bytes object and checks, as it goes, that video after a gap starts at a keyframe.

With ``sockets=True`` every viewer's connection also has a socket
(:class:`~streamserver.testing.FakeSocket`) for the eager sends and the fast lane,
as over plain TCP: a fast viewer's kernel takes everything; a slow or stalled
viewer's holds up to :attr:`Scenario.kernel_bytes`, emptied at the viewer's rate,
then its transport's queue moves into it, as the reactor's writes would.  The
socket's calls are reported to the record too (a frame counted once per viewer).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import task

from streamserver.codec.flv import FrameKind
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.media.stream import Frame, Stream
from streamserver.policy import NEVER_DROPPED, PolicyLimits
from streamserver.testing import FakePeer, FakeSocket, FakeTransport
from tests.protocol import media


@dataclass
class ViewerRecord:
    """What one viewer was sent, checked frame by frame."""

    name: str
    drain_bps: float | None  # bytes per second; None = infinitely fast; 0 = stalled
    peer: FakePeer | None = None
    media_frames: int = 0
    video_frames: int = 0
    keyframes: int = 0
    undecodable: int = 0
    last_video_index: int | None = None
    #: with sockets: the ids of the last frames counted (a short send's tail is
    #: written on by the transport; recent frames are alive, so their ids are theirs)
    seen: dict[int, None] | None = None
    first_write_at: float | None = None
    disconnected_at: float | None = None
    peak_queued: int = 0

    def wrote(self, frame: Frame | None, now: float) -> None:
        if self.first_write_at is None:
            self.first_write_at = now
        if frame is None:
            return
        seen = self.seen
        if seen is not None:
            if id(frame) in seen:
                return  # the tail of a short send, written on by the transport
            seen[id(frame)] = None
            if len(seen) > 64:
                del seen[next(iter(seen))]
        self.media_frames += 1
        if not frame.is_video or frame.kind in NEVER_DROPPED:
            return
        index = frame_index[id(frame)]
        self.video_frames += 1
        if frame.kind is FrameKind.KEYFRAME:
            self.keyframes += 1
        elif self.last_video_index is None or index != self.last_video_index + 1:
            self.undecodable += 1
        self.last_video_index = index


#: id(frame) -> the index of the video frame in publish order (only live frames).
frame_index: dict[int, int] = {}


@dataclass
class Scenario:
    """The story's numbers: a 0.5 Mbit/s stream to fast, slow and stalled viewers."""

    fast: int = 150
    slow: int = 40
    stalled: int = 10
    slow_bps: float = 300_000 / 8
    minutes: float = 30.0
    fps: int = 30
    gop_seconds: int = 2
    audio_per_second: int = 20
    bitrate_bps: float = 500_000 / 8
    audio_bytes: int = 200
    keyframe_share: float = 0.25
    tick: float = 0.05
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    protocol_class: Any = None
    sockets: bool = False
    kernel_bytes: int = 64 * 1024


@dataclass
class Result:
    viewers: list[ViewerRecord]
    frames_published: int
    video_published: int
    max_total_queued: int
    total_queued_samples: list[int]
    publisher_paused: bool
    factory: RTMPServerFactory
    stream: Stream
    #: the viewers in their group's fast lane at the end (before the factory stops)
    in_lane: set[str] = field(default_factory=set)


def _frame_sizes(s: Scenario) -> tuple[int, int]:
    video_bytes_per_second = s.bitrate_bps - s.audio_per_second * s.audio_bytes
    per_gop = video_bytes_per_second * s.gop_seconds
    frames_per_gop = s.fps * s.gop_seconds
    keyframe = int(per_gop * s.keyframe_share)
    inter = int((per_gop - keyframe) / (frames_per_gop - 1))
    return keyframe, inter


def run(s: Scenario) -> Result:
    """Run the scenario to the end of its simulated time."""
    clock = task.Clock()
    config = ServerConfig(limits=s.limits)
    factory = RTMPServerFactory(config, reactor=clock)
    if s.protocol_class is not None:
        factory.protocol_class = s.protocol_class
    factory.startFactory()
    frame_index.clear()

    publisher = FakePeer(factory, clock=clock)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("story", sid)
    stream = factory.find_stream("live", "story")
    assert stream is not None

    viewers: list[ViewerRecord] = (
        [ViewerRecord(f"fast{i}", None) for i in range(s.fast)]
        + [ViewerRecord(f"slow{i}", s.slow_bps) for i in range(s.slow)]
        + [ViewerRecord(f"stalled{i}", 0.0) for i in range(s.stalled)]
    )
    recent: deque[Frame] = deque(maxlen=4 * s.fps * s.gop_seconds)
    for record in viewers:
        peer = FakePeer(factory, clock=clock, auto_drain=record.drain_bps is None, socket=s.sockets)
        if peer.socket is not None:
            record.seen = {}
            if record.drain_bps is not None:
                peer.socket.room = s.kernel_bytes
        peer.connect("live")
        peer.play("story", peer.create_stream())
        peer.transport._keep_output = False
        record.peer = peer
        _attach(peer.transport, record, recent, clock)
        if peer.socket is not None:
            _attach_socket(peer.socket, record, recent, clock)

    video_count = 0
    original_frame_from_message = stream.frame_from_message

    def frame_from_message(message: Message) -> Frame:
        nonlocal video_count
        frame = original_frame_from_message(message)
        if frame.is_video and frame.kind not in NEVER_DROPPED:
            frame_index[id(frame)] = video_count
            video_count += 1
        recent.append(frame)
        return frame

    stream.frame_from_message = frame_from_message  # type: ignore[method-assign]
    for message in media.headers(sid):
        publisher.send(message)

    keyframe_size, inter_size = _frame_sizes(s)
    frames_per_gop = s.fps * s.gop_seconds
    slow = [r for r in viewers if r.drain_bps]
    end = s.minutes * 60.0
    next_video = next_audio = 0.0
    next_sample = 1.0
    video_number = published = 0
    samples: list[int] = []
    publisher_paused = False
    while clock.seconds() < end:
        now = clock.seconds()
        while next_video <= now:
            key = video_number % frames_per_gop == 0
            size = keyframe_size if key else inter_size
            publisher.send(media.video(sid, round(next_video * 1000), key=key, size=size))
            published += 1
            video_number += 1
            next_video += 1.0 / s.fps
        while next_audio <= now:
            publisher.send(media.audio(sid, round(next_audio * 1000), s.audio_bytes))
            published += 1
            next_audio += 1.0 / s.audio_per_second
        for record in slow:
            assert record.peer is not None
            budget = int(record.drain_bps * s.tick)  # type: ignore[operator]
            sock = record.peer.socket
            if sock is None:
                record.peer.transport.drain(budget)
                continue
            # the peer reads from the kernel; the transport's queue moves into it
            assert sock.room is not None
            transport = record.peer.transport
            sock.room = min(s.kernel_bytes, sock.room + budget)
            sock.room -= transport.drain(min(sock.room, transport.queued))
            transport.in_kernel = s.kernel_bytes - sock.room
        if publisher.transport.producerState != "producing":
            publisher_paused = True
        if now >= next_sample:
            samples.append(factory.bytes_queued_total())
            next_sample += 1.0
            if len(frame_index) > 4 * frames_per_gop:
                live = {id(f) for f in recent}
                for key in [k for k in frame_index if k not in live]:
                    del frame_index[key]
        clock.advance(s.tick)

    in_lane = {
        record.name
        for record in viewers
        if record.peer is not None and record.peer.protocol.link.lane is not None
    }
    factory.stopFactory()
    for record in viewers:
        assert record.peer is not None
        record.peak_queued = record.peer.transport.peak_queued
    return Result(
        viewers=viewers,
        frames_published=published,
        video_published=video_count,
        max_total_queued=max(samples) if samples else 0,
        total_queued_samples=samples,
        publisher_paused=publisher_paused,
        factory=factory,
        stream=stream,
        in_lane=in_lane,
    )


def _attach(
    transport: FakeTransport, record: ViewerRecord, recent: deque[Frame], clock: Any
) -> None:
    """Report each media write on *transport* to *record*, and the disconnect time."""
    original_write = transport.write

    def write(data: bytes) -> None:
        original_write(data)
        if not _record(data, record, recent, clock) and record.first_write_at is None:
            record.first_write_at = clock.seconds()

    transport.write = write  # type: ignore[method-assign]
    original_lost = transport._deliver_lost

    def lost(error: Exception) -> None:
        if record.disconnected_at is None:
            record.disconnected_at = clock.seconds()
        original_lost(error)

    transport._deliver_lost = lost  # type: ignore[method-assign]


def _record(data: bytes, record: ViewerRecord, recent: deque[Frame], clock: Any) -> bool:
    """Report *data* to *record* if it is a recent frame's bytes; whether it was."""
    for frame in reversed(recent):
        if frame._wire is data:
            if frame.message.type_id in (MessageType.AUDIO, MessageType.VIDEO):
                record.wrote(frame, clock.seconds())
            return True
    return False


def _attach_socket(
    sock: FakeSocket, record: ViewerRecord, recent: deque[Frame], clock: Any
) -> None:
    """Report each frame handed to *sock* (taken or not: the rest goes to the transport)."""
    original_take = sock._take

    def take(pieces: list[bytes]) -> int:
        for piece in pieces:
            _record(piece, record, recent, clock)
        return original_take(pieces)

    sock._take = take  # type: ignore[method-assign]
