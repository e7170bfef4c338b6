"""Hostile input fed to the server protocol: only the offending connection suffers.

Hypothesis feeds random bytes and mutated valid sessions (bytes flipped, cut,
duplicated, oversized lengths, extreme chunk sizes, unknown chunk streams, deeply
nested AMF) to one connection, at random read sizes, while a well-behaved
publisher and viewer share the factory.  Whatever happens to the hostile
connection, no exception may escape the protocol boundary unhandled (an
"unexpected error" log event is a bug), and the viewer must still receive every
frame the publisher sends afterwards.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher

from streamserver.codec import messages
from streamserver.codec.chunk import ChunkEncoder
from streamserver.codec.handshake import ClientHandshake
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media


def _valid_session(play: bool) -> bytes:
    """The bytes a well-behaved client sends: handshake, connect, createStream, publish/play."""
    encoder = ChunkEncoder(128)
    data = ClientHandshake().initial_bytes() + bytes(1536)
    data += encoder.encode(messages.set_chunk_size(4096), 2)
    encoder.chunk_size = 4096
    commands = [
        messages.command("connect", 1, {"app": "live", "tcUrl": "rtmp://h/live"}),
        messages.command("createStream", 2, None),
    ]
    if play:
        commands.append(messages.command("play", 3, None, "fuzz", stream_id=1))
    else:
        commands.append(messages.command("publish", 3, None, "fuzz", "live", stream_id=1))
    for command in commands:
        data += encoder.encode(command, 3)
    if not play:
        for message in media.headers(1) + media.gop_frames(1, 0, 4):
            data += encoder.encode(message, 6 if message.type_id == MessageType.VIDEO else 4)
    return data


VALID = [_valid_session(False), _valid_session(True)]
HANDSHAKE = 1 + 1536 + 1536


def _deep_amf(depth: int) -> bytes:
    """A command whose object nests *depth* levels of anonymous objects."""
    body = b"\x02\x00\x07connect\x00" + struct.pack(">d", 1.0)
    body += b"\x03\x00\x01a" * depth + b"\x05" + b"\x00\x00\x09" * depth
    return body


def _chunk(csid: int, type_id: int, payload: bytes, length: int | None = None) -> bytes:
    """One fmt 0 chunk with an arbitrary declared length."""
    size = len(payload) if length is None else length
    header = bytes([csid & 0x3F]) + b"\x00\x00\x00" + size.to_bytes(3, "big") + bytes([type_id])
    return header + struct.pack("<I", 0) + payload


SPECIAL_CHUNKS = [
    _chunk(2, 1, struct.pack(">I", 0)),  # Set Chunk Size 0
    _chunk(2, 1, struct.pack(">I", 0x7FFFFFFF)),  # Set Chunk Size 2^31-1
    _chunk(2, 1, b"\x00"),  # truncated Set Chunk Size
    _chunk(3, 20, b"", length=0xFFFFFF),  # oversized message
    b"\x47" + b"\x00" * 7,  # fmt 1 on a chunk stream never opened
    b"\xc9",  # fmt 3 on an unknown chunk stream
    b"\x00\xff" + b"\x00" * 11,  # 2-byte csid form, then junk
    b"\x01\xff\xff" + b"\x00" * 11,  # 3-byte csid form, csid 65599
    _chunk(3, 20, _deep_amf(10_000)[:4000]),  # deep AMF nesting (truncated to fit)
    _chunk(3, 20, _deep_amf(200)),
    _chunk(3, 20, b"\x02\x00\x04play\x00" + struct.pack(">d", 0.0) + b"\x05\x00"),  # play 0
    _chunk(3, 17, b"\x00\x02\x00\x0dcreateStream"),  # AMF3 command, truncated
    _chunk(3, 4, b"\x00"),  # user control too short
    _chunk(3, 22, b"\x09\xff\xff\xff" + b"\x00" * 20),  # aggregate with an absurd size
    _chunk(3, 8, b""),  # empty audio
    _chunk(3, 9, b""),  # empty video
    _chunk(2, 1, struct.pack(">I", 64)),  # Set Chunk Size under the 128 minimum
    _chunk(3, 20, b"\x02\x00\x50" + b"x" * 80 + b"\x00" + struct.pack(">d", 1.0)),  # long name
    _chunk(3, 20, b"\x02\x00\x04play" + b"\x05" * 70_000),  # command over 64 KiB
]

#: A remote address, which may not publish under the default (loopback only).
HOSTILE_PEER = IPv4Address("TCP", "203.0.113.66", 31337)

#: Small limits and timeouts, so that fuzzing reaches the paths that enforce them.
TIGHT = ServerConfig(
    max_message_bytes=32 * 1024,
    max_command_bytes=2048,
    max_chunk_streams=6,
    max_peer_chunk_size=8192,
    handshake_timeout=2.0,
    connect_timeout=2.0,
    publisher_idle_timeout=3.0,
    ping_interval=2.0,
    ping_timeout=2.0,
)


@st.composite
def hostile_inputs(draw: Any) -> tuple[bytes, list[int]]:
    base = bytearray(draw(st.sampled_from(VALID)))
    operation = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "garbage"]))
    start = draw(st.integers(0, len(base)))
    if operation == "flip":
        for _ in range(draw(st.integers(1, 8))):
            index = draw(st.integers(HANDSHAKE, len(base) - 1))
            base[index] ^= draw(st.integers(1, 255))
    elif operation == "truncate":
        del base[start:]
    elif operation == "duplicate":
        end = draw(st.integers(start, min(len(base), start + 2000)))
        base[start:start] = base[start:end]
    elif operation == "insert":
        at = draw(st.integers(HANDSHAKE, len(base)))
        base[at:at] = draw(st.sampled_from(SPECIAL_CHUNKS))
    else:
        base = bytearray(base[:HANDSHAKE]) + draw(st.binary(max_size=3000))
    cuts = draw(st.lists(st.integers(1, 700), max_size=12))
    return bytes(base), cuts


def _feed(peer: FakePeer, data: bytes, cuts: list[int]) -> None:
    offset = 0
    for size in cuts:
        if offset >= len(data):
            break
        peer.send_bytes(data[offset : offset + size])
        offset += size
    if offset < len(data):
        peer.send_bytes(data[offset:])


def _check_isolation(
    data: bytes, cuts: list[int], config: ServerConfig | None = None, *, remote: bool = False
) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = task.Clock()
        factory = RTMPServerFactory(config or ServerConfig(), reactor=clock)
        publisher = FakePeer(factory)
        publisher.connect("live")
        sid = publisher.create_stream()
        publisher.publish("good", sid)
        viewer = FakePeer(factory)
        viewer.connect("live")
        viewer.play("good", viewer.create_stream())

        hostile = FakePeer(factory, handshake=False, peer=HOSTILE_PEER if remote else None)
        _feed(hostile, data, cuts)
        ticks = 0
        if config is not None:
            # Run the timeouts over whatever state the hostile peer is left in;
            # the publisher keeps sending, so the good pair stays alive.
            ticks = 3 * round(config.handshake_timeout + config.ping_timeout)
            for tick in range(ticks):
                publisher.send(media.audio(sid, tick * 1000))
                clock.advance(1.0)
                factory.check_viewers()

        sent = media.headers(sid) + media.gop_frames(sid, 0, 10)
        for message in sent:
            publisher.send(message)
        got = viewer.media()
        assert len(got) == ticks + len(sent)
        assert [m.payload for m in got[ticks + 1 :]] == [m.payload for m in sent[1:]]
        assert not viewer.transport.disconnecting
        assert not publisher.transport.disconnecting
        hostile.transport.loseConnection()  # whatever state it is in, it closes cleanly
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if "log_failure" in e]
    assert not failures, failures[0]["log_failure"].getTraceback()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(hostile_inputs())
def test_hostile_connection_does_not_disturb_others(case: tuple[bytes, list[int]]) -> None:
    """Mutated sessions only ever cost their own connection; others get every frame."""
    _check_isolation(*case)


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=5000), st.lists(st.integers(1, 300), max_size=8))
def test_random_bytes_from_the_first_byte(data: bytes, cuts: list[int]) -> None:
    """Random bytes (no valid handshake) are refused without disturbing anyone."""
    _check_isolation(data, cuts)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(hostile_inputs(), st.booleans())
def test_hostile_connection_under_tight_limits_and_timeouts(
    case: tuple[bytes, list[int]], remote: bool
) -> None:
    """With small limits and timeouts (run after the input), only the offender is affected."""
    _check_isolation(*case, TIGHT, remote=remote)


def test_every_special_chunk_is_handled() -> None:
    """Each hand-made hostile chunk after a valid session is handled, one by one."""
    for chunk in SPECIAL_CHUNKS:
        for base in VALID:
            _check_isolation(base + chunk, [])


def test_an_unexpected_error_is_seen_by_the_check(monkeypatch) -> None:
    """The isolation check fails if a handler raises something other than ProtocolError."""
    from streamserver.protocol.session import SessionMixin

    def broken(self: Any, command: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(SessionMixin, "command_createStream", broken)
    try:
        _check_isolation(VALID[1], [])
    except AssertionError:
        return
    raise AssertionError("a KeyError in a command handler went unnoticed")


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    """A 10,000-deep AMF command drops that connection with a logged protocol error."""
    factory = RTMPServerFactory(ServerConfig(), reactor=task.Clock())
    peer = FakePeer(factory)
    encoder = ChunkEncoder(128)
    peer.send_bytes(encoder.encode(Message(MessageType.COMMAND_AMF0, 0, 0, _deep_amf(10_000)), 3))
    assert peer.transport.disconnecting
