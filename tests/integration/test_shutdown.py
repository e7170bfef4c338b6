"""Graceful shutdown: SIGTERM to twistd tells viewers, closes cleanly, exits in seconds.

A ``twistd -n streamserver`` child serves a publisher (our client at 30 fps) and
two viewers.  On SIGTERM the viewers must get ``NetStream.Play.UnpublishNotify``
and then a clean close (not a reset), and the process must exit within 5 s.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import error
from twisted.python.failure import Failure

from streamserver.client import RTMPClientProtocol, connect_client
from tests.integration.hardening_support import SteadyStream, start_twistd
from tests.integration.support import get_reactor, wait_until, within

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration


def _close_reason(client: RTMPClientProtocol) -> list[Failure]:
    """Record how *client*'s connection ends (ConnectionDone = a clean close)."""
    reasons: list[Failure] = []
    original = client.connectionLost

    def connection_lost(reason: Any = None) -> None:
        reasons.append(reason)
        original(reason)

    client.connectionLost = connection_lost  # type: ignore[method-assign]
    return reasons


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_sigterm_tells_viewers_and_exits_within_seconds(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """Viewers get UnpublishNotify and a clean close; twistd exits < 5 s after SIGTERM."""
    reactor = get_reactor()
    server = await start_twistd(processes, interop, tmp_path, "--shutdown-grace", "3")
    publisher = await within(connect_client(reactor, server.url("live")), 10, "publisher")
    viewers = [
        await within(connect_client(reactor, server.url("live"), keep_media=False), 10, "viewer")
        for _ in range(2)
    ]
    reasons = [_close_reason(viewer) for viewer in viewers]
    stream: SteadyStream | None = None
    try:
        publish_id = await within(publisher.create_stream(), 10, "createStream")
        await within(publisher.publish("bye", publish_id), 10, "publish")
        for viewer in viewers:
            play_id = await within(viewer.create_stream(), 10, "createStream")
            await within(viewer.play("bye", play_id), 10, "play")
        stream = SteadyStream(publisher, publish_id)
        stream.start()
        await wait_until(
            lambda: all(v.media_count > 20 for v in viewers), 10, "media to reach the viewers"
        )

        signalled = reactor.seconds()
        server.process.send_signal("TERM")
        for viewer in viewers:
            await within(viewer.disconnected, 10, "the server to close the viewer")
        result = await server.process.wait(10)
        exited_after = reactor.seconds() - signalled

        for viewer, reason in zip(viewers, reasons, strict=True):
            codes = [info.get("code") for info in viewer.statuses]
            assert "NetStream.Play.UnpublishNotify" in codes, codes
            assert reason and reason[0].check(error.ConnectionDone), reason
        assert exited_after < 5.0, f"twistd took {exited_after:.1f} s to exit"
        assert result.signal != signal.SIGKILL, result.describe()
        assert b"shutting down: closing" in result.stdout, result.describe()
        assert b"Traceback" not in result.stdout + result.stderr, result.describe()
        print(f"twistd exited {exited_after:.2f} s after SIGTERM")
    finally:
        if stream is not None:
            stream.stop()
        publisher.close()
        for viewer in viewers:
            viewer.close()
