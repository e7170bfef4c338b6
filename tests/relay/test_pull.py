"""Pull relays: on first viewer, shared, closed after idle, failover, re-route, superseded."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from streamserver.client import RTMPClientProtocol
from streamserver.codec import messages
from streamserver.codec.messages import Message, MessageType, UserControlEvent
from streamserver.relay.pull import RulePullRouter
from streamserver.relay.target import RelayRule, RelayTarget
from tests.relay.support import Net, publisher, send_gop, target, video_timestamps, viewer


def _net(*origins: str, idle: float = 10.0) -> tuple[Net, list, object]:
    net = Net(task.Clock())
    servers = [net.server(name) for name in origins]
    edge = net.server("mem:edge", pull_idle_seconds=idle)
    edge.pulls.add_router(RulePullRouter([RelayRule(None, target(name)) for name in origins]))
    return net, servers, edge


def _origin_viewers(origin, name: str = "cam") -> int:
    stream = origin.find_stream("live", name)
    return stream.subscriber_count if stream is not None else 0


def test_first_viewer_opens_one_pull_shared_by_every_viewer() -> None:
    """Three edge viewers of a stream published on the origin: one upstream play, all fed."""
    net, (origin,), edge = _net("mem:origin")
    source = publisher(origin)
    send_gop(source, 0)
    net.flush()
    viewers = [viewer(edge)]
    net.flush()
    assert _origin_viewers(origin) == 1
    viewers += [viewer(edge), viewer(edge)]
    net.flush()
    assert _origin_viewers(origin) == 1
    send_gop(source, 400)
    net.flush()
    for each in viewers:
        video = [m for m in each.media() if m.type_id == MessageType.VIDEO]
        assert video[0].payload[:2] == b"\x17\x00"
        assert video[1].payload[:2] == b"\x17\x01"
        assert len(video) >= 11
    stream = edge.find_stream("live", "cam")
    assert stream.publisher is edge.pulls.of(stream)
    assert stream.publisher.peer == "relay rtmp://mem:origin/live/cam"


def test_pull_uses_play_minus_1000_and_a_buffer_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upstream play is play(name, -1000, -1000) followed by SetBufferLength."""
    sent: list[Message] = []
    original = RTMPClientProtocol.send

    def record(self: RTMPClientProtocol, message: Message) -> None:
        sent.append(message)
        original(self, message)

    monkeypatch.setattr(RTMPClientProtocol, "send", record)
    net, (origin,), edge = _net("mem:origin")
    publisher(origin)
    viewer(edge)
    net.flush()
    commands = [messages.parse_command(m) for m in sent if m.type_id == MessageType.COMMAND_AMF0]
    (play,) = [c for c in commands if c.name == "play"]
    assert play.args == ["cam", -1000.0, -1000.0]
    after = sent[[m.type_id for m in sent].index(MessageType.COMMAND_AMF0, 0) :]
    controls = [
        messages.parse_user_control(m) for m in after if m.type_id == MessageType.USER_CONTROL
    ]
    assert (UserControlEvent.SET_BUFFER_LENGTH, [play_stream_id(sent), 1000]) in [
        (event, list(values)) for event, values in controls
    ]
    assert _origin_viewers(origin) == 1


def play_stream_id(sent: list[Message]) -> int:
    """The message stream id the play command was sent on."""
    for message in sent:
        is_command = message.type_id == MessageType.COMMAND_AMF0
        if is_command and messages.parse_command(message).name == "play":
            return message.stream_id
    raise AssertionError("no play")


def test_pull_closes_pull_idle_seconds_after_the_last_viewer() -> None:
    """The last viewer leaving starts the idle wait; a viewer within it keeps the pull."""
    net, (origin,), edge = _net("mem:origin", idle=10)
    publisher(origin)
    first = viewer(edge)
    net.flush()
    first.protocol.transport.loseConnection()
    net.advance(5)
    assert _origin_viewers(origin) == 1
    second = viewer(edge)  # back within the wait: same pull
    net.advance(20)
    assert _origin_viewers(origin) == 1 and len(net.pumps) == 1
    second.protocol.transport.loseConnection()
    net.advance(9.5)
    assert _origin_viewers(origin) == 1
    net.advance(1)
    assert _origin_viewers(origin) == 0
    assert edge.pulls.pulls == {}
    assert edge.find_stream("live", "cam") is None


def test_failover_in_order() -> None:
    """With the first origin down, the second is pulled from."""
    net, (_down, up), edge = _net("mem:a", "mem:b")
    del net.servers["mem:a"]
    publisher(up)
    viewer(edge)
    net.flush()
    assert net.connects == ["mem:a", "mem:b"]
    assert _origin_viewers(up) == 1


def test_routers_are_asked_on_every_reconnect() -> None:
    """A router moving a stream's origin moves the pull at its next attempt;
    viewers stay and the timestamps go on."""
    net = Net(task.Clock())
    a, b = net.server("mem:a"), net.server("mem:b")
    edge = net.server("mem:edge")
    where = ["mem:a"]

    class Router:
        def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
            return defer.succeed([target(where[0])])

    edge.pulls.add_router(Router())
    on_a = publisher(a)
    send_gop(on_a, 0)
    watcher = viewer(edge)
    net.flush()
    send_gop(on_a, 400)
    net.flush()
    where[0] = "mem:b"
    on_b = publisher(b)
    on_a.protocol.transport.loseConnection()  # the publisher moves to b...
    (pull,) = edge.pulls.pulls.values()
    net.cut(pull.upstream.client)  # ...and a drops its edge
    net.advance(3)
    send_gop(on_b, 0)
    net.flush()
    assert _origin_viewers(b) == 1
    stamps = video_timestamps(watcher)
    assert stamps == sorted(stamps) and len(stamps) > 21
    assert watcher.protocol.viewer is not None  # the viewer stayed


def test_upstream_unpublish_keeps_viewers_waiting() -> None:
    """The origin's publisher leaving unpublishes the edge's stream; viewers stay and get
    the next publisher's media with timestamps running on."""
    net, (origin,), edge = _net("mem:origin")
    source = publisher(origin)
    send_gop(source, 0)
    watcher = viewer(edge)
    net.flush()
    source.protocol.transport.loseConnection()
    net.flush()
    assert edge.find_stream("live", "cam").publisher is None
    assert "NetStream.Play.UnpublishNotify" in watcher.statuses(new=False)
    again = publisher(origin)
    send_gop(again, 0)
    net.flush()
    assert edge.find_stream("live", "cam").publisher is not None
    stamps = video_timestamps(watcher)
    assert stamps == sorted(stamps)


def test_a_local_publish_supersedes_the_pull() -> None:
    """Publishing here closes the pull; the viewers stay and follow the local publisher."""
    net, (origin,), edge = _net("mem:origin")
    source = publisher(origin)
    send_gop(source, 0)
    watcher = viewer(edge)
    net.flush()
    local = publisher(edge)
    net.flush()
    assert edge.pulls.pulls == {}
    assert _origin_viewers(origin) == 0
    send_gop(local, 0)
    stamps = video_timestamps(watcher)
    assert stamps == sorted(stamps)
    assert edge.find_stream("live", "cam").publisher is local.protocol


def test_no_router_no_pull_and_a_local_stream_is_not_pulled() -> None:
    """Without a router nothing is pulled; a stream published here is never pulled."""
    net = Net(task.Clock())
    edge = net.server("mem:edge")
    viewer(edge)
    net.flush()
    assert net.connects == []
    net2, (_origin,), edge2 = _net("mem:origin")
    publisher(edge2)
    viewer(edge2)
    net2.flush()
    assert net2.connects == []
