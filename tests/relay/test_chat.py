"""Chat over a pull: a pulled stream's room is the origin's room."""

from __future__ import annotations

from twisted.internet import task

from streamserver.relay.pull import RulePullRouter
from streamserver.relay.target import RelayRule
from streamserver.testing import FakePeer
from tests.relay.support import Net, publisher, target


def _play(factory: object, nick: str) -> tuple[FakePeer, int]:
    peer = FakePeer(factory)  # type: ignore[arg-type]
    peer.connect("live", nick=nick)
    stream_id = peer.create_stream()
    peer.play("cam", stream_id)
    return peer, stream_id


def _texts(peer: FakePeer) -> list[tuple[str, str]]:
    return [(fields["nick"], fields["text"]) for _, fields in peer.chat()]


def test_chat_crosses_the_relay_both_ways_once() -> None:
    """The origin's messages reach the edge's room; the edge's reach the origin's, each
    shown once on both sides, and nothing echoes back upstream."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    edge.pulls.add_router(RulePullRouter([RelayRule(None, target("mem:origin"))]))
    publisher(origin)
    there, there_id = _play(origin, "ann")
    here, here_id = _play(edge, "bob")
    other, _ = _play(edge, "cid")
    net.flush()
    there.call("sendChatMessage", None, "hello from the origin", stream_id=there_id)
    net.flush()
    assert ("ann", "hello from the origin") in _texts(here)
    assert ("ann", "hello from the origin") in _texts(other)
    here.call("sendChatMessage", None, "hello from the edge", stream_id=here_id)
    net.flush()
    assert _texts(here).count(("bob", "hello from the edge")) == 1
    assert _texts(other).count(("bob", "hello from the edge")) == 1
    upstream = [text for nick, text in _texts(there) if text == "hello from the edge"]
    assert upstream == ["hello from the edge"]
    origin_room = origin.find_stream("live", "cam").chat
    assert [m.text for m in origin_room.history] == ["hello from the origin", "hello from the edge"]
    edge_room = edge.find_stream("live", "cam").chat
    assert [m.text for m in edge_room.history] == ["hello from the origin", "hello from the edge"]


def test_history_is_not_posted_twice_after_a_reconnect() -> None:
    """The origin's history, sent again on every upstream play, is posted here once."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    edge.pulls.add_router(RulePullRouter([RelayRule(None, target("mem:origin"))]))
    publisher(origin)
    there, there_id = _play(origin, "ann")
    there.call("sendChatMessage", None, "before", stream_id=there_id)
    here, _ = _play(edge, "bob")
    net.flush()
    (pull,) = edge.pulls.pulls.values()
    net.cut(pull.upstream.client)
    net.advance(3)
    assert pull.upstream.sessions == 2
    there.call("sendChatMessage", None, "after", stream_id=there_id)
    net.flush()
    assert _texts(here) == [("ann", "before"), ("ann", "after")]
