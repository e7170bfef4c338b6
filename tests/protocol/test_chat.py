"""Chat over FakeTransport: rooms, history, nicks, refusals, limits and moderation."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task

from streamserver.codec import messages
from streamserver.codec.messages import Command, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media

_CHAT = b"\x02\x00\x0donChatMessage"

# --- helpers ---------------------------------------------------------------------------


def _connected(factory: RTMPServerFactory, app: str = "live", **params: Any) -> FakePeer:
    peer = FakePeer(factory, auto_drain=params.pop("auto_drain", True))
    assert peer.connect(app, **params).name == "_result"
    return peer


def _publisher(
    factory: RTMPServerFactory, name: str = "cam", **params: Any
) -> tuple[FakePeer, int]:
    peer = _connected(factory, **params)
    sid = peer.create_stream()
    assert "NetStream.Publish.Start" in [
        c.args[0]["code"] for c in peer.publish(name, sid) if c.name == "onStatus"
    ]
    return peer, sid


def _viewer(factory: RTMPServerFactory, name: str = "cam", **params: Any) -> tuple[FakePeer, int]:
    peer = _connected(factory, **params)
    sid = peer.create_stream()
    peer.play(name, sid)
    return peer, sid


def _chatter(factory: RTMPServerFactory, name: str = "cam", **params: Any) -> tuple[FakePeer, int]:
    """A connection in *name*'s room through joinChat, without media."""
    peer = _connected(factory, **params)
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, name, stream_id=sid))
    assert reply.name == "_result", reply.args
    assert reply.args[0]["code"] == "Chat.Joined"
    return peer, sid


def _send(peer: FakePeer, sid: int, text: Any) -> Command:
    """Send a chat message with a transaction id; return the _result or _error."""
    return peer.result_of(peer.call("sendChatMessage", None, text, stream_id=sid))


def _send_txn0(peer: FakePeer, sid: int, text: Any) -> list[Command]:
    """Send a chat message with transaction id 0; return the commands answered."""
    peer.send(messages.command("sendChatMessage", 0, None, text, stream_id=sid))
    return peer.commands()


def _texts(peer: FakePeer) -> list[str]:
    return [fields["text"] for _, fields in peer.chat()]


def _room_size(factory: RTMPServerFactory, stream: str = "cam") -> int:
    found = factory.find_stream("live", stream)
    return len(found.chat.participants) if found else 0


def _nick_of(peer: FakePeer, sid: int) -> str:
    """The nick *peer* speaks with on *sid*, as the room sees it."""
    assert _send(peer, sid, "who am I").name == "_result"
    return peer.chat()[-1][1]["nick"]


@pytest.fixture
def fast_chat(factory: RTMPServerFactory) -> RTMPServerFactory:
    """The factory with the rate limit out of the way."""
    factory.config.chat_rate = 10_000
    return factory


# --- join, send, broadcast -------------------------------------------------------------


def test_every_participant_gets_the_message_on_its_own_stream_id(factory, clock) -> None:
    """Publisher, viewer and chat-only participant each get onChatMessage on their stream id."""
    clock.advance(1_700_000_000.25)
    publisher, pub_sid = _publisher(factory, nick="host")
    viewer = _connected(factory)
    viewer.create_stream()
    view_sid = viewer.create_stream()
    viewer.play("cam", view_sid)
    chatter, chat_sid = _chatter(factory)
    assert (pub_sid, view_sid, chat_sid) == (1, 2, 1)

    reply = _send(publisher, pub_sid, "hello")
    assert reply.name == "_result"
    assert reply.args[0]["code"] == "Chat.Sent"
    assert reply.args[0]["id"] == 1

    for peer, sid in ((publisher, pub_sid), (viewer, view_sid), (chatter, chat_sid)):
        (got,) = peer.chat()
        assert got == (
            sid,
            {"id": 1.0, "nick": "host", "text": "hello", "time": 1_700_000_000_250.0},
        )
    raw = [m for m in viewer.received if m.payload.startswith(_CHAT)]
    assert [m.type_id for m in raw] == [MessageType.DATA_AMF0]


def test_ids_increase_per_room_and_rooms_do_not_mix(fast_chat) -> None:
    """Each room numbers its messages from 1; a room's messages reach only its participants."""
    a_pub, a_sid = _publisher(fast_chat, "a")
    b_pub, b_sid = _publisher(fast_chat, "b")
    a_view, _ = _viewer(fast_chat, "a")
    b_view, _ = _viewer(fast_chat, "b")
    for index in range(3):
        _send(a_pub, a_sid, f"a{index}")
        _send(b_pub, b_sid, f"b{index}")
    assert [(f["id"], f["text"]) for _, f in a_view.chat()] == [(1, "a0"), (2, "a1"), (3, "a2")]
    assert [(f["id"], f["text"]) for _, f in b_view.chat()] == [(1, "b0"), (2, "b1"), (3, "b2")]


def test_same_name_in_two_apps_are_two_rooms(factory) -> None:
    """live/cam and other/cam have separate rooms."""
    live, live_sid = _chatter(factory)
    other, _ = _chatter(factory, app="other")
    _send(live, live_sid, "only live")
    assert _texts(other) == []
    assert _texts(live) == ["only live"]


def test_join_chat_sits_in_the_room_without_media(factory) -> None:
    """joinChat answers Chat.Joined with the room and nick; the chatter gets chat, no media."""
    publisher, sid = _publisher(factory)
    chatter = _connected(factory, nick="ann")
    chat_sid = chatter.create_stream()
    reply = chatter.result_of(chatter.call("joinChat", None, "cam", stream_id=chat_sid))
    assert reply.args[0]["room"] == "live/cam"
    assert reply.args[0]["nick"] == "ann"
    for message in media.headers(sid) + media.gop_frames(sid, 0, 10):
        publisher.send(message)
    _send(publisher, sid, "hi")
    assert chatter.media() == []
    assert _texts(chatter) == ["hi"]
    stream = factory.find_stream("live", "cam")
    assert stream.subscriber_count == 0
    assert len(stream.chat.participants) == 2


def test_chat_timestamp_is_the_live_edge(factory) -> None:
    """onChatMessage carries the stream's newest media timestamp as its RTMP timestamp."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    for message in media.headers(sid) + media.gop_frames(sid, 0, 30):
        publisher.send(message)
    _send(publisher, sid, "now")
    viewer.read()
    chat = [m for m in viewer.received if m.payload.startswith(_CHAT)]
    assert chat[0].timestamp == factory.find_stream("live", "cam").live_timestamp > 0


def test_broadcast_is_serialized_once_per_group(factory) -> None:
    """Participants sharing chunk size and stream id get the identical bytes object."""
    publisher, sid = _publisher(factory)
    viewers = [_viewer(factory)[0] for _ in range(4)]
    odd = _connected(factory)
    odd.create_stream()
    odd_sid = odd.create_stream()
    odd.play("cam", odd_sid)
    written: list[list[bytes]] = []
    for peer in [*viewers, odd]:
        log: list[bytes] = []
        original = peer.transport.write

        def spy(data: bytes, _log=log, _write=original) -> None:
            _log.append(data)
            _write(data)

        peer.transport.write = spy  # type: ignore[method-assign]
        written.append(log)
    _send(publisher, sid, "once")
    firsts = [log[0] for log in written]
    assert all(data is firsts[0] for data in firsts[:4])
    assert firsts[4] is not firsts[0]
    assert odd.chat()[0][0] == odd_sid == 2


def test_get_viewer_count(factory) -> None:
    """getViewerCount answers the number of connections playing the room's stream."""
    _publisher(factory)
    for _ in range(3):
        _viewer(factory)
    bot, sid = _chatter(factory)
    assert bot.result_of(bot.call("getViewerCount", None, stream_id=sid)).args[0] == 3
    assert bot.result_of(bot.call("getViewerCount", None, "nobody", stream_id=sid)).args[0] == 0
    lonely = _connected(factory)
    reply = lonely.result_of(lonely.call("getViewerCount", None, stream_id=1))
    assert reply.name == "_error"
    assert reply.args[0]["code"] == "Chat.NotInRoom"


# --- history ---------------------------------------------------------------------------


def test_late_joiner_gets_the_last_50_oldest_first(fast_chat) -> None:
    """A new participant first gets the last 50 messages, oldest first, then live ones."""
    publisher, sid = _publisher(fast_chat)
    for index in range(60):
        _send(publisher, sid, f"m{index}")
    late = _connected(fast_chat)
    late_sid = late.create_stream()
    txn = late.call("joinChat", None, "cam", stream_id=late_sid)
    fresh = late.read()
    history = late.chat()
    assert [f["id"] for _, f in history] == list(range(11, 61))
    assert [f["text"] for _, f in history] == [f"m{i}" for i in range(10, 60)]
    (result_at,) = [
        i
        for i, m in enumerate(fresh)
        if m.type_id == MessageType.COMMAND_AMF0 and messages.parse_command(m).transaction_id == txn
    ]
    chat_at = [i for i, m in enumerate(fresh) if m.payload.startswith(_CHAT)]
    assert len(chat_at) == 50 and max(chat_at) < result_at  # history, then the _result
    _send(publisher, sid, "live")
    assert _texts(late)[-1] == "live"
    assert len(late.chat()) == 51


def test_viewer_gets_history_when_it_plays(fast_chat) -> None:
    """play seats a viewer in the room and sends the history."""
    publisher, sid = _publisher(fast_chat)
    _send(publisher, sid, "before you came")
    viewer, _ = _viewer(fast_chat)
    assert _texts(viewer) == ["before you came"]


def test_history_is_bounded_by_bytes(fast_chat) -> None:
    """The history keeps only what fits in chat_history_bytes, dropping the oldest."""
    fast_chat.config.chat_history_bytes = 2000
    publisher, sid = _publisher(fast_chat)
    for index in range(20):
        _send(publisher, sid, f"{index:03d}" + "x" * 300)
    room = fast_chat.find_stream("live", "cam").chat
    assert room.history_bytes <= 2000
    late, _ = _chatter(fast_chat)
    ids = [f["id"] for _, f in late.chat()]
    assert ids == list(range(21 - len(ids), 21))
    assert 3 <= len(ids) <= 6


def test_history_option_bounds_the_count(fast_chat) -> None:
    """chat_history sets how many messages a late joiner gets; 0 keeps none."""
    fast_chat.config.chat_history = 3
    publisher, sid = _publisher(fast_chat)
    for index in range(10):
        _send(publisher, sid, str(index))
    assert _texts(_chatter(fast_chat)[0]) == ["7", "8", "9"]

    fast_chat.config.chat_history = 0  # applies to registries created from now on
    other, other_sid = _publisher(fast_chat, app="quiet")
    _send(other, other_sid, "gone")
    assert _texts(_chatter(fast_chat, app="quiet")[0]) == []


# --- nicks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connect", "name", "expected"),
    [
        ({"nick": "alice"}, "cam", "alice"),
        ({}, "cam?nick=bob", "bob"),
        ({"tcUrl": "rtmp://127.0.0.1/live?nick=carol"}, "cam", "carol"),
        ({"nick": "alice"}, "cam?nick=bob", "alice"),
        ({"tcUrl": "rtmp://127.0.0.1/live?nick=carol"}, "cam?nick=bob", "bob"),
        ({"nick": "   dave\t "}, "cam", "dave"),
        ({"nick": "e" * 40}, "cam", "e" * 32),
        ({"nick": " " + "f" * 31 + "  g"}, "cam", "f" * 31),
        ({"nick": "\x07eve\x00"}, "cam", "eve"),
        ({"nick": "   "}, "cam?nick=bob", "bob"),
        ({"nick": 42.0}, "cam?nick=%20zoe%20", "zoe"),
    ],
)
@pytest.mark.parametrize("join", ["play", "joinChat", "publish"])
def test_nick_rules(factory, connect: dict[str, Any], name: str, expected: str, join: str) -> None:
    """connect's nick, else the name's ?nick=, else the tcUrl's; trimmed, at most 32 chars."""
    peer = _connected(factory, **connect)
    sid = peer.create_stream()
    if join == "play":
        peer.play(name, sid)
    elif join == "publish":
        peer.publish(name, sid)
    else:
        peer.result_of(peer.call("joinChat", None, name, stream_id=sid))
    assert _nick_of(peer, sid) == expected


def test_nick_defaults_to_guest_with_the_connection_id(factory) -> None:
    """Without any nick a participant is guest-<connection id>."""
    peer, sid = _viewer(factory)
    assert _nick_of(peer, sid) == f"guest-{peer.protocol.conn_id}"


# --- refusals --------------------------------------------------------------------------


def _too_long(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer, sid = _chatter(factory)
    return peer, sid, "x" * 501


def _rate_limited(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer, sid = _chatter(factory)
    for index in range(5):
        assert _send(peer, sid, str(index)).name == "_result"
    return peer, sid, "one too many"


def _muted(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer, sid = _chatter(factory, nick="Loud")
    assert factory.mute("live/cam", "loud")
    return peer, sid, "can you hear me"


def _not_in_room(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer = _connected(factory)
    return peer, peer.create_stream(), "anyone?"


def _empty(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer, sid = _chatter(factory)
    return peer, sid, " \x00\x01\n\x7f\x9f "


def _not_a_string(factory: RTMPServerFactory) -> tuple[FakePeer, int, Any]:
    peer, sid = _chatter(factory)
    return peer, sid, 12.0


REFUSALS = [
    pytest.param("Chat.TooLong", _too_long, id="too-long"),
    pytest.param("Chat.RateLimited", _rate_limited, id="rate-limited"),
    pytest.param("Chat.Muted", _muted, id="muted"),
    pytest.param("Chat.NotInRoom", _not_in_room, id="not-in-room"),
    pytest.param("Chat.Empty", _empty, id="empty"),
    pytest.param("Chat.Empty", _not_a_string, id="not-a-string"),
]


@pytest.mark.parametrize(("code", "setup"), REFUSALS)
def test_refusal_with_a_transaction_is_an_error_reply(factory, code: str, setup) -> None:
    """A refused sendChatMessage with transaction id > 0 gets _error with the code."""
    peer, sid, text = setup(factory)
    reply = _send(peer, sid, text)
    assert reply.name == "_error"
    assert reply.args[0]["level"] == "error"
    assert reply.args[0]["code"] == code
    assert not peer.transport.disconnecting
    stream = factory.find_stream("live", "cam")
    assert stream is None or not [m for m in stream.chat.history if m.text == text]


@pytest.mark.parametrize(("code", "setup"), REFUSALS)
def test_refusal_without_a_transaction_is_an_error_status(factory, code: str, setup) -> None:
    """A refused sendChatMessage with transaction id 0 gets onStatus level error on its stream."""
    peer, sid, text = setup(factory)
    (status,) = [c for c in _send_txn0(peer, sid, text) if c.name == "onStatus"]
    assert status.stream_id == sid
    assert status.args[0]["level"] == "error"
    assert status.args[0]["code"] == code


def test_accepted_message_without_a_transaction_gets_no_reply(factory) -> None:
    """Transaction id 0: the message is broadcast and nothing else is answered."""
    peer, sid = _chatter(factory)
    assert [c.name for c in _send_txn0(peer, sid, "quiet")] == []
    assert _texts(peer) == ["quiet"]


def test_publish_refusals_are_still_statuses(factory) -> None:
    """publish with a transaction id on a message stream still gets onStatus, not _error."""
    _publisher(factory)
    intruder = _connected(factory)
    sid = intruder.create_stream()
    replies = intruder.publish("cam", sid)
    assert [c.name for c in replies] == ["onStatus"]
    assert replies[0].args[0]["code"] == "NetStream.Publish.BadName"


def test_join_chat_refusals(factory) -> None:
    """joinChat without a valid name is Chat.BadName; a 17th room is Chat.TooManyRooms."""
    peer = _connected(factory)
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, None, stream_id=sid))
    assert (reply.name, reply.args[0]["code"]) == ("_error", "Chat.BadName")
    for index in range(16):
        room_sid = peer.create_stream()
        assert peer.result_of(peer.call("joinChat", None, f"r{index}", stream_id=room_sid)).name
    reply = peer.result_of(peer.call("joinChat", None, "r16", stream_id=peer.create_stream()))
    assert (reply.name, reply.args[0]["code"]) == ("_error", "Chat.TooManyRooms")
    assert factory.find_stream("live", "r16") is None


def test_control_characters_are_stripped(factory) -> None:
    """C0, DEL and C1 characters are removed, tabs and line breaks become spaces, ends trimmed."""
    peer, sid = _chatter(factory)
    assert _send(peer, sid, "\x1b[31m red\x07\x00\x7f\x85 line\none\ttab  ").name == "_result"
    assert _texts(peer) == ["[31m red line one tab"]
    assert _send(peer, sid, "héllo wörld ✓ 😀").name == "_result"
    assert _texts(peer)[-1] == "héllo wörld ✓ 😀"


def test_length_counts_characters_after_stripping(factory) -> None:
    """500 characters pass, multi-byte ones too; control characters do not count."""
    peer, sid = _chatter(factory)
    assert _send(peer, sid, "é" * 500).name == "_result"
    assert _send(peer, sid, "\x00" * 100 + "a" * 500).name == "_result"
    assert _send(peer, sid, "a" * 501).name == "_error"


def test_max_length_option(factory) -> None:
    """chat_max_length sets the limit."""
    factory.config.chat_max_length = 10
    peer, sid = _chatter(factory)
    assert _send(peer, sid, "a" * 10).name == "_result"
    assert _send(peer, sid, "a" * 11).args[0]["code"] == "Chat.TooLong"


# --- rate limit ------------------------------------------------------------------------


def test_rate_limit_opens_again_after_the_window(factory, clock: task.Clock) -> None:
    """5 messages per 10 s: the 6th is refused; once 10 s passed since the first, allowed again."""
    peer, sid = _chatter(factory)
    for index in range(5):
        assert _send(peer, sid, str(index)).name == "_result"
        clock.advance(1.0)
    assert _send(peer, sid, "too soon").args[0]["code"] == "Chat.RateLimited"
    clock.advance(4.9)  # 9.9 s after the first message
    assert _send(peer, sid, "still too soon").args[0]["code"] == "Chat.RateLimited"
    clock.advance(0.1)  # 10 s after the first: it left the window
    assert _send(peer, sid, "again").name == "_result"
    assert _send(peer, sid, "but only one").args[0]["code"] == "Chat.RateLimited"
    clock.advance(10.0)
    for index in range(5):
        assert _send(peer, sid, f"burst {index}").name == "_result"
    assert _texts(peer)[-6:] == ["again", *[f"burst {i}" for i in range(5)]]


def test_rate_limit_is_per_connection(factory) -> None:
    """One connection at its limit does not limit another."""
    first, first_sid = _chatter(factory)
    second, second_sid = _chatter(factory)
    for index in range(5):
        _send(first, first_sid, str(index))
    assert _send(first, first_sid, "x").name == "_error"
    assert _send(second, second_sid, "y").name == "_result"


def test_rate_option(factory, clock: task.Clock) -> None:
    """chat_rate / chat_rate_window set the limit."""
    factory.config.chat_rate = 2
    factory.config.chat_rate_window = 1.0
    peer, sid = _chatter(factory)
    assert [_send(peer, sid, str(i)).name for i in range(3)] == ["_result", "_result", "_error"]
    clock.advance(1.0)
    assert _send(peer, sid, "ok").name == "_result"


# --- the write path: never dropped, hard limit applies ---------------------------------


def _slow_viewer_setup(factory: RTMPServerFactory) -> tuple[FakePeer, int, FakePeer]:
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory, auto_drain=False)
    for message in media.headers(sid):
        publisher.send(message)
    return publisher, sid, viewer


def test_chat_reaches_a_viewer_whose_media_is_being_dropped(fast_chat) -> None:
    """Over drop_low inter frames are dropped for a viewer, but every chat message reaches it."""
    fast_chat.set_policy(drop_low=10_000, drop_high=200_000, max_lag_ms=100_000)
    publisher, sid, viewer = _slow_viewer_setup(fast_chat)
    sent = []
    frames = media.gop_frames(sid, 0, 60) + media.gop_frames(sid, 2000, 60)
    for index, message in enumerate(frames):
        publisher.send(message)
        if index % 10 == 5:
            text = f"chat {index}"
            assert _send(publisher, sid, text).name == "_result"
            sent.append(text)
    protocol = viewer.protocol
    assert protocol.viewer.dropped["inter"] > 0
    assert protocol.viewer.level > 0
    assert _texts(viewer) == sent
    assert not viewer.transport.disconnecting


def test_the_hard_limit_applies_to_chat(fast_chat) -> None:
    """Chat that would take a viewer's queue past max_queue disconnects it (max-queue)."""
    fast_chat.set_policy(drop_low=1000, drop_high=2000, max_queue=5000)
    publisher, _sid, viewer = _slow_viewer_setup(fast_chat)
    played = viewer.protocol.viewer
    chatter, chat_sid = _chatter(fast_chat)
    for index in range(20):
        assert _send(chatter, chat_sid, f"{index:02d}" + "y" * 450).name == "_result"
    assert viewer.transport.aborted
    assert played.disconnect_reason == "max-queue"
    assert fast_chat.disconnects["max-queue"] == 1
    # every message written before the limit was written whole, none dropped in between
    got = [text[:2] for text in _texts(viewer)]
    assert got == [f"{i:02d}" for i in range(len(got))]
    assert 0 < len(got) < 20
    assert not chatter.transport.disconnecting and not publisher.transport.disconnecting
    assert len(_texts(chatter)) == 20


def test_without_the_policy_chat_is_never_cut(fast_chat) -> None:
    """With the policy disabled (--no-drop) the hard limit does not apply to chat either."""
    fast_chat.set_policy(drop_low=1000, drop_high=2000, max_queue=5000, enabled=False)
    _, _, viewer = _slow_viewer_setup(fast_chat)
    chatter, chat_sid = _chatter(fast_chat)
    for index in range(20):
        _send(chatter, chat_sid, f"{index:02d}" + "y" * 450)
    assert not viewer.transport.disconnecting
    assert len(_texts(viewer)) == 20


def test_history_burst_counts_toward_the_hard_limit(fast_chat) -> None:
    """A joiner whose queue cannot take the whole history is disconnected (max-queue)."""
    publisher, sid = _publisher(fast_chat)
    for _ in range(30):
        _send(publisher, sid, "z" * 400)
    fast_chat.set_policy(drop_low=1000, drop_high=2000, max_queue=5000)
    late = _connected(fast_chat, auto_drain=False)
    late_sid = late.create_stream()
    late.call("joinChat", None, "cam", stream_id=late_sid)
    assert late.transport.aborted
    assert fast_chat.disconnects == {"max-queue": 1}
    assert _room_size(fast_chat) == 1


# --- moderation ------------------------------------------------------------------------


def test_mute_and_unmute(factory) -> None:
    """A muted nick gets Chat.Muted in that room only; unmuting lets it speak again."""
    peer, sid = _chatter(factory, nick="Troll")
    other_sid = peer.create_stream()
    peer.result_of(peer.call("joinChat", None, "other", stream_id=other_sid))
    assert factory.mute("live/cam", "troll")
    assert not factory.mute("live/cam", "TROLL")  # already muted (nicks compare casefolded)
    assert _send(peer, sid, "hi").args[0]["code"] == "Chat.Muted"
    assert _send(peer, other_sid, "hi there").name == "_result"
    assert factory.unmute("live/cam", "Troll")
    assert not factory.unmute("live/cam", "Troll")
    assert _send(peer, sid, "sorry").name == "_result"
    assert not factory.mute("live/nowhere", "x")
    assert not factory.unmute("nowhere", "x")


def test_clear_history(fast_chat) -> None:
    """clear_history empties a room's history; ids keep increasing."""
    publisher, sid = _publisher(fast_chat)
    for index in range(4):
        _send(publisher, sid, str(index))
    assert fast_chat.clear_history("live/cam") == 4
    assert fast_chat.clear_history("live/cam") == 0
    assert fast_chat.clear_history("live/nowhere") == 0
    assert _texts(_chatter(fast_chat)[0]) == []
    _send(publisher, sid, "after")
    late, _ = _chatter(fast_chat)
    assert [f["id"] for _, f in late.chat()] == [5]


def test_kick_removes_the_participant(factory) -> None:
    """factory.kick drops a chatter's connection and its seat in the room."""
    publisher, sid = _publisher(factory)
    chatter, _ = _chatter(factory)
    assert _room_size(factory) == 2
    assert factory.kick(chatter.protocol.conn_id)
    assert chatter.transport.aborted
    assert _room_size(factory) == 1
    _send(publisher, sid, "bye")
    assert _texts(publisher) == ["bye"]


# --- rooms and the registry ------------------------------------------------------------


def test_stream_is_kept_while_a_chat_only_participant_is_in_the_room(factory) -> None:
    """A room with only chatters keeps its stream (and history); it goes when they leave."""
    publisher, sid = _publisher(factory)
    chatter, chat_sid = _chatter(factory)
    _send(publisher, sid, "kept")
    publisher.transport.loseConnection()
    stream = factory.find_stream("live", "cam")
    assert stream is not None and stream.publisher is None
    assert [m.text for m in stream.chat.history] == ["kept"]
    chatter.call("deleteStream", None, float(chat_sid))
    assert factory.find_stream("live", "cam") is None


def test_disconnecting_chatter_releases_the_stream(factory) -> None:
    """A chat-only room is forgotten when its last participant disconnects."""
    chatter, _ = _chatter(factory)
    assert factory.find_stream("live", "cam") is not None
    chatter.transport.loseConnection()
    assert factory.find_stream("live", "cam") is None


def test_unpublishing_leaves_the_room(fast_chat) -> None:
    """A publisher that stops publishing gets no more chat of that room."""
    publisher, sid = _publisher(fast_chat)
    viewer, view_sid = _viewer(fast_chat)
    publisher.call("deleteStream", None, float(sid))
    _send(viewer, view_sid, "still here")
    assert _texts(publisher) == []
    assert _texts(viewer) == ["still here"]
    reply = _send(publisher, sid, "me too")
    assert reply.args[0]["code"] == "Chat.NotInRoom"


def test_a_new_play_moves_the_viewer_to_the_new_room(fast_chat) -> None:
    """play replaces the previous play, and with it the room."""
    a_pub, a_sid = _publisher(fast_chat, "a")
    b_pub, b_sid = _publisher(fast_chat, "b")
    viewer, sid = _viewer(fast_chat, "a")
    viewer.play("b", sid)
    _send(a_pub, a_sid, "from a")
    _send(b_pub, b_sid, "from b")
    assert _texts(viewer) == ["from b"]
    assert _room_size(fast_chat, "a") == 1


def test_join_chat_and_play_on_one_stream_id_share_a_seat(fast_chat) -> None:
    """joinChat then play of the same stream: one seat, messages once, chat kept after the play."""
    publisher, pub_sid = _publisher(fast_chat)
    peer, sid = _chatter(fast_chat)
    peer.play("cam", sid)
    _send(publisher, pub_sid, "once")
    assert _texts(peer) == ["once"]
    peer.send(messages.command("closeStream", 0, None, stream_id=sid))
    # closeStream ends the play and the joinChat on that message stream
    assert _room_size(fast_chat) == 1


def test_a_stream_id_sits_in_one_room(fast_chat) -> None:
    """joinChat of another room on the same message stream leaves the first."""
    peer, sid = _chatter(fast_chat, "a")
    peer.result_of(peer.call("joinChat", None, "b", stream_id=sid))
    assert fast_chat.find_stream("live", "a") is None
    assert _room_size(fast_chat, "b") == 1


def test_chat_commands_split_at_every_size() -> None:
    """A joinChat and sendChatMessage give the same replies whatever the read sizes."""
    reference = None
    for split in (1, 2, 3, 7, 64, 127, 128, 129, 1000):
        factory = RTMPServerFactory(ServerConfig(), reactor=task.Clock())
        peer = FakePeer(factory, split=split)
        peer.connect("live", nick="splitter")
        sid = peer.create_stream()
        peer.call("joinChat", None, "cam", stream_id=sid)
        peer.call("sendChatMessage", None, "é" * 300, stream_id=sid)
        got = (peer.chat(), [c.name for c in peer.commands(new=False)])
        if reference is None:
            reference = got
            assert got[0][0][1]["text"] == "é" * 300
        assert got == reference, f"split {split}"


def test_join_chat_respects_the_stream_limit(factory) -> None:
    """joinChat cannot create a stream past max_streams: Chat.Rejected, as an _error."""
    factory.config.max_streams = 1
    _publisher(factory)
    peer = _connected(factory)
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, "another", stream_id=sid))
    assert (reply.name, reply.args[0]["code"]) == ("_error", "Chat.Rejected")
    assert factory.find_stream("live", "another") is None
    assert peer.result_of(peer.call("joinChat", None, "cam", stream_id=sid)).name == "_result"
