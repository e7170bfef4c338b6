"""The cost of an edge hop: origin CPU per edge, added latency p50/p99.

Starts two ``twistd -n streamserver`` children on free loopback ports: an origin,
and an edge with ``--pull rtmp://127.0.0.1:ORIGIN/live``.  This process publishes
a synthetic 30 fps H.264-shaped + AAC-shaped stream (about ``--kbps`` kbit/s) to
the origin, each video payload carrying ``time.monotonic_ns()`` (one clock for
every process of the machine), and plays it with ``--viewers`` RTMP viewers on the
origin directly and as many on the edge, recording each video frame's delay.

Phases of ``--seconds`` each, the origin's CPU (utime + stime from
``/proc/PID/stat``) measured over each:

1. ``publisher only``: nobody plays;
2. ``direct``: the direct viewers play the origin;
3. ``edge``: the direct viewers leave, the edge viewers play the edge (one pull at
   the origin, however many viewers the edge has).

Prints one JSON object: CPU seconds per second of the origin in each phase (the
cost of one edge is phase 3 minus phase 1; of the direct viewers, phase 2 minus
phase 1), the edge's own CPU, the load generator's, and the delay p50/p99 of the
direct and the edge viewers (the added latency is their difference).

Example::

    .venv/bin/python bench/edge_hop.py --viewers 20 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.task import LoopingCall

from streamserver.client import RTMPClientProtocol, connect_client
from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType

#: AVC sequence header (FLV VideoTagHeader 17 00, then a decoder configuration record).
AVC_SEQUENCE_HEADER = bytes.fromhex("1700000000" + "0164001fffe1000467640015" + "01000468ee3cb0")
#: AAC sequence header (AF 00, AudioSpecificConfig LC 44.1 kHz stereo).
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"
FPS = 30
GOP = 60
_STAMP = struct.Struct(">Q")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_twistd(workdir: Path, label: str, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    twistd = Path(sys.executable).with_name("twistd")
    argv = [
        str(twistd), "-n", "--pidfile=", f"--logfile={workdir / (label + '.log')}",
        "streamserver", "--rtmp", f"tcp:{port}:interface=127.0.0.1", "--no-http", *options,
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{label} never listened")


class Publisher:
    """30 fps video (a keyframe every 2 s) and AAC-shaped audio at about *kbps*."""

    def __init__(self, client: RTMPClientProtocol, stream_id: int, kbps: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.frame = 0
        per_second = kbps * 1000 // 8
        self.inter = max(64, per_second // (FPS + 3))
        self.key = self.inter * 4
        self.loop = LoopingCall(self.tick)

    def start(self, reactor: Any) -> None:
        self.loop.clock = reactor
        meta = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"framerate": 30.0}))
        for type_id, payload in (
            (MessageType.DATA_AMF0, meta),
            (MessageType.VIDEO, AVC_SEQUENCE_HEADER),
            (MessageType.AUDIO, AAC_SEQUENCE_HEADER),
        ):
            self.client.send(Message(type_id, self.stream_id, 0, payload))
        self.loop.start(1 / FPS)

    def tick(self) -> None:
        ts = self.frame * 1000 // FPS
        key = self.frame % GOP == 0
        body = _STAMP.pack(time.monotonic_ns())
        size = self.key if key else self.inter
        header = b"\x17\x01\x00\x00\x00" if key else b"\x27\x01\x00\x00\x00"
        payload = header + body + b"\x00" * (size - len(body))
        self.client.send(Message(MessageType.VIDEO, self.stream_id, ts, payload))
        self.client.send(
            Message(MessageType.AUDIO, self.stream_id, ts, b"\xaf\x01" + b"\x21" * 200)
        )
        self.frame += 1


class Viewer:
    """Records each video frame's delay since the publisher stamped it (ms)."""

    def __init__(self, client: RTMPClientProtocol) -> None:
        self.client = client
        self.delays: list[float] = []
        self.recording = False
        client.on_media = self.media

    def media(self, message: Message) -> None:
        payload = message.payload
        if self.recording and message.type_id == MessageType.VIDEO and payload[1:2] == b"\x01":
            sent = _STAMP.unpack_from(payload, 5)[0]
            self.delays.append((time.monotonic_ns() - sent) / 1e6)


async def play(reactor: Any, port: int, count: int) -> list[Viewer]:
    viewers = []
    for _ in range(count):
        client = await connect_client(reactor, f"rtmp://127.0.0.1:{port}/live", keep_media=False)
        stream_id = await client.create_stream()
        await client.play("cam", stream_id)
        viewers.append(Viewer(client))
    return viewers


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        return {"p50": None, "p99": None, "frames": len(values)}
    cuts = statistics.quantiles(values, n=100)
    return {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2), "frames": len(values)}


async def measure(reactor: Any, seconds: float, pids: dict[str, int]) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    await task.deferLater(reactor, seconds, lambda: None)
    elapsed = time.monotonic() - start
    return {
        name: round((cpu_seconds(pid) - before[name]) / elapsed, 4) for name, pid in pids.items()
    }


async def run(reactor: Any, options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-hop-") as tmp:
        workdir = Path(tmp)
        origin, origin_port = start_twistd(workdir, "origin")
        edge, edge_port = start_twistd(
            workdir,
            "edge",
            "--pull",
            f"rtmp://127.0.0.1:{origin_port}/live",
            "--pull-idle-seconds",
            "1",
        )
        try:
            pids = {"origin": origin.pid, "edge": edge.pid, "load_generator": os.getpid()}
            client = await connect_client(reactor, f"rtmp://127.0.0.1:{origin_port}/live")
            stream_id = await client.create_stream()
            await client.publish("cam", stream_id)
            publisher = Publisher(client, stream_id, options.kbps)
            publisher.start(reactor)
            await task.deferLater(reactor, 2, lambda: None)
            phases: dict[str, Any] = {}
            phases["publisher_only"] = await measure(reactor, options.seconds, pids)
            direct = await play(reactor, origin_port, options.viewers)
            await task.deferLater(reactor, 2, lambda: None)
            for viewer in direct:
                viewer.recording = True
            phases["direct"] = await measure(reactor, options.seconds, pids)
            for viewer in direct:
                viewer.recording = False
                viewer.client.close()
            via_edge = await play(reactor, edge_port, options.viewers)
            await task.deferLater(reactor, 2, lambda: None)
            for viewer in via_edge:
                viewer.recording = True
            phases["edge"] = await measure(reactor, options.seconds, pids)
            for viewer in via_edge:
                viewer.client.close()
            publisher.loop.stop()
            client.close()
            base = phases["publisher_only"]["origin"]
            return {
                "viewers": options.viewers,
                "kbps": options.kbps,
                "seconds": options.seconds,
                "cpu_s_per_s": phases,
                "origin_cpu_per_edge": round(phases["edge"]["origin"] - base, 4),
                "origin_cpu_direct_viewers": round(phases["direct"]["origin"] - base, 4),
                "delay_ms_direct": percentiles([d for v in direct for d in v.delays]),
                "delay_ms_edge": percentiles([d for v in via_edge for d in v.delays]),
                "loadavg": os.getloadavg(),
            }
        finally:
            for process in (origin, edge):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--kbps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    options = parser.parse_args()

    def go(reactor: Any) -> defer.Deferred[None]:
        async def body() -> None:
            result = await run(reactor, options)
            print(json.dumps(result))

        return defer.ensureDeferred(body())

    task.react(go)


if __name__ == "__main__":
    main()
