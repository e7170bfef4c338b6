"""FakeStore: the :class:`~streamserver.cluster.store.Store` in memory, for tests.

Keys expire on a clock (a ``task.Clock`` in tests) exactly when a Redis key
would: a read at or after its deadline finds nothing.  Several nodes of a test
share one FakeStore as they would share one Redis.  Published messages reach
the subscribers at once, in order.  :attr:`FakeStore.down` makes every command
fail with :class:`StoreDownError`, as a lost connection does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

__all__ = ["FakeStore", "StoreDownError"]


class StoreDownError(ConnectionError):
    """A command sent while the fake store is :attr:`~FakeStore.down`."""


class FakeStore:
    """An in-memory store shared by the nodes of a test.

    :ivar values: key -> (value, deadline or ``None``).
    :ivar streams: key -> entries (fields), oldest first.
    :ivar subscribers: channel -> callbacks (one per subscribing store handle).
    :ivar down: every command fails while true.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.values: dict[str, tuple[str, float | None]] = {}
        self.streams: dict[str, list[dict[str, str]]] = {}
        self.subscribers: dict[str, list[Callable[[str], None]]] = {}
        self.down = False

    def handle(self) -> FakeHandle:
        """A client of this store (its own subscriptions), as one node holds."""
        return FakeHandle(self)

    def live(self, key: str) -> str | None:
        """The value of *key* if it has not expired (dropping it if it has)."""
        entry = self.values.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and self.clock.seconds() >= deadline:
            del self.values[key]
            return None
        return value

    def ttl(self, key: str) -> float | None:
        """Seconds until *key* expires (``None``: missing or no deadline)."""
        if self.live(key) is None:
            return None
        deadline = self.values[key][1]
        return None if deadline is None else deadline - self.clock.seconds()

    def put(self, key: str, value: str, ttl: float | None) -> None:
        """Write *key* (with a deadline *ttl* seconds from now)."""
        deadline = None if ttl is None else self.clock.seconds() + ttl
        self.values[key] = (value, deadline)

    def deliver(self, channel: str, message: str) -> int:
        """Hand *message* to *channel*'s subscribers; how many."""
        callbacks = tuple(self.subscribers.get(channel, ()))
        for callback in callbacks:
            callback(message)
        return len(callbacks)


class FakeHandle:
    """One node's connection to a :class:`FakeStore` (the Store interface)."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.subscriptions: dict[str, Callable[[str], None]] = {}
        self.closed = False

    def _run(self, operation: Callable[[], Any]) -> Deferred[Any]:
        if self.store.down or self.closed:
            return defer.fail(StoreDownError("store is down"))
        return defer.succeed(operation())

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        return self._run(lambda: self.store.put(key, value, ttl))

    def claim(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        def claim() -> bool:
            if self.store.live(key) is not None:
                return False
            self.store.put(key, value, ttl)
            return True

        return self._run(claim)

    def get(self, key: str) -> Deferred[str | None]:
        return self._run(lambda: self.store.live(key))

    def get_many(self, keys: Sequence[str]) -> Deferred[list[str | None]]:
        return self._run(lambda: [self.store.live(key) for key in keys])

    def keys(self, prefix: str) -> Deferred[list[str]]:
        def keys() -> list[str]:
            return [
                k for k in list(self.store.values) if k.startswith(prefix) and self.store.live(k)
            ]

        return self._run(keys)

    def refresh(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        def refresh() -> bool:
            if self.store.live(key) != value:
                return False
            self.store.put(key, value, ttl)
            return True

        return self._run(refresh)

    def replace(self, key: str, value: str, expected: str, ttl: float) -> Deferred[bool]:
        def replace() -> bool:
            if self.store.live(key) != expected:
                return False
            self.store.put(key, value, ttl)
            return True

        return self._run(replace)

    def release(self, key: str, value: str) -> Deferred[bool]:
        def release() -> bool:
            if self.store.live(key) != value:
                return False
            del self.store.values[key]
            return True

        return self._run(release)

    def publish(self, channel: str, message: str) -> Deferred[int]:
        return self._run(lambda: self.store.deliver(channel, message))

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> Deferred[None]:
        def subscribe() -> None:
            self.unsubscribe_now(channel)
            self.subscriptions[channel] = callback
            self.store.subscribers.setdefault(channel, []).append(callback)

        return self._run(subscribe)

    def unsubscribe_now(self, channel: str) -> None:
        """Drop *channel*'s subscription at once."""
        callback = self.subscriptions.pop(channel, None)
        if callback is not None:
            callbacks = self.store.subscribers.get(channel, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self.store.subscribers.pop(channel, None)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        return self._run(lambda: self.unsubscribe_now(channel))

    def append(
        self,
        counter: str,
        history: str,
        channel: str,
        fields: Mapping[str, str],
        maxlen: int,
    ) -> Deferred[int]:
        def append() -> int:
            current = self.store.live(counter)
            new_id = int(current or 0) + 1
            self.store.put(counter, str(new_id), None)
            entry = {**fields, "id": str(new_id)}
            entries = self.store.streams.setdefault(history, [])
            entries.append(entry)
            del entries[:-maxlen]
            self.store.deliver(channel, json.dumps(entry))
            return new_id

        return self._run(append)

    def history(self, key: str, count: int) -> Deferred[list[dict[str, str]]]:
        return self._run(lambda: [dict(e) for e in self.store.streams.get(key, [])[-count:]])

    def close(self) -> Deferred[None]:
        for channel in list(self.subscriptions):
            self.unsubscribe_now(channel)
        self.closed = True
        return defer.succeed(None)
