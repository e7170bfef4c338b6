"""RTMPS: ``--rtmp ssl:PORT:privateKey=...:certKey=...`` with ffmpeg ``rtmps://`` both ways.

A self-signed certificate is made for the test with ``cryptography``; the server
listens through Twisted's ``ssl:`` endpoint in this process, ffmpeg publishes
the session's sample over TLS and a second ffmpeg plays it back over TLS.  On
the server the TLS transport still gets its socket options, the backpressure
producer and a readable queue size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.protocols.tls import TLSMemoryBIOProtocol

from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.integration.support import ffprobe_codecs, get_reactor, make_self_signed, wait_until

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration


class TLSServer:
    def __init__(self, factory: RTMPServerFactory, port: int) -> None:
        self.factory = factory
        self.port = port

    def url(self, path: str) -> str:
        return f"rtmps://127.0.0.1:{self.port}/{path}"


@pytest_twisted.async_yield_fixture
async def tls_server(tmp_path: Path, interop: Interop) -> AsyncIterator[TLSServer]:
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        interop.unavailable("twisted[tls] (pyOpenSSL) is not installed: pip install '.[tls]'")
    key, cert = make_self_signed(tmp_path)
    reactor = get_reactor()
    factory = RTMPServerFactory(ServerConfig(), reactor=reactor)
    endpoint = serverFromString(
        reactor, f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"
    )
    listening: Any = await endpoint.listen(factory)
    try:
        yield TLSServer(factory, listening.getHost().port)
    finally:
        await defer.maybeDeferred(listening.stopListening)
        for protocol in list(factory.connections.values()):
            protocol.transport.abortConnection()


@pytest.mark.timeout(90)
# Twisted's ssl: endpoint loads the PEM files through pyOpenSSL objects.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_ffmpeg_publishes_and_plays_over_rtmps(
    tls_server: TLSServer,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """ffmpeg publishes to rtmps:// and another ffmpeg records it back over rtmps://."""
    tools = interop.tools("ffmpeg", "ffprobe")
    ffmpeg = tools["ffmpeg"]
    probe = await processes.spawn([ffmpeg, "-hide_banner", "-protocols"]).wait(30)
    if b"rtmps" not in probe.stdout:
        interop.unavailable("this ffmpeg has no rtmps protocol (built without TLS)")
    factory = tls_server.factory
    publisher = processes.spawn(
        [
            ffmpeg, "-nostdin", "-loglevel", "error",
            "-re", "-stream_loop", "-1", "-i", str(sample_flv),
            "-c", "copy", "-f", "flv", tls_server.url("live/tls"),
        ]
    )  # fmt: skip

    def ready() -> bool:
        stream = factory.find_stream("live", "tls")
        return stream is not None and stream.publisher is not None and bool(stream.gop)

    await wait_until(lambda: ready() or not publisher.running, 20, "ffmpeg to publish over TLS")
    assert publisher.running, publisher.result.describe() if publisher.result else ""

    out = tmp_path / "out.flv"
    player = processes.spawn(
        [
            ffmpeg, "-nostdin", "-loglevel", "error",
            "-i", tls_server.url("live/tls"), "-t", "2", "-c", "copy", "-f", "flv", str(out),
        ]
    )  # fmt: skip
    await wait_until(
        lambda: (
            any(p.play_stream is not None for p in factory.connections.values())
            or not player.running
        ),
        20,
        "the rtmps player to start",
    )
    viewer = next((p for p in factory.connections.values() if p.play_stream is not None), None)
    assert viewer is not None, player.result.describe() if player.result else "no viewer"
    transport = viewer.transport
    assert isinstance(transport, TLSMemoryBIOProtocol)
    assert viewer.link.configure_socket(16 * 1024, 0), "socket options failed on TLS"
    assert isinstance(viewer.link.queued(), int)
    assert transport._producer is not None, "the backpressure producer is not registered"
    result = await player.wait(30)
    assert result.exit_code == 0, result.describe()
    assert sorted(await ffprobe_codecs(tools["ffprobe"], out)) == ["aac", "h264"]
