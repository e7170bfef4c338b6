"""Tests of the RTMP chunk layer (spec 5.3, 5.4.1, 5.4.2): vectors, round trips, garbage."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder, encode_message
from streamserver.codec.messages import Message, MessageType, abort, set_chunk_size
from streamserver.errors import ChunkError, ProtocolError, UsageError

Fields = tuple[int, int, int, bytes]

PAYLOAD_300 = bytes(i % 251 for i in range(300))
PAYLOAD_200 = bytes((7 * i) % 256 for i in range(200))


def h(text: str) -> bytes:
    """Bytes from hex with spaces."""
    return bytes.fromhex(text)


def fields(messages: Iterable[Message]) -> list[Fields]:
    return [(m.type_id, m.stream_id, m.timestamp % 2**32, bytes(m.payload)) for m in messages]


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Cut *data* at the given positions (any order, duplicates allowed)."""
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in pairwise(points)]


def decode(data: bytes, cuts: Iterable[int] = (), decoder: ChunkDecoder | None = None) -> list:
    decoder = decoder or ChunkDecoder()
    out: list[Message] = []
    for piece in split(data, cuts):
        out.extend(decoder.receive_data(piece))
    return out


def decode_or_error(data: bytes, cuts: Iterable[int], **limits: int) -> tuple[list, bool]:
    """Decode at the cuts; return the messages and whether a ChunkError was raised.

    Any other exception fails the test.
    """
    decoder = ChunkDecoder(**limits)
    out: list[Message] = []
    try:
        for piece in split(data, cuts):
            out.extend(decoder.receive_data(piece))
    except Exception as error:
        assert isinstance(error, ChunkError), repr(error)
        assert isinstance(error, ProtocolError)
        return out, True
    return out, False


# --- spec vectors -----------------------------------------------------------------

ABCD = Message(MessageType.COMMAND_AMF0, 0, 0, b"abcd")
BODY_ABCD = "000000 000004 14 00000000 61626364"


@pytest.mark.parametrize(
    ("csid", "basic"),
    [(3, "03"), (63, "3f"), (64, "00 00"), (319, "00 ff"), (320, "01 00 01"), (65599, "01 ff ff")],
)
def test_basic_header_forms(csid: int, basic: str) -> None:
    """Chunk stream ids use the 1-, 2- and 3-byte basic header forms of spec 5.3.1.1."""
    wire = h(basic + BODY_ABCD)
    assert encode_message(ABCD, csid, 128) == wire
    assert ChunkEncoder().encode(ABCD, csid) == wire
    assert fields(decode(wire)) == fields([ABCD])


def test_three_byte_form_for_small_csid() -> None:
    """A decoder accepts the 3-byte form for an id that would fit in two bytes."""
    assert fields(decode(h("01 05 00" + BODY_ABCD))) == fields([ABCD])


FMT_VECTOR = (
    "04 0003e8 000003 08 01000000 aabbcc"  # fmt 0: timestamp 1000, stream 1
    "44 000014 000002 09 dddd"  # fmt 1: delta 20, new length and type
    "84 00001e eeee"  # fmt 2: delta 30
    "c4 ffff"  # fmt 3: delta 30 again
)
FMT_MESSAGES = [
    Message(8, 1, 1000, h("aabbcc")),
    Message(9, 1, 1020, h("dddd")),
    Message(9, 1, 1050, h("eeee")),
    Message(9, 1, 1080, h("ffff")),
]


def test_each_header_format_decodes() -> None:
    """Type 0, 1, 2 and 3 headers inherit the missing fields from the previous chunk."""
    assert fields(decode(h(FMT_VECTOR))) == fields(FMT_MESSAGES)


def test_encoder_compresses_headers() -> None:
    """ChunkEncoder picks type 0, 1, 2 then 3 as the fields stop changing."""
    encoder = ChunkEncoder()
    assert b"".join(encoder.encode(m, 4) for m in FMT_MESSAGES) == h(FMT_VECTOR)


def test_type3_after_type0_adds_the_type0_timestamp() -> None:
    """A type 3 chunk after a type 0 chunk uses the type 0 timestamp as its delta (5.3.1.2.4)."""
    wire = h("05 000028 000001 12 00000000 01 c5 02")
    assert fields(decode(wire)) == [(18, 0, 40, b"\x01"), (18, 0, 80, b"\x02")]
    encoder = ChunkEncoder()
    out = encoder.encode(Message(18, 0, 40, b"\x01"), 5) + encoder.encode(
        Message(18, 0, 80, b"\x02"), 5
    )
    assert out == wire


def test_encoder_type0_on_new_stream_id_or_backwards_timestamp() -> None:
    """A new message stream id or a timestamp going backwards gets a type 0 header."""
    encoder = ChunkEncoder()
    encoder.encode(Message(9, 1, 100, b"x"), 6)
    assert encoder.encode(Message(9, 2, 200, b"x"), 6)[0] >> 6 == 0
    assert encoder.encode(Message(9, 2, 150, b"x"), 6)[0] >> 6 == 0
    assert encoder.encode(Message(9, 2, 160, b"x"), 6)[0] >> 6 == 2
    encoder.reset(6)
    assert encoder.encode(Message(9, 2, 170, b"x"), 6)[0] >> 6 == 0


def test_message_spanning_chunks() -> None:
    """A 300-byte message at chunk size 128 is one type 0 chunk and two type 3 chunks."""
    wire = (
        h("06 000000 00012c 09 01000000")
        + PAYLOAD_300[:128]
        + h("c6")
        + PAYLOAD_300[128:256]
        + h("c6")
        + PAYLOAD_300[256:]
    )
    message = Message(9, 1, 0, PAYLOAD_300)
    assert encode_message(message, 6, 128) == wire
    assert ChunkEncoder().encode(message, 6) == wire
    assert fields(decode(wire)) == fields([message])


def test_extended_timestamp_in_type0_and_type3_continuation() -> None:
    """A timestamp >= 0xFFFFFF goes in the extended field, repeated by type 3 continuations."""
    wire = (
        h("06 ffffff 0000c8 09 01000000 01000000")
        + PAYLOAD_200[:128]
        + h("c6 01000000")
        + PAYLOAD_200[128:]
    )
    message = Message(9, 1, 0x01000000, PAYLOAD_200)
    assert encode_message(message, 6, 128) == wire
    assert fields(decode(wire)) == fields([message])


def test_extended_delta_in_type2_and_type3() -> None:
    """A delta >= 0xFFFFFF goes in the extended field of type 2 and new-message type 3 chunks."""
    messages = [
        Message(9, 1, 0, b"ab"),
        Message(9, 1, 0x01000005, b"cd"),
        Message(9, 1, 0x0200000A, b"ef"),
    ]
    wire = h("06 000000 000002 09 01000000 616286 ffffff 01000005 6364c6 01000005 6566")
    encoder = ChunkEncoder()
    assert b"".join(encoder.encode(m, 6) for m in messages) == wire
    assert fields(decode(wire)) == fields(messages)


def test_timestamps_wrap_modulo_2_32() -> None:
    """Deltas added past 2**32 wrap around."""
    wire = h("04 ffffff 000001 08 01000000 fffffff0 00 84 000020 01")
    assert [m.timestamp for m in decode(wire)] == [0xFFFFFFF0, 0x10]


def test_set_chunk_size_applies_to_following_bytes_in_same_call() -> None:
    """Bytes after a Set Chunk Size in the same receive_data call use the new size."""
    wire = (
        h("02 000000 000004 01 00000000 00001000") + h("06 000000 00012c 09 01000000") + PAYLOAD_300
    )
    decoder = ChunkDecoder()
    messages = decoder.receive_data(wire)
    assert fields(messages) == fields([set_chunk_size(4096), Message(9, 1, 0, PAYLOAD_300)])
    assert decoder.chunk_size == 4096
    assert decoder.bytes_received == len(wire)


def test_abort_drops_partial_message() -> None:
    """An Abort message discards the partial message of its chunk stream (5.4.2)."""
    wire = (
        h("06 000000 00012c 09 01000000")
        + PAYLOAD_300[:128]
        + h("02 000000 000004 02 00000000 00000006")
        + h("06 000064 000002 09 01000000 abcd")
        + h("c6")  # type 3 after the abort starts a new message: timestamp 100 + 100
        + PAYLOAD_300[:2]
    )
    assert fields(decode(wire)) == fields(
        [abort(6), Message(9, 1, 100, h("abcd")), Message(9, 1, 200, PAYLOAD_300[:2])]
    )


def test_interleaved_chunk_streams() -> None:
    """Chunks of two messages on different chunk streams may interleave."""
    video = Message(9, 1, 40, PAYLOAD_300)
    audio = Message(8, 1, 42, PAYLOAD_200)
    v = encode_message(video, 6, 128)
    a = encode_message(audio, 4, 128)
    v_chunks = [v[:140], v[140:269], v[269:]]
    a_chunks = [a[:140], a[140:]]
    wire = v_chunks[0] + a_chunks[0] + v_chunks[1] + a_chunks[1] + v_chunks[2]
    assert fields(decode(wire)) == fields([audio, video])


def test_zero_length_message() -> None:
    """A message with an empty payload completes at its header."""
    message = Message(18, 1, 5, b"")
    wire = encode_message(message, 5, 128)
    assert wire == h("05 000005 000000 12 01000000")
    assert fields(decode(wire)) == fields([message])


def test_byte_by_byte_and_trailing_data() -> None:
    """Feeding one byte at a time gives the same messages; an incomplete tail yields none."""
    wire = h(FMT_VECTOR)
    decoder = ChunkDecoder()
    out: list[Message] = []
    for i in range(len(wire)):
        out.extend(decoder.receive_data(wire[i : i + 1]))
    assert fields(out) == fields(FMT_MESSAGES)
    assert decoder.receive_data(h("06 000000 00012c 09 01000000") + PAYLOAD_300[:100]) == []


# --- peer errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire", ["44 000014 000002 09 dddd", "84 000014", "c4", "c0 05", "41 00 01"]
)
def test_header_before_type0_is_an_error(wire: str) -> None:
    """Types 1, 2 and 3 on a chunk stream never opened by a type 0 header are refused."""
    with pytest.raises(ChunkError, match="before a type 0 header"):
        ChunkDecoder().receive_data(h(wire))


def test_new_header_while_message_pending_is_an_error() -> None:
    """A type 0/1/2 header while a message is half assembled on that chunk stream is refused."""
    first_chunk = encode_message(Message(9, 1, 0, PAYLOAD_300), 6, 128)[:140]
    for header in ("06 000000 000001 09 01000000 00", "46 000000 000001 09 00", "86 000000"):
        with pytest.raises(ChunkError, match="incomplete"):
            ChunkDecoder().receive_data(first_chunk + h(header))


@pytest.mark.parametrize("value", ["00000000", "80000000", "ffffffff", "7fffffff", "01000001"])
def test_bad_set_chunk_size(value: str) -> None:
    """Set Chunk Size 0, with the top bit set, or above the limit is refused."""
    with pytest.raises(ChunkError, match="Set Chunk Size"):
        ChunkDecoder().receive_data(h("02 000000 000004 01 00000000" + value))


def test_large_set_chunk_size_within_configured_limit() -> None:
    """A chunk size up to 2**31-1 is accepted when the limit allows it, without allocating."""
    decoder = ChunkDecoder(max_chunk_size=0x7FFFFFFF)
    decoder.receive_data(h("02 000000 000004 01 00000000 7fffffff"))
    assert decoder.chunk_size == 0x7FFFFFFF
    assert decoder.receive_data(h("06 000000 ffffff 09 01000000") + b"x" * 1000) == []


def test_short_control_message_is_an_error() -> None:
    """A Set Chunk Size or Abort shorter than 4 bytes is refused."""
    for type_id in ("01", "02"):
        with pytest.raises(ChunkError, match="shorter than 4 bytes"):
            ChunkDecoder().receive_data(h(f"02 000000 000003 {type_id} 00000000 000010"))


def test_message_length_limit_checked_at_header() -> None:
    """A declared length above max_message_size is refused from the header alone."""
    decoder = ChunkDecoder(max_message_size=1000)
    with pytest.raises(ChunkError, match="exceeds the limit"):
        decoder.receive_data(h("06 000000 ffffff 09 01000000"))
    decoder = ChunkDecoder(max_message_size=1000)
    decoder.receive_data(h("06 000000 000002 09 01000000 abcd"))
    with pytest.raises(ChunkError, match="exceeds the limit"):
        decoder.receive_data(h("46 000000 0003e9 09"))


def test_chunk_stream_limit() -> None:
    """More distinct chunk streams than max_chunk_streams are refused."""
    decoder = ChunkDecoder(max_chunk_streams=2)
    decoder.receive_data(encode_message(ABCD, 3, 128) + encode_message(ABCD, 400, 128))
    decoder.receive_data(encode_message(ABCD, 400, 128))
    with pytest.raises(ChunkError, match="limit of 2 chunk streams"):
        decoder.receive_data(encode_message(ABCD, 5, 128))


def test_decoder_unusable_after_error() -> None:
    """After a ChunkError every later call raises ChunkError too."""
    decoder = ChunkDecoder()
    with pytest.raises(ChunkError):
        decoder.receive_data(h("c4"))
    with pytest.raises(ChunkError, match="already failed"):
        decoder.receive_data(encode_message(ABCD, 3, 128))


# --- our own misuse -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "csid", "chunk_size"),
    [
        (ABCD, 1, 128),
        (ABCD, 65600, 128),
        (ABCD, 3, 0),
        (ABCD, 3, 2**31),
        (Message(256, 0, 0, b""), 3, 128),
        (Message(9, -1, 0, b""), 3, 128),
        (Message(9, 2**32, 0, b""), 3, 128),
        (Message(9, 0, 2**32, b""), 3, 128),
        (Message(9, 0, -1, b""), 3, 128),
        (Message(9, 0, 0, bytes(0x1000000)), 3, 128),
    ],
)
def test_encoder_usage_errors(message: Message, csid: int, chunk_size: int) -> None:
    """Values the chunk format cannot carry raise UsageError, not a corrupt stream."""
    with pytest.raises(UsageError):
        encode_message(message, csid, chunk_size)
    with pytest.raises(UsageError):
        ChunkEncoder(chunk_size).encode(message, csid)


@pytest.mark.parametrize("size", [0, -1, 2**31])
def test_encoder_set_chunk_size_usage_error(size: int) -> None:
    """An outbound chunk size outside 1..2**31-1 raises UsageError."""
    encoder = ChunkEncoder()
    with pytest.raises(UsageError):
        encoder.set_chunk_size(size)
    assert encoder.chunk_size == 128


def test_set_chunk_size_message_encoded_with_old_size() -> None:
    """The Set Chunk Size message returned by set_chunk_size is chunked at the old size."""
    encoder = ChunkEncoder(2)
    message = encoder.set_chunk_size(4096)
    assert encoder.chunk_size == 4096
    wire = encoder.encode(message, 2)
    assert wire == h("02 000000 000004 01 00000000 0000 c2 1000")
    assert encoder.encode(message, 2) == h("c2 00001000")  # only the first time


# --- round trips --------------------------------------------------------------------

CSIDS = st.one_of(st.integers(2, 63), st.integers(64, 319), st.integers(320, 65599))
TIMESTAMPS = st.one_of(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0xFFFFF0, 0x1000010),
    st.integers(0xFFFFFFF0, 0xFFFFFFFF),
    st.sampled_from([0, 0xFFFFFE, 0xFFFFFF, 0x1000000]),
)
DELTAS = st.one_of(st.integers(0, 100), st.integers(0xFFFFFE, 0x1000001), st.integers(0, 2**32 - 1))
STREAM_IDS = st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, 0xFFFFFFFF))
# Set Chunk Size (1) and Abort (2) are left to the chunk size changes below.
TYPE_IDS = st.integers(3, 22)
LARGE_PAYLOADS = st.tuples(st.integers(0, 70000), st.integers(0, 2**32)).map(
    lambda size_seed: random.Random(size_seed[1]).randbytes(size_seed[0])
)
PAYLOADS = st.one_of(st.binary(max_size=300), LARGE_PAYLOADS)
CHUNK_SIZES = st.one_of(st.integers(1, 65536), st.sampled_from([1, 2, 3, 4, 128, 4096, 65536]))


@st.composite
def message_plans(draw: st.DrawFn, max_messages: int = 10) -> list[tuple[Message, int]]:
    """Messages with chunk stream ids, often repeating fields so headers get compressed."""
    csids = draw(st.lists(CSIDS, min_size=1, max_size=4, unique=True))
    plan: list[tuple[Message, int]] = []
    last: dict[int, Message] = {}
    last_delta: dict[int, int] = {}
    for _ in range(draw(st.integers(1, max_messages))):
        csid = draw(st.sampled_from(csids))
        previous = last.get(csid)
        if previous is None or draw(st.booleans()):
            message = Message(draw(TYPE_IDS), draw(STREAM_IDS), draw(TIMESTAMPS), draw(PAYLOADS))
        else:
            # Same stream; maybe the same delta, type and length as before.
            delta = last_delta.get(csid, 0) if draw(st.booleans()) else draw(DELTAS)
            timestamp = (previous.timestamp + delta) % 2**32
            type_id = previous.type_id if draw(st.booleans()) else draw(TYPE_IDS)
            if draw(st.booleans()):
                payload = random.Random(draw(st.integers())).randbytes(len(previous.payload))
            else:
                payload = draw(PAYLOADS)
            message = Message(type_id, previous.stream_id, timestamp, payload)
        if previous is not None:
            last_delta[csid] = (message.timestamp - previous.timestamp) % 2**32
        last[csid] = message
        plan.append((message, csid))
    return plan


ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunked_with_encoder(
    plan: Sequence[tuple[Message, int]], initial: int, change: tuple[int, int] | None
) -> tuple[list[bytes], list[Message]]:
    """Encode *plan* with a ChunkEncoder, announcing chunk size changes in band.

    :returns: the encoded messages and the messages a decoder should return.
    """
    encoder = ChunkEncoder()
    out: list[bytes] = []
    expected: list[Message] = []

    def resize(size: int) -> None:
        announcement = encoder.set_chunk_size(size)
        out.append(encoder.encode(announcement, 2))
        expected.append(announcement)

    if initial != 128:
        resize(initial)
    for index, (message, csid) in enumerate(plan):
        if change is not None and change[0] == index:
            resize(change[1])
        out.append(encoder.encode(message, csid))
        expected.append(message)
    return out, expected


def chunked_statelessly(
    plan: Sequence[tuple[Message, int]], initial: int, change: tuple[int, int] | None
) -> tuple[list[bytes], list[Message]]:
    """Encode *plan* with encode_message, announcing chunk size changes in band."""
    size = 128
    out: list[bytes] = []
    expected: list[Message] = []

    def resize(new: int) -> int:
        announcement = set_chunk_size(new)
        out.append(encode_message(announcement, 2, size))
        expected.append(announcement)
        return new

    if initial != 128:
        size = resize(initial)
    for index, (message, csid) in enumerate(plan):
        if change is not None and change[0] == index:
            size = resize(change[1])
        out.append(encode_message(message, csid, size))
        expected.append(message)
    return out, expected


# The chunker is drawn, not parametrized: pytest-twisted breaks @given under parametrize.
@ROUND_TRIP
@given(
    chunker=st.sampled_from([chunked_with_encoder, chunked_statelessly]),
    plan=message_plans(),
    initial=CHUNK_SIZES,
    change=st.none() | st.tuples(st.integers(0, 10), CHUNK_SIZES),
    data=st.data(),
)
def test_round_trip_at_any_split(
    chunker, plan, initial: int, change: tuple[int, int] | None, data: st.DataObject
) -> None:
    """Messages chunked at any chunk size, changed mid-stream, decode the same at any split."""
    encoded, expected = chunker(plan, initial, change)
    wire = b"".join(encoded)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40), label="cuts")
    decoder = ChunkDecoder()
    assert fields(decode(wire, cuts, decoder)) == fields(expected)
    assert decoder.bytes_received == len(wire)
    assert decoder.chunk_size == expected_chunk_size(initial, change, len(plan))


def expected_chunk_size(initial: int, change: tuple[int, int] | None, count: int) -> int:
    if change is not None and change[0] < count:
        return change[1]
    return initial


@ROUND_TRIP
@given(plan=message_plans(max_messages=6), chunk_size=CHUNK_SIZES)
def test_encoder_never_larger_than_stateless(plan, chunk_size: int) -> None:
    """Header compression never makes the output longer than type 0 headers everywhere."""
    encoder = ChunkEncoder(chunk_size)
    for message, csid in plan:
        assert len(encoder.encode(message, csid)) <= len(encode_message(message, csid, chunk_size))


# --- garbage ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=3000), data=st.data())
def test_random_bytes_raise_only_chunk_error(garbage: bytes, data: st.DataObject) -> None:
    """Arbitrary bytes yield messages, nothing, or ChunkError, the same at any split."""
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=20), label="cuts")
    whole, whole_failed = decode_or_error(garbage, [])
    pieces, pieces_failed = decode_or_error(garbage, cuts)
    assert whole_failed == pieces_failed
    if not whole_failed:
        assert fields(pieces) == fields(whole)


NASTY_CHUNKS = st.sampled_from(
    [
        "06 000000 ffffff 09 01000000",  # declared length 0xFFFFFF
        "46 000000 ffffff 09",
        "02 000000 000004 01 00000000 00000000",  # chunk size 0
        "02 000000 000004 01 00000000 7fffffff",  # chunk size 2**31-1
        "02 000000 000004 01 00000000 80000000",  # top bit set
        "02 000000 000004 01 00000000 00000001",  # chunk size 1
        "02 000000 000004 02 00000000 00000006",  # abort csid 6
        "02 000000 000004 02 00000000 ffffffff",  # abort an unknown csid
        "c7",  # type 3 on an unknown csid
        "c0 ff",
        "c1 ff ff",
        "87 000001",
        "06 ffffff 000010 09 01000000",  # extended timestamp cut short
        "06 000000 000000 09 01000000",  # empty message
    ]
).map(bytes.fromhex)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    plan = draw(message_plans(max_messages=5))
    chunker = draw(st.sampled_from([chunked_with_encoder, chunked_statelessly]))
    encoded = chunker(plan, draw(CHUNK_SIZES), None)[0]
    # Nasty chunks between messages, where a decoder reads them as headers...
    for _ in range(draw(st.integers(0, 3))):
        encoded.insert(draw(st.integers(0, len(encoded))), draw(NASTY_CHUNKS))
    wire = bytearray(b"".join(encoded)[:20000])
    # ...then byte-level damage anywhere.
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "delete"]))
        position = draw(st.integers(0, len(wire)))
        if kind == "flip" and wire:
            index = min(position, len(wire) - 1)
            wire[index] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del wire[position:]
        elif kind == "duplicate":
            end = draw(st.integers(position, min(len(wire), position + 500)))
            wire[position:position] = wire[position:end] * 2
        elif kind == "insert":
            wire[position:position] = draw(NASTY_CHUNKS)
        elif kind == "delete":
            del wire[position : position + draw(st.integers(1, 20))]
    return bytes(wire)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wire=mutated_streams(),
    limits=st.sampled_from(
        [{}, {"max_message_size": 1000, "max_chunk_streams": 3}, {"max_chunk_size": 0x7FFFFFFF}]
    ),
    data=st.data(),
)
def test_mutated_streams_raise_only_chunk_error(wire: bytes, limits: dict, data) -> None:
    """Corrupted valid streams yield messages, nothing, or ChunkError, the same at any split."""
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30), label="cuts")
    whole, whole_failed = decode_or_error(wire, [], **limits)
    pieces, pieces_failed = decode_or_error(wire, cuts, **limits)
    assert whole_failed == pieces_failed
    if not whole_failed:
        assert fields(pieces) == fields(whole)


# --- input handling cost ------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [128, 2 * 1024 * 1024])
def test_byte_by_byte_large_message_is_linear(chunk_size: int) -> None:
    """A 1 MB message fed one byte at a time decodes without quadratic slowdown."""
    message = Message(9, 1, 0, random.Random(1).randbytes(1_000_000))
    wire = encode_message(set_chunk_size(chunk_size), 2, 128) + encode_message(
        message, 6, chunk_size
    )
    pieces = [wire[i : i + 1] for i in range(len(wire))]
    decoder = ChunkDecoder()
    out: list[Message] = []
    start = time.perf_counter()
    for piece in pieces:
        out.extend(decoder.receive_data(piece))
    elapsed = time.perf_counter() - start
    assert fields(out[1:]) == fields([message])
    assert elapsed < 5.0
