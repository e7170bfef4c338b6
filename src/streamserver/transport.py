"""The one adapter over Twisted's transport internals.

Backpressure needs three things Twisted's public transport API does not give:
how many bytes a transport holds in user space, how many the kernel holds for
its socket, and a way to hand a frame to the kernel without Twisted's write
path when nothing is queued before it.  :class:`TransportAdapter` provides them
for one connection, and this module is the only place in streamserver that
touches Twisted's private names:

- the user-space write queue of ``twisted.internet.abstract.FileDescriptor``
  (``len(dataBuffer) - offset + _tempDataLen``, TWISTED-FACTS §4);
- the socket under a transport, looking through protocol wrappers such as TLS
  (``ProtocolWrapper.transport``; over TLS ``getHandle()`` is the OpenSSL
  connection, not the socket);
- the eager ``send()`` (or ``sendmsg()`` of several frames) to a plain TCP socket.

Frames may be *held* instead of written at once (:meth:`TransportAdapter.write_frame`)
while a :class:`FlushList` holds: during one publisher read (every frame decoded
from it goes out in one ``sendmsg`` per viewer, flushed at the end of the read),
and with ``--merge-ms`` for up to that many milliseconds (one timer per
factory).  Held bytes count as queued (:meth:`TransportAdapter.queued`); any
other write through the adapter (protocol bytes, chat) sends what is held first,
so the bytes on the wire are the bytes written, in order.

What the kernel holds is read with ``ioctl(TIOCOUTQ)`` (Linux's ``SIOCOUTQ``:
bytes written to the socket and not yet acknowledged by the peer, sent or not),
which sees what ``TCP_NOTSENT_LOWAT`` cannot: the bytes in flight and in a
qdisc on a thin link.  One syscall; callers read it only for viewers they
suspect of being slow.

A transport that is none of Twisted's (a test double, a future in-memory
transport) provides :class:`IWriteQueue` instead, and the adapter asks it;
:class:`streamserver.testing.FakeTransport` does.  Anything else reads as an
empty queue with no kernel.

Over TLS the queue counted is the TCP transport's: ciphertext.  The TLS layer
also gathers plaintext writes for up to one reactor turn before encrypting
them; those bytes are not counted (they are gone by the next frame's turn).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import Interface

_log = Logger()

#: Linux's TCP_NOTSENT_LOWAT (include/uapi/linux/tcp.h); not in every socket module.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)

#: ``SIOCOUTQ`` is ``TIOCOUTQ`` on Linux (include/uapi/linux/sockios.h): for TCP
#: ``write_seq - snd_una``, every byte the peer has not acknowledged yet.
_OUTQ = termios.TIOCOUTQ

#: The most buffers one ``sendmsg`` takes (Linux's ``IOV_MAX``); more go in several calls.
IOV_MAX = 1024

#: Protocol wrappers (TLS) are one level deep in practice; a few more cost nothing.
_MAX_WRAPPERS = 4


class IWriteQueue(Interface):
    """What a non-Twisted transport tells the adapter about the bytes it holds."""

    def queued_bytes() -> int:
        """Bytes written and not yet handed to the kernel (or the peer)."""

    def kernel_queued_bytes() -> int:
        """Bytes handed on and not yet acknowledged by the peer (0 if unknown)."""


def address_text(address: Any) -> str:
    """*address* as logs show a peer: ``host:port`` (a UNIX socket: its path and ``:``)."""
    return f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"


def _unwrap(transport: Any) -> Any:
    """The transport under any protocol wrappers (TLS) of *transport*."""
    for _ in range(_MAX_WRAPPERS):
        if not isinstance(transport, ProtocolWrapper):
            break
        transport = transport.transport
    return transport


def socket_of(transport: Any) -> socket.socket | None:
    """The socket under *transport*, looking through protocol wrappers such as TLS."""
    handle = _unwrap(transport)
    get_handle = getattr(handle, "getHandle", None)
    found = get_handle() if get_handle is not None else None
    return found if isinstance(found, socket.socket) else None


class Flushable(Protocol):
    """What a :class:`FlushList` flushes: a :class:`TransportAdapter`, or the fast lane
    of a group of viewers (:class:`streamserver.media.lane.ViewerGroup`)."""

    flushed_at: float

    def flush(self) -> None:
        """Send what is held."""
        ...

    def flush_failed(self, error: BaseException) -> None:
        """:meth:`flush` raised *error*: the failure is this one's alone."""
        ...


class LaneHolder(Protocol):
    """The fast lane an adapter's viewer is in (:class:`streamserver.media.lane.ViewerGroup`)."""

    def release(self, link: TransportAdapter) -> None:
        """The viewer on *link* leaves the lane once its held frames are sent."""
        ...

    def remove_link(self, link: TransportAdapter) -> None:
        """The viewer on *link* leaves the lane now; its held frames are forgotten."""
        ...


class FlushList:
    """The adapters holding frames, for one factory, and when they are flushed.

    :meth:`cork` and :meth:`uncork` bracket a publisher's read (they nest):
    meanwhile :meth:`holding` is true, :meth:`TransportAdapter.write_frame`
    holds frames, and each adapter holding some puts itself on the list once.
    When the outermost read ends, every adapter on the list is flushed -- one
    ``sendmsg`` each -- or, with *merge_ms*, one timer (per list, not per
    adapter) is started, if none runs, that flushes them all *merge_ms* later:
    no frame is held longer than that.  With *merge_ms* frames are held outside
    a read too (the same timer bounds them).

    :ivar merge_ms: how long a frame may be held after its read (0: flushed at
        the end of the read).
    :ivar holding: whether a frame written now is held (in a read, or merging);
        an attribute, not a property: it is read for every frame of every viewer.
    """

    __slots__ = ("_clock", "_depth", "_links", "_timer", "holding", "merge_ms")

    def __init__(self, clock: IReactorTime | None = None, merge_ms: int = 0) -> None:
        self._clock = clock
        self.merge_ms = merge_ms if clock is not None else 0
        self._depth = 0
        self.holding = self.merge_ms > 0
        self._links: list[Flushable] = []
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._links)

    def cork(self) -> None:
        """A read begins: hold frames until its end."""
        self._depth += 1
        self.holding = True

    def uncork(self) -> None:
        """A read ends: flush what it held (or start the merge timer)."""
        self._depth -= 1
        if self._depth == 0:
            self.holding = self.merge_ms > 0
        if self._depth == 0 and self._links:
            if self.merge_ms:
                self._start_timer()
            else:
                self.flush()

    def add(self, link: Flushable) -> None:
        """*link* holds frames now (it adds itself once, until it is flushed)."""
        self._links.append(link)
        if self._depth == 0 and self.merge_ms:
            self._start_timer()

    def _start_timer(self) -> None:
        if self._timer is None and self._clock is not None:
            self._timer = self._clock.callLater(self.merge_ms / 1000, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Send what every adapter (and viewer group) on the list holds.

        A failure while flushing one is that connection's alone
        (its ``flush_failed``: :meth:`TransportAdapter.flush_failed`); the others are
        flushed.
        """
        links = self._links
        self._links = []
        if self.merge_ms and self._clock is not None:
            # frames held for a (possibly late) timer reach the link only now: a
            # viewer's queue delay counts from here (Viewer._queue_delay)
            now = self._clock.seconds()
            for link in links:
                link.flushed_at = now
        for link in links:
            try:
                link.flush()
            except Exception as error:
                link.flush_failed(error)

    def stop(self) -> None:
        """Shutdown: cancel the timer and flush everything held."""
        timer = self._timer
        self._timer = None
        if timer is not None and timer.active():
            timer.cancel()
        self.flush()


def _tail(pieces: Sequence[bytes], sent: int) -> list[bytes]:
    """What of *pieces* is left once their first *sent* bytes are gone."""
    for index, piece in enumerate(pieces):
        if sent < len(piece):
            rest = list(pieces[index + 1 :])
            rest.insert(0, piece[sent:] if sent else piece)
            return rest
        sent -= len(piece)
    return []


class TransportAdapter:
    """One connection's transport, as backpressure sees it.

    Every byte the connection sends goes through :meth:`write` or
    :meth:`write_media`, so :attr:`written` minus :meth:`queued` is exactly the
    bytes handed to the kernel, and minus :meth:`kernel_queued` too, the bytes
    the peer has acknowledged.

    :ivar transport: the Twisted transport.
    :ivar written: every byte written through the adapter.
    :ivar media_written: the bytes of those written by :meth:`write_media` and
        :meth:`write_frame`: what a stream sends the peer (media and chat), as
        opposed to protocol bytes (handshake, control, commands) that answer the
        peer or keep it alive.
    :ivar held_bytes: the bytes of the frames held (:meth:`write_frame`), part of
        :meth:`queued`.
    :ivar flush_list: the :class:`FlushList` that says when frames are held
        (``None``: never).
    :ivar flushed_from: :attr:`written` before the frames held last were
        flushed: the bytes after it were handed on at that flush or later.
    :ivar flushed_at: when a merging flush list last flushed this adapter, by
        its clock (0: never); a frame flushed then left no earlier.
    :ivar on_failure: told of an error met flushing held frames (the viewer's
        failure, set by the viewer), else the flush list logs it.
    :ivar lane_socket: the socket a fast lane may send this connection's frames
        to (:mod:`streamserver.media.lane`): the eager socket of a plain TCP
        transport, ``None`` otherwise.
    :ivar lane: the fast lane the connection's viewer is in (``None``: none).
        Whatever is written through the adapter first has the lane send what it
        holds for the viewer, and takes the viewer out of it.
    """

    __slots__ = (
        "_buffer",
        "_eager",
        "_held",
        "_queue",
        "_socket",
        "flush_list",
        "flushed_at",
        "flushed_from",
        "held_bytes",
        "lane",
        "lane_socket",
        "media_written",
        "on_failure",
        "transport",
        "written",
    )

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.written = 0
        self.media_written = 0
        self.held_bytes = 0
        self._held: list[bytes] = []
        self.flushed_from = 0
        self.flushed_at = 0.0
        self.flush_list: FlushList | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self._queue: Any = transport if IWriteQueue.providedBy(transport) else None
        below = _unwrap(transport)
        #: the FileDescriptor whose private write buffer holds our bytes
        self._buffer: FileDescriptor | None = (
            below if isinstance(below, FileDescriptor) and self._queue is None else None
        )
        self._socket = socket_of(transport)
        #: the socket an empty transport's media may be sent to at once: plain
        #: TCP (or UNIX) only; over TLS the bytes must go through the TLS layer.
        plain = below is transport and not getattr(transport, "TLS", False)
        self._eager = self._socket if plain and self._buffer is not None else None
        #: the socket a viewer's fast lane sends to (``None``: not this connection)
        self.lane_socket = self._eager
        #: the fast lane this connection's viewer is in, or ``None``
        self.lane: LaneHolder | None = None

    def __repr__(self) -> str:
        return f"<TransportAdapter written={self.written} queued={self.queued()}>"

    # --- readings -----------------------------------------------------------------

    def queued(self) -> int:
        """Bytes written and not yet handed to the kernel: held frames plus Twisted's
        user-space buffer."""
        buffer = self._buffer
        if buffer is not None:
            return len(buffer.dataBuffer) - buffer.offset + buffer._tempDataLen + self.held_bytes
        if self._queue is not None:
            return int(self._queue.queued_bytes()) + self.held_bytes
        return self.held_bytes

    def kernel_queued(self) -> int:
        """Bytes handed to the kernel that the peer has not acknowledged (0 if unknown).

        One ``ioctl``: read it for the viewers that need it, not for every frame
        of every viewer.
        """
        if self._queue is not None:
            return int(self._queue.kernel_queued_bytes())
        sock = self._socket
        if sock is None:
            return 0
        try:
            raw = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0  # closed meanwhile (fileno -1), or not a socket the kernel counts
        return int(struct.unpack("i", raw)[0])

    @property
    def has_kernel_view(self) -> bool:
        """Whether :meth:`kernel_queued` can see anything for this transport."""
        return self._socket is not None or self._queue is not None

    @property
    def peer(self) -> IAddress:
        """The peer's address."""
        address: IAddress = self.transport.getPeer()
        return address

    @property
    def peer_text(self) -> str:
        """The peer's address as logs show it (:func:`address_text`)."""
        return address_text(self.peer)

    # --- writing ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write protocol bytes *data* through the transport (handshake, control, commands)."""
        if self.lane is not None:
            self.lane.release(self)
        if self._held:
            self.flush()
        self.written += len(data)
        self.transport.write(data)

    def write_frame(self, data: bytes, queued: int) -> None:
        """Write a frame's bytes *data*: held while the flush list holds, else
        as :meth:`write_media`.

        Held frames go out together, in one ``sendmsg`` of the shared bytes
        objects (no copy), when the flush list flushes or anything else is
        written through this adapter.
        """
        flush_list = self.flush_list
        if flush_list is None or not flush_list.holding or self.lane is not None:
            self.write_media(data, queued)
            return
        size = len(data)
        self.written += size
        self.media_written += size
        held = self._held
        if not held:
            if flush_list._depth:
                flush_list._links.append(self)  # FlushList.add in a read, inline
            else:
                flush_list.add(self)
        held.append(data)
        self.held_bytes += size

    def flush(self) -> None:
        """Send the held frames: one ``sendmsg`` when the transport holds nothing,
        the unsent rest (or everything) through the transport, in order."""
        held = self._held
        if not held:
            return
        self._held = []
        self.flushed_from = self.written - self.held_bytes
        self.held_bytes = 0
        sock = self._eager
        if sock is not None:
            # queued() inline for a FileDescriptor's buffer (nothing is held now)
            buffer = self._buffer
            if buffer is not None:
                empty = not len(buffer.dataBuffer) - buffer.offset + buffer._tempDataLen
            else:
                empty = not self.queued()
        if sock is not None and empty:
            if len(held) == 1:
                data = held[0]  # _send_now inline: the one frame of a read, the common case
                try:
                    sent = sock.send(data)
                except OSError:
                    sent = 0  # as in _send_now
                if sent != len(data):
                    self.transport.write(data[sent:] if sent else data)
                return
            total = sum(map(len, held))
            sent = 0
            try:
                while sent < total:
                    batch = held if len(held) <= IOV_MAX else held[:IOV_MAX]
                    taken = sock.sendmsg(batch)
                    sent += taken
                    held = _tail(held, taken)
                    if not taken or taken < sum(map(len, batch)):
                        break
            except OSError:
                pass  # EAGAIN or EINTR, or an error the transport meets next (below)
            if sent >= total:
                return
        self.transport.writeSequence(held)

    def flush_failed(self, error: BaseException) -> None:
        """The flush list's :meth:`flush` raised *error*: this connection's failure.

        Its ``on_failure`` hook (the viewer's) is told, or it is logged, and the
        connection is aborted.
        """
        self.discard()
        hook = self.on_failure
        if hook is not None:
            hook(error)
        else:
            _log.failure(
                "flushing to {peer} failed; aborting it",
                Failure(error, type(error), error.__traceback__),
                peer=self.peer_text,
            )
        self.abort()

    def spill(self, pieces: list[bytes], sent: int) -> None:
        """*pieces* were sent straight to the socket (by a fast lane, and counted as
        written) and the kernel took their first *sent* bytes: the rest goes
        through the transport, in order."""
        self.flushed_from = self.written - sum(map(len, pieces))
        self.transport.writeSequence(_tail(pieces, sent))

    def discard(self) -> None:
        """Forget the held frames (the connection is being aborted)."""
        if self.lane is not None:
            self.lane.remove_link(self)
        self._held = []
        self.held_bytes = 0

    def _send_now(self, sock: socket.socket, data: bytes) -> None:
        try:
            sent = sock.send(data)
        except OSError:
            # EAGAIN or EINTR: nothing taken; any other error: the transport
            # meets the same error on its next write and closes cleanly.
            sent = 0
        if sent != len(data):
            self.transport.write(data[sent:] if sent else data)

    def write_media(self, data: bytes, queued: int) -> None:
        """Write a stream's bytes *data* (media, chat): straight to the socket when
        nothing is queued before it.

        Twisted's ``transport.write`` always buffers, then registers the socket
        for writing with epoll and unregisters it once flushed: two ``epoll_ctl``
        calls and a reactor turn per frame per viewer, which profiling showed to
        cost more than the rest of the fan-out (``docs/benchmarks.md``).  When
        the transport holds nothing, sending at once keeps order and skips all
        of that (asyncio does the same); whatever the kernel does not take goes
        through the transport as before, so pause/resume and the policy's view
        of the queue are unchanged.

        Held frames (:meth:`write_frame`) go first.

        :param queued: :meth:`queued` as read just before, by the caller (who
            needed it anyway); 0 allows the eager send.
        """
        if self.lane is not None:
            self.lane.release(self)
            queued = self.queued()
        if self._held:
            self.flush()
            queued = self.queued()
        self.written += len(data)
        self.media_written += len(data)
        sock = self._eager
        if sock is not None and not queued:
            self._send_now(sock, data)
            return
        self.transport.write(data)

    # --- set-up and teardown ------------------------------------------------------

    def disable_eager_writes(self) -> None:
        """Always write through the transport (``eager_writes`` off): no fast lane either."""
        if self.lane is not None:
            self.lane.release(self)
        self._eager = None
        self.lane_socket = None

    def configure_socket(self, notsent_lowat: int, send_buffer: int) -> bool:
        """Set ``TCP_NOTSENT_LOWAT`` and ``SO_SNDBUF`` on the TCP socket, where there is one.

        :returns: whether a socket was configured.
        """
        sock = self._socket
        try:
            if sock is None or sock.family == socket.AF_UNIX:
                return False
            if notsent_lowat:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, notsent_lowat)
            if send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        except OSError:
            return False
        return True

    def set_no_delay(self, enabled: bool) -> bool:
        """Turn Nagle's algorithm off (*enabled*) or on for the TCP socket, where there is one.

        ``twisted.web`` turns it off on every HTTP connection; a media stream
        keeps it on, as RTMP connections do: a small frame (an audio packet)
        written while the previous segment is unacknowledged then leaves with the
        next, half the TCP segments per frame (``docs/benchmarks.md``).

        :returns: whether a socket was configured.
        """
        sock = self._socket
        try:
            if sock is None or sock.family == socket.AF_UNIX:
                return False
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))
        except OSError:
            return False
        return True

    def register_producer(self, producer: IPushProducer) -> bool:
        """Register *producer* as the transport's streaming producer.

        :returns: ``False`` if the transport has a producer already (and keeps it).
        """
        try:
            self.transport.registerProducer(producer, True)
        except RuntimeError:
            return False
        return True

    def close(self) -> None:
        """Close once what is queued (held frames too) has been sent."""
        try:
            if self.lane is not None:
                self.lane.release(self)
            self.flush()
        except Exception:
            self.discard()  # the transport broke: closing is all that is left
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close now, discarding what is queued (held frames too)."""
        self.discard()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()
