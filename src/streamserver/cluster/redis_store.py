"""RedisStore: the :class:`~streamserver.cluster.store.Store` on a Redis server, with txredisapi.

txredisapi is Twisted-native: it runs on the default reactor (no asyncio
reactor, whose fan-out path costs ~1.6x the CPU).  It is pinned to 1.6.0, the
version tested: 1.6.0 connects a factory through ``RedisFactory.startConnecting``
(a ``ClientService`` per pooled connection, reconnecting with backoff), where
1.4.10 used a ``ReconnectingClientFactory`` and needed ``six``.

Two connections: one for commands (replies in order) and one subscriber
connection, which subscribes again to every channel after a reconnect.  The
conditional writes are Lua scripts (``EVAL``), atomic on the server.  Values
are kept as text (``convertNumbers=False``: a chat line ``"42"`` stays a string).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

__all__ = ["RedisStore", "parse_redis_url"]

_log = Logger()

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: counter, history, channel; ARGV: maxlen, then field, value pairs.
_APPEND = """
local id = redis.call('INCR', KEYS[1])
local fields = {}
local message = {}
for i = 2, #ARGV, 2 do
  table.insert(fields, ARGV[i])
  table.insert(fields, ARGV[i + 1])
  message[ARGV[i]] = ARGV[i + 1]
end
message['id'] = tostring(id)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'id', tostring(id), unpack(fields))
redis.call('PUBLISH', KEYS[3], cjson.encode(message))
return id
"""


def parse_redis_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST[:PORT][/DB]`` -> (host, port, db).

    :raises ValueError: not a ``redis://`` URL, or a port or db that is no number.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"not a redis://HOST:PORT/DB URL: {url!r}")
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"the database of {url!r} is no number")
    return parts.hostname, parts.port or 6379, int(db_text)


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.store.message_received(str(channel), str(message))


class _SubscriberFactory(txredisapi.SubscriberFactory):
    protocol = _Subscriber

    def __init__(self, store: RedisStore) -> None:
        super().__init__(isLazy=True)
        self.store = store
        self.convertNumbers = False

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        channels = list(self.store.callbacks)
        if not conn.connected:
            return
        if not channels:
            self.store.subscriber_ready()
            return
        d = conn.subscribe(channels)
        d.addErrback(self.store.log_failure, "resubscribe")
        d.addBoth(lambda _: self.store.subscriber_ready())


class RedisStore:
    """The Store interface on one Redis server and database (txredisapi 1.6.0)."""

    def __init__(self, host: str, port: int, db: int, *, connect_timeout: float = 5.0) -> None:
        from twisted.internet import reactor

        self.host = host
        self.port = port
        self.db = db
        self.callbacks: dict[str, Callable[[str], None]] = {}
        self._waiting: list[Deferred[None]] = []
        self.redis = txredisapi.lazyConnection(
            host, port, dbid=db, convertNumbers=False, connectTimeout=connect_timeout
        )
        self._subscriber = _SubscriberFactory(self)
        self._subscriber.startConnecting(
            HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
        )

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """The store ``redis://HOST:PORT/DB`` names."""
        host, port, db = parse_redis_url(url)
        return cls(host, port, db)

    def log_failure(self, failure: Any, what: str) -> None:
        _log.warn("redis {what} failed: {error}", what=what, error=failure.getErrorMessage())

    def subscriber_ready(self) -> None:
        """The subscriber connection is up with every channel subscribed."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def message_received(self, channel: str, message: str) -> None:
        callback = self.callbacks.get(channel)
        if callback is not None:
            try:
                callback(message)
            except Exception:
                _log.failure("cluster message on {channel} failed", channel=channel)

    def _command(self, *args: Any) -> Deferred[Any]:
        result: Deferred[Any] = defer.maybeDeferred(self.redis.execute_command, *args)
        return result

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        return self._command("SET", key, value, "PX", _ms(ttl)).addCallback(lambda _: None)

    def claim(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        d = self._command("SET", key, value, "PX", _ms(ttl), "NX")
        return d.addCallback(lambda reply: reply is not None)

    def get(self, key: str) -> Deferred[str | None]:
        return self._command("GET", key)

    def get_many(self, keys: Sequence[str]) -> Deferred[list[str | None]]:
        if not keys:
            return defer.succeed([])
        return self._command("MGET", *keys).addCallback(list)

    @defer.inlineCallbacks
    def keys(self, prefix: str) -> Any:
        pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?") + "*"
        cursor: Any = "0"
        found: set[str] = set()
        while True:
            reply = yield self._command("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            cursor, batch = reply
            found.update(str(key) for key in batch)
            if str(cursor) == "0":
                return sorted(found)

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Deferred[Any]:
        return defer.maybeDeferred(self.redis.eval, script, list(keys), list(args))

    def refresh(self, key: str, value: str, ttl: float) -> Deferred[bool]:
        return self._eval(_REFRESH, [key], [value, _ms(ttl)]).addCallback(lambda r: int(r) == 1)

    def replace(self, key: str, value: str, expected: str, ttl: float) -> Deferred[bool]:
        d = self._eval(_REPLACE, [key], [value, expected, _ms(ttl)])
        return d.addCallback(lambda r: int(r) == 1)

    def release(self, key: str, value: str) -> Deferred[bool]:
        return self._eval(_RELEASE, [key], [value]).addCallback(lambda r: int(r) == 1)

    def publish(self, channel: str, message: str) -> Deferred[int]:
        return self._command("PUBLISH", channel, message).addCallback(int)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> Deferred[None]:
        """Fires once subscribed (after the subscriber connection is up, if it is not)."""
        self.callbacks[channel] = callback
        return self._on_subscriber("SUBSCRIBE", channel)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        if self.callbacks.pop(channel, None) is None:
            return defer.succeed(None)
        return self._on_subscriber("UNSUBSCRIBE", channel)

    def _on_subscriber(self, command: str, channel: str) -> Deferred[None]:
        """Send *command* on the subscriber connection; without one, the (re)connect
        subscribes to every channel, and a ``SUBSCRIBE`` fires once it has."""
        for conn in self._subscriber.pool:
            if conn.connected:
                d = conn.execute_command(command, channel, apply_timeout=False)
                return _ignore(d)
        if command != "SUBSCRIBE":
            return defer.succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def append(
        self,
        counter: str,
        history: str,
        channel: str,
        fields: Mapping[str, str],
        maxlen: int,
    ) -> Deferred[int]:
        args: list[Any] = [maxlen]
        for name, value in fields.items():
            args.extend((name, value))
        return self._eval(_APPEND, [counter, history, channel], args).addCallback(int)

    def history(self, key: str, count: int) -> Deferred[list[dict[str, str]]]:
        def entries(reply: Any) -> list[dict[str, str]]:
            result = []
            for _entry_id, flat in reversed(reply or []):
                values = [str(v) for v in flat]
                result.append(dict(zip(values[::2], values[1::2], strict=True)))
            return result

        return self._command("XREVRANGE", key, "+", "-", "COUNT", count).addCallback(entries)

    @defer.inlineCallbacks
    def close(self) -> Any:
        self.callbacks.clear()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(ConnectionError("store closed"))
        yield defer.gatherResults(
            [self.redis.disconnect(), self._subscriber.disconnect()], consumeErrors=True
        ).addErrback(lambda _: None)


def _ignore(d: Deferred[Any]) -> Deferred[None]:
    """*d* with its result dropped: the subscribe acknowledgements are not needed."""
    return d.addCallback(lambda _: None)


def encode(value: Any) -> str:
    """*value* as the JSON text the cluster stores."""
    return json.dumps(value, separators=(",", ":"))
