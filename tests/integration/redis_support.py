"""A real redis-server for a test: a free loopback port, its own directory, no saving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.integration.support import accepts_connections, free_port, get_reactor, sleep

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool
    from tests.integration.support import CollectingProcess


class RedisServer:
    """A running redis-server: its port and process."""

    def __init__(self, process: CollectingProcess, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


async def start_redis(
    processes: ProcessPool, interop: Interop, directory: Path, *, port: int = 0
) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1 with ``--save ''`` in *directory*
    (on *port*, for a restart; else a free one)."""
    redis_server = interop.tools("redis-server")["redis-server"]
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(directory), "--daemonize", "no",
    ]  # fmt: skip
    process = processes.spawn(argv, cwd=directory)
    deadline = get_reactor().seconds() + 10
    while not await accepts_connections(port):
        assert process.running, process.result.describe() if process.result else ""
        assert get_reactor().seconds() < deadline, "redis-server never accepted connections"
        await sleep(0.05)
    return RedisServer(process, port)
