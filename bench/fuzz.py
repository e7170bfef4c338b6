"""Long protocol fuzzing run: hostile byte streams against the RTMP, HTTP, IRC and chat sides.

Reuses the strategies and the isolation check of ``tests/protocol/test_fuzz.py``
(mutated valid sessions: bytes flipped, truncated, duplicated, hostile chunks
inserted; random bytes from the first byte) for many more inputs than the test
suite runs.  Each input goes to one connection over ``FakeTransport`` while a
good publisher and viewer share the factory; an exception other than the
handled protocol error path, a connection that does not close cleanly, or a
viewer that misses a frame fails the run with the input that caused it.

``--target http`` does the same to the HTTP site with the strategies of
``tests/http/test_fuzz_http.py`` (mutated valid requests of every kind, random
bytes), an RTMP and an HTTP-FLV viewer watching meanwhile; ``--target irc`` to
the IRC gateway (``tests/test_irc_fuzz.py``), an RTMP and an IRC chat client
talking in the room meanwhile; ``--target chat`` to the chat WebSocket after its
upgrade (``tests/http/test_fuzz_chat_ws.py``), an RTMP and a WebSocket chat client
talking in the room meanwhile.

Usage::

    .venv/bin/python bench/fuzz.py --examples 100000
    .venv/bin/python bench/fuzz.py --examples 20000 --tight --seed 7
    .venv/bin/python bench/fuzz.py --target http --examples 100000
    .venv/bin/python bench/fuzz.py --target irc --examples 100000
    .venv/bin/python bench/fuzz.py --target chat --examples 100000

Prints one JSON line: inputs tried per kind, seconds, inputs per second, and
whether every input passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tests.http.test_fuzz_chat_ws import check_isolation as check_chat  # noqa: E402
from tests.http.test_fuzz_chat_ws import hostile_frames  # noqa: E402
from tests.http.test_fuzz_http import check_isolation, hostile_requests  # noqa: E402
from tests.protocol.test_fuzz import TIGHT, _check_isolation, hostile_inputs  # noqa: E402
from tests.test_irc_fuzz import check_isolation as check_irc  # noqa: E402
from tests.test_irc_fuzz import hostile_sessions  # noqa: E402


def run(
    examples: int,
    *,
    tight: bool,
    random_bytes: bool,
    seed_value: int | None,
    target: str = "rtmp",
) -> dict[str, Any]:
    """Fuzz *examples* inputs of *target* (rtmp, http, irc, chat); the counts and timings."""
    counts = {"mutated": 0, "random": 0}
    config = TIGHT if tight else None
    strategies = {"http": hostile_requests, "irc": hostile_sessions, "chat": hostile_frames}
    mutated = strategies.get(target, hostile_inputs)()
    inputs = mutated.map(lambda case: ("mutated", case))
    if random_bytes:
        garbage = st.tuples(st.binary(max_size=5000), st.lists(st.integers(1, 300), max_size=8))
        inputs = st.one_of(inputs, garbage.map(lambda case: ("random", case)))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs, st.booleans())
    def one(item: tuple[str, tuple[bytes, list[int]]], remote: bool) -> None:
        kind, (data, cuts) = item
        counts[kind] += 1
        if target == "http":
            check_isolation(data, cuts)
        elif target == "irc":
            check_irc(data, cuts)
        elif target == "chat":
            check_chat(data, cuts)
        else:
            _check_isolation(data, cuts, config, remote=remote)

    test = seed(seed_value)(one) if seed_value is not None else one
    started = time.perf_counter()
    failure: str | None = None
    try:
        test()
    except Exception as error:  # the report must say what failed, whatever it was
        failure = f"{type(error).__name__}: {error}"
    elapsed = time.perf_counter() - started
    tried = counts["mutated"] + counts["random"]
    return {
        "target": target,
        "inputs_tried": tried,
        "by_kind": counts,
        "tight_limits": tight,
        "seconds": round(elapsed, 1),
        "inputs_per_second": round(tried / elapsed, 1) if elapsed else None,
        "passed": failure is None,
        "failure": failure,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100_000, help="inputs to generate")
    parser.add_argument(
        "--tight",
        action="store_true",
        help="small limits and timeouts (tests.protocol.test_fuzz.TIGHT), run after each input",
    )
    parser.add_argument(
        "--no-random",
        action="store_true",
        help="only mutated valid sessions, no random bytes from the first byte",
    )
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed")
    parser.add_argument(
        "--target", choices=("rtmp", "http", "irc", "chat"), default="rtmp", help="the side to fuzz"
    )
    options = parser.parse_args(argv)
    report = run(
        options.examples,
        tight=options.tight,
        random_bytes=not options.no_random,
        seed_value=options.seed,
        target=options.target,
    )
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
