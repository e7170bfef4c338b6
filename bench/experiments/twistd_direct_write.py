"""``twistd`` with :mod:`direct_write` installed first (an experiment; see there)."""

import sys
from pathlib import Path

from twisted.scripts.twistd import run

sys.path.insert(0, str(Path(__file__).resolve().parent))

import direct_write

direct_write.install()
sys.exit(run())
