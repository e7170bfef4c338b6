"""A worker's links to the origin (the relay's push and pull to its Unix socket),
with real sockets: a publish is pushed, a play without a local publisher pulls, a
pull closes when idle or when a local publish comes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.workers.chat import PublisherChat
from streamserver.workers.origin import OriginRoute, install_origin_link
from streamserver.workers.roles import WORKER, Role
from tests.integration.support import (
    get_reactor,
    received_views,
    sleep,
    synthetic_tags,
    tag_views,
    wait_until,
    within,
)

pytestmark = pytest.mark.integration


class Node:
    """A server factory listening on loopback TCP (a worker) or a Unix socket (origin)."""

    def __init__(self, listen: Any, link_role: Role | None = None) -> None:
        reactor = get_reactor()
        config = ServerConfig(pull_idle_seconds=0.2, relay_reconnect_seconds=0.2)
        self.factory = RTMPServerFactory(config, reactor=reactor)
        self.factory.startFactory()
        self.port = listen(self.factory)
        self.route: OriginRoute | None = None
        if link_role is not None:
            self.route = install_origin_link(link_role, self.factory)

    async def client(self, app: str = "live") -> RTMPClientProtocol:
        url = f"rtmp://127.0.0.1:{self.port.getHost().port}/{app}"
        return await within(connect_client(get_reactor(), url), 10, "connect")


class Machine:
    """An origin and two workers in this process."""

    def __init__(self, tmp_path: Path) -> None:
        reactor = get_reactor()
        roles = [Role(WORKER, index, tmp_path, 2) for index in range(2)]
        path = str(roles[0].origin_rtmp_path)
        self.origin = Node(lambda factory: reactor.listenUNIX(path, factory))
        self.workers = [
            Node(lambda factory: reactor.listenTCP(0, factory, interface="127.0.0.1"), role)
            for role in roles
        ]
        self.clients: list[RTMPClientProtocol] = []

    async def publisher(self, worker: int, name: str) -> tuple[RTMPClientProtocol, int]:
        client = await self.workers[worker].client()
        self.clients.append(client)
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.publish(name, stream_id), 10, "publish")
        return client, stream_id

    async def player(self, worker: int, name: str) -> RTMPClientProtocol:
        client = await self.workers[worker].client()
        self.clients.append(client)
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.play(name, stream_id), 10, "play")
        return client

    async def close(self) -> None:
        for client in self.clients:
            client.close()
        for node in (self.origin, *self.workers):
            node.factory.pushes.stop_all()
            node.factory.pulls.stop_all()
            node.factory.stopFactory()
            await node.port.stopListening()
            for connection in list(node.factory.connections.values()):
                connection.link.abort()


@pytest_twisted.async_yield_fixture
async def machine(tmp_path: Path) -> AsyncIterator[Machine]:
    found = Machine(tmp_path)
    try:
        yield found
    finally:
        await found.close()


@pytest_twisted.ensureDeferred
async def test_a_viewer_on_another_worker_gets_every_frame(machine: Machine) -> None:
    """A publish on worker 0 reaches the origin; a viewer on worker 1 pulls it and gets
    every frame, headers included, in order; the pull closes once it is idle."""
    publisher, stream_id = await machine.publisher(0, "cam")
    origin = machine.origin.factory
    await wait_until(lambda: (s := origin.find_stream("live", "cam")) is not None
                     and s.publisher is not None, 10, "the push to reach the origin")  # fmt: skip
    player = await machine.player(1, "cam")
    pulls = machine.workers[1].factory.pulls
    await wait_until(lambda: len(origin.find_stream("live", "cam").subscribers) == 1,  # type: ignore[union-attr]
                     10, "the pull to play at the origin")  # fmt: skip
    tags = synthetic_tags(b"pull", seconds=2)
    publisher.send_tags(tags, stream_id)
    expected = tag_views(tags)
    await wait_until(lambda: len(received_views(player)) >= len(expected), 10, "every frame")
    assert received_views(player) == expected
    player.close()
    await wait_until(lambda: not pulls.pulls, 10, "the idle pull to close")
    assert machine.workers[1].factory.find_stream("live", "cam") is None
    await wait_until(lambda: not origin.find_stream("live", "cam").subscribers,  # type: ignore[union-attr]
                     10, "the origin to lose the pull")  # fmt: skip
    publisher.close()
    await wait_until(lambda: origin.find_stream("live", "cam") is None, 10, "the push to end")


@pytest_twisted.ensureDeferred
async def test_a_local_publish_supersedes_a_waiting_pull(machine: Machine) -> None:
    """A play with no publisher anywhere opens a pull; a publish on the same worker
    then closes it and serves the viewer locally, pushed to the origin."""
    player = await machine.player(1, "late")
    factory = machine.workers[1].factory
    await wait_until(lambda: bool(factory.pulls.pulls), 10, "a pull")
    publisher, stream_id = await machine.publisher(1, "late")
    await wait_until(lambda: not factory.pulls.pulls, 10, "the pull to close")
    stream = factory.find_stream("live", "late")
    assert stream is not None
    await wait_until(lambda: bool(factory.pushes.of(stream)), 10, "the push to the origin")
    tags = synthetic_tags(b"late", seconds=1)
    publisher.send_tags(tags, stream_id)
    expected = tag_views(tags)
    await wait_until(lambda: len(received_views(player)) >= len(expected), 10, "every frame")
    assert received_views(player) == expected


@pytest_twisted.ensureDeferred
async def test_chat_is_one_room_across_workers(machine: Machine) -> None:
    """A viewer on the publisher's worker and a viewer on the other worker are in one
    room: each sees its own message and the other's, once."""
    publisher, stream_id = await machine.publisher(0, "talk")
    origin = machine.origin.factory
    await wait_until(lambda: (s := origin.find_stream("live", "talk")) is not None
                     and s.publisher is not None, 10, "the push to reach the origin")  # fmt: skip
    near = await machine.player(0, "talk")
    far = await machine.player(1, "talk")
    await wait_until(lambda: bool(machine.workers[1].factory.pulls.pulls), 10, "the pull")
    publisher.send_tags(synthetic_tags(b"talk", seconds=0.5), stream_id)
    await within(near.send_chat("from the publisher's worker", 1), 10, "chat on worker 0")
    await within(far.send_chat("from the other worker", 1), 10, "chat on worker 1")

    def texts(client: RTMPClientProtocol) -> list[str]:
        return [message.text for message in client.chat_messages]

    both = {"from the publisher's worker", "from the other worker"}
    await wait_until(lambda: set(texts(near)) == both and set(texts(far)) == both, 5,
                     "both messages in both rooms",
                     describe=lambda: f"{texts(near)} / {texts(far)}")  # fmt: skip
    await sleep(0.3)  # nothing is posted twice
    assert sorted(texts(near)) == sorted(texts(far)) == sorted(both)
    origin_room = origin.find_stream("live", "talk").chat  # type: ignore[union-attr]
    assert sorted(m.text for m in origin_room.history) == sorted(both)
    # The publish ends: the publisher's link leaves (a pull for the viewer left takes
    # the room over, as on any worker without the publisher).
    local = machine.workers[0].factory.find_stream("live", "talk")
    assert local is not None and isinstance(local.chat_relay, PublisherChat)
    publisher.close()
    await wait_until(lambda: not isinstance(local.chat_relay, PublisherChat), 10,
                     "the publisher's chat link to close")  # fmt: skip
