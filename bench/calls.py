"""Python calls per frame per viewer on the RTMP fan-out path, counted (not timed).

Builds a factory on a ``task.Clock``, a publisher and *N* viewers on
:class:`~streamserver.testing.FakePeer` (fake transports that read everything),
publishes frames, and counts with ``sys.setprofile`` every Python function call
and every call into C made while the frames are fanned out; the difference
between *N* + 1 viewers and 1 viewer, divided by *N* and by the frames, is what
one more viewer costs per frame.  Each viewer's adapter is given a stand-in for
an empty plain TCP socket (it takes every byte), so the eager ``send`` path runs
as on a real connection; the stand-in's calls (on a real socket: one C call)
and any made by the fake transport are listed apart and not counted.

By default the stand-in is the adapter's ``lane_socket`` too, as a real plain
TCP socket is, so the viewers keep up by their group's fast lane
(``streamserver.media.lane``); ``--no-lane`` counts the slow path every frame
of a viewer takes outside it (the chain, the policy, the write).

Usage: ``.venv/bin/python bench/calls.py [--viewers N] [--frames F] [--no-lane]``
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet import task

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocol import media  # the tests' media builders


class _Socket:
    """Stands in for a plain TCP socket that takes every byte (``send``, ``sendmsg``)."""

    def send(self, data: bytes) -> int:
        return len(data)

    def sendmsg(self, buffers: list[bytes]) -> int:
        return sum(map(len, buffers))


class _EmptyBuffer:
    """Stands in for an empty ``FileDescriptor`` write buffer (what the adapter reads)."""

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0


def _count(viewers: int, frames: int, *, eager: bool, lane: bool) -> Counter[str]:
    clock = task.Clock()
    factory = RTMPServerFactory(ServerConfig(), reactor=clock)
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    for _ in range(viewers):
        peer = FakePeer(factory)
        peer.connect("live")
        peer.play("cam", peer.create_stream())
        if eager:
            # the adapter as on a real, empty plain TCP socket: the eager sends
            link = peer.protocol.link
            link._buffer = _EmptyBuffer()
            link._eager = _Socket()
            link.lane_socket = link._eager if lane else None
    for message in media.headers(sid):
        publisher.send(message)
    publisher.send(media.video(sid, 0, key=True, size=1700))
    # pre-encode the publisher's bytes: their encoding is not the fan-out's
    encoded = []
    for index in range(frames):
        timestamp = 33 + index * 33
        message = media.video(sid, timestamp, key=False, size=1700)
        encoded.append(publisher._encoder.encode(message, 6))
    calls: Counter[str] = Counter()

    def in_double(frame: Any) -> bool:
        while frame is not None:
            code = frame.f_code
            if code.co_filename.endswith("testing.py") or code.co_qualname.startswith("_Socket"):
                return True
            frame = frame.f_back
        return False

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            name = f"{Path(code.co_filename).name}:{code.co_qualname}"
        elif event == "c_call":
            name = f"C:{getattr(arg, '__qualname__', arg)}"
        else:
            return
        calls[f"{name}  (test double)" if in_double(frame) else name] += 1

    data_received = publisher.protocol.dataReceived
    sys.setprofile(profile)
    try:
        for data in encoded:
            data_received(data)
    finally:
        sys.setprofile(None)
    return calls


def per_viewer(
    viewers: int, frames: int, *, eager: bool = True, lane: bool = True
) -> dict[str, float]:
    """Calls one more viewer costs per frame, by function (test doubles' marked)."""
    one = _count(1, frames, eager=eager, lane=lane)
    many = _count(viewers + 1, frames, eager=eager, lane=lane)
    per = viewers * frames
    return {name: (many[name] - one[name]) / per for name in many}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument(
        "--fake-transport",
        action="store_true",
        help="write through the fake transport, not eagerly to a stand-in socket",
    )
    parser.add_argument(
        "--no-lane", action="store_true", help="keep the viewers out of the fast lane"
    )
    options = parser.parse_args(argv)
    counts = per_viewer(
        options.viewers,
        options.frames,
        eager=not options.fake_transport,
        lane=not options.no_lane,
    )
    rows = sorted(counts.items(), key=lambda row: -row[1])
    total = python = 0.0
    for name, count in rows:
        if count < 0.005:
            continue
        double = name.endswith("(test double)")
        print(f"{count:6.2f}  {name}")
        if not double:
            total += count
            if not name.startswith("C:"):
                python += count
    print(f"{total:6.2f}  calls per frame per viewer, test doubles excluded")
    print("        (a real socket adds one C call: send)")
    print(f"{python:6.2f}  of them Python functions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
