"""Held frames (``TransportAdapter.write_frame``) and the factory's ``FlushList``.

The frames of one publisher read leave in one ``sendmsg`` per viewer at its end;
with ``merge_ms`` they wait at most that long, under one timer per list.  Held
bytes count as queued, and whatever else is written through the adapter goes
after them: the bytes on the wire are the bytes written, in order, whatever
mix of eager, held and partial sends carried them (the property test below).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface import implementer

from streamserver.transport import IOV_MAX, FlushList, IWriteQueue, TransportAdapter


@implementer(IWriteQueue)
class QueueTransport:
    """A transport whose buffer drains to the same wire as the fake socket."""

    def __init__(self, wire: bytearray) -> None:
        self.wire = wire
        self.buffer = bytearray()
        self.lost = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.buffer += data

    def writeSequence(self, data: list[bytes]) -> None:
        for piece in data:
            self.write(piece)

    def drain(self, nbytes: int) -> None:
        taken = self.buffer[:nbytes]
        del self.buffer[:nbytes]
        self.wire += taken

    def queued_bytes(self) -> int:
        return len(self.buffer)

    def kernel_queued_bytes(self) -> int:
        return 0

    def loseConnection(self) -> None:
        self.lost = True

    def abortConnection(self) -> None:
        self.aborted = True

    def getPeer(self) -> str:
        return "peer"


class FakeSocket:
    """Takes up to :attr:`room` bytes per call; records every call."""

    def __init__(self, wire: bytearray, room: int = 1 << 30) -> None:
        self.wire = wire
        self.room = room
        self.calls: list[tuple[str, list[bytes]]] = []

    def _take(self, pieces: list[bytes]) -> int:
        data = b"".join(pieces)[: self.room]
        if not data:
            raise BlockingIOError
        self.wire += data
        return len(data)

    def send(self, data: bytes) -> int:
        self.calls.append(("send", [data]))
        return self._take([data])

    def sendmsg(self, buffers: list[bytes]) -> int:
        self.calls.append(("sendmsg", list(buffers)))
        assert len(buffers) <= IOV_MAX
        return self._take(list(buffers))


def make_link(flush_list: FlushList, room: int = 1 << 30) -> tuple[Any, Any, bytearray]:
    wire = bytearray()
    transport = QueueTransport(wire)
    link = TransportAdapter(transport)
    sock = FakeSocket(wire, room)
    link._eager = sock  # the eager path of a plain TCP socket, over the fake one
    link.flush_list = flush_list
    return link, sock, wire


def test_the_frames_of_one_read_leave_in_one_sendmsg_of_the_same_objects() -> None:
    flush_list = FlushList()
    link, sock, wire = make_link(flush_list)
    frames = [b"v" * 1700, b"a" * 300, b"v" * 900]
    flush_list.cork()
    for frame in frames:
        link.write_frame(frame, link.queued())
    assert sock.calls == [] and not wire
    assert link.queued() == link.held_bytes == 2900, "held bytes count as queued"
    assert link.written == link.media_written == 2900
    flush_list.uncork()
    assert len(sock.calls) == 1
    name, buffers = sock.calls[0]
    assert name == "sendmsg" and all(a is b for a, b in zip(buffers, frames, strict=True))
    assert bytes(wire) == b"".join(frames)
    assert link.queued() == 0 and len(flush_list) == 0


def test_outside_a_read_without_merge_a_frame_goes_at_once() -> None:
    flush_list = FlushList()
    link, sock, wire = make_link(flush_list)
    link.write_frame(b"x" * 10, 0)
    assert sock.calls == [("send", [b"x" * 10])] and bytes(wire) == b"x" * 10


def test_nested_reads_flush_at_the_outermost_end() -> None:
    flush_list = FlushList()
    link, sock, _ = make_link(flush_list)
    flush_list.cork()
    flush_list.cork()
    link.write_frame(b"1", 0)
    flush_list.uncork()
    assert not sock.calls
    flush_list.uncork()
    assert len(sock.calls) == 1


def test_a_partial_sendmsg_leaves_the_tail_to_the_transport_in_order() -> None:
    flush_list = FlushList()
    link, _, wire = make_link(flush_list, room=1000)
    flush_list.cork()
    for index in range(4):
        link.write_frame(bytes([65 + index]) * 400, 0)
    flush_list.uncork()
    assert bytes(wire) == b"A" * 400 + b"B" * 400 + b"C" * 200
    assert link.queued() == 600, "the tail waits in the transport"
    link.write_frame(b"E" * 10, link.queued())  # behind the tail, not before it
    link.transport.drain(10_000)
    assert bytes(wire) == b"A" * 400 + b"B" * 400 + b"C" * 400 + b"D" * 400 + b"E" * 10


def test_more_frames_than_iov_max_go_in_several_calls() -> None:
    flush_list = FlushList()
    link, sock, wire = make_link(flush_list)
    flush_list.cork()
    for index in range(IOV_MAX + 5):
        link.write_frame(index.to_bytes(2, "big"), 0)
    flush_list.uncork()
    assert [len(buffers) for _, buffers in sock.calls] == [IOV_MAX, 5]
    assert bytes(wire) == b"".join(i.to_bytes(2, "big") for i in range(IOV_MAX + 5))


def test_protocol_bytes_and_chat_go_after_what_is_held() -> None:
    flush_list = FlushList()
    link, _, wire = make_link(flush_list)
    flush_list.cork()
    link.write_frame(b"frame1", 0)
    link.write(b"|control|")
    link.write_frame(b"frame2", 0)
    link.write_media(b"|chat|", link.queued())
    assert link.held_bytes == 0
    flush_list.uncork()
    link.transport.drain(1000)
    assert bytes(wire) == b"frame1|control|frame2|chat|"


def test_merge_holds_frames_up_to_the_bound_under_one_timer() -> None:
    clock = Clock()
    flush_list = FlushList(clock, merge_ms=50)
    links = [make_link(flush_list) for _ in range(3)]
    flush_list.cork()
    for link, _, _ in links:
        link.write_frame(b"k" * 100, 0)
    flush_list.uncork()
    assert len(clock.getDelayedCalls()) == 1, "one timer per list, not per viewer"
    clock.advance(0.02)
    for link, _, _ in links:
        link.write_frame(b"a" * 10, 0)  # outside a read: held under the same timer
    assert len(clock.getDelayedCalls()) == 1
    assert all(not wire for _, _, wire in links)
    clock.advance(0.03)  # 50 ms after the first frame held
    for _, sock, wire in links:
        assert bytes(wire) == b"k" * 100 + b"a" * 10
        assert len(sock.calls) == 1
    assert not clock.getDelayedCalls()
    links[0][0].write_frame(b"n", 0)
    assert len(clock.getDelayedCalls()) == 1, "a new frame starts a new bound"


def test_abort_discards_close_flushes_stop_flushes() -> None:
    clock = Clock()
    flush_list = FlushList(clock, merge_ms=100)
    aborted, _, aborted_wire = make_link(flush_list)
    closed, _, closed_wire = make_link(flush_list)
    kept, _, kept_wire = make_link(flush_list)
    for link in (aborted, closed, kept):
        link.write_frame(b"x" * 5, 0)
    aborted.abort()
    closed.close()
    assert aborted.queued() == 0 and aborted.transport.aborted and not aborted_wire
    assert bytes(closed_wire) == b"x" * 5 and closed.transport.lost
    flush_list.stop()
    assert bytes(kept_wire) == b"x" * 5
    assert not clock.getDelayedCalls()
    assert not aborted_wire, "an aborted link's frames are gone"


def test_a_failing_flush_is_that_links_alone() -> None:
    flush_list = FlushList()
    bad, _, _ = make_link(flush_list)
    good, _, good_wire = make_link(flush_list)
    failures: list[BaseException] = []
    bad.on_failure = failures.append

    def broken(data: list[bytes]) -> int:
        raise RuntimeError("broken")

    bad._eager.sendmsg = broken
    flush_list.cork()
    bad.write_frame(b"1", 0)
    bad.write_frame(b"2", 0)
    good.write_frame(b"3", 0)
    good.write_frame(b"4", 0)
    flush_list.uncork()
    assert [type(f) for f in failures] == [RuntimeError]
    assert bad.transport.aborted and bad.queued() == 0
    assert bytes(good_wire) == b"34"


def test_the_factory_flushes_at_the_end_of_a_publisher_read_and_at_stop() -> None:
    from streamserver.config import ServerConfig
    from streamserver.factory import RTMPServerFactory

    clock = Clock()
    factory = RTMPServerFactory(ServerConfig(merge_ms=20), reactor=clock)
    assert factory.flush_list.merge_ms == 20
    link, _, wire = make_link(factory.flush_list)
    link.write_frame(b"held", 0)
    factory.stopFactory()
    assert bytes(wire) == b"held"


# --- the ordering property --------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), st.integers(1, 3000)),
        st.tuples(st.just("write"), st.integers(1, 300)),
        st.tuples(st.just("media"), st.integers(1, 300)),
        st.tuples(st.just("cork"), st.just(0)),
        st.tuples(st.just("uncork"), st.just(0)),
        st.tuples(st.just("drain"), st.integers(0, 5000)),
        st.tuples(st.just("room"), st.integers(0, 4000)),
        st.tuples(st.just("tick"), st.integers(0, 60)),
        st.tuples(st.just("flush"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, merge_ms=st.sampled_from([0, 0, 20, 50]))
def test_the_bytes_on_the_wire_are_the_bytes_written_in_order(
    ops: list[tuple[str, int]], merge_ms: int
) -> None:
    clock = Clock()
    flush_list = FlushList(clock, merge_ms=merge_ms)
    link, sock, wire = make_link(flush_list, room=2000)
    expected = bytearray()
    depth = 0
    counter = 0

    def payload(size: int) -> bytes:
        nonlocal counter
        counter += 1
        return (counter.to_bytes(4, "big") * (size // 4 + 1))[:size]

    for op, value in ops:
        if op in ("frame", "write", "media"):
            data = payload(value)
            expected += data
            if op == "frame":
                link.write_frame(data, link.queued())
            elif op == "write":
                link.write(data)
            else:
                link.write_media(data, link.queued())
        elif op == "cork":
            depth += 1
            flush_list.cork()
        elif op == "uncork" and depth:
            depth -= 1
            flush_list.uncork()
        elif op == "drain":
            link.transport.drain(value)
        elif op == "room":
            sock.room = value
        elif op == "tick":
            clock.advance(value / 1000)
        elif op == "flush":
            flush_list.flush()
        assert link.written == len(expected)
        assert link.queued() == len(expected) - len(wire), "held + buffered = not on the wire"
        if not depth and not merge_ms:
            assert link.held_bytes == 0, "nothing held past a read without merge"
    while depth:
        depth -= 1
        flush_list.uncork()
    flush_list.stop()
    link.transport.drain(1 << 30)
    assert bytes(wire) == bytes(expected)
