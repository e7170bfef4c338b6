"""``twistd`` with :mod:`nodelay` installed first (an experiment; see there).

``BENCH_TCP_NODELAY=on`` (no Nagle on any connection) or ``off`` (Nagle on all).
"""

import os
import sys
from pathlib import Path

from twisted.scripts.twistd import run

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nodelay

setting = os.environ.get("BENCH_TCP_NODELAY", "")
if setting not in ("on", "off"):
    raise SystemExit(f"BENCH_TCP_NODELAY must be 'on' or 'off', not {setting!r}")
nodelay.install(setting == "on")
sys.exit(run())
