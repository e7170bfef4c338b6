"""FakeStore: the Store interface's semantics on a task.Clock (as Redis keeps them)."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from streamserver.cluster.fake import FakeStore, StoreDownError


def _value(d):  # type: ignore[no-untyped-def]
    results: list[object] = []
    d.addBoth(results.append)
    return results[0]


def test_set_expires_at_its_ttl() -> None:
    clock = Clock()
    store = FakeStore(clock)
    handle = store.handle()
    _value(handle.set("k", "v", 10))
    clock.advance(9.9)
    assert _value(handle.get("k")) == "v"
    clock.advance(0.1)
    assert _value(handle.get("k")) is None


def test_claim_only_when_absent_refresh_and_release_only_if_ours() -> None:
    clock = Clock()
    store = FakeStore(clock)
    a, b = store.handle(), store.handle()
    assert _value(a.claim("o", "A", 10)) is True
    assert _value(b.claim("o", "B", 10)) is False
    clock.advance(8)
    assert _value(b.refresh("o", "B", 10)) is False
    assert _value(a.refresh("o", "A", 10)) is True
    clock.advance(8)
    assert _value(b.get("o")) == "A"  # refreshed at 8: lives until 18
    assert _value(b.release("o", "B")) is False
    assert _value(b.replace("o", "B", "X", 10)) is False
    assert _value(b.replace("o", "B", "A", 10)) is True
    assert _value(a.release("o", "A")) is False
    assert _value(b.release("o", "B")) is True
    assert _value(a.get("o")) is None


def test_append_numbers_keeps_capped_history_and_publishes() -> None:
    store = FakeStore(Clock())
    a, b = store.handle(), store.handle()
    seen: list[dict[str, str]] = []
    _value(b.subscribe("ch", lambda m: seen.append(json.loads(m))))
    ids = [_value(a.append("n", "h", "ch", {"text": str(i)}, 3)) for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert [m["id"] for m in seen] == ["1", "2", "3", "4", "5"]
    assert [e["text"] for e in _value(a.history("h", 10))] == ["2", "3", "4"]
    assert [e["id"] for e in _value(a.history("h", 2))] == ["4", "5"]
    _value(b.unsubscribe("ch"))
    _value(a.publish("ch", "{}"))
    assert len(seen) == 5


def test_down_store_fails_every_command() -> None:
    store = FakeStore(Clock())
    handle = store.handle()
    store.down = True
    failure = _value(handle.get("k"))
    assert failure.check(StoreDownError)  # type: ignore[union-attr]
