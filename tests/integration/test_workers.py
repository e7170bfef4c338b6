"""``twistd streamserver --workers 2``: one port, two worker processes, one origin.

ffmpeg publishes to the shared RTMP port, 50 RTMP viewers (our client, in this
process) connect to the same port and land on both workers (the API's
per-worker counts); they are in one chat room; every viewer receives every
frame; SIGKILL of the worker
that does not hold the publisher loses only its viewers, and the supervisor
starts it again (a new PID, serving new viewers).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.web.client import Agent, readBody

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.codec.messages import MessageType
from tests.integration.hardening_support import TwistdServer, start_twistd
from tests.integration.support import get_reactor, received_views, sleep, wait_until, within

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

VIEWERS = 50
SECONDS = 14
FPS = 30


async def _get_json(server: TwistdServer, path: str) -> Any:
    agent = Agent(get_reactor(), connectTimeout=2)
    response = await within(agent.request(b"GET", server.http_url(path).encode()), 10, path)
    assert response.code == 200, path
    return json.loads(await readBody(response))


async def _viewer(server: TwistdServer) -> RTMPClientProtocol:
    client = await within(connect_client(get_reactor(), server.url("live")), 10, "connect")
    stream_id = await within(client.create_stream(), 10, "createStream")
    await within(client.play("cam", stream_id), 10, "play")
    return client


def _video_timestamps(client: RTMPClientProtocol) -> list[int]:
    """The timestamps of the coded video frames (AVC NALU packets, no headers)."""
    return [
        ts
        for kind, ts, payload in received_views(client)
        if kind == MessageType.VIDEO and payload[1:2] == b"\x01"
    ]


async def _rows(server: TwistdServer) -> dict[str, dict[str, Any]]:
    answer = await _get_json(server, "api/server")
    return {row["name"]: row for row in answer["workers"]}


async def _all_up(server: TwistdServer) -> dict[str, dict[str, Any]]:
    """Wait (up to 20 s) until the API shows the origin and both workers up: their rows."""
    rows: dict[str, dict[str, Any]] = {}

    async def all_up() -> bool:
        rows.update(await _rows(server))
        return len(rows) == 3 and all(row["up"] for row in rows.values())

    for _ in range(100):
        if await all_up():
            break
        await sleep(0.2)
    assert await all_up(), rows
    return rows


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_two_workers_share_the_port_and_survive_a_kill(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """50 viewers on both workers get every frame; a killed worker loses only its
    viewers and is restarted; the API counts across both."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    server = await start_twistd(processes, interop, tmp_path, "--workers", "2",
                                "--workers-dir", str(tmp_path / "run"), backlog=256)  # fmt: skip
    await _all_up(server)
    viewers = [await _viewer(server) for _ in range(VIEWERS)]
    streams = (await _get_json(server, "api/streams"))["streams"]
    by_worker = streams[0]["viewers_by_worker"]
    assert sum(by_worker.values()) == VIEWERS, by_worker
    assert by_worker.get("0", 0) > 0 and by_worker.get("1", 0) > 0, by_worker

    publisher = processes.spawn([
        ffmpeg, "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", str(FPS), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", server.url("live/cam"),
    ])  # fmt: skip
    await wait_until(lambda: all(len(_video_timestamps(v)) > FPS for v in viewers), 20,
                     "every viewer to get its first second")  # fmt: skip
    # One chat room across workers: a message from one viewer reaches all 50.
    await within(viewers[0].send_chat("one room", 1), 10, "sendChatMessage")
    await wait_until(
        lambda: all(any(m.text == "one room" for m in v.chat_messages) for v in viewers), 10,
        "every viewer to get the chat message",
        describe=lambda: f"{sum(bool(v.chat_messages) for v in viewers)} of {VIEWERS} got it",
    )  # fmt: skip
    stream = (await _get_json(server, "api/streams"))["streams"][0]
    home = stream["publisher_worker"]
    assert home in ("0", "1"), stream
    victim = "1" if home == "0" else "0"
    lost = stream["viewers_by_worker"][victim]
    assert lost > 0
    before = await _rows(server)
    os.kill(before[f"worker-{victim}"]["pid"], signal.SIGKILL)
    await wait_until(lambda: sum(v.disconnected.called for v in viewers) == lost, 10,
                     "the killed worker's viewers to be disconnected")  # fmt: skip
    survivors = [v for v in viewers if not v.disconnected.called]
    assert len(survivors) == VIEWERS - lost

    restarted: dict[str, dict[str, Any]] = {}
    for _ in range(100):
        restarted = await _rows(server)
        row = restarted[f"worker-{victim}"]
        if row["up"] and row["pid"] != before[f"worker-{victim}"]["pid"]:
            break
        await sleep(0.2)
    row = restarted[f"worker-{victim}"]
    assert row["up"] and row["pid"] != before[f"worker-{victim}"]["pid"], restarted
    assert restarted[f"worker-{home}"]["pid"] == before[f"worker-{home}"]["pid"]
    # New viewers land on both workers again, the restarted one included.
    late = []
    for _ in range(40):
        late.append(await _viewer(server))
        counts = (await _get_json(server, "api/streams"))["streams"][0]["viewers_by_worker"]
        if counts.get(victim, 0) > 0:
            break
    assert counts.get(victim, 0) > 0, counts
    server_view = await _get_json(server, "api/server")
    assert server_view["viewers"] == len(survivors) + len(late), server_view
    await wait_until(lambda: late[-1].media_count > FPS, 20, "the restarted worker to serve")

    ended = await publisher.wait(SECONDS + 30)
    assert ended.exit_code == 0, ended.describe()
    # Every survivor got every frame: the same frames as each other, a video frame
    # every 1/FPS s from the start, nothing missing.
    await sleep(1.0)
    reference = received_views(survivors[0])
    video = _video_timestamps(survivors[0])
    assert len(video) >= SECONDS * FPS, len(video)
    steps = {b - a for a, b in itertools.pairwise(video)}
    assert steps <= {33, 34}, sorted(steps)
    for index, viewer in enumerate(survivors):
        assert received_views(viewer) == reference, f"viewer {index} differs"
    for viewer in viewers + late:
        viewer.close()
    result = await server.process.stop("TERM", grace=20)
    # twistd re-raises SIGTERM after a clean shutdown; every child shut down too.
    assert result.exit_code == 0 or result.signal == signal.SIGTERM, result.describe()[-3000:]
    for name in ("origin", "worker-0", "worker-1"):
        assert re.search(rf"\[{name}\] .*Server Shut Down".encode(), result.stdout), name
    assert not any((tmp_path / "run").glob("*.sock.lock")), list((tmp_path / "run").iterdir())


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sighup_reloads_every_worker(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """``kill -HUP`` at the supervisor (``systemctl reload``): the origin and both
    workers re-read --config's file and each logs the change."""
    config = tmp_path / "streamserver.toml"
    config.write_text("[server]\nmax-streams = 10\n")
    server = await start_twistd(processes, interop, tmp_path, "--workers", "2",
                                "--workers-dir", str(tmp_path / "run"),
                                "--config", str(config))  # fmt: skip
    await _all_up(server)
    config.write_text("[server]\nmax-streams = 20\n")
    os.kill(server.pid, signal.SIGHUP)
    change = re.compile(rb"\[(origin|worker-\d)\].*server: max-streams: 10 -> 20")

    def reloaded() -> set[bytes]:
        output = bytes(server.process.stdout) + bytes(server.process.stderr)
        return {match.group(1) for match in change.finditer(output)}

    await wait_until(lambda: len(reloaded()) == 3, 20, "every process to reload",
                     describe=lambda: f"reloaded: {sorted(reloaded())}")  # fmt: skip
    assert reloaded() == {b"origin", b"worker-0", b"worker-1"}
