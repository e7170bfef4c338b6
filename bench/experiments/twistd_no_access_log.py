"""``twistd`` whose HTTP sites write no access log line (an experiment, not a fix).

``twisted.web.server.Site`` (an ``HTTPFactory``) logs every finished request: with
no ``logPath`` its lines go to the twistd log through the global logger, one
formatted line (and, past a MB, a log rotation) per request.  LL-HLS players make
about ten requests a second each, so at 500 of them the log takes ~5000 lines a
second.  This replaces ``HTTPFactory.log`` with a no-op for the whole process,
to measure what those lines cost without changing the server::

    .venv/bin/python bench/hls_compare.py --case hls@500 --rounds 1 \\
        --twistd bench/experiments/twistd_no_access_log.py --tag no-access-log
"""

import sys

from twisted.scripts.twistd import run
from twisted.web import http


def _no_log(self: object, request: object) -> None:
    """Log nothing for *request*."""


http.HTTPFactory.log = _no_log  # type: ignore[method-assign]
sys.exit(run())
