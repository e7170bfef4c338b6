"""RedisStore (txredisapi 1.6.0) against a real redis-server: the Store semantics the fake has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted

from streamserver.cluster.redis_store import RedisStore, parse_redis_url
from tests.integration.redis_support import start_redis
from tests.integration.support import sleep, wait_until, within

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration


def test_parse_redis_url() -> None:
    assert parse_redis_url("redis://h:7000/3") == ("h", 7000, 3)
    assert parse_redis_url("redis://h") == ("h", 6379, 0)
    with pytest.raises(ValueError):
        parse_redis_url("http://h/0")


@pytest_twisted.ensureDeferred
async def test_redis_store_semantics(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    redis = await start_redis(processes, interop, tmp_path / "redis")
    a = RedisStore("127.0.0.1", redis.port, 0)
    b = RedisStore("127.0.0.1", redis.port, 0)
    try:
        await within(a.set("k", "v", 0.3), 5, "SET")
        assert await a.get("k") == "v"
        await sleep(0.4)
        assert await a.get("k") is None
        assert await a.claim("o", "A", 10) is True
        assert await b.claim("o", "B", 10) is False
        assert await b.refresh("o", "B", 10) is False
        assert await a.refresh("o", "A", 10) is True
        assert await b.release("o", "B") is False
        assert await b.replace("o", "B", "A", 10) is True
        assert await b.get_many(["o", "nothing"]) == ["B", None]
        assert await a.keys("o") == ["o"]
        assert await b.release("o", "B") is True
        assert await a.get("o") is None
        got: list[dict[str, str]] = []
        await b.subscribe("ch", lambda m: got.append(json.loads(m)))
        ids = [await a.append("n", "h", "ch", {"text": t, "nick": "42"}, 2) for t in "xyz"]
        assert ids == [1, 2, 3]
        await wait_until(lambda: len(got) == 3, 5, "three messages")
        assert [m["id"] for m in got] == ["1", "2", "3"]
        assert got[0]["nick"] == "42"  # text stays text
        history = await a.history("h", 10)
        assert [e["text"] for e in history][-2:] == ["y", "z"]  # MAXLEN ~ 2 may keep more
        assert [e["id"] for e in await a.history("h", 2)] == ["2", "3"]
        await b.unsubscribe("ch")
        assert await a.publish("ch", "{}") == 0
    finally:
        await a.close()
        await b.close()


@pytest_twisted.ensureDeferred
async def test_subscriber_resubscribes_after_redis_restarts(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    redis = await start_redis(processes, interop, tmp_path / "redis")
    store = RedisStore("127.0.0.1", redis.port, 0)
    got: list[str] = []
    try:
        await store.subscribe("ch", got.append)  # fires once subscribed, not before
        assert await store.publish("ch", "one") == 1
        await wait_until(lambda: got == ["one"], 5, "the first message")
        await redis.process.stop("KILL", grace=2.0)
        again = await start_redis(processes, interop, tmp_path / "redis", port=redis.port)
        publisher = RedisStore("127.0.0.1", again.port, 0)
        try:

            async def delivered() -> bool:
                await publisher.publish("ch", "two")
                return "two" in got

            deadline = 20
            while not await delivered():
                deadline -= 0.25
                assert deadline > 0, "never resubscribed"
                await sleep(0.25)
        finally:
            await publisher.close()
    finally:
        await store.close()
