"""What the fuzz tests of the HTTP site and the IRC gateway share.

:func:`mutate` applies a few hostile edits to a valid byte stream (flip a byte,
cut it, insert a hostile piece, duplicate a prefix, drop a run), and
:func:`no_failures_logged` fails the test if anything was logged as a failure
meanwhile (an exception escaping to a Deferred or to Twisted's logging: a bug).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st
from twisted.logger import globalLogPublisher


def mutate(
    draw: st.DrawFn, valid: bytes, pieces: Sequence[bytes], *, edits: int = 4, drop: int = 20
) -> bytes:
    """*valid* with up to *edits* hostile edits drawn by *draw*."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, edits))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "duplicate", "drop"]))
        if action == "flip" and data:
            data[min(where, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.sampled_from(pieces))
        elif action == "duplicate":
            data[where:where] = data[: draw(st.integers(0, len(data)))]
        elif action == "drop" and data:
            del data[where : where + draw(st.integers(1, drop))]
    return bytes(data)


@contextmanager
def no_failures_logged() -> Iterator[list[dict[str, Any]]]:
    """Collect the log events of the block; fail with the first failure's traceback."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [event for event in events if "log_failure" in event]
    assert not failures, failures[0]["log_failure"].getTraceback()
