"""Push relays: a local publish published upstream, reconnecting, keyframe-safe when slow."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from streamserver.codec.flv import FrameKind
from streamserver.codec.messages import Message, MessageType
from streamserver.media.stream import Frame
from streamserver.relay.push import Push, RulePushSource
from streamserver.relay.target import RelayTarget
from tests.relay.support import Net, publisher, send_gop, target, video_timestamps, viewer


def _net() -> tuple[Net, Any, Any]:
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge", push=("live=rtmp://origin.invalid/live",))
    # the rule's target, rewritten onto the in-memory origin
    (source,) = edge.pushes.sources
    edge.pushes.remove_source(source)
    rules = [type(r)(r.pattern, target("mem:origin")) for r in source.rules_for("live")]
    edge.pushes.add_source(RulePushSource(rules))
    return net, origin, edge


def test_a_local_publish_is_published_upstream_with_its_headers_and_media() -> None:
    """The origin gets the edge's stream: metadata, sequence headers, every frame."""
    net, origin, edge = _net()
    watcher = viewer(origin)
    source = publisher(edge)
    net.flush()
    stream = origin.find_stream("live", "cam")
    assert stream is not None and stream.publisher is not None
    send_gop(source, 0)
    send_gop(source, 400)
    net.flush()
    kinds = [m.type_id for m in watcher.media()]
    assert kinds[0] == MessageType.DATA_AMF0  # onMetaData
    assert watcher.media()[1].payload[:2] == b"\x17\x00"  # AVC sequence header
    assert kinds.count(MessageType.VIDEO) == 1 + 20
    (push,) = edge.pushes.of(edge.find_stream("live", "cam"))
    assert push.stats()["state"] == "connected" and push.frames_dropped == 0
    assert push.url == "rtmp://mem:origin/live/cam"


def test_rules_that_do_not_match_push_nothing() -> None:
    """A stream of another app is not pushed."""
    net, origin, edge = _net()
    publisher(edge, app="other")
    net.flush()
    assert origin.find_stream("other", "cam") is None
    assert net.connects == []


def test_push_reconnects_resends_headers_and_resumes_at_a_keyframe() -> None:
    """After a lost upstream the push reconnects after 3 s: headers, then the next keyframe,
    timestamps continuing the local stream's."""
    net, origin, edge = _net()
    source = publisher(edge)
    net.flush()
    send_gop(source, 0)
    net.flush()
    (push,) = edge.pushes.of(edge.find_stream("live", "cam"))
    assert push.upstream.client is not None
    net.cut(push.upstream.client)
    assert push.upstream.state == "waiting"
    send_gop(source, 400)  # while down: dropped
    net.advance(3)
    assert push.upstream.state == "connected"
    watcher = viewer(origin)
    net.flush()
    upstream_stream = origin.find_stream("live", "cam")
    before = upstream_stream.frames_in
    assert upstream_stream.video_header is not None  # resent on reconnect
    for message in _gop_tail(source.stream_id, 800):
        source.send(message)  # inter frames first: not sent upstream
    send_gop(source, 1000)
    net.flush()
    assert upstream_stream.frames_in - before == 20  # the GOP at 1000 ms, not the tail before
    got = watcher.media()
    video = [m for m in got if m.type_id == MessageType.VIDEO]
    assert video[0].payload[:2] == b"\x17\x00"  # sequence header resent
    assert video[1].payload[:2] == b"\x17\x01"  # then a keyframe, never an inter frame first
    assert video[1].timestamp == 1000
    stamps = video_timestamps(watcher)[1:]
    assert stamps == sorted(stamps)
    assert push.upstream.sessions == 2


def _gop_tail(stream_id: int, start: int) -> list[Message]:
    from tests.protocol import media

    return [media.video(stream_id, start + 33 * i, key=False) for i in range(3)]


class _Link:
    def __init__(self) -> None:
        self.bytes = 0

    def queued(self) -> int:
        return self.bytes


class _Client:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


def _frame(kind: FrameKind, timestamp: int) -> Frame:
    type_id = MessageType.AUDIO if kind is FrameKind.AUDIO else MessageType.VIDEO
    return Frame(kind, Message(type_id, 0, timestamp, b"\x00" * 10))


def test_a_slow_upstream_loses_whole_gop_tails_and_resumes_at_a_keyframe() -> None:
    """Past drop_low every media frame waits for a keyframe; metadata always passes;
    the push is never disconnected for it."""
    net = Net(task.Clock())
    edge = net.server("mem:edge")
    publisher(edge)
    stream = edge.find_stream("live", "cam")
    push = Push(edge, stream, RelayTarget("mem:none", "live", None, "", "rtmp://x/live"))
    link, client = _Link(), _Client()
    push._link, push._client = link, client  # type: ignore[assignment]
    limits = edge.policy.limits
    push.awaiting_keyframe = False
    push.consume(_frame(FrameKind.KEYFRAME, 0))
    push.consume(_frame(FrameKind.INTER, 33))
    link.bytes = limits.drop_low + 1  # the upstream falls behind
    push.consume(_frame(FrameKind.INTER, 66))
    push.consume(_frame(FrameKind.AUDIO, 70))
    link.bytes = 0  # caught up, but mid-GOP: the tail is still dropped
    push.consume(_frame(FrameKind.INTER, 100))
    push.consume(_frame(FrameKind.AUDIO, 110))
    push.consume(_frame(FrameKind.VIDEO_SEQUENCE_HEADER, 120))  # never dropped
    link.bytes = limits.drop_high + 1
    push.consume(_frame(FrameKind.KEYFRAME, 133))  # still too slow: waits
    link.bytes = 0
    push.consume(_frame(FrameKind.KEYFRAME, 166))
    push.consume(_frame(FrameKind.INTER, 200))
    push.consume(_frame(FrameKind.AUDIO, 210))
    assert [m.timestamp for m in client.sent] == [0, 33, 120, 166, 200, 210]
    assert push.frames_dropped == 5
    assert push.upstream.state == "idle"  # nothing closed it


def test_push_never_slows_local_viewers() -> None:
    """With the upstream not reading, local viewers still get every frame."""
    net, _origin, edge = _net()
    source = publisher(edge)
    local = viewer(edge)
    net.flush()
    (push,) = edge.pushes.of(edge.find_stream("live", "cam"))
    push._link = _Link()  # type: ignore[assignment]
    push._link.bytes = 10**9  # type: ignore[union-attr]
    for start in range(0, 4000, 400):
        send_gop(source, start)
    video = [m for m in local.media() if m.type_id == MessageType.VIDEO]
    assert len(video) == 1 + 100
    assert push.frames_dropped == 200


def test_sources_are_asked_on_each_publish_and_pushes_end_with_it() -> None:
    """An added source's targets are pushed to; unpublishing stops the pushes."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    asked: list[tuple[str, str]] = []

    class Source:
        def targets(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
            asked.append((app, name))
            return defer.succeed([target("mem:origin", "ingest", "renamed")])

    edge.pushes.add_source(Source())
    source = publisher(edge)
    net.flush()
    assert asked == [("live", "cam")]
    assert origin.find_stream("ingest", "renamed").publisher is not None
    source.protocol.transport.loseConnection()
    net.flush()
    assert edge.pushes.pushes == {}
    assert origin.find_stream("ingest", "renamed") is None
