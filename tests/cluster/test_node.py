"""ClusterNode over a FakeStore and a task.Clock: leases, origins, routes, node loss."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from streamserver.cluster.fake import FakeStore
from streamserver.cluster.node import cluster_streams
from streamserver.cluster.store import Keys

from .support import make_node

KEYS = Keys()


def _result(d):  # type: ignore[no-untyped-def]
    results: list[object] = []
    d.addBoth(results.append)
    return results[0]


def test_lease_is_written_refreshed_and_expires_when_the_node_stops_refreshing() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.node.start()
    lease = json.loads(store.live(KEYS.node("a")) or "")
    assert lease == {"node": "a", "url": "rtmp://a.test:1935"}
    assert store.ttl(KEYS.node("a")) == 10
    for _ in range(10):  # 30 s of refreshes every 10/3 s
        clock.advance(10 / 3)
        assert store.live(KEYS.node("a")) is not None
    a.node._loop.stop()  # the node dies without a word
    clock.advance(9.9)
    assert store.live(KEYS.node("a")) is not None
    clock.advance(0.2)
    assert store.live(KEYS.node("a")) is None


def test_a_refresh_failing_on_a_down_store_is_retried_next_tick() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.node.start()
    store.down = True
    clock.advance(10 / 3)
    store.down = False
    clock.advance(10 / 3)
    assert store.ttl(KEYS.node("a")) == 10


def test_publish_claims_the_origin_refreshes_it_and_unpublish_releases_it() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.node.start()
    a.publish("cam", conn_id=7)
    assert store.live(KEYS.origin("live", "cam")) == "a"
    assert a.node.origins == {("live", "cam"): 7}
    clock.advance(30)  # refreshed every 10/3 s: it never expires
    assert store.live(KEYS.origin("live", "cam")) == "a"
    a.unpublish(7)
    assert store.live(KEYS.origin("live", "cam")) is None


def test_unpublish_does_not_release_an_origin_another_node_holds() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.publish("cam", conn_id=7)
    store.put(KEYS.origin("live", "cam"), "b", 10)  # taken meanwhile
    a.unpublish(7)
    assert store.live(KEYS.origin("live", "cam")) == "b"


def test_a_second_publish_on_another_live_node_is_refused() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a, b = make_node(store, clock, "a"), make_node(store, clock, "b")
    a.node.start()
    b.node.start()
    a.publish("cam", conn_id=1)
    b.publish("cam", conn_id=2)
    assert store.live(KEYS.origin("live", "cam")) == "a"
    assert b.server.kicked == [(2, "live/cam is published on cluster node a")]
    assert b.node.refused == 1
    assert b.node.origins == {}


def test_a_publish_takes_over_the_origin_of_a_node_whose_lease_expired() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a, b = make_node(store, clock, "a"), make_node(store, clock, "b")
    a.node.start()
    a.publish("cam", conn_id=1)
    store.put(KEYS.origin("live", "cam"), "a", 10)
    del store.values[KEYS.node("a")]  # a's lease gone, its origin key not yet
    b.publish("cam", conn_id=2)
    assert store.live(KEYS.origin("live", "cam")) == "b"
    assert b.server.kicked == []


def test_an_origin_lost_to_another_node_refuses_our_publisher_on_the_next_tick() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    b = make_node(store, clock, "b")
    a.node.start()
    b.node.start()
    a.publish("cam", conn_id=1)
    store.put(KEYS.origin("live", "cam"), "b", 10)
    clock.advance(10 / 3)
    assert a.server.kicked == [(1, "live/cam is published on cluster node b")]


def test_route_finds_the_origin_nodes_url_and_nothing_for_ours_or_none() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a, b = make_node(store, clock, "a"), make_node(store, clock, "b")
    a.node.start()
    b.node.start()
    assert _result(b.node.route("live", "cam")) == []
    a.publish("cam", conn_id=1)
    assert _result(b.node.route("live", "cam")) == ["rtmp://a.test:1935/live"]
    assert _result(a.node.route("live", "cam")) == []


def test_node_loss_edges_follow_the_stream_to_where_its_publisher_returns() -> None:
    """A dies: its lease and origin expire within 10 s; the route then finds nothing,
    and once the publisher is back on C, B's next route attempt goes to C."""
    clock = Clock()
    store = FakeStore(clock)
    a, b, c = (make_node(store, clock, n) for n in "abc")
    for n in (a, b, c):
        n.node.start()
    a.publish("cam", conn_id=1)
    assert _result(b.node.route("live", "cam")) == ["rtmp://a.test:1935/live"]
    a.node._loop.stop()  # node A is lost
    clock.advance(10.1)
    assert store.live(KEYS.origin("live", "cam")) is None
    assert _result(b.node.route("live", "cam")) == []
    c.publish("cam", conn_id=5)
    assert _result(b.node.route("live", "cam")) == ["rtmp://c.test:1935/live"]


class _Upstream:
    """A pull's upstream as the node sees it: its state, and whether it was nudged."""

    def __init__(self, state: str, target: str | None = None) -> None:
        self.state = state
        self.target = target
        self.nudged = 0

    def retry_now(self) -> bool:
        self.nudged += 1
        self.state = "connecting"
        return True


def test_a_waiting_pull_retries_as_soon_as_its_stream_has_an_origin_again() -> None:
    """After A is lost, B's pull of cam waits out its backoff; the first tick after the
    publisher is back on C makes it retry at once; a pull whose origin did not move
    (it last tried A, still the holder), one with no origin, or one already connected
    is left alone."""
    from types import SimpleNamespace

    clock = Clock()
    store = FakeStore(clock)
    a, b, c = (make_node(store, clock, n) for n in "abc")
    for n in (a, b, c):
        n.node.start()
    a.publish("cam", conn_id=1)
    a_url = "rtmp://a.test:1935/live"
    cam, other, up = _Upstream("waiting", a_url), _Upstream("waiting"), _Upstream("connected")
    b.server.pulls = SimpleNamespace(  # type: ignore[attr-defined]
        pulls={
            ("live", "cam"): SimpleNamespace(upstream=cam),
            ("live", "none"): SimpleNamespace(upstream=other),
            ("live", "up"): SimpleNamespace(upstream=up),
        }
    )
    clock.advance(b.node.settings.refresh_seconds)
    assert cam.nudged == 0  # A still holds cam: its backoff stands
    a.node._loop.stop()  # node A is lost
    for _ in range(3):
        clock.advance(b.node.settings.refresh_seconds)
    assert cam.nudged == 0  # no origin anywhere now
    c.publish("cam", conn_id=5)
    clock.advance(b.node.settings.refresh_seconds)
    assert (cam.nudged, other.nudged, up.nudged) == (1, 0, 0)


def test_stop_releases_origins_and_the_lease() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.node.start()
    a.publish("cam", conn_id=1)
    assert store.live(KEYS.streams("a")) is not None
    _result(a.node.stop())
    assert store.live(KEYS.origin("live", "cam")) is None
    assert store.live(KEYS.node("a")) is None
    assert store.live(KEYS.streams("a")) is None


def test_cluster_view_counts_viewers_across_nodes_without_the_edges_pulls() -> None:
    """A holds cam with 3 viewers (one of them B's pull); B pulls it for 2 viewers."""
    clock = Clock()
    store = FakeStore(clock)
    a, b = make_node(store, clock, "a"), make_node(store, clock, "b")
    a.node.start()
    b.node.start()
    a.publish("cam", conn_id=1)
    a.node.local_streams = lambda: {  # type: ignore[method-assign]
        "node": "a",
        "streams": [
            {"app": "live", "name": "cam", "published": True, "origin": True, "viewers": 3}
        ],
    }
    b.node.local_streams = lambda: {  # type: ignore[method-assign]
        "node": "b",
        "streams": [
            {"app": "live", "name": "cam", "published": True, "origin": False, "viewers": 2}
        ],
    }
    clock.advance(10 / 3)
    clock.advance(10 / 3)
    snapshot = b.node.snapshot()
    assert snapshot["nodes"] == ["a", "b"]
    assert snapshot["streams"] == [
        {"app": "live", "name": "cam", "origin": "a", "viewers": 4, "nodes": {"a": 3, "b": 2}}
    ]


def test_local_streams_reports_viewers_and_origin() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.publish("cam", conn_id=1)
    a.registry.get_or_create("idle")
    entry = a.node.local_streams()
    assert entry["streams"] == [
        {"app": "live", "name": "cam", "published": True, "origin": True, "viewers": 0},
        {"app": "live", "name": "idle", "published": False, "origin": False, "viewers": 0},
    ]


def test_cluster_streams_without_an_origin_sums_viewers() -> None:
    entries = [
        {"node": "a", "streams": [{"app": "l", "name": "x", "published": False, "viewers": 1}]},
        {"node": "b", "streams": [{"app": "l", "name": "x", "published": False, "viewers": 2}]},
    ]
    assert cluster_streams(entries)[0]["viewers"] == 3


def test_a_publish_ending_while_its_claim_is_in_flight_gives_the_key_back() -> None:
    """The claim's reply comes after the unpublish: the key is released, not kept."""
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    replies: list[Deferred[bool]] = []
    claim = a.handle.claim

    def slow_claim(key: str, value: str, ttl: float) -> Deferred[bool]:
        reply: Deferred[bool] = Deferred()
        replies.append(reply)
        return reply

    a.handle.claim = slow_claim  # type: ignore[method-assign]
    a.publish("cam", conn_id=7)
    a.unpublish(7)
    _result(claim(KEYS.origin("live", "cam"), "a", 10))  # what the server did meanwhile
    replies[0].callback(True)
    assert a.node.origins == {}
    assert store.live(KEYS.origin("live", "cam")) is None
    assert a.server.kicked == []
