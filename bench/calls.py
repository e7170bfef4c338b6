"""Python calls per frame per viewer on the RTMP fan-out path, counted (not timed).

Builds a factory on a ``task.Clock``, a publisher and *N* viewers on
:class:`~streamserver.testing.FakePeer` (fake transports that read everything),
publishes frames, and counts with ``sys.setprofile`` every Python function call
and every call into C made while the frames are fanned out; the difference
between *N* + 1 viewers and 1 viewer, divided by *N* and by the frames, is what
one more viewer costs per frame.  Calls made by the fake transport (the test
double standing in for Twisted's ``FileDescriptor`` and the socket) are listed
apart: on a real socket they are a ``send``/``sendmsg`` instead.

Usage: ``.venv/bin/python bench/calls.py [--viewers N] [--frames F]``
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


def _count(viewers: int, frames: int) -> Counter[str]:
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
            if frame.f_code.co_filename.endswith("testing.py"):
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
        calls[f"{name}  (fake transport)" if in_double(frame) else name] += 1

    data_received = publisher.protocol.dataReceived
    sys.setprofile(profile)
    try:
        for data in encoded:
            data_received(data)
    finally:
        sys.setprofile(None)
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--frames", type=int, default=200)
    options = parser.parse_args(argv)
    one = _count(1, options.frames)
    many = _count(options.viewers + 1, options.frames)
    per = options.viewers * options.frames
    rows = sorted(
        ((name, (many[name] - one[name]) / per) for name in many),
        key=lambda row: -row[1],
    )
    total = python = 0.0
    for name, count in rows:
        if count < 0.005:
            continue
        double = name.endswith("(fake transport)")
        print(f"{count:6.2f}  {name}")
        if not double:
            total += count
            if not name.startswith("C:"):
                python += count
    print(f"{total:6.2f}  calls per frame per viewer, fake transport excluded")
    print(f"{python:6.2f}  of them Python functions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
