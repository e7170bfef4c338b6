"""Experiment, not a fix: what would writing to the socket at once save streamserver?

Twisted's ``transport.write`` only buffers: it registers the socket for
``EPOLLOUT`` (an ``epoll_ctl``), the next reactor turn calls ``doWrite``, which
sends and, the buffer being empty again, unregisters (another ``epoll_ctl``).  On
the fan-out path that is two ``epoll_ctl`` calls, one more event out of
``epoll_wait`` and one more dispatch per frame per viewer, and every viewer's
bytes leave one reactor turn later.  The profile at 400 viewers puts ~37% of the
server's CPU there (``docs/benchmarks.md``).

:func:`install` patches ``twisted.internet.tcp.Connection.write`` for the whole
process: when nothing is buffered (and no TLS), ``socket.send`` right away and
buffer only what the kernel does not take, which Twisted then writes as usual.
What is buffered, and so what the drop-frames policy sees as queued, is
unchanged in meaning.  ``twistd_direct_write.py`` runs twistd with it::

    .venv/bin/python bench/compare.py --case 400@1000 --servers streamserver \\
        --twistd bench/experiments/twistd_direct_write.py --tag direct-write

This lives in ``bench/`` to measure the lever on a commit without it (4abb8af;
results in ``bench/data/fanout-2026-11-27/``).  The server does it itself since
4f8debc (``BackpressureMixin.write_media``, only for media and with the policy's
accounting); patching on top of that changes little.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet._newtls import ConnectionMixin


def install() -> None:
    """Make every TCP connection of this process send at once when its buffer is empty."""
    buffered_write = ConnectionMixin.write

    def write(self: Any, data: bytes) -> None:
        if (
            data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        ):
            try:
                sent = self.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # let the buffered path find and report the error
            if sent == len(data):
                return
            data = data[sent:]
        buffered_write(self, data)

    tcp.Connection.write = write  # type: ignore[method-assign]
