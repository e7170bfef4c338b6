"""Summarize a py-spy profile: the functions with the most CPU, self and inclusive.

Reads the collapsed-stack file written by ``py-spy record --format raw`` (one
line per distinct stack: ``frame;frame;…;leaf COUNT``, outermost frame first)
and prints two markdown tables: *self* (samples where the function is the
innermost Python frame: the time spent in its own code and in the C functions
and system calls it makes) and *inclusive* (samples where it is anywhere on the
stack, leaving out the frames on nearly every stack: the reactor loop), each as
a share of all samples.  py-spy is run without ``--idle``, so
the samples are the server's busy time and the shares are shares of its CPU.

Example::

    .venv/bin/python bench/profile_top.py bench/results/profile-400.txt --top 15
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

#: py-spy frames look like ``name (path/to/file.py:LINE)`` or ``name (path/to/file.py)``.
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    """``name (package/module.py)``, with site-packages and source prefixes cut off."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('name')} ({path})"


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f]
        # py-spy's raw format may begin with a "process …" / "thread …" pseudo-frame
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return self_counts, inclusive, total


def table(title: str, counts: Counter[str], total: int, top: int) -> str:
    lines = [f"| {title} | share of CPU samples |", "|---|---|"]
    for frame, count in counts.most_common(top):
        lines.append(f"| `{frame}` | {100 * count / total:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=15)
    options = parser.parse_args(argv)
    self_counts, inclusive, total = load(options.profile)
    if not total:
        raise SystemExit(f"{options.profile}: no samples")
    print(f"{total} samples\n")
    print(table("self (innermost Python frame)", self_counts, total, options.top))
    # Frames on (nearly) every stack, the reactor's main loop and twistd's start-up,
    # say nothing about where the time goes: leave them out.
    below = Counter({f: c for f, c in inclusive.items() if c < 0.95 * total})
    print(table("inclusive (frames on ≥ 95% of stacks left out)", below, total, options.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
