"""Helpers of the churn and shutdown tests.

- ``twistd -n streamserver`` as a child process, and what /proc says about it:
  the server runs in its own process so its open file descriptors
  (``/proc/PID/fd``) and resident memory (``VmRSS``) are its own, not mixed with
  the test's clients.
- :class:`SteadyStream`: a publisher sending 30 fps until told to stop, so a
  stream spans an operation however long it takes on the machine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.task import LoopingCall

from streamserver.client import RTMPClientProtocol
from streamserver.codec.messages import Message, MessageType
from tests.integration.support import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    CollectingProcess,
    accepts_connections,
    free_port,
    get_reactor,
    run,
    sleep,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool


@dataclass
class TwistdServer:
    """A running ``twistd -n streamserver`` child.

    :ivar process: the child, with its collected output.
    :ivar port: the RTMP port on 127.0.0.1.
    :ivar http_port: the HTTP port on 127.0.0.1.
    """

    process: CollectingProcess
    port: int
    http_port: int

    @property
    def pid(self) -> int:
        return int(self.process.transport.pid)

    def url(self, path: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{path}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/{path}"

    def open_fds(self) -> int:
        """How many file descriptors the server has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        """The server's resident set size in KiB (``VmRSS``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")


async def find_twistd(interop: Interop, cwd: Path) -> Path:
    """The ``twistd`` next to this interpreter, checked to list the streamserver plugin.

    Missing twistd or an uninstalled plugin is an interop prerequisite (skip, or
    fail under ``STREAMSERVER_REQUIRE_INTEROP=1``).
    """
    twistd = Path(sys.executable).parent / "twistd"
    if not twistd.exists():
        interop.unavailable(f"no twistd next to {sys.executable}")
    listing = await run([str(twistd), "--help"], 60, cwd=cwd)
    if b"streamserver" not in listing.stdout:
        interop.unavailable(
            "twistd does not list the streamserver plugin; install the package with "
            "`pip install -e . --config-settings editable_mode=strict` (or `pip install .`)"
        )
    return twistd


async def start_twistd(
    processes: ProcessPool, interop: Interop, cwd: Path, *options: str, backlog: int = 0
) -> TwistdServer:
    """Start ``twistd -n streamserver`` on free loopback ports (RTMP, HTTP) with *options*.

    :param backlog: the listen backlog of both ports (the endpoints' ``backlog=``),
        when Twisted's 50 is too few for a test opening hundreds of connections at
        once: past it the kernel drops them before the server sees them.

    See :func:`find_twistd` for what a missing twistd or plugin means.
    """
    twistd = await find_twistd(interop, cwd)
    port, http_port = free_port(), free_port()
    extra = f":backlog={backlog}" if backlog else ""
    argv = [
        str(twistd), "-n", "--pidfile=", "--logfile=-",
        "streamserver", "--rtmp", f"tcp:{port}:interface=127.0.0.1{extra}",
        "--http", f"tcp:{http_port}:interface=127.0.0.1{extra}", *options,
    ]  # fmt: skip
    process = processes.spawn(argv, cwd=cwd)
    reactor = get_reactor()
    deadline = reactor.seconds() + 20
    while not await accepts_connections(port):
        assert process.running, process.result.describe() if process.result else ""
        assert reactor.seconds() < deadline, "twistd never accepted connections"
        await sleep(0.1)
    return TwistdServer(process, port, http_port)


class SteadyStream:
    """Publishes 30 fps of H.264-shaped video and AAC-shaped audio until stopped.

    :ivar sent: media messages sent, the two sequence headers included.
    """

    def __init__(self, publisher: RTMPClientProtocol, stream_id: int) -> None:
        self._publisher = publisher
        self._stream_id = stream_id
        self._frame = 0
        self.sent = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = get_reactor()

    def _send(self, type_id: int, timestamp: int, payload: bytes) -> None:
        self._publisher.send(Message(type_id, self._stream_id, timestamp, payload))
        self.sent += 1

    def start(self) -> None:
        self._send(MessageType.VIDEO, 0, AVC_SEQUENCE_HEADER)
        self._send(MessageType.AUDIO, 0, AAC_SEQUENCE_HEADER)
        self._loop.start(1 / 30)

    def stop(self) -> None:
        """Stop sending (idempotent)."""
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        index = self._frame
        self._frame += 1
        timestamp = index * 1000 // 30
        key = index % 30 == 0
        body = (b"\x17\x01" if key else b"\x27\x01") + b"\x00\x00\x00" + index.to_bytes(4, "big")
        self._send(MessageType.VIDEO, timestamp, body + bytes(6000 if key else 400))
        self._send(MessageType.AUDIO, timestamp, b"\xaf\x01" + bytes(120))
