"""ChatRoom and ChatMessage: plain Python, no Twisted."""

from __future__ import annotations

from collections import deque

import pytest

from streamserver.codec import amf0
from streamserver.codec.chunk import ChunkDecoder
from streamserver.codec.messages import MessageType
from streamserver.errors import (
    ChatEmptyError,
    ChatMutedError,
    ChatRateLimitedError,
    ChatTooLongError,
)
from streamserver.media.rooms import ChatMessage, ChatRateLimit, ChatRoom, accept_message
from streamserver.media.stream import Stream, StreamRegistry


class Seat:
    """A participant that records what it is given."""

    def __init__(self, chunk_size: int = 4096, stream_id: int = 1) -> None:
        self.fanout_key = (chunk_size, stream_id)
        self.written: list[bytes] = []

    def encode_chat(self, message: ChatMessage, timestamp: int) -> bytes:
        chunk_size, stream_id = self.fanout_key
        return message.wire(chunk_size, stream_id, timestamp)

    def deliver_chat(self, data: bytes) -> None:
        self.written.append(data)


def test_message_payload_is_on_chat_message_with_one_object() -> None:
    """The payload is the AMF0 string onChatMessage and an object of id, nick, text, time."""
    message = ChatMessage(7, "ann", "hé", 1_700_000_000_123)
    assert amf0.decode_all(message.payload) == [
        "onChatMessage",
        {"id": 7.0, "nick": "ann", "text": "hé", "time": 1_700_000_000_123.0},
    ]
    assert message.payload[13 + 3] == 0x03  # an anonymous object, not an ECMA array


def test_wire_is_one_data_message_on_the_given_stream() -> None:
    """wire() is a type 18 message with the payload, stream id and timestamp given."""
    message = ChatMessage(1, "a", "x" * 300, 0)
    decoder = ChunkDecoder()
    (decoded,) = decoder.receive_data(message.wire(128, 5, 4242))
    assert (decoded.type_id, decoded.stream_id, decoded.timestamp) == (
        MessageType.DATA_AMF0,
        5,
        4242,
    )
    assert decoded.payload == message.payload


def test_history_keeps_the_last_messages_oldest_first() -> None:
    """post() keeps at most history_count messages; ids increase from 1."""
    room = ChatRoom(history_count=3)
    for index in range(5):
        room.post("n", str(index), index)
    assert [m.id for m in room.history] == [3, 4, 5]
    assert [m.text for m in room.join(Seat())] == ["2", "3", "4"]
    assert room.next_id == 6


def test_history_is_bounded_by_bytes() -> None:
    """The history's payload bytes never pass history_bytes; an oversized message is not kept."""
    room = ChatRoom(history_count=100, history_bytes=500)
    for index in range(10):
        room.post("n", f"{index}" + "x" * 100, 0)
        assert room.history_bytes <= 500
        assert room.history_bytes == sum(m.size for m in room.history)
    assert room.history[-1].id == 10
    room.post("n", "y" * 600, 0)
    assert room.history[-1].id == 10


def test_broadcast_serializes_once_per_group() -> None:
    """Seats with the same key get the same bytes object; other keys get their own."""
    room = ChatRoom()
    same = [Seat(), Seat(), Seat()]
    other = Seat(stream_id=2)
    for seat in [*same, other]:
        room.join(seat)
    message = room.post("n", "hi", 0)
    assert room.broadcast(message, 0) == 4
    assert all(seat.written[0] is same[0].written[0] for seat in same)
    assert other.written[0] != same[0].written[0]


def test_a_participant_leaving_during_a_broadcast_is_safe() -> None:
    """A participant removed while a message goes out does not break the loop."""
    room = ChatRoom()
    first, second = Seat(), Seat()

    class Leaver(Seat):
        def deliver_chat(self, data: bytes) -> None:
            room.leave(first)
            room.leave(self)
            super().deliver_chat(data)

    leaver = Leaver()
    for seat in (leaver, first, second):
        room.join(seat)
    room.broadcast(room.post("n", "x", 0), 0)
    assert second.written and leaver.written
    assert list(room.participants) == [second]


def test_mute_is_casefolded_and_reported() -> None:
    """mute/unmute say whether they changed anything; nicks compare casefolded."""
    room = ChatRoom()
    assert room.mute("Bob")
    assert room.is_muted("BOB")
    assert not room.mute("bob")
    assert room.unmute("bOb")
    assert not room.unmute("bob")
    assert not room.is_muted("Bob")


def test_clear_history_keeps_ids_increasing() -> None:
    """clear_history returns the count dropped; the next message id is not reused."""
    room = ChatRoom()
    room.post("n", "a", 0)
    room.post("n", "b", 0)
    assert room.clear_history() == 2
    assert room.history_bytes == 0
    assert room.post("n", "c", 0).id == 3


def test_a_stream_with_chatters_is_not_idle() -> None:
    """A stream is idle only when nobody publishes, plays or sits in its room."""
    registry = StreamRegistry("live", chat_history=7)
    stream = registry.get_or_create("cam")
    assert stream.chat.history_count == 7
    seat = Seat()
    stream.chat.join(seat)
    assert not stream.is_idle
    registry.release(stream)
    assert registry.get("cam") is stream
    stream.chat.leave(seat)
    registry.release(stream)
    assert registry.get("cam") is None


def test_post_chat_uses_the_live_timestamp() -> None:
    """Stream.post_chat records the message and sends it stamped with the live edge."""
    stream = Stream("live", "cam")
    seat = Seat(chunk_size=128)
    stream.chat.join(seat)
    stream.post_chat("n", "first", 0)
    decoder = ChunkDecoder()
    (decoded,) = decoder.receive_data(seat.written[0])
    assert decoded.timestamp == 0
    assert [m.text for m in stream.chat.history] == ["first"]


def test_accept_message_refuses_in_the_documented_order_and_counts_only_accepted() -> None:
    """Muted before empty before too long before rate limited; refusals use no rate."""
    room = ChatRoom()
    rate = ChatRateLimit(2, 10.0)
    room.mute("Ann")
    with pytest.raises(ChatMutedError):
        accept_message(room, "ann", "x" * 99, max_length=5, rate=rate, now=0)
    for raw in (None, 3, "", " \t\n\0 "):
        with pytest.raises(ChatEmptyError):
            accept_message(room, "bob", raw, max_length=5, rate=rate, now=0)
    with pytest.raises(ChatTooLongError):
        accept_message(room, "bob", "abcdef", max_length=5, rate=rate, now=0)
    assert accept_message(room, "bob", " a\tb\x07 ", max_length=5, rate=rate, now=0) == "a b"
    assert accept_message(room, "bob", "éééé", max_length=5, rate=rate, now=1) == "éééé"
    with pytest.raises(ChatRateLimitedError):
        accept_message(room, "bob", "c", max_length=5, rate=rate, now=9.9)
    assert accept_message(room, "bob", "c", max_length=5, rate=rate, now=10.0) == "c"


class Relay:
    """A ChatBridge that records what it is given, as a cluster's would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.opened: list[Stream] = []
        self.closed: list[Stream] = []

    def send_chat(self, stream: Stream, nick: str, text: str, time_ms: int, sender: object) -> None:
        self.sent.append((nick, text, sender))

    def room_opened(self, stream: Stream) -> None:
        self.opened.append(stream)

    def room_closed(self, stream: Stream) -> None:
        self.closed.append(stream)


def test_a_chat_bridge_gets_posts_and_the_room_takes_its_ids_back() -> None:
    """With a relay, post_chat hands the message over (None); receive_chat records the
    message with the relay's id, once, and sends it to all but the excluded seat."""
    relay = Relay()
    registry = StreamRegistry("live", chat_bridge=relay)
    stream = registry.get_or_create("cam")
    assert relay.opened == [stream]
    seat, irc = Seat(), Seat()
    stream.chat.join(seat)
    stream.chat.join(irc)
    assert stream.post_chat("ann", "hi", 1, sender=irc) is None
    assert relay.sent == [("ann", "hi", irc)]
    assert stream.chat.history == deque()
    assert stream.receive_chat(ChatMessage(7, "ann", "hi", 1), exclude=irc) is True
    assert stream.receive_chat(ChatMessage(7, "ann", "hi", 1)) is False
    assert stream.receive_chat(ChatMessage(5, "old", "x", 1)) is False
    assert len(seat.written) == 1 and irc.written == []
    assert stream.chat.next_id == 8
    stream.chat.leave(seat)
    stream.chat.leave(irc)
    registry.release(stream)
    assert relay.closed == [stream]


def test_merge_history_puts_older_messages_first_and_returns_them() -> None:
    room = ChatRoom(history_count=4)
    room.accept(ChatMessage(10, "a", "ten", 0))
    added = room.merge_history([ChatMessage(i, "a", str(i), 0) for i in range(6, 12)])
    assert [m.id for m in added] == [7, 8, 9]
    assert [m.id for m in room.history] == [7, 8, 9, 10]
    empty = ChatRoom()
    assert [m.id for m in empty.merge_history([ChatMessage(3, "a", "x", 0)])] == [3]
    assert empty.next_id == 4
