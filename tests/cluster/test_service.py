"""ClusterService on a real factory (fake store, task.Clock): wiring, API, refusal, chat."""

from __future__ import annotations

import pytest
from twisted.internet import task

from streamserver.cluster.fake import FakeStore
from streamserver.cluster.service import ClusterService, advertise_url, default_node_id
from streamserver.cluster.store import Keys
from streamserver.config import ServerConfig
from streamserver.errors import UsageError
from streamserver.factory import RTMPServerFactory
from tests.http.support import SiteClient

KEYS = Keys()


def _factory(clock: task.Clock, node_id: str) -> RTMPServerFactory:
    config = ServerConfig(
        cluster="redis://127.0.0.1:1/0",
        cluster_node_id=node_id,
        cluster_advertise=f"rtmp://{node_id}.test:1935",
    )
    return RTMPServerFactory(config, reactor=clock)


def test_advertise_url_from_the_rtmp_listener() -> None:
    assert advertise_url("tcp:1936:interface=10.0.0.2") == "rtmp://10.0.0.2:1936"
    assert advertise_url(r"tcp6:1935:interface=\:\:1") == "rtmp://[::1]:1935"
    assert advertise_url("tcp:1935").startswith("rtmp://")
    with pytest.raises(UsageError):
        advertise_url("tcp:0:interface=127.0.0.1")
    with pytest.raises(UsageError):
        advertise_url("unix:/tmp/s")
    assert default_node_id().rsplit("-", 1)[1].isdigit()


def test_config_checks_the_cluster_options() -> None:
    with pytest.raises(ValueError, match="cluster"):
        ServerConfig(cluster="http://x")
    with pytest.raises(ValueError, match="cluster_node_id"):
        ServerConfig(cluster_node_id="a b")
    with pytest.raises(ValueError, match="cluster_advertise"):
        ServerConfig(cluster_advertise="rtmp://h:1/app")
    with pytest.raises(ValueError, match="cluster_lease_seconds"):
        ServerConfig(cluster_lease_seconds=1)


def test_service_wires_the_factory_and_the_api_shows_the_cluster() -> None:
    clock = task.Clock()
    store = FakeStore(clock)
    a = _factory(clock, "a")
    b = _factory(clock, "b")
    service_a = ClusterService(a, ["tcp:1935"], store=store.handle())
    service_b = ClusterService(b, ["tcp:1935"], store=store.handle())
    assert a.chat_bridge is service_a.chat and a.cluster is service_a.node
    assert service_a.node in a.events.observers
    service_a.startService()
    service_b.startService()
    a.registry("live").get_or_create("cam")
    clock.advance(10 / 3)
    clock.advance(10 / 3)
    body = SiteClient(b, clock).get("/api/streams").json()
    assert body["streams"] == []
    cluster = body["cluster"]
    assert cluster["node"] == "b"
    assert cluster["nodes"] == ["a", "b"]
    assert [(s["app"], s["name"], s["nodes"]) for s in cluster["streams"]] == [
        ("live", "cam", {"a": 0})
    ]
    service_a.stopService()
    assert store.live(KEYS.node("a")) is None
    assert (
        "cluster"
        not in SiteClient(RTMPServerFactory(reactor=clock), clock).get("/api/streams").json()
    )


def test_chat_goes_between_two_factories_rooms() -> None:
    clock = task.Clock()
    store = FakeStore(clock)
    a, b = _factory(clock, "a"), _factory(clock, "b")
    ClusterService(a, ["tcp:1935"], store=store.handle())
    ClusterService(b, ["tcp:1935"], store=store.handle())
    room_a = a.registry("live").get_or_create("cam")
    room_b = b.registry("live").get_or_create("cam")
    room_b.post_chat("bob", "hello a", 5)
    assert [(m.id, m.text) for m in room_a.chat.history] == [(1, "hello a")]
    assert [(m.id, m.text) for m in room_b.chat.history] == [(1, "hello a")]
