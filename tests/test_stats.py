"""Typed snapshots: each object reports its own numbers; the console reads nothing else."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import task

from streamserver.codec.mediainfo import AudioInfo, MediaInfo, VideoInfo
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory
from streamserver.media.stream import BITRATE_WINDOW
from streamserver.policy import DropReason
from streamserver.stats import ConnectionStats, StreamStats, ViewerState
from streamserver.testing import FakePeer
from tests.protocol import media

ROOT = Path(__file__).resolve().parent.parent


def _setup(factory: RTMPServerFactory) -> tuple[FakePeer, int, FakePeer, FakePeer]:
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    fast = FakePeer(factory)
    fast.connect("live")
    fast.play("cam", fast.create_stream())
    slow = FakePeer(factory, auto_drain=False)
    slow.connect("live")
    slow.play("cam", slow.create_stream())
    for message in media.headers(sid) + media.gop_frames(sid, 0, 60):
        publisher.send(message)
    return publisher, sid, fast, slow


def test_connection_snapshots_say_who_does_what(factory: RTMPServerFactory) -> None:
    """A publisher, a viewer that keeps up and one that does not, as the factory reports them."""
    factory.set_policy(drop_low=3000, drop_high=100_000, max_lag_ms=100_000)
    publisher, _, fast, slow = _setup(factory)
    handshaking = FakePeer(factory, handshake=False)
    by_id = {c.conn_id: c for c in factory.connection_stats()}
    assert [c.conn_id for c in factory.connection_stats()] == sorted(by_id)
    published = by_id[publisher.protocol.conn_id]
    assert isinstance(published, ConnectionStats)
    assert (published.role, published.publishing, published.viewer) == (
        "publish live/cam",
        ("live/cam",),
        None,
    )
    assert by_id[handshaking.protocol.conn_id].role == "handshake"
    keeping_up = by_id[fast.protocol.conn_id].viewer
    assert keeping_up is not None and keeping_up.state is ViewerState.OK
    assert keeping_up.frames_sent == fast.protocol.viewer.frames_sent
    behind = by_id[slow.protocol.conn_id]
    assert behind.role == "play live/cam"
    assert behind.queued == slow.transport.queued > 0
    assert behind.viewer is not None
    assert behind.viewer.state is ViewerState.CONGESTED
    assert behind.viewer.dropped[DropReason.INTER] > 0
    assert behind.viewer.peer == slow.protocol.peer
    assert (published.protocol, behind.protocol, behind.viewer.protocol) == ("rtmp",) * 3


def test_stream_snapshots_count_what_went_in_and_out(factory: RTMPServerFactory) -> None:
    """A stream's snapshot: its publisher, viewers, bytes in and out, GOP cache, chat room."""
    publisher, _, fast, slow = _setup(factory)
    (stream,) = factory.stream_stats()
    assert isinstance(stream, StreamStats)
    assert (stream.key, stream.publisher, stream.viewers) == (
        "live/cam",
        publisher.protocol.peer,
        2,
    )
    sent = fast.protocol.viewer.bytes_sent + slow.protocol.viewer.bytes_sent
    assert stream.bytes_out == sent > stream.bytes_in > 0
    assert stream.gop_frames == 120 and stream.gop_bytes > 0
    assert stream.chat_participants == 3
    assert stream.viewers_by_protocol == {"rtmp": 2}
    assert stream.media == MediaInfo(
        VideoInfo("h264", "High", "3.1", 320, 240, 30.0), AudioInfo("aac", "LC", 44100, 2)
    )


def test_a_stream_s_drops_outlive_its_viewers(factory: RTMPServerFactory) -> None:
    """Frames dropped count every viewer the stream has had: a viewer leaving takes none away."""
    factory.set_policy(drop_low=3000, drop_high=100_000, max_lag_ms=100_000)
    _, _, fast, slow = _setup(factory)
    assert sum(fast.protocol.viewer.dropped.values()) == 0
    lost = dict(slow.protocol.viewer.dropped)
    assert lost[DropReason.INTER] > 0
    (stream,) = factory.stream_stats()
    assert stream.dropped == lost
    assert set(stream.dropped) == set(DropReason)
    factory.kick(slow.protocol.conn_id)
    (stream,) = factory.stream_stats()
    assert (stream.viewers, stream.dropped) == (1, lost)


def test_the_watchdog_measures_each_stream_s_input_bit_rate(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """The 1 s watchdog samples bytes in: the rate is what came in over the last 5 s."""
    factory.startFactory()
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    for message in media.headers(sid):
        publisher.send(message)
    (stream,) = factory.stream_stats()
    assert stream.bitrate_in is None  # no sample yet
    payload = 0
    for second in range(8):
        # 25 frames of 400 bytes (+ the 9-byte AVC header and timestamp) a second
        for frame in range(25):
            message = media.video(sid, second * 1000 + frame * 40, key=frame == 0, size=400)
            payload += len(message.payload)
            publisher.send(message)
        clock.advance(1)
    (stream,) = factory.stream_stats()
    per_second = payload / 8
    assert stream.bitrate_in == per_second * 8
    # a burst is averaged over the window, then the rate falls back as input stops
    publisher.send(media.video(sid, 8000, key=True, size=50_000))
    clock.advance(1)
    (stream,) = factory.stream_stats()
    burst = 50_000 + 9
    expected = (per_second * (BITRATE_WINDOW - 1) + burst) * 8 / BITRATE_WINDOW
    assert stream.bitrate_in == expected
    clock.advance(BITRATE_WINDOW)
    (stream,) = factory.stream_stats()
    assert stream.bitrate_in == 0.0
    factory.stopFactory()


def test_the_console_reads_snapshots_not_objects() -> None:
    """The console's helpers probe nothing with getattr: they read typed snapshots."""
    source = (ROOT / "src" / "streamserver" / "console" / "helpers.py").read_text()
    probes = [line.strip() for line in source.splitlines() if "getattr(" in line]
    # what remains: the console's own helper table, the factory's optional parts
    for line in probes:
        assert (
            "getattr(self," in line
            or "getattr(self.factory" in line
            or "getattr(factory" in line
            or "getattr(new," in line
        ), line


def test_a_stream_s_media_info_follows_its_headers(factory: RTMPServerFactory) -> None:
    """Media info is read again when a header changes; MP3 is named from a GOP's audio frame."""
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    (stream,) = factory.stream_stats()
    assert stream.media == MediaInfo()
    publisher.send(Message(MessageType.VIDEO, sid, 0, media.AVC_SEQUENCE_HEADER))
    (stream,) = factory.stream_stats()
    assert stream.media == MediaInfo(VideoInfo("h264", "High", "3.1"), None)
    # a Main profile header replaces it; MP3 audio (no sequence header) after a keyframe
    main = media.AVC_SEQUENCE_HEADER[:6] + b"\x4d" + media.AVC_SEQUENCE_HEADER[7:]
    publisher.send(Message(MessageType.VIDEO, sid, 0, main))
    publisher.send(media.video(sid, 0, key=True))
    publisher.send(Message(MessageType.AUDIO, sid, 0, b"\x2f" + b"\xff" * 20))
    (stream,) = factory.stream_stats()
    assert stream.media == MediaInfo(
        VideoInfo("h264", "Main", "3.1"), AudioInfo("mp3", None, 44100, 2)
    )
