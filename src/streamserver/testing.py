"""Test helpers: a fake transport with a write buffer, and a fake RTMP peer.

Public so users can test their own mixins the way streamserver tests its own.

- :class:`FakeTransport` is a :class:`~twisted.internet.testing.StringTransport`
  that also keeps the accounting of a real TCP transport's user-space write
  buffer: bytes queued, a ``bufferSize`` high-water mark past which the
  registered streaming producer is paused (on every write, as
  ``tcp.Connection`` does), and :meth:`FakeTransport.drain`, which hands queued
  bytes to a pretend kernel and resumes the producer once the queue is empty.
  It provides :class:`~streamserver.transport.IWriteQueue`, so the
  :class:`~streamserver.transport.TransportAdapter` reads its queue the way it
  reads a real transport's, without any of Twisted's private names.
- :class:`FakePeer` connects a protocol built by a factory to a
  :class:`FakeTransport`, performs the client side of the handshake, sends
  messages (optionally cut into pieces of a given size) and decodes everything
  the server wrote.

Example::

    clock = task.Clock()
    factory = RTMPServerFactory(reactor=clock)
    publisher = FakePeer(factory)
    publisher.connect("live")
    stream_id = publisher.create_stream()
    publisher.publish("cam", stream_id)
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from streamserver.codec import messages
from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
from streamserver.codec.handshake import ClientHandshake
from streamserver.codec.messages import Command, Message, MessageType
from streamserver.transport import IWriteQueue

_peer_ports = iter(range(40000, 10**9))
_SAMPLE_ACCESS = b"\x02\x00\x11|RtmpSampleAccess"
_CHAT_MESSAGE = b"\x02\x00\x0donChatMessage"
_CSID_BY_TYPE: dict[int, int] = {
    MessageType.AUDIO: 4,
    MessageType.VIDEO: 6,
    MessageType.DATA_AMF0: 5,
}


@implementer(IWriteQueue)
class FakeTransport(StringTransport):
    """A StringTransport with a real transport's write-buffer accounting.

    :ivar bufferSize: the high-water mark, 64 KiB as on ``tcp.Connection``.
    :ivar queued: bytes written and not yet drained.
    :ivar in_kernel: bytes drained with ``hold=True``: handed to the pretend
        kernel and not yet acknowledged by the peer (:meth:`acknowledge`), as a
        real link holds them in flight and in its qdisc.
    :ivar peak_queued: the largest :attr:`queued` seen.
    :ivar total_written: every byte ever written.
    :ivar aborted: whether :meth:`abortConnection` was called.
    :ivar lost: whether the protocol's ``connectionLost`` was called.
    """

    bufferSize = 65536

    def __init__(
        self,
        peer: IPv4Address | None = None,
        *,
        clock: IReactorTime | None = None,
        keep_output: bool = True,
        auto_drain: bool = False,
    ) -> None:
        """
        :param peer: the peer address; a fresh 127.0.0.1 port by default.
        :param auto_drain: drain every write at once (a peer reading infinitely
            fast); otherwise bytes stay queued until :meth:`drain`.
        :param clock: if given, ``connectionLost`` is delivered through
            ``clock.callLater(0, ...)`` as a reactor would, not synchronously.
        :param keep_output: keep written bytes for :meth:`value`; turn off in
            long simulations that only need the accounting.
        """
        if peer is None:
            peer = IPv4Address("TCP", "127.0.0.1", next(_peer_ports))
        super().__init__(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 1935))
        self.protocol: Any = None
        self.queued = 0
        self.in_kernel = 0
        self.peak_queued = 0
        self.total_written = 0
        self.aborted = False
        self.lost = False
        self.connected = True
        self._clock = clock
        self._keep_output = keep_output
        self.auto_drain = auto_drain

    def write(self, data: bytes) -> None:
        """Queue *data*; pause a registered streaming producer past :attr:`bufferSize`."""
        if not isinstance(data, bytes):
            raise TypeError("Data must be bytes")
        if self.disconnecting or self.lost:
            return
        if self._keep_output:
            super().write(data)
        self.total_written += len(data)
        if self.auto_drain:
            return
        self.queued += len(data)
        if self.queued > self.peak_queued:
            self.peak_queued = self.queued
        if self.producer is not None and self.streaming and self.queued > self.bufferSize:
            self.producer.pauseProducing()

    def queued_bytes(self) -> int:
        """Bytes written and not drained yet (:class:`IWriteQueue`)."""
        return self.queued

    def kernel_queued_bytes(self) -> int:
        """Bytes the pretend kernel holds unacknowledged (:class:`IWriteQueue`)."""
        return self.in_kernel

    def writeSequence(self, data: Any) -> None:
        """Write each piece of *data* (a list, as with a real transport)."""
        for piece in data:
            self.write(piece)

    def drain(self, nbytes: int | None = None, *, hold: bool = False) -> int:
        """Hand up to *nbytes* queued bytes (all if ``None``) to the pretend kernel.

        Resumes a paused streaming producer when the queue becomes empty, as
        ``tcp.Connection.doWrite`` does.

        :param hold: the kernel keeps them (:attr:`in_kernel`) until
            :meth:`acknowledge`; by default the peer has them at once.
        :returns: the number of bytes drained.
        """
        if nbytes is None or nbytes >= self.queued:
            nbytes = self.queued
        self.queued -= nbytes
        if hold:
            self.in_kernel += nbytes
        if (
            nbytes
            and not self.queued
            and self.producer is not None
            and self.streaming
            and not self.lost
        ):
            self.producer.resumeProducing()
        return nbytes

    def acknowledge(self, nbytes: int | None = None) -> int:
        """The peer acknowledges up to *nbytes* the kernel held (all if ``None``).

        :returns: the number of bytes acknowledged.
        """
        if nbytes is None or nbytes >= self.in_kernel:
            nbytes = self.in_kernel
        self.in_kernel -= nbytes
        return nbytes

    def loseConnection(self) -> None:
        """Close after the queue (here: at once) and tell the protocol."""
        if self.disconnecting:
            return
        self.disconnecting = True
        self._connection_lost(ConnectionDone())

    def abortConnection(self) -> None:
        """Close at once, discarding the queue, and tell the protocol."""
        self.aborted = True
        if self.disconnecting:
            return
        self.disconnecting = True
        self.queued = 0
        self._connection_lost(ConnectionAborted())

    def _connection_lost(self, error: Exception) -> None:
        if self._clock is not None:
            self._clock.callLater(0, self._deliver_lost, error)
        else:
            self._deliver_lost(error)

    def _deliver_lost(self, error: Exception) -> None:
        if self.lost:
            return
        self.lost = True
        self.connected = False
        if self.producer is not None:
            producer = self.producer
            self.unregisterProducer()
            if hasattr(producer, "stopProducing"):
                producer.stopProducing()
        if self.protocol is not None:
            self.protocol.connectionLost(Failure(error))


class FakeSocket:
    """A plain TCP socket under a :class:`FakeTransport`, for the eager sends and the
    fast lane (``TransportAdapter._eager`` and ``lane_socket``).

    What it takes is on the wire at once: it goes to the transport's output, in
    order with what the transport writes.  Sending while the transport holds
    bytes would overtake them, so that fails the test (``AssertionError``).

    :ivar room: bytes the pretend kernel takes before it is full (``None``: any);
        each call takes what fits, and raises ``BlockingIOError`` when nothing does.
    :ivar calls: ``(name, buffers)`` of every ``send`` and ``sendmsg``.
    """

    def __init__(self, transport: FakeTransport, room: int | None = None) -> None:
        self.transport = transport
        self.room = room
        self.calls: list[tuple[str, list[bytes]]] = []

    def _take(self, pieces: list[bytes]) -> int:
        transport = self.transport
        assert not transport.queued, "a direct send would overtake the transport's queue"
        data = b"".join(pieces)
        if self.room is not None:
            data = data[: self.room]
            self.room -= len(data)
        if pieces and not data:
            raise BlockingIOError
        if transport._keep_output:
            transport.io.write(data)
        transport.total_written += len(data)
        return len(data)

    def send(self, data: bytes) -> int:
        self.calls.append(("send", [data]))
        return self._take([data])

    def sendmsg(self, buffers: list[bytes]) -> int:
        self.calls.append(("sendmsg", list(buffers)))
        return self._take(list(buffers))


class FakePeer:
    """The client end of a server protocol on a :class:`FakeTransport`.

    :ivar protocol: the server protocol under test.
    :ivar transport: its :class:`FakeTransport`.
    :ivar split: when set, :meth:`send_bytes` feeds data in pieces of this size.

    By default the peer reads everything at once (``auto_drain``); pass
    ``auto_drain=False`` and call ``transport.drain()`` to model a slow reader.
    With ``socket=True`` the server's adapter also has a :class:`FakeSocket`
    (:attr:`socket`) for its eager sends and the fast lane, as over plain TCP.
    """

    def __init__(
        self,
        factory: Factory,
        *,
        peer: IPv4Address | None = None,
        clock: IReactorTime | None = None,
        handshake: bool = True,
        digest: bool = False,
        chunk_size: int = 128,
        split: int | None = None,
        auto_drain: bool = True,
        socket: bool = False,
    ) -> None:
        self.transport = FakeTransport(peer, clock=clock, auto_drain=auto_drain)
        self.socket: FakeSocket | None = None
        protocol = factory.buildProtocol(self.transport.getPeer())
        assert protocol is not None
        self.protocol: Any = protocol
        self.transport.protocol = protocol
        self.split = split
        self._encoder = ChunkEncoder(128)
        self._decoder = ChunkDecoder()
        self._read_offset = 0
        self._handshake_bytes = 0
        self._next_txn = 1
        self.received: list[Message] = []
        protocol.makeConnection(self.transport)
        if socket:
            self.socket = FakeSocket(self.transport)
            server: Any = protocol
            link = server.link
            link._eager = link.lane_socket = self.socket
        if handshake:
            self.handshake(digest=digest)
        if chunk_size != 128:
            self.send(messages.set_chunk_size(chunk_size), csid=2)
            self._encoder.chunk_size = chunk_size

    # --- bytes -----------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        """Feed *data* to the protocol, in pieces of :attr:`split` bytes if set."""
        step = self.split or len(data) or 1
        for start in range(0, len(data), step):
            self.protocol.dataReceived(data[start : start + step])

    def output(self) -> bytes:
        """Every byte the server wrote that was not read yet."""
        data = self.transport.value()[self._read_offset :]
        self._read_offset += len(data)
        return data

    def handshake(self, *, digest: bool = False) -> None:
        """Run the client side of the handshake against the server."""
        client = ClientHandshake(digest=digest)
        self.send_bytes(client.initial_bytes())
        reply = client.receive_data(self.output())
        assert client.complete, "server did not answer C0+C1 with S0+S1+S2"
        self.send_bytes(reply)

    # --- messages --------------------------------------------------------------

    def send(self, message: Message, csid: int | None = None) -> None:
        """Encode *message* (chunk stream 3 for commands, 4/6 for media) and feed it."""
        if csid is None:
            if message.type_id in messages.PROTOCOL_CONTROL_TYPES:
                csid = 2
            else:
                csid = _CSID_BY_TYPE.get(message.type_id, 3)
        self.send_bytes(self._encoder.encode(message, csid))

    def read(self) -> list[Message]:
        """Decode what the server wrote since the last call; also kept in :attr:`received`."""
        data = self.output()
        new = self._decoder.receive_data(data) if data else []
        self.received.extend(new)
        return new

    def commands(self, new: bool = True) -> list[Command]:
        """The command messages the server sent: the new ones, or all if not *new*."""
        fresh = self.read()
        return [
            messages.parse_command(m)
            for m in (fresh if new else self.received)
            if m.type_id in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3)
        ]

    def call(self, name: str, command_object: Any = None, *args: Any, stream_id: int = 0) -> float:
        """Send command *name* with a fresh transaction id; return the id."""
        txn = float(self._next_txn)
        self._next_txn += 1
        self.send(messages.command(name, txn, command_object, *args, stream_id=stream_id))
        return txn

    def result_of(self, txn: float) -> Command:
        """The ``_result``/``_error`` for transaction *txn* among the new messages."""
        for command in self.commands():
            if command.name in ("_result", "_error") and command.transaction_id == txn:
                return command
        raise AssertionError(f"no reply to transaction {txn}")

    def connect(self, app: str = "live", **params: Any) -> Command:
        """Send ``connect`` for *app*; return the reply."""
        obj = {"app": app, "tcUrl": f"rtmp://127.0.0.1/{app}", "flashVer": "FMLE/3.0"}
        obj.update(params)
        return self.result_of(self.call("connect", obj))

    def create_stream(self) -> int:
        """Send ``createStream``; return the message stream id."""
        reply = self.result_of(self.call("createStream"))
        return int(reply.args[0])

    def publish(self, name: str, stream_id: int = 1) -> list[Command]:
        """Send ``publish``; return the commands the server answered with."""
        self.call("publish", None, name, "live", stream_id=stream_id)
        return self.commands()

    def play(self, name: str, stream_id: int = 1) -> list[Command]:
        """Send ``play``; return the commands the server answered with."""
        self.call("play", None, name, -2.0, stream_id=stream_id)
        return self.commands()

    def statuses(self, new: bool = True) -> list[str]:
        """The ``onStatus`` codes the server sent: the new ones, or all if not *new*."""
        return [
            c.args[0]["code"]
            for c in self.commands(new)
            if c.name == "onStatus" and c.args and isinstance(c.args[0], dict)
        ]

    def media(self) -> list[Message]:
        """Every audio/video/data message relayed so far (reads new output first).

        The ``|RtmpSampleAccess`` data message ``play`` sends and chat
        (``onChatMessage``) are not media and are left out.
        """
        self.read()
        return [
            m
            for m in self.received
            if m.type_id in (MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0)
            and not m.payload.startswith(_SAMPLE_ACCESS)
            and not m.payload.startswith(_CHAT_MESSAGE)
        ]

    def chat(self, new: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """The ``onChatMessage`` messages received, as (message stream id, fields).

        All of them (reading new output first), or only the new ones if *new*.
        """
        fresh = self.read()
        return [
            (m.stream_id, messages.parse_data(m)[1])
            for m in (fresh if new else self.received)
            if m.type_id == MessageType.DATA_AMF0 and m.payload.startswith(_CHAT_MESSAGE)
        ]
