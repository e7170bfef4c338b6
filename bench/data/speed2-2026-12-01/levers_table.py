"""The lever table of docs/benchmarks.md (round 2 of issue 16), from the JSON beside it."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = {
    "fix": "before (`5fedfc6`)",
    "A": "A: `ADMIT` by identity (`87f6bb8`)",
    "B": "B: SEND inline in `deliver` (`85e4efd`)",
    "C": "C: `FlushList` trims (`a0823e0`)",
}
MODES = ("batched", "every-frame")


def main() -> None:
    print(
        "| snapshot | round | batched: ms/MB, nginx-rtmp's (x) | every-frame: ms/MB, "
        "nginx-rtmp's (x) | µs per frame, batched / every-frame | p99 ms, nginx-rtmp's: "
        "batched | every-frame | frames lost |"
    )
    print("|---|---|---|---|---|---|---|---|")
    means: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for name, label in NAMES.items():
        for repeat in (1, 2):
            path = HERE / f"speed-s2-lever-{name}-{repeat}.json"
            if not path.exists():
                continue
            runs = json.loads(path.read_text())["runs"]
            cells = {(r["mode"], "nginx" in r["label"]): r for r in runs}
            row = [label, str(repeat)]
            micros, p99s, lost = [], [], 0
            for mode in MODES:
                ours, nginx = cells[(mode, False)], cells[(mode, True)]
                ms, theirs = ours["server_cpu_ms_per_mb"], nginx["server_cpu_ms_per_mb"]
                us = ours["server_cpu_us_per_frame"]
                means.setdefault((name, mode), []).append((ms, ms / theirs, us))
                row.append(f"{ms:.2f}, {theirs:.2f} ({ms / theirs:.2f}x)")
                micros.append(f"{us:.2f}")
                p99s.append(f"{ours['latency_ms']['p99']:.1f}, {nginx['latency_ms']['p99']:.1f}")
                lost += ours["frames_lost_per_viewer"]["total"]
            row += [" / ".join(micros), *p99s, str(lost)]
            print("| " + " | ".join(row) + " |")
    print()
    print("| snapshot | mode | ms/MB (mean of 2) | x nginx-rtmp | µs per frame |")
    print("|---|---|---|---|---|")
    for (name, mode), values in means.items():
        ms, ratio, us = (statistics.mean(v[i] for v in values) for i in range(3))
        print(f"| {NAMES[name]} | {mode} | {ms:.2f} | {ratio:.2f}x | {us:.2f} |")


if __name__ == "__main__":
    main()
