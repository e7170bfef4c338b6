"""/api and /metrics merged over every process of --workers N."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.http import build_site
from streamserver.workers.aggregate import (
    ProcessResource,
    Siblings,
    install_aggregation,
    merge_metrics,
    merge_server,
    merge_streams,
    rss_bytes,
)
from streamserver.workers.roles import ORIGIN, WORKER, Role
from tests.integration.support import get_reactor, wait_until, within


def _stream(viewers: int, publisher: Any = None, bytes_out: int = 0) -> dict[str, Any]:
    return {
        "app": "live",
        "name": "cam",
        "publisher": publisher,
        "viewers": {"total": viewers, "rtmp": viewers, "http-flv": 0},
        "bytes_out": bytes_out,
        "dropped": {"congestion": 1},
        "video": None,
    }


#: A worker's pulled copy: its publisher is the relay's pull.
PULLED = "relay rtmp://origin/live/cam"


def test_merge_streams_sums_over_workers_only() -> None:
    """One entry per stream: viewers, bytes out, drops summed over the workers (not the
    origin), the publisher from the worker where it publishes (not a pulled copy)."""
    publisher = {"id": 1, "address": "127.0.0.1:5000", "uptime": 3}
    merged = merge_streams(
        {
            ORIGIN: {"streams": [_stream(2, {"id": 7})]},
            "worker-0": {
                "streams": [_stream(3, {"id": 2, "address": "relay rtmp://origin/live/cam"}, 300)]
            },
            "worker-1": {"streams": [_stream(4, publisher, 400)]},
            "worker-2": None,
        }
    )
    [entry] = merged["streams"]
    assert entry["viewers"] == {"total": 7, "rtmp": 7, "http-flv": 0}
    assert entry["bytes_out"] == 700
    assert entry["dropped"] == {"congestion": 2}
    assert entry["publisher"] == publisher
    assert entry["publisher_worker"] == "1"
    assert entry["viewers_by_worker"] == {"0": 3, "1": 4}


def _server(viewers: int, connections: int) -> dict[str, Any]:
    return {
        "version": "1",
        "uptime": 5.0,
        "connections": {"total": connections, "rtmp": connections},
        "viewers": viewers,
        "bytes_queued": 10,
        "hls_bytes_held": 0,
        "disconnects": {"stalled": 1},
        "refusals": {},
        "streams": 1,
    }


def test_merge_server_rows_and_sums() -> None:
    """Sums over the workers, one row per process with its pid and memory; a sibling
    that did not answer is a row marked down."""
    servers = {ORIGIN: _server(2, 3), "worker-0": _server(5, 6), "worker-1": None}
    processes = {
        ORIGIN: {"index": -1, "pid": 10, "rss_bytes": 100, "uptime": 5},
        "worker-0": {"index": 0, "pid": 11, "rss_bytes": 200, "uptime": 5},
        "worker-1": None,
    }
    streams = {"worker-0": {"streams": [_stream(5, {"id": 1})]}}
    merged = merge_server(servers, processes, streams, "worker-0")
    assert merged["viewers"] == 5
    assert merged["connections"] == {"total": 6, "rtmp": 6}
    assert merged["disconnects"] == {"stalled": 1}
    assert (merged["streams"], merged["published"]) == (1, 1)
    assert merged["rss_bytes"] == 300
    rows = {row["name"]: row for row in merged["workers"]}
    assert rows["origin"]["pid"] == 10 and rows["origin"]["up"]
    assert rows["worker-0"]["viewers"] == 5 and rows["worker-0"]["rss_bytes"] == 200
    assert rows["worker-1"]["up"] is False
    assert merged["answered_by"] == "worker-0"


def test_merge_metrics_labels_every_sample() -> None:
    """Each process's samples carry its worker label; a silent one is up 0."""
    text = (
        "# HELP streamserver_streams Streams held.\n"
        "# TYPE streamserver_streams gauge\n"
        "streamserver_streams 2.0\n"
        "# HELP streamserver_chat_messages_total Chat messages.\n"
        "# TYPE streamserver_chat_messages_total counter\n"
        'streamserver_chat_messages_total{app="live",name="cam"} 3.0\n'
    )
    merged = merge_metrics({"origin": text, "0": text, "1": None}).decode()
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    streams = families["streamserver_streams"].samples
    assert sorted(s.labels["worker"] for s in streams) == ["0", "origin"]
    chat = families["streamserver_chat_messages"].samples
    assert {s.labels["worker"]: s.value for s in chat} == {"origin": 3.0, "0": 3.0}
    up = {s.labels["worker"]: s.value for s in families["streamserver_worker_up"].samples}
    assert up == {"origin": 1, "0": 1, "1": 0}


def test_rss_is_this_process() -> None:
    """The resident memory read is plausible for this Python process."""
    assert 10 * 1024 * 1024 < rss_bytes() < 8 * 1024**3


class _Child:
    """An in-process child: its factory and its private site on its Unix socket."""

    def __init__(self, role: Role, config: ServerConfig | None = None) -> None:
        reactor = get_reactor()
        self.role = role
        self.factory = RTMPServerFactory(config or ServerConfig(), reactor=reactor)
        site = build_site(self.factory)
        site.resource.putChild(b"_process", ProcessResource(role, self.factory))
        self.port = reactor.listenUNIX(str(role.http_path()), site)
        self.public = build_site(self.factory)
        install_aggregation(self.public, Siblings(reactor, role))


@pytest_twisted.ensureDeferred
async def test_siblings_answer_over_their_sockets(tmp_path: Path) -> None:
    """A worker's public /api/server and /metrics include every sibling that answers;
    one that is gone is reported down within the timeout."""
    reactor = get_reactor()
    origin = _Child(Role(ORIGIN, -1, tmp_path, 3))
    workers = [_Child(Role(WORKER, index, tmp_path, 3)) for index in range(2)]
    public = reactor.listenUNIX(str(tmp_path / "public.http.sock"), workers[0].public)
    # A client of the public site: the Siblings helper asking a "sibling" named public.
    client = Siblings(reactor, Role(WORKER, 0, tmp_path, 0))
    try:
        server = await within(client.fetch("public", "/api/server"), 10, "/api/server")
        assert server is not None
        body = json.loads(server)
        rows = {row["name"]: row for row in body["workers"]}
        assert [rows[name]["up"] for name in ("origin", "worker-0", "worker-1", "worker-2")] == [
            True, True, True, False,
        ]  # fmt: skip
        assert rows["worker-1"]["pid"] == os.getpid()
        assert rows["worker-1"]["rss_bytes"] > 0
        metrics = await within(client.fetch("public", "/metrics"), 10, "/metrics")
        assert metrics is not None
        assert b'process_resident_memory_bytes{worker="1"}' in metrics
        assert b'streamserver_worker_up{worker="2"} 0.0' in metrics
        streams = await within(client.fetch("public", "/api/streams"), 10, "/api/streams")
        assert streams is not None and json.loads(streams) == {"streams": []}
    finally:
        await public.stopListening()
        for child in (origin, *workers):
            await child.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_room_moderation_reaches_every_process(tmp_path: Path) -> None:
    """A mute through one worker's public API mutes the nick in the room's part at the
    origin and at every worker (each holds participants of the one room); a kick by
    connection id stays the answering worker's own."""
    from twisted.web.client import Agent, FileBodyProducer, readBody
    from twisted.web.http_headers import Headers

    reactor = get_reactor()
    config = ServerConfig(api_token="tok")
    children = [_Child(Role(ORIGIN, -1, tmp_path, 2), config)]
    children += [_Child(Role(WORKER, index, tmp_path, 2), config) for index in range(2)]
    for child in children:
        child.factory.open_stream("live", "cam", "NetStream.Play.Rejected")
    public = reactor.listenTCP(0, children[1].public, interface="127.0.0.1")
    agent = Agent(reactor)
    url = f"http://127.0.0.1:{public.getHost().port}/api/streams/live/cam/chat/mute"
    headers = Headers({b"Authorization": [b"Bearer tok"], b"Content-Type": [b"application/json"]})
    try:
        response = await within(
            agent.request(
                b"POST", url.encode(), headers, FileBodyProducer(io.BytesIO(b'{"nick": "bob"}'))
            ),
            10,
            "POST mute",
        )
        assert response.code == 200, await readBody(response)
        await readBody(response)

        def rooms_muted() -> list[bool]:
            rooms = [child.factory.chat_room("live/cam") for child in children]
            return [room is not None and room.is_muted("bob") for room in rooms]

        await wait_until(lambda: all(rooms_muted()), 10, "every process to mute bob",
                         describe=lambda: str(rooms_muted()))  # fmt: skip
    finally:
        await public.stopListening()
        for child in children:
            await child.port.stopListening()
