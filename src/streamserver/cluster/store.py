"""The store a cluster keeps its shared state in: the Redis commands it uses, as an interface.

Every method returns a ``Deferred``; a store that lost its server fails them
(the caller logs and tries again on its next tick, nothing else breaks).  TTLs
are seconds (floats: the Redis store sends milliseconds).  The conditional
writes compare a key's value with the caller's, atomically (a Lua ``EVAL`` on
Redis), so a node never refreshes or deletes a key another node took.

:class:`Keys` names every key under a prefix, in one place: docs/scaling.md's
table follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

__all__ = ["DEFAULT_PREFIX", "Keys", "Store"]

#: The default prefix of every key and channel (``--cluster-prefix``).
DEFAULT_PREFIX = "streamserver:"


class Store(Protocol):
    """The commands of a shared store (Redis) that the cluster needs."""

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        """``SET key value PX ttl``: write *key*, expiring in *ttl* seconds."""
        ...

    def claim(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        """``SET key value PX ttl NX``: write *key* only if it does not exist.

        :returns: whether *key* is now *value* by this call.
        """
        ...

    def get(self, key: str) -> Deferred[str | None]:
        """``GET key``: its value, ``None`` when it does not exist (or expired)."""
        ...

    def get_many(self, keys: Sequence[str]) -> Deferred[list[str | None]]:
        """``MGET``: the values of *keys*, in order, ``None`` for a missing one."""
        ...

    def keys(self, prefix: str) -> Deferred[list[str]]:
        """``SCAN MATCH prefix*``: the keys starting with *prefix* (no order)."""
        ...

    def refresh(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        """Extend *key* to *ttl* seconds only if it still holds *value*.

        :returns: whether it did (``False``: the key expired or another took it).
        """
        ...

    def replace(self, key: str, value: str, expected: str, ttl: float) -> Deferred[bool]:
        """Set *key* to *value* for *ttl* seconds only if it holds *expected*.

        :returns: whether it did.
        """
        ...

    def release(self, key: str, value: str) -> Deferred[bool]:
        """Delete *key* only if it still holds *value*.

        :returns: whether it did.
        """
        ...

    def publish(self, channel: str, message: str) -> Deferred[int]:
        """``PUBLISH``: send *message* to *channel*'s subscribers; how many got it."""
        ...

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> Deferred[None]:
        """Call *callback* with every message of *channel* from now on (one per channel)."""
        ...

    def unsubscribe(self, channel: str) -> Deferred[None]:
        """Stop receiving *channel* (no error if not subscribed)."""
        ...

    def append(
        self,
        counter: str,
        history: str,
        channel: str,
        fields: Mapping[str, str],
        maxlen: int,
    ) -> Deferred[int]:
        """Atomically: ``INCR counter`` (the new id), ``XADD history MAXLEN ~ maxlen``
        of *fields* and ``id``, and ``PUBLISH channel`` of the same as JSON.

        Being one step, the ids, the history's order and every subscriber's
        order agree.

        :returns: the id.
        """
        ...

    def history(self, key: str, count: int) -> Deferred[list[dict[str, str]]]:
        """``XREVRANGE key + - COUNT count``: the newest entries' fields, oldest first."""
        ...

    def close(self) -> Deferred[None]:
        """Disconnect (pending commands fail)."""
        ...


@dataclass(frozen=True)
class Keys:
    """The names of the cluster's keys and channels, under *prefix*."""

    prefix: str = DEFAULT_PREFIX

    def node(self, node_id: str) -> str:
        """A node's lease: its advertised RTMP URL (JSON), expiring unless refreshed."""
        return f"{self.prefix}node:{node_id}"

    def origin(self, app: str, name: str) -> str:
        """A stream's origin: the id of the node its publisher is on."""
        return f"{self.prefix}origin:{app}/{name}"

    def streams(self, node_id: str) -> str:
        """A node's streams and viewer counts (JSON), expiring with its lease."""
        return f"{self.prefix}streams:{node_id}"

    @property
    def streams_prefix(self) -> str:
        """What every node's :meth:`streams` key starts with."""
        return f"{self.prefix}streams:"

    def chat_channel(self, app: str, name: str) -> str:
        """The pub/sub channel of a stream's chat room."""
        return f"{self.prefix}chat:{app}/{name}"

    def chat_history(self, app: str, name: str) -> str:
        """The capped Redis stream holding a room's history."""
        return f"{self.prefix}chat-history:{app}/{name}"

    def chat_id(self, app: str, name: str) -> str:
        """The counter a room's message ids come from."""
        return f"{self.prefix}chat-id:{app}/{name}"
