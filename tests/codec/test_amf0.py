"""Tests of the AMF0 codec: spec vectors, round-trips and hostile input."""

from __future__ import annotations

import contextlib
import copy
import pickle
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamserver.codec import amf0
from streamserver.codec.amf0 import (
    MAX_DEPTH,
    UNDEFINED,
    UNSUPPORTED,
    ECMAArray,
    TypedObject,
    Undefined,
    XMLDocument,
    decode_all,
    decode_value,
    encode,
    encode_value,
)
from streamserver.errors import AMFError, ProtocolError, UsageError

# --- helpers ------------------------------------------------------------------


def h(text: str) -> bytes:
    """Bytes from hex written with spaces for readability."""
    return bytes.fromhex(text)


def short(text: str) -> bytes:
    """A u16-length UTF-8 name, written by hand (AMF0 1.3.1), not by the encoder."""
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def string(text: str) -> bytes:
    """An AMF0 string value (2.4), written by hand."""
    return b"\x02" + short(text)


def number(value: float) -> bytes:
    """An AMF0 number value (2.2), written by hand."""
    return b"\x00" + struct.pack(">d", value)


def shape(value: Any) -> Any:
    """A comparable form of *value* that also records every type, recursively."""
    if isinstance(value, dict):
        return (type(value).__name__, {key: shape(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return (type(value).__name__, [shape(item) for item in value])
    if isinstance(value, TypedObject):
        return ("TypedObject", value.class_name, shape(value.properties))
    if isinstance(value, datetime):
        return ("datetime", value, value.utcoffset())
    return (type(value).__name__, value)


def after_round_trip(value: Any) -> Any:
    """What decoding the encoding of *value* must give back."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, ECMAArray):
        return ECMAArray({key: after_round_trip(item) for key, item in value.items()})
    if isinstance(value, dict):
        return {key: after_round_trip(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [after_round_trip(item) for item in value]
    if isinstance(value, TypedObject):
        return TypedObject(value.class_name, after_round_trip(value.properties))
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def decode_or_amf_error(data: bytes) -> None:
    """Decode *data*, accepting :class:`AMFError`; any other exception fails the test."""
    with contextlib.suppress(AMFError):
        amf0.decode_all(data)


# --- spec vectors (AMF0 section 2) --------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        pytest.param(1.5, h("00 3ff8000000000000"), id="number"),
        pytest.param(0.0, h("00 0000000000000000"), id="zero"),
        pytest.param(True, h("01 01"), id="true"),
        pytest.param(False, h("01 00"), id="false"),
        pytest.param("hello", h("02 0005 68656c6c6f"), id="string"),
        # 'é' is 2 UTF-8 bytes and '€' is 3: 6 characters, 9 bytes.
        pytest.param("héllo€", h("02 0009 68 c3a9 6c6c6f e282ac"), id="non-ascii"),
        pytest.param("", h("02 0000"), id="empty-string"),
        pytest.param(None, h("05"), id="null"),
        pytest.param(UNDEFINED, h("06"), id="undefined"),
        pytest.param(UNSUPPORTED, h("0d"), id="unsupported"),
        pytest.param({"a": 1.0}, h("03 0001 61 00 3ff0000000000000 000009"), id="object"),
        pytest.param({}, h("03 000009"), id="empty-object"),
        pytest.param({"": 1.0}, h("03 0000 00 3ff0000000000000 000009"), id="empty-key"),
        pytest.param(ECMAArray({"a": True}), h("08 00000001 0001 61 0101 000009"), id="ecma-array"),
        pytest.param(
            [1.0, "a", None],
            h("0a 00000003 00 3ff0000000000000 02 0001 61 05"),
            id="strict-array",
        ),
        pytest.param(
            datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC),
            h("0b 4271f71fb0450000 0000"),
            id="date",
        ),
        pytest.param(
            TypedObject("Point", {"x": 1.0}),
            h("10 0005 506f696e74 0001 78 00 3ff0000000000000 000009"),
            id="typed-object",
        ),
        pytest.param(XMLDocument("<a></a>"), h("0f 00000007 3c613e3c2f613e"), id="xml"),
    ],
)
def test_spec_vector(value: Any, encoded: bytes) -> None:
    """Each value encodes to its spec bytes and those bytes decode back to it."""
    assert encode_value(value) == encoded
    assert shape(decode_all(encoded)) == shape([value])
    assert decode_value(encoded) == (value, len(encoded))


def test_long_string_vector() -> None:
    """A string over 65535 UTF-8 bytes is a long string (0x0C) with a u32 byte length."""
    text = "x" * 70_000
    encoded = encode(text)
    assert encoded[:5] == h("0c 00011170")
    assert encoded[5:] == text.encode()
    assert decode_all(encoded) == [text]


@pytest.mark.parametrize(
    ("text", "header"),
    [
        pytest.param("x" * 65_535, h("02 ffff"), id="ascii-65535"),
        pytest.param("x" * 65_536, h("0c 00010000"), id="ascii-65536"),
        pytest.param("€" * 21_845, h("02 ffff"), id="euro-65535-bytes"),
        # 21,846 characters, but 65,538 bytes: the byte count decides.
        pytest.param("€" * 21_846, h("0c 00010002"), id="euro-65538-bytes"),
    ],
)
def test_string_length_boundary(text: str, header: bytes) -> None:
    """The short/long string choice and length field count UTF-8 bytes, not characters."""
    encoded = encode(text)
    assert encoded[: len(header)] == header
    assert decode_all(encoded) == [text]


def test_ecma_array_count_is_only_a_hint() -> None:
    """An ECMA array's members run to the end marker whatever count it declares."""
    body = h("0001 61 0101 0001 62 05 000009")
    for count in (h("00000000"), h("00000001"), h("ffffffff")):
        assert shape(decode_all(b"\x08" + count + body)) == shape(
            [ECMAArray({"a": True, "b": None})]
        )


def test_date_ignores_time_zone_and_decodes_to_utc() -> None:
    """The date's time-zone field is ignored and the result is an aware UTC datetime."""
    (value,) = decode_all(h("0b 4271f71fb0450000 fe20"))
    assert value == datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)
    assert value.utcoffset() == timedelta(0)


def test_date_encoding_of_other_zones_and_naive() -> None:
    """Aware datetimes are written as their UTC instant; naive ones are taken as UTC."""
    expected = h("0b 4271f71fb0450000 0000")
    paris = timezone(timedelta(hours=1))
    assert encode(datetime(2009, 2, 14, 0, 31, 30, tzinfo=paris)) == expected
    assert encode(datetime(2009, 2, 13, 23, 31, 30)) == expected


def test_reference_resolves_to_the_same_object() -> None:
    """A reference (2.9) yields the complex value it indexes, not a copy."""
    data = h("0a 00000002 03 0001 61 05 000009 07 0001")
    (outer,) = decode_all(data)
    assert outer == [{"a": None}, {"a": None}]
    assert outer[0] is outer[1]


def test_reference_table_spans_the_whole_decode_all_call() -> None:
    """References may point at complex values decoded earlier in the same body."""
    first, second = decode_all(h("03 000009 07 0000"))
    assert first == {} and first is second


def test_reference_indexes_only_complex_values() -> None:
    """Strings, numbers and dates do not take a reference index."""
    data = h("02 0001 61 00 3ff0000000000000 0a 00000000 03 000009 07 0001")
    values = decode_all(data)
    assert values[4] is values[3]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(h("07 0000"), id="empty-table"),
        pytest.param(h("03 000009 07 0001"), id="past-end"),
        pytest.param(h("0a 00000001 07 0000"), id="cyclic-self"),
        pytest.param(h("03 0001 61 03 0001 62 07 0000 000009 000009"), id="cyclic-parent"),
    ],
)
def test_bad_reference(data: bytes) -> None:
    """A reference out of range or into a value still being decoded is refused."""
    with pytest.raises(AMFError, match="reference"):
        decode_all(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(h("09"), "object-end", id="object-end"),
        pytest.param(h("0a 00000001 09"), "object-end", id="object-end-in-array"),
        pytest.param(h("03 0001 61 09"), "object-end", id="object-end-as-value"),
        pytest.param(h("04"), "movieclip", id="movieclip"),
        pytest.param(h("0e"), "recordset", id="recordset"),
        pytest.param(h("12"), "unknown", id="unknown"),
        pytest.param(h("ff"), "unknown", id="unknown-ff"),
    ],
)
def test_refused_markers(data: bytes, match: str) -> None:
    """Reserved, misplaced and unknown markers raise AMFError."""
    with pytest.raises(AMFError, match=match):
        decode_all(data)


# --- AVM+ (AMF0 3.1) and AMF3 -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(h("11 00"), UNDEFINED, id="undefined"),
        pytest.param(h("11 01"), None, id="null"),
        pytest.param(h("11 02"), False, id="false"),
        pytest.param(h("11 03"), True, id="true"),
        pytest.param(h("11 04 05"), 5, id="int-5"),
        pytest.param(h("11 04 8100"), 128, id="int-128"),
        pytest.param(h("11 04 bfffffff"), 2**28 - 1, id="int-max"),
        pytest.param(h("11 04 ffffffff"), -1, id="int-minus-1"),
        pytest.param(h("11 04 c0808000"), -(2**28), id="int-min"),
        pytest.param(h("11 05 3ff8000000000000"), 1.5, id="double"),
        pytest.param(h("11 06 0b 68656c6c6f"), "hello", id="string"),
        pytest.param(h("11 06 01"), "", id="empty-string"),
        pytest.param(h("11 09 07 01 0401 0402 0403"), [1, 2, 3], id="dense-array"),
        pytest.param(h("11 09 05 01 06 05 6162 06 00"), ["ab", "ab"], id="string-reference"),
        pytest.param(
            h("11 09 03 03 6b 0407 01 0401"),
            ECMAArray({"k": 7, "0": 1}),
            id="mixed-array",
        ),
        pytest.param(h("11 0a 0b 01 03 61 0401 01"), {"a": 1}, id="dynamic-object"),
        pytest.param(
            h("11 0a 1b 01 03 78 0402 03 79 06 03 7a 01"),
            {"x": 2, "y": "z"},
            id="sealed-and-dynamic",
        ),
        pytest.param(
            h("11 0a 13 03 50 03 78 0401"),
            TypedObject("P", {"x": 1}),
            id="typed-object",
        ),
    ],
)
def test_amf3_vector(data: bytes, expected: Any) -> None:
    """One AMF3 value after the AVM+ marker decodes to its Python value."""
    assert shape(decode_all(data)) == shape([expected])


def test_amf3_trait_and_object_references() -> None:
    """AMF3 trait references reuse member names; object references yield the same object."""
    data = h("11 09 07 01  0a 13 01 03 78 0401  0a 01 0402  0a 02")
    (items,) = decode_all(data)
    assert items == [{"x": 1}, {"x": 2}, {"x": 1}]
    assert items[2] is items[0]


def test_amf3_tables_are_fresh_for_each_avmplus_value() -> None:
    """A string reference in a later AVM+ value does not see earlier AVM+ strings."""
    assert decode_all(h("11 06 05 6162")) == ["ab"]
    with pytest.raises(AMFError, match="string reference"):
        decode_all(h("11 06 05 6162 11 06 00"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(h("11 07 01"), "0x07", id="xml-document"),
        pytest.param(h("11 08 01 0000000000000000"), "0x08", id="date"),
        pytest.param(h("11 0c 01"), "0x0c", id="byte-array"),
        pytest.param(h("11 11 01"), "0x11", id="dictionary"),
        pytest.param(h("11 0a 07 01"), "externalizable", id="externalizable"),
        pytest.param(h("11 0a 01"), "trait reference", id="bad-trait-reference"),
        pytest.param(h("11 0a 00"), "reference", id="bad-object-reference"),
        pytest.param(h("11 09 00"), "reference", id="bad-array-reference"),
        pytest.param(h("11 09 03 01 09 00"), "cyclic", id="cyclic-array"),
        pytest.param(h("11 09 ffffffff 01"), "declares", id="huge-dense-count"),
        pytest.param(h("11 0a fffffffb 01"), "declares", id="huge-sealed-count"),
        pytest.param(h("11 06 03 ff"), "UTF-8", id="bad-utf8"),
    ],
)
def test_amf3_refused(data: bytes, match: str) -> None:
    """AMF3 types this module does not read, and malformed AMF3, raise AMFError."""
    with pytest.raises(AMFError, match=match):
        decode_all(data)


# --- a real-world body --------------------------------------------------------


FFMPEG_CONNECT = (
    string("connect")
    + number(1.0)
    + b"\x03"
    + short("app")
    + string("live")
    + short("type")
    + string("nonprivate")
    + short("flashVer")
    + string("FMLE/3.0 (compatible; Lavf60.16.100)")
    + short("tcUrl")
    + string("rtmp://127.0.0.1:1935/live")
    + b"\x00\x00\x09"
)


def test_ffmpeg_connect_command() -> None:
    """The ``connect`` body ffmpeg sends when publishing decodes to name, id and object."""
    name, transaction_id, command_object = decode_all(FFMPEG_CONNECT)
    assert name == "connect"
    assert transaction_id == 1.0 and isinstance(transaction_id, float)
    assert command_object == {
        "app": "live",
        "type": "nonprivate",
        "flashVer": "FMLE/3.0 (compatible; Lavf60.16.100)",
        "tcUrl": "rtmp://127.0.0.1:1935/live",
    }
    assert list(command_object) == ["app", "type", "flashVer", "tcUrl"]
    assert encode(name, transaction_id, command_object) == FFMPEG_CONNECT


def test_decode_value_steps_through_a_body() -> None:
    """decode_value returns each value with the offset of the next one."""
    offset = 0
    values = []
    while offset < len(FFMPEG_CONNECT):
        value, offset = decode_value(FFMPEG_CONNECT, offset)
        values.append(value)
    assert offset == len(FFMPEG_CONNECT)
    assert values == decode_all(FFMPEG_CONNECT)


def test_bytes_like_input() -> None:
    """bytearray and memoryview decode like bytes; other types are our misuse."""
    expected = decode_all(FFMPEG_CONNECT)
    assert decode_all(bytearray(FFMPEG_CONNECT)) == expected
    assert decode_all(memoryview(FFMPEG_CONNECT)) == expected
    with pytest.raises(UsageError):
        decode_all("connect")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        decode_value(FFMPEG_CONNECT, -1)
    with pytest.raises(UsageError):
        decode_value(FFMPEG_CONNECT, len(FFMPEG_CONNECT) + 1)


# --- sentinels and types ------------------------------------------------------


def test_undefined_sentinel() -> None:
    """UNDEFINED is a falsy singleton, distinct from None, that survives copy and pickle."""
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert UNDEFINED is not None and isinstance(UNDEFINED, Undefined)
    assert copy.deepcopy(UNDEFINED) is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert repr(UNSUPPORTED) == "UNSUPPORTED" and not UNSUPPORTED


def test_bool_is_not_a_number() -> None:
    """Booleans encode as booleans even though bool subclasses int."""
    assert encode(True, 1) == h("0101 00 3ff0000000000000")


def test_tuple_encodes_as_strict_array() -> None:
    """A tuple encodes like a list and decodes as a list."""
    assert encode((1, "a")) == encode([1, "a"])
    assert decode_all(encode((1, "a"))) == [[1.0, "a"]]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param({1, 2}, id="set"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param(ECMAArray({None: 1}), id="none-key-ecma"),  # type: ignore[dict-item]
        pytest.param([{"a": [object()]}], id="nested-object"),
        pytest.param(10**400, id="huge-int"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param({"k" * 70_000: 1}, id="long-key"),
        pytest.param(TypedObject("C" * 70_000), id="long-class-name"),
        pytest.param(TypedObject("C", None), id="typed-object-without-dict"),  # type: ignore[arg-type]
        pytest.param(datetime(2020, 1, 1).date(), id="date-not-datetime"),
    ],
)
def test_encode_refuses_with_usage_error(value: Any) -> None:
    """Values AMF0 cannot represent raise UsageError: our misuse, not a ProtocolError."""
    with pytest.raises(UsageError):
        encode(value)
    with pytest.raises(UsageError):
        encode_value(value)


def test_encode_refuses_cyclic_and_too_deep_values() -> None:
    """The encoder stops at MAX_DEPTH levels, which also catches cyclic values."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(UsageError, match="deeper"):
        encode(cyclic)
    deepest: Any = None
    for _ in range(MAX_DEPTH):
        deepest = [deepest]
    assert decode_all(encode(deepest)) == [deepest]
    with pytest.raises(UsageError, match="deeper"):
        encode([deepest])


# --- hostile input ------------------------------------------------------------


@pytest.mark.parametrize(
    "level",
    [
        pytest.param(h("03 0001 61"), id="object"),
        pytest.param(h("08 00000001 0001 61"), id="ecma-array"),
        pytest.param(h("0a 00000001"), id="strict-array"),
        pytest.param(h("10 0001 43 0001 61"), id="typed-object"),
    ],
)
def test_deep_nesting_is_refused(level: bytes) -> None:
    """10,000 nested levels raise AMFError, never RecursionError."""
    with pytest.raises(AMFError, match="deeper"):
        decode_all(level * 10_000 + b"\x05")


@pytest.mark.parametrize(
    "level",
    [
        pytest.param(h("09 03 01"), id="array"),
        pytest.param(h("0a 0b 01 03 61"), id="object"),
    ],
)
def test_deep_amf3_nesting_is_refused(level: bytes) -> None:
    """10,000 nested AMF3 levels raise AMFError, never RecursionError."""
    with pytest.raises(AMFError, match="deeper"):
        decode_all(b"\x11" + level * 10_000 + b"\x01")


def test_nesting_up_to_max_depth_is_accepted() -> None:
    """Exactly MAX_DEPTH levels decode; one more is refused."""
    level = h("0a 00000001")
    (value,) = decode_all(level * MAX_DEPTH + b"\x05")
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value is None
    with pytest.raises(AMFError, match="deeper"):
        decode_all(level * (MAX_DEPTH + 1) + b"\x05")


def test_references_cannot_build_depth_beyond_the_limit() -> None:
    """Chaining references, each wrapping the previous value, counts toward MAX_DEPTH."""
    data = h("0a 00000000")
    for index in range(MAX_DEPTH - 1):
        data += h("0a 00000001 07") + struct.pack(">H", index)
    assert len(decode_all(data)) == MAX_DEPTH
    with pytest.raises(AMFError, match="deeper"):
        decode_all(data + h("0a 00000001 07") + struct.pack(">H", MAX_DEPTH - 1))


def test_reference_expansion_is_limited() -> None:
    """Arrays each referencing the previous one twice ("billion laughs") raise AMFError."""
    data = h("0a 00000000")
    for index in range(40):
        ref = h("07") + struct.pack(">H", index)
        data += h("0a 00000002") + ref + ref
    with pytest.raises(AMFError, match="references stand for more than"):
        decode_all(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(h("0a ffffffff 05 05 05 05 05"), id="strict-array"),
        pytest.param(h("0c ffffffff 6161616161"), id="long-string"),
        pytest.param(h("0f ffffffff 6161616161"), id="xml-document"),
        pytest.param(h("02 ffff 6161616161"), id="string"),
    ],
)
def test_oversized_counts_fail_fast(data: bytes) -> None:
    """A count of 2**32-1 with 5 bytes behind it fails at once, allocating nothing."""
    with pytest.raises(AMFError, match="offset"):
        decode_all(data)


def test_truncation_anywhere_names_the_offset() -> None:
    """Every proper prefix of a value raises AMFError with the offset in the message."""
    value = {
        "s": "héllo€",
        "n": 1.5,
        "list": [None, UNDEFINED, True, datetime(2020, 1, 1, tzinfo=UTC)],
        "ecma": ECMAArray({"k": "v"}),
        "typed": TypedObject("T", {"x": XMLDocument("<x/>")}),
        "long": "y" * 70_000,
    }
    encoded = encode(value)
    cuts = [*range(0, 200), *range(len(encoded) - 200, len(encoded))]
    for cut in cuts:
        with pytest.raises(AMFError, match="offset"):
            decode_value(encoded[:cut])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(h("02 0001 ff"), id="string"),
        pytest.param(h("02 0002 c328"), id="bad-continuation"),
        pytest.param(h("02 0003 eda080"), id="surrogate"),
        pytest.param(h("03 0001 ff 05 000009"), id="key"),
        pytest.param(h("10 0001 ff 000009"), id="class-name"),
    ],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    """Invalid UTF-8 raises AMFError, not UnicodeDecodeError."""
    with pytest.raises(AMFError, match="UTF-8"):
        decode_all(data)


@pytest.mark.parametrize(
    "double",
    [
        pytest.param(h("7ff8000000000000"), id="nan"),
        pytest.param(h("7ff0000000000000"), id="inf"),
        pytest.param(h("7fefffffffffffff"), id="max"),
        pytest.param(h("c3e0000000000000"), id="far-past"),
    ],
)
def test_out_of_range_dates_are_refused(double: bytes) -> None:
    """Dates Python cannot represent raise AMFError, not OverflowError or ValueError."""
    with pytest.raises(AMFError, match="date"):
        decode_all(b"\x0b" + double + b"\x00\x00")


def test_amf_error_is_a_protocol_error() -> None:
    """Decode errors are ProtocolErrors, so the protocol boundary drops the peer."""
    with pytest.raises(ProtocolError):
        decode_all(b"\x02")


# --- hypothesis: round-trips --------------------------------------------------

dates = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000))

scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.just(UNSUPPORTED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(),
    st.text(max_size=20).map(XMLDocument),
    dates,
)

amf_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5).map(ECMAArray),
        st.builds(
            TypedObject,
            st.text(max_size=10),
            st.dictionaries(st.text(max_size=10), children, max_size=5),
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(amf_values, max_size=4))
def test_round_trip(values: list[Any]) -> None:
    """Encoding values and decoding the bytes gives equal values of the expected types."""
    decoded = decode_all(encode(*values))
    assert shape(decoded) == shape(after_round_trip(values))


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=8), st.integers(min_value=1, max_value=3))
def test_round_trip_long_strings(piece: str, copies: int) -> None:
    """Strings past 64 KiB, ASCII or not, survive a round trip inside an object."""
    text = piece * (70_000 // len(piece) * copies)
    encoded = encode({"big": text}, text)
    assert decode_all(encoded) == [{"big": text}, text]


# --- hypothesis: garbage ------------------------------------------------------

#: Fragments that make random input look like AMF, so the fuzzer gets deep.
TOKENS = [bytes([marker]) for marker in range(0x13)] + [
    h("0000"),
    h("0001 61"),
    h("000009"),
    h("ffffffff"),
    h("00000002"),
    h("0700 00"),
    h("0700 01"),
    h("c3"),
    h("ff"),
    h("7ff8000000000000"),
    h("11 09 05 01"),
    h("11 0a 0b 01"),
    h("11 0a 01"),
    h("11 0a 02"),
    h("06 00"),
    h("06 05 6162"),
    h("04 ffffffff"),
    h("02 0001 ff"),
    h("02 0002 c328"),
    h("0001 e2"),
    h("0b 7ff0000000000000 0000"),
    h("0b 7fefffffffffffff 0000"),
    h("0b 7ff8000000000000 0000"),
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def check_random_bytes(data: bytes) -> None:
    """Random bytes decode or raise AMFError; any other exception is a bug.

    Not collected itself (pytest-twisted wraps collected hypothesis tests, which
    then cannot be called from another test), but run by the two tests below.
    """
    decode_or_amf_error(data)


def test_random_bytes_raise_only_amf_error() -> None:
    """Random bytes decode or raise AMFError; any other exception is a bug."""
    check_random_bytes()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join))
def test_amf_like_garbage_raises_only_amf_error(data: bytes) -> None:
    """Random sequences of AMF fragments decode or raise AMFError."""
    decode_or_amf_error(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amf_values, st.data())
def test_mutated_encodings_raise_only_amf_error(value: Any, data: st.DataObject) -> None:
    """Valid encodings truncated, flipped, grown or given huge counts raise only AMFError."""
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded)))
        kind = data.draw(st.sampled_from(["truncate", "flip", "count", "insert", "delete"]))
        if kind == "truncate":
            del encoded[position:]
        elif kind == "flip" and position < len(encoded):
            encoded[position] ^= data.draw(st.integers(min_value=1, max_value=255))
        elif kind == "count":
            encoded[position : position + 4] = h("ffffffff")
        elif kind == "insert":
            encoded[position:position] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del encoded[position : position + data.draw(st.integers(1, 4))]
    decode_or_amf_error(bytes(encoded))


def test_garbage_property_fails_on_foreign_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The garbage tests check the exception type: a decoder leaking IndexError fails them."""

    def leaky_decode_all(data: bytes) -> list[Any]:
        raise IndexError("leaked")

    def strict_decode_all(data: bytes) -> list[Any]:
        raise AMFError("refused")

    monkeypatch.setattr(amf0, "decode_all", strict_decode_all)
    check_random_bytes()
    monkeypatch.setattr(amf0, "decode_all", leaky_decode_all)
    with pytest.raises(IndexError, match="leaked"):
        check_random_bytes()
