"""Churn: thousands of short connections and abrupt disconnects leak nothing.

A ``twistd -n streamserver`` child serves one publisher (our client, pacing a
synthetic stream in real time) and one viewer.  Meanwhile 2,000 clients connect,
handshake, send ``connect`` and leave, and 200 more are cut off with a TCP
reset in the middle of a message: half of them publishers in the middle of a
keyframe, half in the middle of a command.  The server's open file descriptors
(``/proc/PID/fd``) and resident memory (``VmRSS``) are read after a warm-up and
again after the churn; the descriptors must come back to the same count and
memory may not grow beyond a small tolerance.  The viewer must receive every
frame published during the churn.  The numbers are printed (``pytest -s``) and
logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.codec import messages
from streamserver.codec.chunk import encode_message
from streamserver.codec.messages import Message, MessageType
from tests.integration.hardening_support import SteadyStream, TwistdServer, start_twistd
from tests.integration.support import get_reactor, sleep, wait_until, within

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

CYCLES = 2000
ABRUPT = 200
#: Connections in flight at once; the cycles are sequential within a lane.
LANES = 16
#: Resident memory the server may gain over the churn.  Freed connections leave
#: some pymalloc arenas and allocator caches behind; a leak of even 1 KiB per
#: connection would show as ~2 MiB over 2,200 connections on top of that.
RSS_TOLERANCE_KIB = 3 * 1024


async def _lanes(count: int, lanes: int, one: object) -> None:
    """Run ``one(index)`` for index in range(count), *lanes* at a time."""
    indexes = iter(range(count))

    async def lane() -> None:
        for index in indexes:
            await one(index)  # type: ignore[operator]

    await defer.gatherResults([defer.ensureDeferred(lane()) for _ in range(lanes)])


async def _connect_and_leave(server: TwistdServer, index: int) -> None:
    client = await within(connect_client(get_reactor(), server.url("live")), 10, "connect")
    client.close()
    await within(client.disconnected, 10, "the churn client to close")


async def _reset(client: RTMPClientProtocol, partial: bytes) -> None:
    """Write *partial* (part of a message), let it reach the server, then send a RST."""
    client.transport.write(partial)
    await sleep(0.005)
    client.transport.abortConnection()
    await within(client.disconnected, 10, "the aborted client to close")


async def _abort_mid_message(server: TwistdServer, index: int) -> None:
    client = await within(connect_client(get_reactor(), server.url("live")), 10, "connect")
    if index % 2 == 0:
        # a publisher cut off in the middle of a 200 KB keyframe
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.publish(f"churn{index}", stream_id), 10, "publish")
        keyframe = Message(MessageType.VIDEO, stream_id, 0, b"\x17\x01" + bytes(200_000))
        data = encode_message(keyframe, 6, 4096)
    else:
        # a client cut off in the middle of a command
        command = messages.command("FCPublish", 9, None, "x" * 20_000)
        data = encode_message(command, 3, 4096)
    await _reset(client, data[: len(data) // 2])


async def _settled_fds(server: TwistdServer, target: int | None, timeout: float) -> int:
    """The server's fd count once it stops changing (or reaches *target*)."""
    reactor = get_reactor()
    deadline = reactor.seconds() + timeout
    last = server.open_fds()
    while reactor.seconds() < deadline:
        await sleep(0.2)
        now = server.open_fds()
        if (target is not None and now <= target) or (target is None and now == last):
            return now
        last = now
    return server.open_fds()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_churn_leaks_no_descriptors_or_memory_and_spares_the_stream(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """2,000 connect/leave cycles and 200 resets mid-message: fds and RSS flat, no frame lost."""
    reactor = get_reactor()
    server = await start_twistd(processes, interop, tmp_path)
    publisher = await within(connect_client(reactor, server.url("live")), 10, "publisher")
    viewer = await within(
        connect_client(reactor, server.url("live"), keep_media=False), 10, "viewer"
    )
    stream: SteadyStream | None = None
    try:
        publish_id = await within(publisher.create_stream(), 10, "createStream")
        await within(publisher.publish("steady", publish_id), 10, "publish")
        play_id = await within(viewer.create_stream(), 10, "createStream")
        await within(viewer.play("steady", play_id), 10, "play")
        # 30 fps until the churn is over, so the stream spans the whole churn
        # however fast the machine is.
        stream = SteadyStream(publisher, publish_id)
        stream.start()

        # warm up: first connections allocate what later ones reuse
        await _lanes(200, LANES, lambda i: _connect_and_leave(server, i))
        await _lanes(20, 4, lambda i: _abort_mid_message(server, i))
        fds_before = await _settled_fds(server, None, 5)
        rss_before = server.rss_kib()

        started = reactor.seconds()
        await _lanes(CYCLES, LANES, lambda i: _connect_and_leave(server, i))
        cycles_done = reactor.seconds()
        await _lanes(ABRUPT, 8, lambda i: _abort_mid_message(server, 1000 + i))
        churn_seconds = reactor.seconds() - started

        fds_after = await _settled_fds(server, fds_before, 10)
        rss_after = server.rss_kib()
        stream.stop()
        media = stream.sent
        await wait_until(
            lambda: viewer.media_count >= media, 10, "the viewer to receive every frame"
        )
        connections = bytes(server.process.stdout).count(b" connected to live")
        summary = (
            f"churn: {CYCLES} connect/handshake/connect-command/close cycles in "
            f"{cycles_done - started:.1f} s, {ABRUPT} resets mid-message; server fds "
            f"{fds_before} -> {fds_after}; RSS {rss_before} KiB -> {rss_after} KiB "
            f"({rss_after - rss_before:+d} KiB); viewer got {viewer.media_count}/{media} "
            f"frames published during the churn; churn took {churn_seconds:.1f} s; "
            f"the server logged {connections} connects"
        )
        print(summary)
        _log.warning(summary)
        assert connections >= CYCLES + ABRUPT, summary
        assert media > 0 and viewer.media_count == media, summary
        assert viewer.connected, summary
        assert fds_after == fds_before, summary
        assert rss_after - rss_before < RSS_TOLERANCE_KIB, summary
        assert server.process.running
        log = bytes(server.process.stdout)
        assert b"Traceback" not in log, log[-3000:].decode(errors="replace")
    finally:
        if stream is not None:
            stream.stop()
        publisher.close()
        viewer.close()
