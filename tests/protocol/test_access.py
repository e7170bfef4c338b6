"""Authorization at the protocol: refusals on the wire, and asynchronous decisions.

While a publish waits for its authorizer, its media is not relayed and it has
not started; a connection that closes meanwhile leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from streamserver import tokens
from streamserver.auth import AccessConfig, AccessRequest, AllOf, IAuthorizer
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media

REMOTE = IPv4Address("TCP", "203.0.113.20", 40000)


def _factory(**access: Any) -> RTMPServerFactory:
    return RTMPServerFactory(ServerConfig(access=AccessConfig(**access)), reactor=task.Clock())


def _connected(factory: RTMPServerFactory, peer: IPv4Address | None = None) -> tuple[FakePeer, int]:
    client = FakePeer(factory, peer=peer)
    client.connect("live")
    return client, client.create_stream()


def _status_info(client: FakePeer) -> list[dict[str, Any]]:
    return [
        c.args[0]
        for c in client.commands(new=False)
        if c.name == "onStatus" and c.args and isinstance(c.args[0], dict)
    ]


def test_remote_publisher_is_refused_by_default_and_loopback_allowed() -> None:
    """Default: NetStream.Publish.Unauthorized from elsewhere, Publish.Start from loopback."""
    factory = _factory()
    remote, sid = _connected(factory, REMOTE)
    remote.publish("cam", sid)
    info = _status_info(remote)[-1]
    assert info["code"] == "NetStream.Publish.Unauthorized"
    assert info["level"] == "error"
    assert "203.0.113.20" in info["description"]
    assert factory.find_stream("live", "cam") is None
    assert not remote.transport.disconnecting  # a refusal, not a disconnect

    local, sid = _connected(factory)
    local.publish("cam", sid)
    assert "NetStream.Publish.Start" in local.statuses(new=False)


def test_remote_viewer_may_play_by_default() -> None:
    """Playing is allowed from anywhere unless a play authorizer is configured."""
    factory = _factory()
    viewer, sid = _connected(factory, REMOTE)
    viewer.play("cam", sid)
    assert "NetStream.Play.Start" in viewer.statuses(new=False)


def test_the_refusal_is_logged() -> None:
    """Each refusal is logged with the peer, the code and the reason."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        remote, sid = _connected(_factory(), REMOTE)
        remote.publish("cam", sid)
    finally:
        globalLogPublisher.removeObserver(events.append)
    refusals = [e for e in events if e.get("code") == "NetStream.Publish.Unauthorized"]
    assert refusals and refusals[0]["peer"].startswith("203.0.113.20")
    assert "not allowed" in refusals[0]["reason"]


def test_publish_key_in_the_stream_name(tmp_path: Any) -> None:
    """OBS's stream key: rtmp://host/live/cam?key=SECRET publishes from anywhere."""
    keys = tmp_path / "keys"
    keys.write_text("cam s3cret\n")
    factory = _factory(publish_keys_file=str(keys))
    wrong, sid = _connected(factory, REMOTE)
    wrong.publish("cam?key=nope", sid)
    assert _status_info(wrong)[-1]["code"] == "NetStream.Publish.Unauthorized"
    assert _status_info(wrong)[-1]["description"] == "wrong stream key"
    right, sid = _connected(factory, REMOTE)
    right.publish("cam?key=s3cret", sid)
    assert "NetStream.Publish.Start" in right.statuses(new=False)
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is right.protocol


def test_play_token_refusal_uses_the_play_code() -> None:
    """With --play-token-secret, a play without a valid token gets NetStream.Play.Unauthorized."""
    factory = _factory(play_token_secret="p")
    viewer, sid = _connected(factory, REMOTE)
    viewer.play("cam", sid)
    info = _status_info(viewer)[-1]
    assert info["code"] == "NetStream.Play.Unauthorized"
    assert viewer.protocol.play_stream is None
    expires = int(factory.seconds()) + 60
    viewer.play(f"cam?{tokens.signed_query('p', 'play', 'live', 'cam', expires)}", sid)
    assert _status_info(viewer)[-1]["code"] == "NetStream.Play.Start"


@implementer(IAuthorizer)
class Pending:
    """An authorizer whose answers the test gives by hand."""

    name = "pending"

    def __init__(self) -> None:
        self.asked: list[tuple[AccessRequest, defer.Deferred[bool]]] = []
        self.cancelled = 0

    def _defer(self, request: AccessRequest) -> defer.Deferred[bool]:
        def cancel(_: defer.Deferred[bool]) -> None:
            self.cancelled += 1

        deferred: defer.Deferred[bool] = defer.Deferred(cancel)
        self.asked.append((request, deferred))
        return deferred

    def authorize_publish(self, request: AccessRequest) -> defer.Deferred[bool]:
        return self._defer(request)

    def authorize_play(self, request: AccessRequest) -> defer.Deferred[bool]:
        return self._defer(request)


def _async_setup() -> tuple[RTMPServerFactory, Pending, FakePeer, int, FakePeer]:
    factory = _factory()
    pending = Pending()
    factory.authorizer = AllOf(pending)
    viewer, vsid = _connected(factory)
    viewer.play("cam", vsid)
    pending.asked.pop()[1].callback(True)  # let the viewer in
    publisher, sid = _connected(factory)
    return factory, pending, publisher, sid, viewer


def test_media_is_not_relayed_while_the_publish_is_pending() -> None:
    """Until the authorizer answers: no Publish.Start, no publisher, no relayed media."""
    factory, pending, publisher, sid, viewer = _async_setup()
    publisher.publish("cam", sid)
    assert len(pending.asked) == 1
    request = pending.asked[0][0]
    assert (request.action, request.app, request.name, request.host) == (
        "publish",
        "live",
        "cam",
        "127.0.0.1",
    )
    for message in media.headers(sid) + media.gop_frames(sid, 0, 10):
        publisher.send(message)
    assert "NetStream.Publish.Start" not in publisher.statuses(new=False)
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is None and stream.frames_in == 0
    assert viewer.media() == []
    # a second publish on the same message stream while pending is refused
    publisher.publish("cam", sid)
    assert _status_info(publisher)[-1]["code"] == "NetStream.Publish.BadName"

    pending.asked[0][1].callback(True)
    assert "NetStream.Publish.Start" in publisher.statuses(new=False)
    assert stream.publisher is publisher.protocol
    sent = media.headers(sid) + media.gop_frames(sid, 1000, 4)
    for message in sent:
        publisher.send(message)
    assert len(viewer.media()) == len(sent)


def test_an_asynchronous_refusal_is_answered_when_it_comes() -> None:
    """A refusal that arrives later is sent as NetStream.Publish.Unauthorized then."""
    _, pending, publisher, sid, _ = _async_setup()
    publisher.publish("cam", sid)
    assert _status_info(publisher) == []
    pending.asked[0][1].callback(False)
    info = _status_info(publisher)[-1]
    assert info["code"] == "NetStream.Publish.Unauthorized"
    assert info["description"] == "refused by pending"
    assert not publisher.protocol.publish_pending
    # it may try again
    publisher.publish("cam", sid)
    pending.asked[1][1].callback(True)
    assert "NetStream.Publish.Start" in publisher.statuses(new=False)


def test_a_connection_closed_while_pending_leaves_nothing() -> None:
    """Closing during authorization cancels it; a late answer starts nothing."""
    factory, pending, publisher, sid, viewer = _async_setup()
    publisher.publish("cam", sid)
    deferred = pending.asked[0][1]
    publisher.transport.loseConnection()
    assert pending.cancelled == 1
    assert publisher.protocol.publish_pending == {}
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is None  # the viewer keeps the name
    viewer.transport.loseConnection()
    assert factory.streams() == [] and factory.registries == {}
    assert deferred.called  # cancelled: a late answer has nowhere to go
    assert factory.connections == {}


def test_delete_stream_while_pending_cancels_the_publish() -> None:
    """deleteStream during authorization cancels it; the connection stays usable."""
    _, pending, publisher, sid, _ = _async_setup()
    publisher.publish("cam", sid)
    publisher.call("deleteStream", None, float(sid))
    assert pending.cancelled == 1 and publisher.protocol.publish_pending == {}
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    pending.asked[-1][1].callback(True)
    assert "NetStream.Publish.Start" in publisher.statuses(new=False)


def test_a_pending_play_is_replaced_by_the_next_play() -> None:
    """A second play cancels the pending one; only the last one starts."""
    factory = _factory()
    pending = Pending()
    factory.authorizer = AllOf(pending)
    viewer, sid = _connected(factory)
    viewer.play("one", sid)
    viewer.play("two", sid)
    assert pending.cancelled == 1
    pending.asked[1][1].callback(True)
    assert viewer.protocol.play_stream.name == "two"
    assert factory.find_stream("live", "one") is None
    viewer.transport.loseConnection()
    assert factory.registries == {}


def test_join_chat_is_authorized_like_a_play() -> None:
    """With --play-token-secret, joinChat needs the play token too (Chat.Unauthorized)."""
    factory = _factory(play_token_secret="p")
    client, sid = _connected(factory, REMOTE)
    txn = client.call("joinChat", None, "cam", stream_id=sid)
    reply = client.result_of(txn)
    assert reply.name == "_error"
    assert reply.args[0]["code"] == "Chat.Unauthorized"
    stream = factory.find_stream("live", "cam")
    assert stream is None or not stream.chat.participants
    expires = int(factory.seconds()) + 60
    query = tokens.signed_query("p", "play", "live", "cam", expires)
    txn = client.call("joinChat", None, f"cam?{query}", stream_id=sid)
    reply = client.result_of(txn)
    assert reply.name == "_result"
    assert reply.args[0]["code"] == "Chat.Joined"
