"""GET /metrics: the Prometheus exposition, parsed back, holds the server's numbers."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from streamserver import __version__
from streamserver.factory import RTMPServerFactory
from streamserver.policy import DropReason
from streamserver.testing import FakePeer
from tests.http.conftest import Scene, publish
from tests.http.support import SiteClient

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CAM = {"app": "live", "name": "cam"}


def scrape(client: SiteClient) -> Samples:
    """Every sample of ``GET /metrics``, by (sample name, labels)."""
    response = client.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert response.headers["cache-control"] == "no-cache"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    """The value of sample *metric* with exactly *labels*."""
    return samples[(metric, frozenset(labels.items()))]


def test_the_server_s_series(factory: RTMPServerFactory, client: SiteClient, scene: Scene) -> None:
    """Connections by protocol, streams, bytes held, the version; process metrics too."""
    samples = scrape(client)
    assert value(samples, "streamserver_info", version=__version__) == 1
    for protocol, count in {"rtmp": 2, "http-flv": 1, "ws-flv": 1}.items():
        assert value(samples, "streamserver_connections", protocol=protocol) == count
    assert value(samples, "streamserver_streams") == 1
    assert value(samples, "streamserver_queued_bytes") == scene.http.queued > 0
    assert value(samples, "streamserver_viewer_disconnects_total", reason="stalled") == 0
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert any(name.startswith("python_gc_") for name in names)


def test_the_series_of_a_stream(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """Per stream: viewers by protocol, bytes in and out, drops by reason, chat."""
    scene.publisher.call("sendChatMessage", None, "hi", stream_id=scene.sid)
    samples = scrape(client)
    stream = factory.find_stream("live", "cam")
    assert stream is not None
    assert value(samples, "streamserver_stream_published", **CAM) == 1
    for protocol in ("rtmp", "http-flv", "ws-flv"):
        assert value(samples, "streamserver_stream_viewers", protocol=protocol, **CAM) == 1
    assert value(samples, "streamserver_stream_received_bytes_total", **CAM) == stream.bytes_in
    assert value(samples, "streamserver_stream_sent_bytes_total", **CAM) == stream.bytes_out
    http = next(v for v in stream.subscribers if v.owner.protocol_name == "http-flv")
    for reason in DropReason:
        dropped = value(samples, "streamserver_stream_frames_dropped_total", reason=reason, **CAM)
        assert dropped == http.dropped[reason]
    assert value(samples, "streamserver_stream_frames_dropped_total", reason="inter", **CAM) > 0
    assert value(samples, "streamserver_chat_participants", **CAM) == 2
    assert value(samples, "streamserver_chat_messages_total", **CAM) == 1


def test_counters_follow_the_server(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene, clock: task.Clock
) -> None:
    """Read at each scrape: more bytes, a stalled viewer, a refusal; drops do not go down."""
    before = scrape(client)
    FakePeer(factory, handshake=False)
    clock.advance(factory.config.handshake_timeout + 1)  # the HTTP viewer stalls meanwhile
    scene.send_gop(4000)
    after = scrape(client)
    name = "streamserver_stream_received_bytes_total"
    assert value(after, name, **CAM) > value(before, name, **CAM)
    assert value(after, "streamserver_viewer_disconnects_total", reason="stalled") == 1
    assert (
        sum(v for (n, _), v in after.items() if n == "streamserver_connection_refusals_total") == 1
    )
    assert value(after, "streamserver_connections", protocol="http-flv") == 0
    assert value(after, "streamserver_stream_viewers", protocol="http-flv", **CAM) == 0
    dropped = "streamserver_stream_frames_dropped_total"
    assert value(after, dropped, reason="inter", **CAM) >= value(
        before, dropped, reason="inter", **CAM
    )
    assert value(after, "streamserver_queued_bytes") == 0


def test_labels_name_streams_never_viewers(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """No series is per viewer or connection: labels are app, name and bounded enumerations."""
    publish(factory, "live", "other")
    samples = scrape(client)
    ours = {labels for name, labels in samples if name.startswith("streamserver_")}
    label_names = {key for labels in ours for key, _ in labels}
    assert label_names <= {"app", "name", "protocol", "reason", "kind", "version"}
    addresses = {c.peer for c in factory.connections.values()}
    ids = {str(conn_id) for conn_id in factory.connections}
    values = {v for labels in ours for _, v in labels}
    assert not values & (addresses | ids)
    viewers = [labels for name, labels in samples if name == "streamserver_stream_viewers"]
    assert len(viewers) == 2 * 3  # two streams, three protocols


def test_each_site_has_its_own_registry(clock: task.Clock) -> None:
    """Two servers in one process: each site's metrics are its own server's, without clashes."""
    first = RTMPServerFactory(reactor=clock)
    second = RTMPServerFactory(reactor=clock)
    publish(first, "live", "a")
    publish(second, "live", "b")
    publish(second, "live", "c")
    one, two = scrape(SiteClient(first, clock)), scrape(SiteClient(second, clock))
    assert (value(one, "streamserver_streams"), value(two, "streamserver_streams")) == (1, 2)
    assert ("streamserver_stream_published", frozenset({("app", "live"), ("name", "b")})) in two
    assert not any(("name", "b") in labels for _, labels in one)


def test_no_other_path(client: SiteClient) -> None:
    """Only /metrics itself is the exposition."""
    assert client.get("/metrics/extra").status == 404
    assert client.get("/metrics/").status == 200


def test_docs_list_every_series(client: SiteClient, scene: Scene) -> None:
    """docs/http.md's table of series is what /metrics exports, with the same labels."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    rows = re.findall(r"^\| `(streamserver_\w+)` \| (\w+) \|([^|]*)\|", text, re.M)
    documented = {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}
    response = client.get("/metrics")
    exported = {}
    for family in text_string_to_metric_families(response.body.decode("utf-8")):
        if family.name.startswith("streamserver_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {key for sample in family.samples for key in sample.labels}
            exported[name] = (family.type, labels)
    # a counter with no sample yet (no refusal) still has its documented labels
    exported["streamserver_connection_refusals_total"] = ("counter", {"kind"})
    # and the HLS series have samples only while a segmenter runs
    exported["streamserver_hls_bytes"] = ("gauge", {"app", "name"})
    exported["streamserver_hls_waiting_requests"] = ("gauge", {"app", "name"})
    assert documented == exported
