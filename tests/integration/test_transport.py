"""The transport adapter against Twisted's real transports: plain TCP and TLS.

:class:`~streamserver.transport.TransportAdapter` is the one place that reads
Twisted's private write buffer and finds the socket under a transport; these
tests hold it to a real ``tcp.Connection`` and to a real TLS connection on
loopback, so a Twisted release that renames those internals fails here first.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, ssl
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from streamserver.testing import FakeTransport
from streamserver.transport import TCP_NOTSENT_LOWAT, FlushList, TransportAdapter
from tests.integration.support import get_reactor, make_self_signed, wait_until, within

if TYPE_CHECKING:
    from tests.integration.conftest import Interop

pytestmark = pytest.mark.integration


@implementer(protocol.interfaces.IPushProducer)
class Holder(protocol.Protocol):
    """A server protocol that hands its transport to the test and counts pauses."""

    def __init__(self, ready: defer.Deferred[Holder]) -> None:
        self.ready = ready
        self.pauses = 0
        self.received = b""

    def connectionMade(self) -> None:
        self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class OneConnection(protocol.Factory):
    def __init__(self) -> None:
        self.ready: defer.Deferred[Holder] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> Holder:
        return Holder(self.ready)


class Reader:
    """A non-blocking client socket read from a polled loop (never blocks the reactor)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()

    def pull(self) -> bool:
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.data += chunk


@pytest_twisted.async_yield_fixture
async def tcp_pair() -> AsyncIterator[tuple[Holder, socket.socket]]:
    """A real Twisted TCP server connection and a raw client socket that reads only when told."""
    reactor = get_reactor()
    factory = OneConnection()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port.getHost().port))
    client.setblocking(False)
    try:
        holder = await within(factory.ready, 10, "the server side of the connection")
        yield holder, client
    finally:
        client.close()
        await defer.maybeDeferred(port.stopListening)


@pytest_twisted.ensureDeferred
async def test_plain_tcp_eager_write_skips_the_buffer(
    tcp_pair: tuple[Holder, socket.socket],
) -> None:
    """On an empty plain TCP transport, write_media hands the bytes to the kernel at once."""
    holder, client = tcp_pair
    link = TransportAdapter(holder.transport)
    link.write_media(b"x" * 1000, link.queued())
    assert link.queued() == 0
    assert link.written == 1000
    reader = Reader(client)
    await wait_until(lambda: reader.pull() and len(reader.data) == 1000, 5, "the eager bytes")
    link.disable_eager_writes()
    link.write_media(b"y" * 1000, link.queued())
    assert link.queued() == 1000, "with eager writes off the bytes wait in Twisted's buffer"


@pytest_twisted.ensureDeferred
async def test_plain_tcp_held_frames_leave_in_one_sendmsg_in_order(
    tcp_pair: tuple[Holder, socket.socket],
) -> None:
    """Frames held during a read reach the peer in order, with what was written after them,
    through the real socket's sendmsg (and Twisted's buffer for what it does not take)."""
    holder, client = tcp_pair
    link = TransportAdapter(holder.transport)
    link.flush_list = flush_list = FlushList()
    frames = [bytes([index]) * (700 + 3000 * (index % 3)) for index in range(200)]
    expected = bytearray()
    for start in range(0, len(frames), 10):
        flush_list.cork()
        for frame in frames[start : start + 10]:
            link.write_frame(frame, link.queued())
            expected += frame
        flush_list.uncork()
        link.write(b"|%d|" % start)
        expected += b"|%d|" % start
    assert link.held_bytes == 0
    reader = Reader(client)
    await wait_until(lambda: reader.pull() and len(reader.data) >= len(expected), 10, "every byte")
    assert bytes(reader.data) == bytes(expected)


@pytest_twisted.ensureDeferred
async def test_plain_tcp_queue_kernel_and_drain_add_up(
    tcp_pair: tuple[Holder, socket.socket],
) -> None:
    """Written bytes are queued in user space, held by the kernel, or read by the peer."""
    holder, client = tcp_pair
    link = TransportAdapter(holder.transport)
    assert link.has_kernel_view
    assert link.configure_socket(16 * 1024, 0)
    sock = holder.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == 16 * 1024
    assert link.set_no_delay(True) and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert link.set_no_delay(False)
    assert not sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert link.register_producer(holder)
    assert not link.register_producer(holder), "a second producer is refused, not raised"
    chunk = b"z" * 16384
    while link.queued() < 200_000:
        link.write_media(chunk, link.queued())
    # Twisted's own accounting agrees with the adapter's reading
    transport: Any = holder.transport
    assert link.queued() == len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    assert holder.pauses > 0, "Twisted paused the registered producer past its 64 KiB mark"
    kernel = link.kernel_queued()
    assert kernel > 0, "the peer reads nothing, so the kernel holds unacknowledged bytes"
    reader = Reader(client)
    await wait_until(
        lambda: reader.pull() and len(reader.data) == link.written,
        20,
        "the peer to read everything",
        describe=lambda: f"read {len(reader.data)} of {link.written}",
    )
    await wait_until(lambda: link.queued() == 0 and link.kernel_queued() == 0, 5, "empty queues")


# Twisted's ssl: endpoint loads the PEM files through pyOpenSSL objects.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_tls_reads_the_tcp_queue_and_never_sends_plaintext(
    tmp_path: Path, interop: Interop
) -> None:
    """Over TLS the adapter finds the TCP socket and queue under the wrapper and never
    sends eagerly (the bytes must be encrypted first)."""
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        interop.unavailable("twisted[tls] (pyOpenSSL) is not installed: pip install '.[tls]'")
    reactor = get_reactor()
    key, cert = make_self_signed(tmp_path)
    factory = OneConnection()
    endpoint = serverFromString(
        reactor, f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"
    )
    listening: Any = await endpoint.listen(factory)
    received = bytearray()
    done: defer.Deferred[None] = defer.Deferred()

    class Client(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.extend(data)
            if len(received) >= 300_000 and not done.called:
                done.callback(None)

    connector = reactor.connectSSL(
        "127.0.0.1",
        listening.getHost().port,
        protocol.ClientFactory.forProtocol(Client),
        ssl.CertificateOptions(verify=False),
    )
    try:
        holder = await within(factory.ready, 10, "the TLS server connection")
        assert isinstance(holder.transport, TLSMemoryBIOProtocol)
        link = TransportAdapter(holder.transport)
        assert link.has_kernel_view
        assert link.configure_socket(16 * 1024, 0), "socket options reach the socket under TLS"
        assert link.register_producer(holder)
        for index in range(30):
            link.write_media(bytes([index]) * 10_000, link.queued())
        assert isinstance(link.kernel_queued(), int)
        await within(done, 20, "the TLS client to read everything")
        assert bytes(received) == b"".join(bytes([i]) * 10_000 for i in range(30))
        assert link.written == 300_000
    finally:
        connector.disconnect()
        await defer.maybeDeferred(listening.stopListening)


def test_transports_without_a_socket() -> None:
    """A StringTransport reads as empty with no kernel; FakeTransport answers for itself."""
    plain = TransportAdapter(StringTransport())
    assert (plain.queued(), plain.kernel_queued(), plain.has_kernel_view) == (0, 0, False)
    assert not plain.configure_socket(16 * 1024, 0)
    assert not plain.set_no_delay(False)
    fake = FakeTransport()
    link = TransportAdapter(fake)
    link.write_media(b"a" * 100, link.queued())
    link.write(b"b" * 50)
    assert link.queued() == fake.queued == 150
    fake.drain(100)
    assert link.queued() == 50 and link.written == 150
