"""The RTMP fan-out's Python calls per frame per viewer, counted by ``bench/calls.py``.

A regression guard for issue 16's per-frame work: one more viewer of a stream
costs at most :data:`MAX_PYTHON_CALLS` Python function calls per frame (the
viewer, its guarded chain of three ``admit_frame`` steps, the policy's fast path,
the adapter's queue reading, hold and flush; ``docs/benchmarks.md`` lists them).
A lever that adds a call per frame per viewer fails here; one that removes one
lowers the bound.

That is the slow path, which every frame of a viewer outside its group's fast
lane takes.  A viewer that keeps up is in the lane (``streamserver.media.lane``)
and costs no Python call per frame at all: its chain and policy ran once, when
it joined.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

#: The count after round 2 of issue 16 (13 before its FlushList trims): see
#: docs/benchmarks.md.
MAX_PYTHON_CALLS = 10


def _calls_module() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "calls.py"
    spec = importlib.util.spec_from_file_location("bench_calls", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_calls(counts: dict[str, float]) -> dict[str, float]:
    return {
        name: count
        for name, count in counts.items()
        if not name.startswith("C:") and not name.endswith("(test double)") and count > 0.001
    }


def test_one_more_viewer_costs_few_python_calls_per_frame() -> None:
    python = _python_calls(_calls_module().per_viewer(4, 40, lane=False))
    # the guarded chain still runs every step for every frame of every viewer
    for step in (
        "backpressure.py:BackpressureMixin.admit_frame",
        "subscribe.py:SubscribeMixin.admit_frame",
        "base.py:ProtocolRoot.admit_frame",
    ):
        assert python[step] == 1.0, step
    assert sum(python.values()) <= MAX_PYTHON_CALLS, python


def test_a_viewer_in_the_fast_lane_costs_no_python_call_per_frame() -> None:
    frames = 200
    python = _python_calls(_calls_module().per_viewer(4, frames))
    # the chain and the policy decided the frame each viewer joined with, once
    for step in (
        "backpressure.py:BackpressureMixin.admit_frame",
        "base.py:ProtocolRoot.admits_every_frame",
        "viewer.py:Viewer.policy_decision",
    ):
        assert python[step] == 1 / frames, step
    assert sum(python.values()) <= 20 / frames, python
