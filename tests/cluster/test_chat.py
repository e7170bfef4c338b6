"""ClusterChat over a FakeStore: one room across nodes, shared ids, order and history."""

from __future__ import annotations

from twisted.internet.task import Clock

from streamserver.cluster.fake import FakeStore
from streamserver.cluster.store import Keys

from .support import Seat, make_node

KEYS = Keys()


def test_a_message_posted_on_one_node_reaches_every_node_with_one_id_order() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a, b = make_node(store, clock, "a"), make_node(store, clock, "b")
    room_a, room_b = a.registry.get_or_create("cam"), b.registry.get_or_create("cam")
    seat_a, seat_b = Seat(), Seat()
    room_a.chat.join(seat_a)
    room_b.chat.join(seat_b)
    assert room_b.post_chat("bob", "hi from b", 1) is None  # the id comes back
    room_a.post_chat("ann", "hi from a", 2)
    room_b.post_chat("bob", "again", 3)
    expected = [(1, "hi from b"), (2, "hi from a"), (3, "again")]
    assert seat_a.messages == expected
    assert seat_b.messages == expected
    assert [m.id for m in room_a.chat.history] == [1, 2, 3]
    assert room_b.chat.next_id == 4


def test_a_room_opened_later_gets_the_shared_history_from_the_capped_stream() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a", history=3)
    room_a = a.registry.get_or_create("cam")
    for i in range(5):
        room_a.post_chat("ann", f"m{i}", i)
    assert len(store.streams[KEYS.chat_history("live", "cam")]) == 3  # MAXLEN 3
    b = make_node(store, clock, "b", history=3)
    room_b = b.registry.get_or_create("cam")  # subscribes, loads the history
    seat = Seat()
    assert [(m.id, m.text) for m in room_b.chat.join(seat)] == [(3, "m2"), (4, "m3"), (5, "m4")]
    room_b.post_chat("bob", "next", 9)
    assert seat.messages == [(6, "next")]


def test_participants_who_joined_before_the_history_came_get_it_then() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    a.registry.get_or_create("cam").post_chat("ann", "old", 1)
    b = make_node(store, clock, "b")
    store.down = True  # the subscribe and history load fail: nothing yet
    room_b = b.registry.get_or_create("cam")
    seat = Seat()
    assert room_b.chat.join(seat) == []
    store.down = False
    b.chat.room_opened(room_b)  # as a retry would
    assert seat.messages == [(1, "old")]
    assert [m.id for m in room_b.chat.history] == [1]


def test_a_repeated_or_older_message_is_dropped() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    room = a.registry.get_or_create("cam")
    seat = Seat()
    room.chat.join(seat)
    room.post_chat("ann", "one", 1)
    channel = KEYS.chat_channel("live", "cam")
    store.deliver(channel, '{"id": "1", "nick": "ann", "text": "one", "time": "1"}')
    store.deliver(channel, "not json")
    store.deliver(channel, '{"id": "x"}')
    assert seat.messages == [(1, "one")]


def test_the_sender_given_is_not_sent_its_own_message() -> None:
    """IRC does not echo a sender's message: post_chat(sender=seat) skips that seat."""
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    room = a.registry.get_or_create("cam")
    sender, other = Seat(), Seat()
    room.chat.join(sender)
    room.chat.join(other)
    room.post_chat("irc", "hello", 1, sender=sender)
    assert sender.messages == []
    assert other.messages == [(1, "hello")]


def test_a_closed_room_unsubscribes_and_a_lost_post_is_counted() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a = make_node(store, clock, "a")
    room = a.registry.get_or_create("cam")
    channel = KEYS.chat_channel("live", "cam")
    assert channel in store.subscribers
    store.down = True
    room.post_chat("ann", "lost", 1)
    assert a.chat.failed == 1
    store.down = False
    a.registry.release(room)
    assert channel not in store.subscribers
