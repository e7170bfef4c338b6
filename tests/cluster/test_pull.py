"""The cluster's router driving real pulls, in memory (relay tests' Net, FakeStore)."""

from __future__ import annotations

from twisted.internet import task

from streamserver.cluster.fake import FakeStore
from streamserver.cluster.service import ClusterService
from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer
from tests.relay.support import Net, publisher, target


def _node(net: Net, store: FakeStore, node_id: str) -> RTMPServerFactory:
    factory = net.server(
        f"mem:{node_id}",
        cluster="redis://127.0.0.1:1/0",
        cluster_node_id=node_id,
        cluster_advertise=f"rtmp://{node_id}.test:1935",
    )
    service = ClusterService(factory, ["tcp:1935"], store=store.handle())
    # The advertised URL's host names the in-memory server.
    service.node.make_target = lambda url: target(f"mem:{url.split('//')[1].split('.')[0]}")
    service.startService()
    return factory


def _play(factory: RTMPServerFactory, nick: str) -> tuple[FakePeer, int]:
    peer = FakePeer(factory)
    peer.connect("live", nick=nick)
    stream_id = peer.create_stream()
    peer.play("cam", stream_id)
    return peer, stream_id


def _texts(peer: FakePeer) -> list[tuple[int, str, str]]:
    return [(int(f["id"]), f["nick"], f["text"]) for _, f in peer.chat()]


def test_a_play_on_an_edge_pulls_from_the_origin_found_in_the_store() -> None:
    net = Net(task.Clock())
    store = FakeStore(net.clock)
    a, b = _node(net, store, "a"), _node(net, store, "b")
    publisher(a)
    net.flush()
    here, _ = _play(b, "bob")
    net.flush()
    assert net.connects == ["mem:a"]
    stream = b.find_stream("live", "cam")
    assert stream is not None and stream.publisher is not None  # the pull
    assert here.media()


def test_chat_of_a_pulled_room_goes_over_the_store_once_not_over_the_pull() -> None:
    """With --cluster the pull neither posts the origin's messages nor sends the
    edge's upstream: each message arrives once on both nodes, with the store's ids."""
    net = Net(task.Clock())
    store = FakeStore(net.clock)
    a, b = _node(net, store, "a"), _node(net, store, "b")
    publisher(a)
    there, there_id = _play(a, "ann")
    here, here_id = _play(b, "bob")
    net.flush()
    there.call("sendChatMessage", None, "from a", stream_id=there_id)
    net.flush()
    here.call("sendChatMessage", None, "from b", stream_id=here_id)
    net.flush()
    expected = [(1, "ann", "from a"), (2, "bob", "from b")]
    assert _texts(here) == expected
    assert _texts(there) == expected
    room_a = a.find_stream("live", "cam")
    assert room_a is not None
    assert [(m.id, m.text) for m in room_a.chat.history] == [(1, "from a"), (2, "from b")]
