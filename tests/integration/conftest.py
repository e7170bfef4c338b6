"""Fixtures of the loopback integration tests.

- ``interop``: the one place that decides what a missing client binary (or an
  uninstalled twistd plugin) means: a skip, or a failure when
  ``STREAMSERVER_REQUIRE_INTEROP=1`` is set.
- ``sample_flv``: 10 s of H.264 + AAC made by ffmpeg once per session.
- ``rtmp_server``: a server on the real reactor at ``127.0.0.1``, port 0, with
  helpers to connect our own client; everything is closed in teardown.
- ``processes``: starts child processes and kills whatever still runs in teardown.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.integration.support import (
    CollectingProcess,
    get_reactor,
    run,
    spawn,
    within,
)

#: Set to 1 (as CI does) to turn every "client binary missing" skip into a failure.
REQUIRE_INTEROP_VARIABLE = "STREAMSERVER_REQUIRE_INTEROP"


class Interop:
    """Decides what happens when an interoperability prerequisite is missing.

    :ivar required: whether missing prerequisites fail the test instead of skipping it.
    """

    def __init__(self, required: bool) -> None:
        self.required = required

    def unavailable(self, reason: str) -> NoReturn:
        """Skip the test for *reason*, or fail it when interop is required."""
        if self.required:
            pytest.fail(f"{reason} (and {REQUIRE_INTEROP_VARIABLE}=1 is set)", pytrace=False)
        pytest.skip(reason)

    def tools(self, *names: str) -> dict[str, str]:
        """The absolute paths of the binaries *names*; see :meth:`unavailable` if one is missing."""
        found = {name: shutil.which(name) for name in names}
        missing = sorted(name for name, path in found.items() if path is None)
        if missing:
            self.unavailable(f"client binaries not on PATH: {', '.join(missing)}")
        return {name: path for name, path in found.items() if path is not None}


@pytest.fixture(scope="session")
def interop() -> Interop:
    return Interop(os.environ.get(REQUIRE_INTEROP_VARIABLE) == "1")


@pytest.fixture(scope="session")
def sample_flv(tmp_path_factory: pytest.TempPathFactory, interop: Interop) -> Path:
    """10 s of testsrc H.264 (keyframe every 2 s) + 440 Hz AAC in FLV, made once."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    path = tmp_path_factory.mktemp("media") / "sample.flv"
    argv = [
        ffmpeg, "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", "10",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
        "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", str(path),
    ]  # fmt: skip
    result = pytest_twisted.blockon(defer.ensureDeferred(run(argv, 60)))
    assert result.exit_code == 0, result.describe()
    assert path.stat().st_size > 0
    return path


class LoopbackServer:
    """A server listening on 127.0.0.1 and the clients the test connected to it.

    :ivar factory: the server's :class:`RTMPServerFactory`.
    :ivar port: the listening port number.
    """

    def __init__(self, factory: RTMPServerFactory, listening: Any) -> None:
        self.factory = factory
        self._listening = listening
        self.port: int = listening.getHost().port
        self._clients: list[RTMPClientProtocol] = []

    def url(self, path: str) -> str:
        """``rtmp://127.0.0.1:PORT/<path>``."""
        return f"rtmp://127.0.0.1:{self.port}/{path}"

    async def connect(self, app: str = "live") -> RTMPClientProtocol:
        """Connect our own client to *app*; it is closed in teardown."""
        client = await within(connect_client(get_reactor(), self.url(app)), 10, "connect")
        self._clients.append(client)
        return client

    async def player(self, name: str, app: str = "live") -> RTMPClientProtocol:
        """A client that connected, created a stream and plays *name*."""
        client = await self.connect(app)
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.play(name, stream_id), 10, f"play {app}/{name}")
        return client

    async def publisher(self, name: str, app: str = "live") -> tuple[RTMPClientProtocol, int]:
        """A client publishing *name*, and the message stream id it publishes on."""
        client = await self.connect(app)
        stream_id = await within(client.create_stream(), 10, "createStream")
        await within(client.publish(name, stream_id), 10, f"publish {app}/{name}")
        return client, stream_id

    def stream_ready(self, name: str, app: str = "live") -> bool:
        """Whether *app*/*name* has a publisher, both sequence headers and a cached keyframe."""
        stream = self.factory.find_stream(app, name)
        return (
            stream is not None
            and stream.publisher is not None
            and stream.video_header is not None
            and stream.audio_header is not None
            and bool(stream.gop)
        )

    def viewer_states(self) -> str:
        """What the server knows of each viewer (drop counters…), for failure messages."""
        return "; ".join(
            f"{protocol.peer}: {getattr(protocol, 'viewer', None)!r}"
            for protocol in self.factory.connections.values()
            if getattr(protocol, "play_stream", None) is not None
        )

    async def close(self) -> None:
        """Close every client, stop listening and drop the server's connections."""
        for client in self._clients:
            client.close()
        closing = [
            client.disconnected for client in self._clients if not client.disconnected.called
        ]
        await defer.maybeDeferred(self._listening.stopListening)
        for connection in list(self.factory.connections.values()):
            connection.link.abort()
        if closing:
            await within(defer.gatherResults(closing), 10, "clients to disconnect")


@pytest_twisted.async_yield_fixture
async def rtmp_server() -> AsyncIterator[LoopbackServer]:
    reactor = get_reactor()
    factory = RTMPServerFactory(config=ServerConfig(), reactor=reactor)
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    server = LoopbackServer(factory, listening)
    try:
        yield server
    finally:
        await server.close()


class ProcessPool:
    """Starts child processes for a test; :meth:`kill_all` ends those still running."""

    def __init__(self) -> None:
        self._processes: list[CollectingProcess] = []

    def spawn(self, argv: Sequence[str], *, cwd: Path | None = None) -> CollectingProcess:
        """Start *argv*; see :func:`tests.integration.support.spawn`."""
        process = spawn(argv, cwd=cwd)
        self._processes.append(process)
        return process

    async def kill_all(self) -> None:
        """SIGKILL every child still running and wait for it."""
        for process in self._processes:
            if process.running:
                await process.stop("KILL", grace=2.0)


@pytest_twisted.async_yield_fixture
async def processes() -> AsyncIterator[ProcessPool]:
    pool = ProcessPool()
    try:
        yield pool
    finally:
        await pool.kill_all()
