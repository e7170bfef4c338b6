"""The RTMP fan-out's Python calls per frame per viewer, counted by ``bench/calls.py``.

A regression guard for issue 16's per-frame work: one more viewer of a stream
costs at most :data:`MAX_PYTHON_CALLS` Python function calls per frame (the
viewer, its guarded chain of three ``admit_frame`` steps, the policy's fast path,
the adapter's queue reading, hold and flush; ``docs/benchmarks.md`` lists them).
A lever that adds a call per frame per viewer fails here; one that removes one
lowers the bound.
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


def test_one_more_viewer_costs_few_python_calls_per_frame() -> None:
    counts = _calls_module().per_viewer(4, 40)
    python = {
        name: count
        for name, count in counts.items()
        if not name.startswith("C:") and not name.endswith("(test double)") and count > 0.01
    }
    # the guarded chain still runs every step for every frame of every viewer
    for step in (
        "backpressure.py:BackpressureMixin.admit_frame",
        "subscribe.py:SubscribeMixin.admit_frame",
        "base.py:ProtocolRoot.admit_frame",
    ):
        assert python[step] == 1.0, step
    assert sum(python.values()) <= MAX_PYTHON_CALLS, python
