"""The chat WebSocket (/APP/NAME/chat): the same room as RTMP chat, from JSON messages.

Driven in memory: the real site and its WebSocket upgrade on fake transports,
wsproto's client framing on the other side (:mod:`tests.http.chat_client`), RTMP
participants as :class:`~streamserver.testing.FakePeer`, time on the test's clock.
"""

from __future__ import annotations

import pytest
from twisted.internet import task

from streamserver.auth import AccessConfig
from streamserver.config import ServerConfig
from streamserver.factory import RTMPServerFactory
from streamserver.http import chat as ws_chat
from streamserver.irc import IrcFactory
from streamserver.testing import FakePeer, FakeTransport
from streamserver.tokens import signed_query
from tests.http.chat_client import ChatClient
from tests.http.conftest import publish
from tests.http.support import SiteClient


def _rtmp_chatter(factory: RTMPServerFactory, name: str = "cam", nick: str = "rita") -> FakePeer:
    """An RTMP connection in *name*'s room through ``joinChat`` (message stream 1)."""
    peer = FakePeer(factory)
    peer.connect("live", nick=nick)
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, name, stream_id=sid))
    assert reply.args[0]["code"] == "Chat.Joined", reply
    return peer


def _web_participants(factory: RTMPServerFactory) -> list[ws_chat.ChatSession]:
    stream = factory.find_stream("live", "cam")
    assert stream is not None
    return [p for p in stream.chat.participants if isinstance(p, ws_chat.ChatSession)]


def _rtmp_say(peer: FakePeer, text: str) -> str:
    reply = peer.result_of(peer.call("sendChatMessage", None, text, stream_id=1))
    return str(reply.args[0]["code"])


def test_join_answers_with_the_room_and_nick_then_the_history(
    factory: RTMPServerFactory, client: SiteClient, clock: task.Clock
) -> None:
    """``joined`` first, then the history oldest first, flagged; the connection is ``ws-chat``."""
    publish(factory)
    early = ChatClient(client, "/live/cam/chat")
    assert early.accepted
    assert early.join("ann") == [{"type": "joined", "room": "live/cam", "nick": "ann"}]
    clock.advance(1.5)
    early.say("one")
    early.say("two")
    late = ChatClient(client, "/live/cam/chat")
    got = late.join("  bob\n")
    assert got[0] == {"type": "joined", "room": "live/cam", "nick": "bob"}
    assert [(m["id"], m["nick"], m["text"], m.get("history")) for m in got[1:]] == [
        (1, "ann", "one", True),
        (2, "ann", "two", True),
    ]
    assert got[1]["time"] == 1500
    sessions = [c for c in factory.connections.values() if c.stats().protocol == "ws-chat"]
    assert len(sessions) == 2
    assert sessions[1].stats().role == "chat live/cam"


def test_a_nick_that_cleans_to_nothing_is_a_guest_with_the_connection_id(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    joined = chat.join("\x00 \t")[0]
    session = next(c for c in factory.connections.values() if c.stats().protocol == "ws-chat")
    assert joined["nick"] == f"guest-{session.conn_id}"
    other = ChatClient(client, "/live/cam/chat")
    assert other.join()[0]["nick"].startswith("guest-")
    assert other.join("again")[0]["code"] == "Chat.BadRequest"  # one join per WebSocket


def test_ids_and_order_are_the_rooms_whatever_the_sender_speaks(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """RTMP and WebSocket participants see the same messages, ids and order."""
    publish(factory)
    rtmp = _rtmp_chatter(factory)
    web = ChatClient(client, "/live/cam/chat")
    web.join("wendy")
    assert _rtmp_say(rtmp, "from rtmp") == "Chat.Sent"
    answers = web.say("from the web <b>", ref=7)
    assert answers[-1] == {"type": "sent", "id": 2, "ref": 7}
    assert _rtmp_say(rtmp, "rtmp again") == "Chat.Sent"
    seen_web = [(m["id"], m["nick"], m["text"]) for m in web.messages()]
    seen_rtmp = [(int(f["id"]), f["nick"], f["text"]) for _, f in rtmp.chat()]
    expected = [
        (1, "rita", "from rtmp"),
        (2, "wendy", "from the web <b>"),
        (3, "rita", "rtmp again"),
    ]
    assert seen_web == expected
    assert seen_rtmp == expected
    assert "history" not in web.messages()[0]


def test_rtmp_websocket_and_irc_participants_share_one_room(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """One room, three protocols: every message reaches the other two with the room's ids
    in one order; an IRC sender is not echoed, as IRC servers do not."""
    publish(factory)
    rtmp = _rtmp_chatter(factory)
    web = ChatClient(client, "/live/cam/chat")
    web.join("wendy")
    gateway = IrcFactory(factory)
    gateway.startFactory()
    irc = FakeTransport(auto_drain=True)
    irc.protocol = gateway.buildProtocol(irc.getPeer())
    irc.protocol.makeConnection(irc)
    irc.protocol.dataReceived(b"NICK ivy\r\nUSER ivy 0 * :Ivy\r\nJOIN #live/cam\r\n")
    assert _rtmp_say(rtmp, "from rtmp") == "Chat.Sent"
    assert web.say("from the web")[-1]["type"] == "sent"
    irc.protocol.dataReceived(b"PRIVMSG #live/cam :from irc\r\n")
    expected = [(1, "rita", "from rtmp"), (2, "wendy", "from the web"), (3, "ivy", "from irc")]
    assert [(m["id"], m["nick"], m["text"]) for m in web.messages()] == expected
    assert [(int(f["id"]), f["nick"], f["text"]) for _, f in rtmp.chat()] == expected
    lines = [
        line.partition(b" :")[0].split(b"!")[0] + b" " + line.rpartition(b" :")[2]
        for line in irc.value().split(b"\r\n")
        if b" PRIVMSG #live/cam " in line
    ]
    assert lines == [b":rita from rtmp", b":wendy from the web"]


def test_a_broadcast_is_encoded_once_for_every_websocket(
    factory: RTMPServerFactory, client: SiteClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chat WebSocket shares one fanout key: one encoding, the same bytes to each."""
    publish(factory)
    clients = [ChatClient(client, "/live/cam/chat") for _ in range(3)]
    for index, each in enumerate(clients):
        each.join(f"n{index}")
    encoded: list[bytes] = []
    original = ws_chat.ChatSession.encode_chat

    def counting(self: ws_chat.ChatSession, message: object, timestamp: int) -> bytes:
        data = original(self, message, timestamp)  # type: ignore[arg-type]
        encoded.append(data)
        return data

    monkeypatch.setattr(ws_chat.ChatSession, "encode_chat", counting)
    clients[0].say("hello")
    assert len(encoded) == 1
    for each in clients:
        assert each.transport.value().endswith(encoded[0]) or encoded[0] in each.transport.value()
        assert [m["text"] for m in each.messages()] == ["hello"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "Chat.Empty"),
        ("\x00\x01  ", "Chat.Empty"),
        (42, "Chat.Empty"),
        ("x" * 501, "Chat.TooLong"),
    ],
)
def test_each_refusal_is_an_error_with_the_rtmp_code_and_the_ref(
    factory: RTMPServerFactory, client: SiteClient, text: object, code: str
) -> None:
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    chat.join("ann")
    [answer] = chat.say(text, ref="r1")
    assert answer["type"] == "error" and answer["code"] == code and answer["ref"] == "r1"
    assert answer["description"]
    assert chat.messages() == []
    assert not chat.gone
    assert chat.say("x" * 500)[-1]["type"] == "sent"  # the limit is in characters: 500 is fine


def test_sending_before_joining_is_not_in_room(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    chat = ChatClient(client, "/live/cam/chat")
    [answer] = chat.say("hi", ref=3)
    assert (answer["code"], answer["ref"]) == ("Chat.NotInRoom", 3)


def test_the_rate_limit_is_per_connection_and_a_refusal_is_not_counted(
    factory: RTMPServerFactory, client: SiteClient, clock: task.Clock
) -> None:
    """5 messages in 10 s (the default); the 6th is refused; the window slides."""
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    chat.join("ann")
    other = ChatClient(client, "/live/cam/chat")
    other.join("bob")
    for index in range(5):
        assert chat.say(f"m{index}")[-1]["type"] == "sent"
        clock.advance(1)
    assert chat.say("too many")[-1]["code"] == "Chat.RateLimited"
    assert other.say("bob is fine")[-1]["type"] == "sent"
    clock.advance(5.1)  # the first message is 10 s old
    assert chat.say("again")[-1]["type"] == "sent"


def test_a_muted_nick_is_refused_in_that_room_whatever_its_case(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    chat.join("Ann")
    assert factory.mute("live/cam", "ann")
    assert chat.say("hi")[-1]["code"] == "Chat.Muted"
    rtmp = _rtmp_chatter(factory, nick="ANN")
    assert rtmp.result_of(rtmp.call("sendChatMessage", None, "hi", stream_id=1)).name == "_error"
    assert factory.unmute("live/cam", "ANN")
    assert chat.say("back")[-1]["type"] == "sent"


def test_the_room_of_another_stream_never_sees_the_message(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    publish(factory, name="cam")
    publish(factory, name="other")
    here = ChatClient(client, "/live/cam/chat")
    here.join("ann")
    there = ChatClient(client, "/live/other/chat")
    there.join("bob")
    elsewhere = _rtmp_chatter(factory, "other")
    here.say("only for cam")
    assert there.messages() == []
    assert elsewhere.chat() == []
    assert [m["text"] for m in here.messages()] == ["only for cam"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "object"),
        ('{"type": "shout"}', "type"),
        ("{}", "type"),
    ],
)
def test_a_bad_message_is_a_bad_request_and_the_connection_stays(
    factory: RTMPServerFactory, client: SiteClient, raw: str, why: str
) -> None:
    chat = ChatClient(client, "/live/cam/chat")
    [answer] = chat.send(raw)
    assert answer["code"] == "Chat.BadRequest" and why in answer["description"]
    assert not chat.gone
    assert chat.send_bytes(b"\x00")[0]["code"] == "Chat.BadRequest"


def test_a_message_over_the_bound_is_refused_and_closes(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    chat.join("ann")
    [answer] = chat.say("x" * ws_chat.MAX_MESSAGE_BYTES)
    assert answer["code"] == "Chat.BadRequest"
    assert chat.closed == ws_chat.CLOSE_TOO_BIG
    assert chat.gone
    assert _web_participants(factory) == []


def test_the_room_keeps_the_stream_and_leaving_releases_it(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """A chat-only room holds its stream (as joinChat does) and forgets it when left."""
    chat = ChatClient(client, "/live/empty/chat")
    chat.join("ann")
    assert factory.find_stream("live", "empty") is not None
    chat.transport.loseConnection()
    assert factory.find_stream("live", "empty") is None
    assert factory.connections == {}


def test_kick_closes_the_websocket_and_leaves_the_room(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    publish(factory)
    chat = ChatClient(client, "/live/cam/chat")
    chat.join("ann")
    session = next(c for c in factory.connections.values() if c.stats().protocol == "ws-chat")
    assert factory.kick(session.conn_id)
    assert chat.transport.aborted
    assert _web_participants(factory) == []
    assert session.conn_id not in factory.connections


def test_one_that_never_joins_is_closed_after_the_connect_timeout(
    factory: RTMPServerFactory, client: SiteClient, clock: task.Clock
) -> None:
    factory.startFactory()
    idle = ChatClient(client, "/live/cam/chat")
    joined = ChatClient(client, "/live/cam/chat")
    joined.join("ann")
    clock.advance(factory.config.connect_timeout + 1)
    idle.read()
    assert idle.received[-1]["code"] == "Chat.Timeout"
    assert idle.closed == ws_chat.CLOSE_POLICY and idle.gone
    assert not joined.gone
    assert factory.refusals["timeout"] == 1
    factory.stopFactory()


def test_the_connection_limits_apply(clock: task.Clock) -> None:
    """Past --max-connections the upgrade is a 503 and the connection is closed."""
    factory = RTMPServerFactory(ServerConfig(max_connections=1), reactor=clock)
    site = SiteClient(factory, clock)
    first = ChatClient(site, "/live/cam/chat")
    assert first.accepted
    second = ChatClient(site, "/live/cam/chat")
    assert not second.accepted and second.status == 503
    assert second.transport.disconnecting
    assert factory.refusals["limit"] == 1
    assert len(factory.connections) == 1


def test_the_join_is_authorized_like_a_play(clock: task.Clock) -> None:
    """With a play token secret: no token, Chat.Unauthorized and the close; a token joins."""
    secret = "s3cret"
    factory = RTMPServerFactory(
        ServerConfig(access=AccessConfig(play_token_secret=secret)), reactor=clock
    )
    site = SiteClient(factory, clock)
    refused = ChatClient(site, "/live/cam/chat")
    [answer] = refused.join("ann")
    assert answer["code"] == "Chat.Unauthorized"
    assert refused.closed == ws_chat.CLOSE_POLICY
    assert factory.find_stream("live", "cam") is None
    query = signed_query(secret, "play", "live", "cam", 60)
    allowed = ChatClient(site, f"/live/cam/chat?{query}")
    assert allowed.join("ann")[0]["type"] == "joined"


def test_the_hard_queue_limit_closes_a_participant_that_does_not_read(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """Chat is never dropped; past --max-queue the connection goes (reason max-queue)."""
    factory.set_policy(drop_low=1000, drop_high=2000, max_queue=4000)
    publish(factory)
    slow = ChatClient(client, "/live/cam/chat", auto_drain=False)
    slow.join("slow")
    talkers = [ChatClient(client, "/live/cam/chat") for _ in range(4)]
    for index, talker in enumerate(talkers):
        talker.join(f"t{index}")
    for round_ in range(5):
        for talker in talkers:
            talker.say(f"{round_} " + "y" * 400)
        if slow.transport.aborted:
            break
    assert slow.transport.aborted
    assert factory.disconnects["max-queue"] == 1
    assert all(not t.gone for t in talkers)


@pytest.mark.parametrize(
    ("path", "status"), [("/live/cam/chat", 426), ("/cam/chat", 404), ("/chat", 404)]
)
def test_a_plain_get_is_told_to_upgrade(client: SiteClient, path: str, status: int) -> None:
    assert client.get(path).status == status


@pytest.mark.parametrize(
    "headers",
    [
        b"Host: h\r\nConnection: Up\x8dgrade\r\n",  # not ASCII: wsproto's UnicodeDecodeError
        b"Connection: Upgrade\r\n",  # no Host: h11's LocalProtocolError
    ],
)
def test_a_handshake_wsproto_cannot_read_is_a_400(
    factory: RTMPServerFactory,
    client: SiteClient,
    headers: bytes,
    log_events: list[dict[str, object]],
) -> None:
    """Handshakes wsproto raises on are bad handshakes (400), not unhandled errors, as on
    WebSocket-FLV (``http/websocket.py``)."""
    publish(factory)
    transport = client.open()
    transport.protocol.dataReceived(
        b"GET /live/cam/chat HTTP/1.1\r\nUpgrade: websocket\r\n"
        + headers
        + b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 400 "), transport.value()[:200]
    assert not [e for e in log_events if "log_failure" in e]
    assert all(c.stats().protocol == "rtmp" for c in factory.connections.values())


def test_a_lone_surrogate_escape_in_a_field_is_a_bad_request_and_the_connection_stays(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """``"\\ud800"`` is valid JSON but no UTF-8: in ``nick``, ``text`` or ``ref`` it is
    refused before it reaches the room (whose AMF encoder and frames would raise)."""
    publish(factory)
    rtmp = _rtmp_chatter(factory)
    chat = ChatClient(client, "/live/cam/chat")
    for raw in (
        r'{"type": "join", "nick": "\ud800x"}',
        r'{"type": "join", "nick": "ann", "ref": "\udfff"}',
    ):
        assert [m["code"] for m in chat.send(raw)] == ["Chat.BadRequest"], raw
    assert chat.join("ann")[0]["type"] == "joined"
    for raw in (
        r'{"type": "send", "text": "a\ud800b"}',
        r'{"type": "send", "text": "hi", "ref": "\udc00"}',
    ):
        got = chat.send(raw)
        assert [(m["code"], "ref" in m) for m in got] == [("Chat.BadRequest", False)], raw
    assert not chat.gone
    before = len(rtmp.chat())
    chat.say("fine")
    assert [message["text"] for _, message in rtmp.chat()[before:]] == ["fine"]
