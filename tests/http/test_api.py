"""The JSON API: every endpoint's shape and numbers, its errors, and the token's actions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import task

from streamserver import __version__
from streamserver.codec.messages import Message, MessageType
from streamserver.config import ServerConfig
from streamserver.factory import RTMPServerFactory
from streamserver.http.api import MAX_BODY_BYTES, TOKEN_FAILURE_WINDOW, TOKEN_FAILURES
from streamserver.policy import DropReason
from streamserver.testing import FakePeer
from tests.http.chat_client import ChatClient
from tests.http.conftest import Scene, publish
from tests.http.support import Response, SiteClient
from tests.protocol import media

TOKEN = "s3cret-token"

_REASONS = [str(reason) for reason in DropReason]


def _error(response: Response, status: int) -> str:
    """The message of a JSON error answer with *status*."""
    assert response.status == status, (response.status, response.body)
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return str(body["error"])


def _session(factory: RTMPServerFactory, protocol: str) -> Any:
    """The one connection of the factory with wire *protocol* that plays."""
    (found,) = [
        c
        for c in factory.connections.values()
        if c.stats().protocol == protocol and c.stats().viewer is not None
    ]
    return found


def _writable(factory: RTMPServerFactory) -> None:
    factory.config.api_token = TOKEN


# --- reading -------------------------------------------------------------------------


def test_streams_describes_each_stream(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene, clock: task.Clock
) -> None:
    """/api/streams: publisher, media info, bit rate, viewers per protocol, bytes, drops, chat."""
    scene.publisher.call("sendChatMessage", None, "hello", stream_id=scene.sid)
    response = client.get("/api/streams")
    assert response.status == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"
    (entry,) = response.json()["streams"]
    stream = factory.find_stream("live", "cam")
    assert stream is not None
    viewers = stream.subscribers
    http = _session(factory, "http-flv").viewer
    second_gop = sum(len(m.payload) for m in media.gop_frames(scene.sid, 2000, 60))
    assert entry == {
        "app": "live",
        "name": "cam",
        "title": None,
        "publisher": {
            "id": scene.publisher.protocol.conn_id,
            "address": scene.publisher.protocol.peer,
            "uptime": 2.0,
        },
        "video": {
            "codec": "h264",
            "profile": "High",
            "level": "3.1",
            "width": 320,
            "height": 240,
            "fps": 30.0,
        },
        "audio": {"codec": "aac", "profile": "LC", "sample_rate": 44100, "channels": 2},
        "bitrate_in": second_gop * 8,
        "bytes_in": stream.bytes_in,
        "bytes_out": sum(viewer.bytes_sent for viewer in viewers),
        "viewers": {"total": 3, "rtmp": 1, "http-flv": 1, "ws-flv": 1},
        "dropped": {reason: http.dropped[reason] for reason in _REASONS},
        "chat": {"participants": 2, "messages": 1, "history": 1},
        "hls": None,
        "relays": None,
        "recording": None,
    }
    assert entry["dropped"]["inter"] > 0
    assert entry["bytes_out"] > entry["bytes_in"] > 0


def test_a_stream_lists_its_viewers(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """/api/streams/APP/NAME: the stream's entry and each viewer's id, queue, lag, drops, bytes."""
    detail = client.get("/api/streams/live/cam").json()
    listed = client.get("/api/streams").json()["streams"][0]
    assert {k: v for k, v in detail.items() if k != "viewer_list"} == listed
    by_protocol = {v["protocol"]: v for v in detail["viewer_list"]}
    assert [v["id"] for v in detail["viewer_list"]] == sorted(v["id"] for v in by_protocol.values())
    assert set(by_protocol) == {"rtmp", "http-flv", "ws-flv"}
    rtmp = by_protocol["rtmp"]
    assert rtmp["id"] == scene.rtmp.protocol.conn_id
    assert rtmp["address"] == scene.rtmp.protocol.peer
    assert rtmp["bytes_sent"] == scene.rtmp.protocol.viewer.bytes_sent > 0
    assert rtmp["dropped"] == dict.fromkeys(_REASONS, 0)
    assert (rtmp["state"], rtmp["queued"], rtmp["lag_ms"]) == ("ok", 0, 0)
    session = _session(factory, "http-flv")
    slow = by_protocol["http-flv"]
    assert slow["id"] == session.conn_id
    assert slow["address"] == session.peer
    assert slow["queued"] == scene.http.queued > 3000
    assert slow["dropped"] == {r: session.viewer.dropped[r] for r in _REASONS}
    assert slow["dropped"]["inter"] > 0
    assert slow["lag_ms"] > 0
    assert slow["state"] == "congested"
    assert slow["frames_sent"] == session.viewer.frames_sent
    ws = by_protocol["ws-flv"]
    assert ws["bytes_sent"] == _session(factory, "ws-flv").viewer.bytes_sent > 0
    assert set(ws) == {
        "id",
        "protocol",
        "address",
        "state",
        "queued",
        "kernel_queued",
        "peak_queued",
        "lag_ms",
        "bytes_sent",
        "frames_sent",
        "dropped",
        "catch_ups",
    }


def test_the_server_s_numbers(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene, clock: task.Clock
) -> None:
    """/api/server: version, uptime, connections by protocol, bytes held, disconnects, refusals."""
    body = client.get("/api/server").json()
    assert body == {
        "version": __version__,
        "uptime": 2.0,
        "connections": {"total": 4, "rtmp": 2, "http-flv": 1, "ws-flv": 1},
        "streams": 1,
        "published": 1,
        "viewers": 3,
        "bytes_queued": scene.http.queued,
        "hls_bytes_held": 0,
        "recording": None,
        "disconnects": {"max-queue": 0, "stalled": 0},
        "refusals": {},
    }
    assert body["bytes_queued"] > 3000
    # a peer that never handshakes is refused; the HTTP viewer that reads nothing stalls
    FakePeer(factory, handshake=False)
    clock.advance(factory.config.handshake_timeout + 1)
    body = client.get("/api/server").json()
    assert body["refusals"] == dict(factory.refusals) and sum(body["refusals"].values()) == 1
    assert body["disconnects"] == {"max-queue": 0, "stalled": 1}
    assert body["connections"] == {"total": 3, "rtmp": 2, "http-flv": 0, "ws-flv": 1}
    assert (body["viewers"], body["bytes_queued"]) == (2, 0)
    assert body["uptime"] == clock.seconds()


def test_disconnects_are_counted_by_reason(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """A viewer the policy disconnects shows in /api/server; its drops stay with the stream."""
    dropped = dict(_session(factory, "http-flv").viewer.dropped)
    queued = scene.http.queued
    factory.set_policy(drop_high=queued + 5, max_queue=queued + 10)
    # a header is never dropped: past the hard limit its viewer goes
    scene.publisher.send(Message(MessageType.VIDEO, scene.sid, 4000, media.AVC_SEQUENCE_HEADER))
    server = client.get("/api/server").json()
    assert server["disconnects"]["max-queue"] == 1
    assert server["connections"]["http-flv"] == 0
    (entry,) = client.get("/api/streams").json()["streams"]
    assert entry["viewers"] == {"total": 2, "rtmp": 1, "http-flv": 0, "ws-flv": 1}
    assert entry["dropped"]["inter"] >= dropped["inter"] > 0


def test_app_names_may_have_several_segments(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """APP is every segment but the last: /api/streams/a/b/cam is app a/b, name cam."""
    publish(factory, "a/b", "cam")
    entry = client.get("/api/streams/a/b/cam").json()
    assert (entry["app"], entry["name"], entry["viewer_list"]) == ("a/b", "cam", [])
    assert client.get("/api/streams/a/b/cam/").status == 200  # a trailing slash is ignored
    assert "no stream a/cam" in _error(client.get("/api/streams/a/cam"), 404)


def test_an_unpublished_stream_is_listed_without_publisher(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """A stream with a waiting viewer and no publisher: no publisher, no media, no rate yet."""
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("later", viewer.create_stream())
    (entry,) = client.get("/api/streams").json()["streams"]
    assert entry["publisher"] is None
    assert (entry["video"], entry["audio"], entry["bitrate_in"]) == (None, None, None)
    assert entry["viewers"]["rtmp"] == 1


def test_no_streams(client: SiteClient) -> None:
    """An idle server lists no streams; /api says where things are."""
    assert client.get("/api/streams").json() == {"streams": []}
    assert client.get("/api").json() == {
        "streams": "/api/streams",
        "stream": "/api/streams/APP/NAME",
        "server": "/api/server",
        "recordings": "/api/recordings",
        "writable": False,
    }
    assert client.get("/api/").json()["server"] == "/api/server"


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing",
        "/api/streams/live/nope",
        "/api/streams/cam",
        "/api/server/more",
        "/api/streams/live/%FF",
        "/api/nothing/live/cam",
    ],
)
def test_unknown_paths_are_json_404s(client: SiteClient, scene: Scene, path: str) -> None:
    """Paths that name nothing get a JSON 404 with a message."""
    response = client.get(path)
    _error(response, 404)
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/streams"),
        ("DELETE", "/api/server"),
        ("PUT", "/api/streams/live/cam"),
        ("POST", "/api/streams/live/cam"),
        ("POST", "/api"),
    ],
)
def test_wrong_methods_are_405s(client: SiteClient, scene: Scene, method: str, path: str) -> None:
    """A read path answers another method with 405 and the methods it allows."""
    response = client.request(method, path)
    _error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"


def test_read_only_without_a_token(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """Without --api-token the write paths do not exist: 404, and nothing happens."""
    publisher_id = scene.publisher.protocol.conn_id
    viewer_id = scene.rtmp.protocol.conn_id
    for path in (
        "/api/streams/live/cam/kick",
        f"/api/streams/live/cam/viewers/{viewer_id}/kick",
        "/api/streams/live/cam/chat/mute",
        "/api/streams/live/cam/chat/clear",
    ):
        _error(client.post(path, {"nick": "fan"}, token=TOKEN), 404)
    assert {publisher_id, viewer_id} <= set(factory.connections)
    stream = factory.find_stream("live", "cam")
    assert stream is not None and not stream.chat.muted


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="streamserver"'),
        ({"Authorization": "Bearer wrong"}, 'Bearer realm="streamserver", error="invalid_token"'),
        ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="streamserver", error="invalid_token"'),
        (
            {"Authorization": f"Bearer {TOKEN}x"},
            'Bearer realm="streamserver", error="invalid_token"',
        ),
    ],
)
def test_the_write_paths_need_the_token(
    factory: RTMPServerFactory,
    client: SiteClient,
    scene: Scene,
    headers: dict[str, str],
    challenge: str,
) -> None:
    """With --api-token, an action without the right bearer token is a 401 and does nothing."""
    _writable(factory)
    response = client.request("POST", "/api/streams/live/cam/kick", headers=headers)
    _error(response, 401)
    assert response.headers["www-authenticate"] == challenge
    assert scene.publisher.protocol.conn_id in factory.connections


def test_the_token_is_checked_before_the_stream(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """Without the token, an action on a stream that does not exist is a 401 too."""
    _writable(factory)
    _error(client.post("/api/streams/live/nope/kick"), 401)
    _error(client.post("/api/streams/live/nope/kick", token=TOKEN), 404)


def test_wrong_tokens_are_rate_limited_per_address(
    factory: RTMPServerFactory, client: SiteClient, clock: task.Clock, scene: Scene
) -> None:
    """After TOKEN_FAILURES wrong tokens in the window every write is a 429, the right
    token too, until the oldest failure ages out; a missing token is not a guess."""
    _writable(factory)
    factory.config.publisher_idle_timeout = 0  # the publisher stays through the minute
    factory.config.ping_timeout = 0
    for _ in range(5):
        _error(client.post("/api/streams/live/cam/kick"), 401)  # no token: not counted
    for _ in range(TOKEN_FAILURES):
        clock.advance(1)
        _error(client.post("/api/streams/live/cam/kick", token="guess"), 401)
    refused = client.post("/api/streams/live/cam/kick", token=TOKEN)
    _error(refused, 429)
    assert refused.headers["retry-after"] == str(int(TOKEN_FAILURE_WINDOW) - TOKEN_FAILURES + 1)
    assert scene.publisher.protocol.conn_id in factory.connections
    assert factory.refusals["api-token"] == TOKEN_FAILURES
    clock.advance(TOKEN_FAILURE_WINDOW - TOKEN_FAILURES + 1)  # the first failure ages out
    assert client.post("/api/streams/live/cam/kick", token=TOKEN).status == 200
    assert scene.publisher.protocol.conn_id not in factory.connections


def test_get_on_a_write_path_is_a_405(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """With the token set, GET on an action path allows only POST."""
    _writable(factory)
    response = client.get("/api/streams/live/cam/chat/mute")
    _error(response, 405)
    assert response.headers["allow"] == "POST, OPTIONS"


# --- acting --------------------------------------------------------------------------


def test_kick_the_publisher(factory: RTMPServerFactory, client: SiteClient, scene: Scene) -> None:
    """POST .../kick disconnects the publisher: the stream ends, its HTTP viewers' responses too."""
    _writable(factory)
    publisher_id = scene.publisher.protocol.conn_id
    response = client.post("/api/streams/live/cam/kick", token=TOKEN)
    assert response.status == 200
    assert response.json() == {"stream": "live/cam", "kicked": publisher_id}
    assert scene.publisher.transport.aborted
    assert publisher_id not in factory.connections
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is None  # the RTMP viewer waits on
    assert scene.ws.value().endswith(b"\x88\x02\x03\xe8")  # WebSocket close 1000
    assert scene.http.value().endswith(b"\r\n0\r\n\r\n")  # the chunked body's end
    assert "NetStream.Play.UnpublishNotify" in scene.rtmp.statuses()
    # nobody publishes now: a conflict
    assert "nobody publishes" in _error(client.post("/api/streams/live/cam/kick", token=TOKEN), 409)


def test_kick_a_viewer(factory: RTMPServerFactory, client: SiteClient, scene: Scene) -> None:
    """POST .../viewers/ID/kick disconnects that viewer only; ids of others' viewers are 404s."""
    _writable(factory)
    ws = _session(factory, "ws-flv")
    response = client.post(f"/api/streams/live/cam/viewers/{ws.conn_id}/kick", token=TOKEN)
    assert response.json() == {"stream": "live/cam", "kicked": ws.conn_id}
    assert ws.conn_id not in factory.connections
    assert scene.ws.aborted
    viewers = client.get("/api/streams/live/cam").json()["viewer_list"]
    assert sorted(v["protocol"] for v in viewers) == ["http-flv", "rtmp"]
    # the publisher is no viewer; another stream's viewer is not this one's; nor is junk
    other = FakePeer(factory)
    other.connect("live")
    other.play("other", other.create_stream())
    for wrong in (scene.publisher.protocol.conn_id, other.protocol.conn_id, "x", "-1", 10**6):
        path = f"/api/streams/live/cam/viewers/{wrong}/kick"
        assert "has no viewer" in _error(client.post(path, token=TOKEN), 404)
    assert other.protocol.conn_id in factory.connections


def _chat(peer: FakePeer, sid: int, text: str) -> str:
    """Send a chat message; the reply's code or name."""
    reply = peer.result_of(peer.call("sendChatMessage", None, text, stream_id=sid))
    return str(reply.args[0]["code"]) if reply.name == "_error" else reply.name


def test_mute_and_unmute(factory: RTMPServerFactory, client: SiteClient, scene: Scene) -> None:
    """POST .../chat/mute silences a nick in that room; .../chat/unmute lets it speak again."""
    _writable(factory)
    base = "/api/streams/live/cam/chat"
    muted = client.post(f"{base}/mute", {"nick": " Host "}, token=TOKEN)
    assert muted.json() == {"stream": "live/cam", "nick": "Host", "muted": True, "changed": True}
    assert _chat(scene.publisher, scene.sid, "hello") == "Chat.Muted"
    again = client.post(f"{base}/mute", {"nick": "HOST"}, token=TOKEN).json()
    assert (again["muted"], again["changed"]) == (True, False)
    unmuted = client.post(f"{base}/unmute", {"nick": "host"}, token=TOKEN).json()
    assert (unmuted["muted"], unmuted["changed"]) == (False, True)
    assert _chat(scene.publisher, scene.sid, "hello") == "_result"


def test_clear_the_history(factory: RTMPServerFactory, client: SiteClient, scene: Scene) -> None:
    """POST .../chat/clear forgets the room's history and says how much."""
    _writable(factory)
    for text in ("one", "two", "three"):
        assert _chat(scene.publisher, scene.sid, text) == "_result"
    response = client.post("/api/streams/live/cam/chat/clear", token=TOKEN)
    assert response.json() == {"stream": "live/cam", "cleared": 3}
    chat = client.get("/api/streams/live/cam").json()["chat"]
    assert (chat["messages"], chat["history"]) == (3, 0)


def test_kick_a_nick_from_the_room_whatever_its_protocol(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """POST .../chat/kick {"nick"}: every participant with that nick (RTMP, WebSocket) goes."""
    _writable(factory)
    rtmp = FakePeer(factory)
    rtmp.connect("live", nick="Troll")
    sid = rtmp.create_stream()
    rtmp.result_of(rtmp.call("joinChat", None, "cam", stream_id=sid))
    web = ChatClient(client, "/live/cam/chat")
    web.join("troll")
    bystander = ChatClient(client, "/live/cam/chat")
    bystander.join("nice")
    web_id = next(
        c.conn_id for c in factory.connections.values() if getattr(c, "nick", "") == "troll"
    )
    response = client.post("/api/streams/live/cam/chat/kick", {"nick": "TROLL"}, token=TOKEN)
    assert response.json() == {
        "stream": "live/cam",
        "nick": "TROLL",
        "kicked": sorted([rtmp.protocol.conn_id, web_id]),
    }
    assert rtmp.transport.aborted and web.transport.aborted
    assert not bystander.gone and not scene.rtmp.transport.aborted
    again = client.post("/api/streams/live/cam/chat/kick", {"nick": "troll"}, token=TOKEN)
    assert again.json()["kicked"] == []
    _error(client.post("/api/streams/live/cam/chat/kick", {}, token=TOKEN), 400)
    _error(client.post("/api/streams/live/cam/chat/kick", {"nick": "x"}), 401)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"nick": 5}', 400),
        (b'{"nick": "\\u0001 "}', 400),
        (b"{}", 400),
        (b"[" * 3000 + b"]" * 3000, 413),
        (b"[" * 2000 + b"]" * 2000, 400),
        (json.dumps({"nick": "x" * MAX_BODY_BYTES}).encode(), 413),
    ],
)
def test_bad_bodies(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene, body: bytes, status: int
) -> None:
    """A mute needs a JSON object with a nick, of at most 4 KiB."""
    _writable(factory)
    response = client.request(
        "POST",
        "/api/streams/live/cam/chat/mute",
        headers={"Authorization": f"Bearer {TOKEN}"},
        body=body,
    )
    _error(response, status)
    stream = factory.find_stream("live", "cam")
    assert stream is not None and not stream.chat.muted


# --- headers -------------------------------------------------------------------------


def test_head_and_preflight(client: SiteClient, scene: Scene) -> None:
    """HEAD answers GET's headers without the body; OPTIONS is the CORS preflight."""
    head = client.request("HEAD", "/api/streams")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(client.get("/api/streams").body)
    preflight = client.request("OPTIONS", "/api/streams/live/cam/kick")
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]


@pytest.mark.parametrize(
    ("origin", "sent"), [("", None), ("https://player.example", "https://player.example")]
)
def test_the_cors_origin_is_configurable(clock: task.Clock, origin: str, sent: str | None) -> None:
    """--http-cors-origin sets Access-Control-Allow-Origin; empty sends none."""
    factory = RTMPServerFactory(ServerConfig(http_cors_origin=origin), reactor=clock)
    response = SiteClient(factory, clock).get("/api/server")
    assert response.status == 200
    assert response.headers.get("access-control-allow-origin") == sent


def test_a_stream_with_a_segmenter_reports_what_hls_holds(
    factory: RTMPServerFactory, client: SiteClient, scene: Scene
) -> None:
    """Once HLS runs for a stream, its entry says what the segmenter holds and how much."""
    stream = factory.find_stream("live", "cam")
    assert stream is not None
    entry = factory.hls.open(stream)
    for message in media.gop_frames(scene.sid, 4000, 60) + media.gop_frames(scene.sid, 6000, 60):
        scene.publisher.send(message)
    hls = client.get("/api/streams/live/cam").json()["hls"]
    assert hls["bytes_held"] == entry.segmenter.bytes_held > 0
    assert hls["segments"] >= 1 and hls["waiting_requests"] == 0 and hls["ts"] is False
    server = client.get("/api/server").json()
    assert server["hls_bytes_held"] == factory.hls.total_bytes_held() == hls["bytes_held"]
    from prometheus_client.parser import text_string_to_metric_families

    families = {
        f.name: f for f in text_string_to_metric_families(client.get("/metrics").body.decode())
    }
    (sample,) = families["streamserver_hls_bytes"].samples
    assert (sample.labels, sample.value) == ({"app": "live", "name": "cam"}, hls["bytes_held"])
