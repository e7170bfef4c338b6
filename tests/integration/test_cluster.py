"""Two ``twistd`` nodes on a real ``redis-server`` (``--cluster``): pulls, chat, moving origin.

ffmpeg publishes on node A; ffmpeg plays the stream from node B, which pulls it
from A (its origin in Redis), and decodes it (ffprobe sees h264 + aac).  A
chat message sent on B reaches a participant on A, and one who joins later on
B gets A's earlier message from the shared history; in the pulled stream's room a
message reaches B's viewer once (through Redis, not also over the pull).  A publish of the same
stream on B while A holds it is refused.  Then A's publisher stops and one
starts on B: the RTMP viewers of both nodes follow (A now pulls from B), and
the test reports how long they waited.  A missing binary skips, or fails under
``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.cluster.redis_store import RedisStore
from streamserver.cluster.store import Keys
from tests.integration.hardening_support import start_twistd
from tests.integration.redis_support import start_redis
from tests.integration.support import ffprobe_codecs, get_reactor, run, sleep, wait_until, within
from tests.integration.test_interop import _publish_argv

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool
    from tests.integration.hardening_support import TwistdServer

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

STREAM = "live/x"
KEYS = Keys()


async def _get_json(curl: str, url: str) -> Any:
    result = await run([curl, "-sS", "--max-time", "5", url], 10)
    assert result.exit_code == 0, result.describe()
    return json.loads(result.stdout)


async def _viewer(node: TwistdServer, name: str = STREAM) -> RTMPClientProtocol:
    client = await within(connect_client(get_reactor(), node.url(name)), 10, "connect")
    stream_id = await within(client.create_stream(), 10, "createStream")
    # Not awaited: the play may wait for a publisher (on another node).
    playing = defer.ensureDeferred(client.play(name.split("/", 1)[1], stream_id))
    playing.addErrback(lambda failure: _log.warning("play: %s", failure.getErrorMessage()))
    return client


async def _chatter(node: TwistdServer, room: str, nick: str) -> tuple[RTMPClientProtocol, int]:
    client = await within(connect_client(get_reactor(), node.url(room)), 10, "connect")
    stream_id = await within(client.create_stream(), 10, "createStream")
    name = room.split("/", 1)[1]
    await within(client.join_chat(f"{name}?nick={nick}", stream_id), 10, "joinChat")
    return client, stream_id


def _chat(client: RTMPClientProtocol) -> list[tuple[int, str, str]]:
    return [(m.id, m.nick, m.text) for m in client.chat_messages]


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_two_nodes_pull_chat_and_follow_the_origin(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    tools = interop.tools("ffmpeg", "ffprobe", "curl", "redis-server")
    ffmpeg, ffprobe = tools["ffmpeg"], tools["ffprobe"]
    reactor = get_reactor()
    redis = await start_redis(processes, interop, tmp_path / "redis")
    nodes = []
    for node_id in ("a", "b"):
        directory = tmp_path / node_id
        directory.mkdir()
        nodes.append(
            await start_twistd(
                processes, interop, directory, "--cluster", redis.url, "--cluster-node-id", node_id
            )
        )
    a, b = nodes
    store = RedisStore("127.0.0.1", redis.port, 0)
    clients: list[RTMPClientProtocol] = []
    try:
        # --- publish on A; the origin is A in Redis ---------------------------------
        publisher_a = processes.spawn(_publish_argv(ffmpeg, sample_flv, a.url(STREAM)))

        async def origin() -> str | None:
            return await store.get(KEYS.origin("live", "x"))

        deadline = reactor.seconds() + 15
        while await origin() != "a":
            assert publisher_a.running, publisher_a.result.describe() if publisher_a.result else ""
            assert reactor.seconds() < deadline, "A never claimed the origin"
            await sleep(0.1)
        lease = json.loads(await store.get(KEYS.node("a")) or "{}")
        assert lease["url"] == f"rtmp://127.0.0.1:{a.port}"

        # --- ffmpeg on B decodes what B pulls from A ----------------------------------
        recorded = tmp_path / "from-b.flv"
        copy = await run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-i", b.url(STREAM), "-t", "4",
             "-c", "copy", "-y", str(recorded)],
            60,
        )  # fmt: skip
        assert copy.exit_code == 0, copy.describe()
        assert sorted(await ffprobe_codecs(ffprobe, recorded)) == ["aac", "h264"]
        decode = await run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-i", b.url(STREAM), "-t", "3",
             "-f", "null", "-"],
            60,
        )  # fmt: skip
        assert decode.exit_code == 0, decode.describe()
        assert decode.stderr.strip() == b"", decode.describe()

        # --- RTMP viewers on both nodes, to follow the stream later -----------------
        viewer_a, viewer_b = await _viewer(a), await _viewer(b)
        clients += [viewer_a, viewer_b]
        await wait_until(lambda: viewer_a.media_count > 30, 20, "media on A")
        await wait_until(lambda: viewer_b.media_count > 30, 20, "media on B (pulled)")

        # --- the API of B shows the cluster: A is the origin, viewers on both ------
        async def cluster_entry() -> dict[str, Any] | None:
            body = await _get_json(tools["curl"], b.http_url("api/streams"))
            for entry in body["cluster"]["streams"]:
                if (entry["app"], entry["name"]) == ("live", "x"):
                    return dict(entry)
            return None

        deadline = reactor.seconds() + 15
        while True:
            entry = await cluster_entry()
            if entry is not None and entry["origin"] == "a" and entry["viewers"] >= 2:
                break
            assert reactor.seconds() < deadline, f"B's cluster view: {entry}"
            await sleep(0.5)
        assert set(entry["nodes"]) == {"a", "b"}

        # --- a second publish of live/x on B is refused -------------------------------
        refused = processes.spawn(_publish_argv(ffmpeg, sample_flv, b.url(STREAM)))
        await wait_until(lambda: not refused.running, 20, "the refused publisher to end")
        assert refused.result is not None and refused.result.exit_code != 0
        assert await origin() == "a"

        # --- chat: B to A, and the shared history for a later joiner on B ------------
        ann, ann_sid = await _chatter(a, "live/talk", "ann")
        clients.append(ann)
        await within(ann.send_chat("hello from a", ann_sid), 10, "ann's message")
        bob, bob_sid = await _chatter(b, "live/talk", "bob")
        clients.append(bob)
        await wait_until(lambda: _chat(bob) == [(1, "ann", "hello from a")], 10, "bob's history")
        reply = await within(bob.send_chat("hello from b", bob_sid), 10, "bob's message")
        assert reply.args[0]["code"] == "Chat.Sent"
        await wait_until(lambda: len(ann.chat_messages) == 2, 10, "ann to hear bob")
        assert _chat(ann) == [(1, "ann", "hello from a"), (2, "bob", "hello from b")]
        await wait_until(lambda: len(bob.chat_messages) == 2, 10, "bob's own message")
        assert _chat(bob) == _chat(ann)

        # --- the pulled stream's room: once on B, through Redis, not also the pull --
        carl, carl_sid = await _chatter(a, STREAM, "carl")
        clients.append(carl)
        await within(carl.send_chat("on x", carl_sid), 10, "carl's message")
        await wait_until(lambda: len(viewer_b.chat_messages) >= 1, 10, "B's viewer to hear carl")
        await sleep(1.0)
        assert _chat(viewer_b) == [(1, "carl", "on x")]
        assert _chat(viewer_a) == [(1, "carl", "on x")]

        # --- the publisher moves from A to B: both nodes' viewers follow ------------
        await publisher_a.stop("TERM", grace=5.0)
        deadline = reactor.seconds() + 10
        while await origin() is not None:
            assert reactor.seconds() < deadline, "A never released the origin"
            await sleep(0.1)
        moved_at = reactor.seconds()
        publisher_b = processes.spawn(_publish_argv(ffmpeg, sample_flv, b.url(STREAM)))
        deadline = reactor.seconds() + 15
        while await origin() != "b":
            assert publisher_b.running, publisher_b.result.describe() if publisher_b.result else ""
            assert reactor.seconds() < deadline, "B never claimed the origin"
            await sleep(0.1)
        before = {"a": viewer_a.media_count, "b": viewer_b.media_count}
        followed: dict[str, float] = {}

        def both_follow() -> bool:
            for name, viewer in (("a", viewer_a), ("b", viewer_b)):
                if name not in followed and viewer.media_count > before[name] + 30:
                    followed[name] = reactor.seconds() - moved_at
            return len(followed) == 2

        await wait_until(both_follow, 60, "the viewers of A and B to follow the stream to B")
        _log.warning("viewers followed the publisher from A to B after %s s", followed)
        assert viewer_a.transport is not None and viewer_b.transport is not None
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.loseConnection()
        await store.close()


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_node_loss_viewers_follow_the_publisher_to_another_node(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """SIGKILL the origin node A: its lease and origin key expire (10 s); the publisher,
    retrying on B, is refused until then and accepted after; the viewer on edge C,
    whose pull from A failed, re-routes on its retries and follows it to B.  The
    times are logged (docs/scaling.md)."""
    ffmpeg = interop.tools("ffmpeg", "redis-server")["ffmpeg"]
    reactor = get_reactor()
    redis = await start_redis(processes, interop, tmp_path / "redis")
    nodes = []
    for node_id in ("a", "b", "c"):
        directory = tmp_path / node_id
        directory.mkdir()
        nodes.append(
            await start_twistd(
                processes, interop, directory, "--cluster", redis.url, "--cluster-node-id", node_id
            )
        )
    a, b, c = nodes
    store = RedisStore("127.0.0.1", redis.port, 0)
    viewer: RTMPClientProtocol | None = None
    try:
        publisher = processes.spawn(_publish_argv(ffmpeg, sample_flv, a.url(STREAM)))
        deadline = reactor.seconds() + 15
        while await store.get(KEYS.origin("live", "x")) != "a":
            assert publisher.running
            assert reactor.seconds() < deadline, "A never claimed the origin"
            await sleep(0.1)
        viewer = await _viewer(c)
        await wait_until(lambda: viewer is not None and viewer.media_count > 30, 20, "C pulls")

        await a.process.stop("KILL", grace=2.0)
        lost_at = reactor.seconds()
        await publisher.stop("KILL", grace=2.0)
        attempts = 0
        while True:  # the encoder reconnects to B every second until it is accepted
            attempts += 1
            publisher = processes.spawn(_publish_argv(ffmpeg, sample_flv, b.url(STREAM)))
            await sleep(1.0)
            if publisher.running and await store.get(KEYS.origin("live", "x")) == "b":
                break
            if publisher.running:
                await publisher.stop("KILL", grace=2.0)
            assert reactor.seconds() - lost_at < 30, "B never took the origin over"
        accepted_after = reactor.seconds() - lost_at
        assert accepted_after >= 5, "B took over while A's lease was alive"
        before = viewer.media_count
        await wait_until(lambda: viewer.media_count > before + 30, 30, "C's viewer to follow")
        followed_after = reactor.seconds() - lost_at
        _log.warning(
            "node loss: publisher accepted on B after %.1f s (%d attempts), "
            "C's viewer had media again after %.1f s",
            accepted_after,
            attempts,
            followed_after,
        )
        assert await store.get(KEYS.node("a")) is None
    finally:
        if viewer is not None and viewer.transport is not None:
            viewer.transport.loseConnection()
        await store.close()
