"""AMF0 values: encode Python values to bytes and decode bytes to Python values.

Implements Adobe "Action Message Format -- AMF 0", section 2 (AMF 0 data types:
2.2 number, 2.3 boolean, 2.4 string, 2.5 object, 2.6 movieclip, 2.7 null,
2.8 undefined, 2.9 reference, 2.10 ECMA array, 2.11 object end, 2.12 strict
array, 2.13 date, 2.14 long string, 2.15 unsupported, 2.16 recordset, 2.17 XML
document, 2.18 typed object) and section 3.1 (the AVM+ type marker).  After an
AVM+ marker exactly one value follows in Adobe "Action Message Format -- AMF 3";
of that format the decoder reads 1.3.1 (U29 integers) and 3.2 to 3.8, 3.11 and
3.12 (undefined, null, false, true, integer, double, string, array, object).

Type mapping (encoder -> marker -> decoder):

=========================  ===========================  ===========================
Python                     AMF0                         decoded as
=========================  ===========================  ===========================
``None``                   null (0x05)                  ``None``
:data:`UNDEFINED`          undefined (0x06)             :data:`UNDEFINED`
``bool``                   boolean (0x01)               ``bool``
``int``, ``float``         number (0x00)                ``float``
``str``                    string (0x02) or long        ``str``
                           string (0x0C) above 65535
                           UTF-8 bytes
:class:`XMLDocument`       XML document (0x0F)          :class:`XMLDocument`
``dict``                   object (0x03)                ``dict``
:class:`ECMAArray`         ECMA array (0x08)            :class:`ECMAArray`
``list``, ``tuple``        strict array (0x0A)          ``list``
``datetime.datetime``      date (0x0B)                  aware UTC ``datetime``
:class:`TypedObject`       typed object (0x10)          :class:`TypedObject`
:data:`UNSUPPORTED`        unsupported (0x0D)           :data:`UNSUPPORTED`
=========================  ===========================  ===========================

Contract:

- Whatever bytes are given, the decoder raises only :class:`AMFError` (a
  :class:`~streamserver.errors.ProtocolError`): truncation, unknown or reserved
  markers (movieclip, recordset), an object-end marker outside an object,
  invalid UTF-8, out-of-range or cyclic references, nesting deeper than
  :data:`MAX_DEPTH` and reference expansion beyond
  :data:`MAX_REFERENCE_EXPANSION`.  Messages name the offset of the problem.
- References (0x07) index the complex values (object, ECMA array, strict array,
  typed object) in the order their markers were read during one
  :func:`decode_all` or :func:`decode_value` call.  A reference to a value that
  is still being decoded is refused, so decoded values are never cyclic.
- Each AVM+ value is decoded with fresh AMF3 string, object and trait tables.
  AMF3 integers decode as ``int``; an AMF3 array with an associative part
  decodes as an :class:`ECMAArray` holding the associative members and the dense
  members under the keys ``"0"``, ``"1"``...; an AMF3 object with a class name
  decodes as a :class:`TypedObject`.
- The encoder never writes references or AVM+ values.  Naive datetimes are taken
  as UTC.  Values it cannot represent (other types, non-``str`` keys, keys or
  class names over 65535 UTF-8 bytes, strings with lone surrogates, numbers too
  large for a double, nesting deeper than :data:`MAX_DEPTH`, which includes
  cyclic values) raise :class:`UsageError`: they are our bug, not the peer's.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streamserver.errors import AMFError, UsageError

__all__ = [
    "MAX_DEPTH",
    "MAX_REFERENCE_EXPANSION",
    "UNDEFINED",
    "UNSUPPORTED",
    "ECMAArray",
    "TypedObject",
    "Undefined",
    "Unsupported",
    "XMLDocument",
    "decode_all",
    "decode_value",
    "encode",
    "encode_value",
]

#: Deepest nesting of complex values (objects, ECMA and strict arrays, typed
#: objects, AMF3 arrays and objects), counting the depth a reference stands for.
#: Real commands nest two or three levels.  The limit keeps a hostile
#: ``03 00 01 61 03 ...`` from exhausting the Python stack (each level costs three
#: frames) and keeps every decoded value safe to walk recursively (``repr``,
#: ``==``, re-encoding).  The encoder applies the same limit, so whatever is
#: decoded can be encoded again.
MAX_DEPTH: Final = 64

#: Most values that references may add to one decode call.  A reference costs
#: three bytes but stands for a whole earlier value, so a few hundred bytes of
#: arrays each referencing the previous one twice describe 2**64 values ("billion
#: laughs"): cheap to decode because the copies are shared, fatal to whatever
#: walks the result.  No encoder we know sends references in RTMP commands.
MAX_REFERENCE_EXPANSION: Final = 65_536

# Type markers, AMF0 section 2.1.
_NUMBER: Final = 0x00
_BOOLEAN: Final = 0x01
_STRING: Final = 0x02
_OBJECT: Final = 0x03
_MOVIECLIP: Final = 0x04
_NULL: Final = 0x05
_UNDEFINED: Final = 0x06
_REFERENCE: Final = 0x07
_ECMA_ARRAY: Final = 0x08
_OBJECT_END: Final = 0x09
_STRICT_ARRAY: Final = 0x0A
_DATE: Final = 0x0B
_LONG_STRING: Final = 0x0C
_UNSUPPORTED: Final = 0x0D
_RECORDSET: Final = 0x0E
_XML_DOCUMENT: Final = 0x0F
_TYPED_OBJECT: Final = 0x10
_AVMPLUS: Final = 0x11

# Type markers, AMF3 section 3.1.
_AMF3_UNDEFINED: Final = 0x00
_AMF3_NULL: Final = 0x01
_AMF3_FALSE: Final = 0x02
_AMF3_TRUE: Final = 0x03
_AMF3_INTEGER: Final = 0x04
_AMF3_DOUBLE: Final = 0x05
_AMF3_STRING: Final = 0x06
_AMF3_ARRAY: Final = 0x09
_AMF3_OBJECT: Final = 0x0A

#: Markers the decoder recognises but refuses, with the reason given to the peer.
_REFUSED_MARKERS: Final = {
    _MOVIECLIP: "movieclip marker (reserved, AMF0 2.6)",
    _OBJECT_END: "object-end marker outside an object (AMF0 2.11)",
    _RECORDSET: "recordset marker (reserved, AMF0 2.16)",
}

_MAX_U16: Final = 0xFFFF

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_DOUBLE: Final = struct.Struct(">d")
_MARKER_U16: Final = struct.Struct(">BH")
_MARKER_U32: Final = struct.Struct(">BI")
_MARKER_DOUBLE: Final = struct.Struct(">Bd")
_MARKER_DATE: Final = struct.Struct(">Bdh")

_OBJECT_END_BYTES: Final = b"\x00\x00\x09"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MILLISECOND: Final = timedelta(milliseconds=1)


class Undefined(enum.Enum):
    """ActionScript ``undefined`` (AMF0 2.8, AMF3 3.2); its one member is :data:`UNDEFINED`."""

    UNDEFINED = "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNDEFINED"


class Unsupported(enum.Enum):
    """The AMF0 unsupported type (2.15); its one member is :data:`UNSUPPORTED`."""

    UNSUPPORTED = "UNSUPPORTED"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "UNSUPPORTED"


#: The ActionScript ``undefined`` value, distinct from ``None`` (``null``).
UNDEFINED: Final = Undefined.UNDEFINED

#: The value of an AMF0 unsupported marker.
UNSUPPORTED: Final = Unsupported.UNSUPPORTED


class ECMAArray(dict[str, Any]):
    """An associative array (AMF0 2.10), as sent in ``onMetaData``; a ``dict`` otherwise."""

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


class XMLDocument(str):
    """The text of an XML document (AMF0 2.17); a ``str`` otherwise."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"XMLDocument({str.__repr__(self)})"


@dataclass
class TypedObject:
    """An object of a registered ActionScript class (AMF0 2.18, AMF3 3.12).

    :ivar class_name: the class alias the peer registered.
    :ivar properties: the members, by name.
    """

    class_name: str
    properties: dict[str, Any] = field(default_factory=dict)


# --- encoding -----------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """Encode *values* one after the other, as in a command or data message body.

    :raises UsageError: a value cannot be represented in AMF0.
    """
    out: list[bytes] = []
    for value in values:
        _write(out, value, 0)
    return b"".join(out)


def encode_value(value: Any) -> bytes:
    """Encode one value.

    :raises UsageError: the value cannot be represented in AMF0.
    """
    out: list[bytes] = []
    _write(out, value, 0)
    return b"".join(out)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{what} {text[:40]!r}... is not valid Unicode: {exc.reason}") from exc


def _short_utf8(text: str, what: str) -> bytes:
    """Encode a key or class name: UTF-8 prefixed by its u16 byte length."""
    raw = _utf8(text, what)
    if len(raw) > _MAX_U16:
        raise UsageError(f"{what} {text[:40]!r}... is {len(raw)} UTF-8 bytes, over 65535")
    return _U16.pack(len(raw)) + raw


def _write(out: list[bytes], value: Any, depth: int) -> None:
    """Append the encoding of *value*, found at nesting *depth*, to *out*."""
    if value is None:
        out.append(b"\x05")
    elif isinstance(value, bool):
        out.append(b"\x01\x01" if value else b"\x01\x00")
    elif isinstance(value, int | float):
        try:
            out.append(_MARKER_DOUBLE.pack(_NUMBER, float(value)))
        except OverflowError as exc:
            raise UsageError(f"number {value} does not fit in a double") from exc
    elif isinstance(value, XMLDocument):
        raw = _utf8(value, "XML document")
        out.append(_MARKER_U32.pack(_XML_DOCUMENT, len(raw)))
        out.append(raw)
    elif isinstance(value, str):
        raw = _utf8(value, "string")
        if len(raw) > _MAX_U16:
            out.append(_MARKER_U32.pack(_LONG_STRING, len(raw)))
        else:
            out.append(_MARKER_U16.pack(_STRING, len(raw)))
        out.append(raw)
    elif isinstance(value, Undefined):
        out.append(b"\x06")
    elif isinstance(value, Unsupported):
        out.append(b"\x0d")
    elif isinstance(value, ECMAArray):
        _check_depth(depth)
        out.append(_MARKER_U32.pack(_ECMA_ARRAY, len(value)))
        _write_properties(out, value, depth + 1)
    elif isinstance(value, dict):
        _check_depth(depth)
        out.append(b"\x03")
        _write_properties(out, value, depth + 1)
    elif isinstance(value, list | tuple):
        _check_depth(depth)
        out.append(_MARKER_U32.pack(_STRICT_ARRAY, len(value)))
        for item in value:
            _write(out, item, depth + 1)
    elif isinstance(value, datetime):
        if value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        out.append(_MARKER_DATE.pack(_DATE, (value - _EPOCH) / _ONE_MILLISECOND, 0))
    elif isinstance(value, TypedObject):
        _check_depth(depth)
        if not isinstance(value.class_name, str) or not isinstance(value.properties, dict):
            raise UsageError(
                f"typed object needs a str class name and dict properties: {value!r:.60}"
            )
        out.append(b"\x10")
        out.append(_short_utf8(value.class_name, "class name"))
        _write_properties(out, value.properties, depth + 1)
    else:
        raise UsageError(f"cannot encode a {type(value).__name__} as AMF0: {value!r:.60}")


def _check_depth(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise UsageError(f"value nested deeper than {MAX_DEPTH} levels (or cyclic)")


def _write_properties(out: list[bytes], properties: dict[Any, Any], depth: int) -> None:
    """Append name/value pairs and the object-end marker (AMF0 2.5)."""
    for key, item in properties.items():
        if not isinstance(key, str):
            raise UsageError(f"object keys must be str, not {type(key).__name__}: {key!r:.60}")
        out.append(_short_utf8(key, "key"))
        _write(out, item, depth)
    out.append(_OBJECT_END_BYTES)


# --- decoding -----------------------------------------------------------------


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode values until the end of *data*, with one reference table for all of them.

    :param data: a whole command or data message body.
    :raises AMFError: *data* is not a sequence of well-formed AMF0 values.
    :raises UsageError: *data* is not bytes-like.
    """
    buffer = _as_bytes(data)
    decoder = _Decoder(buffer, 0)
    end = len(buffer)
    values: list[Any] = []
    while decoder.offset < end:
        values.append(decoder.read_value())
    return values


def decode_value(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode the one value that starts at *offset* in *data*.

    :param offset: where the value's type marker is.
    :return: the value and the offset just past it.
    :raises AMFError: no well-formed AMF0 value starts at *offset*.
    :raises UsageError: *data* is not bytes-like or *offset* is outside it.
    """
    buffer = _as_bytes(data)
    if not 0 <= offset <= len(buffer):
        raise UsageError(f"offset {offset} outside data of {len(buffer)} bytes")
    decoder = _Decoder(buffer, offset)
    value = decoder.read_value()
    return value, decoder.offset


def _as_bytes(data: Any) -> bytes | bytearray:
    """Return *data* as something to index and unpack from, or refuse it.

    :raises UsageError: *data* is not bytes-like.
    """
    if isinstance(data, bytes | bytearray):
        return data
    if isinstance(data, memoryview):
        return data.tobytes()
    raise UsageError(f"AMF0 decodes bytes, not {type(data).__name__}")


#: One entry of a reference table: the value, its height (levels of nesting it
#: spans) and its size (values it contains, itself included); ``None`` while the
#: value is still being decoded.
_Entry = tuple[Any, int, int] | None


@dataclass(slots=True)
class _Traits:
    """An AMF3 trait (3.12): the class name, sealed member names and dynamic flag."""

    class_name: str
    sealed: list[str]
    dynamic: bool


@dataclass(slots=True)
class _AMF3Tables:
    """The reference tables of one AMF3 value (AMF3 2.1): strings, objects, traits."""

    strings: list[str] = field(default_factory=list)
    objects: list[_Entry] = field(default_factory=list)
    traits: list[_Traits] = field(default_factory=list)


class _Decoder:
    """Reads values from one buffer, tracking offset, depth and the reference table.

    :ivar offset: where the next value starts.
    :ivar _depth: nesting level of the complex value being decoded (0 at top level).
    :ivar _deepest: deepest level reached inside the complex value being decoded.
    :ivar _count: values decoded so far, references counted as what they stand for.
    :ivar _expanded: values added by references so far.
    :ivar _references: the AMF0 reference table (2.9).
    """

    __slots__ = (
        "_count",
        "_data",
        "_deepest",
        "_depth",
        "_end",
        "_expanded",
        "_references",
        "offset",
    )

    def __init__(self, data: bytes | bytearray, offset: int) -> None:
        self._data = data
        self._end = len(data)
        self.offset = offset
        self._depth = 0
        self._deepest = 0
        self._count = 0
        self._expanded = 0
        self._references: list[_Entry] = []

    # --- bounds-checked primitives ---

    def _take(self, size: int, what: str) -> int:
        """Step over *size* bytes and return the offset where they start.

        :raises AMFError: fewer than *size* bytes are left.
        """
        start = self.offset
        if size > self._end - start:
            raise AMFError(
                f"truncated {what} at offset {start}: needs {size} bytes, {self._end - start} left"
            )
        self.offset = start + size
        return start

    def _read_byte(self, what: str) -> int:
        return self._data[self._take(1, what)]

    def _read_u16(self, what: str) -> int:
        return int(_U16.unpack_from(self._data, self._take(2, what))[0])

    def _read_u32(self, what: str) -> int:
        return int(_U32.unpack_from(self._data, self._take(4, what))[0])

    def _read_double(self, what: str) -> float:
        return float(_DOUBLE.unpack_from(self._data, self._take(8, what))[0])

    def _read_utf8(self, size: int, what: str) -> str:
        start = self._take(size, what)
        try:
            return str(self._data[start : start + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise AMFError(f"invalid UTF-8 in {what} at offset {start}: {exc.reason}") from exc

    def _check_count(self, count: int, what: str, start: int) -> None:
        """Refuse a declared element count larger than the bytes left could hold.

        Every element takes at least one byte, so this fails fast on a hostile
        count (``0xFFFFFFFF`` followed by five bytes) without allocating for it;
        the count is never used to pre-allocate.
        """
        if count > self._end - self.offset:
            raise AMFError(
                f"{what} at offset {start} declares {count} elements but only "
                f"{self._end - self.offset} bytes are left"
            )

    # --- complex values and references ---

    def _open(self, table: list[_Entry]) -> tuple[int, int, int]:
        """Enter a complex value: check depth and number it in *table*.

        :return: what :meth:`_close` needs: table index, saved deepest level, count.
        :raises AMFError: nesting exceeds :data:`MAX_DEPTH`.
        """
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise AMFError(f"values nested deeper than {MAX_DEPTH} levels at offset {self.offset}")
        table.append(None)
        saved_deepest = self._deepest
        self._deepest = self._depth
        return len(table) - 1, saved_deepest, self._count

    def _close(self, table: list[_Entry], opened: tuple[int, int, int], value: Any) -> Any:
        """Leave a complex value, recording its height and size for references to it."""
        index, saved_deepest, start_count = opened
        table[index] = (value, self._deepest - self._depth + 1, self._count - start_count + 1)
        self._deepest = max(saved_deepest, self._deepest)
        self._depth -= 1
        return value

    def _resolve(self, table: list[_Entry], index: int, what: str, start: int) -> Any:
        """Return the complex value a reference at *start* points to.

        :raises AMFError: the index is out of range, the value is still being
            decoded (a cycle), or the reference would exceed :data:`MAX_DEPTH` or
            :data:`MAX_REFERENCE_EXPANSION`.
        """
        if index >= len(table):
            raise AMFError(
                f"{what} reference {index} at offset {start} out of range: "
                f"{len(table)} complex values so far"
            )
        entry = table[index]
        if entry is None:
            raise AMFError(f"{what} reference {index} at offset {start} is cyclic")
        value, height, size = entry
        depth = self._depth + height
        if depth > MAX_DEPTH:
            raise AMFError(
                f"{what} reference {index} at offset {start} nests values deeper than {MAX_DEPTH}"
            )
        self._deepest = max(self._deepest, depth)
        self._expanded += size
        if self._expanded > MAX_REFERENCE_EXPANSION:
            raise AMFError(
                f"{what} reference {index} at offset {start}: references stand for more "
                f"than {MAX_REFERENCE_EXPANSION} values"
            )
        self._count += size - 1
        return value

    # --- AMF0 ---

    def read_value(self) -> Any:
        """Decode the AMF0 value at :attr:`offset` and step past it.

        :raises AMFError: no well-formed value starts there.
        """
        start = self.offset
        marker = self._read_byte("type marker")
        self._count += 1
        reader = _AMF0_READERS.get(marker)
        if reader is None:
            reason = _REFUSED_MARKERS.get(marker, "unknown type marker")
            raise AMFError(f"{reason} 0x{marker:02x} at offset {start}")
        return reader(self)

    def _read_number(self) -> float:
        return self._read_double("number")

    def _read_boolean(self) -> bool:
        return self._read_byte("boolean") != 0

    def _read_string(self) -> str:
        return self._read_utf8(self._read_u16("string length"), "string")

    def _read_long_string(self) -> str:
        return self._read_utf8(self._read_u32("long string length"), "long string")

    def _read_xml_document(self) -> XMLDocument:
        return XMLDocument(self._read_utf8(self._read_u32("XML document length"), "XML document"))

    def _read_null(self) -> None:
        return None

    def _read_undefined(self) -> Undefined:
        return UNDEFINED

    def _read_unsupported(self) -> Unsupported:
        return UNSUPPORTED

    def _read_properties(self, target: dict[str, Any]) -> None:
        """Read name/value pairs into *target* up to the object-end marker (AMF0 2.5).

        An empty name followed by anything but the end marker is a member named
        ``""``, which is how the encoder writes such a key.
        """
        data = self._data
        while True:
            name = self._read_utf8(self._read_u16("member name length"), "member name")
            if not name and self.offset < self._end and data[self.offset] == _OBJECT_END:
                self.offset += 1
                return
            target[name] = self.read_value()

    def _read_object(self) -> dict[str, Any]:
        opened = self._open(self._references)
        members: dict[str, Any] = {}
        self._read_properties(members)
        return self._close(self._references, opened, members)

    def _read_ecma_array(self) -> ECMAArray:
        opened = self._open(self._references)
        # The associative count is only a hint (encoders send 0 or a wrong
        # number): the members run until the object-end marker.
        self._read_u32("ECMA array count")
        members = ECMAArray()
        self._read_properties(members)
        return self._close(self._references, opened, members)

    def _read_strict_array(self) -> list[Any]:
        start = self.offset - 1
        opened = self._open(self._references)
        count = self._read_u32("strict array count")
        self._check_count(count, "strict array", start)
        items: list[Any] = []
        for _ in range(count):
            items.append(self.read_value())
        return self._close(self._references, opened, items)

    def _read_typed_object(self) -> TypedObject:
        opened = self._open(self._references)
        class_name = self._read_utf8(self._read_u16("class name length"), "class name")
        members: dict[str, Any] = {}
        self._read_properties(members)
        return self._close(self._references, opened, TypedObject(class_name, members))

    def _read_reference(self) -> Any:
        start = self.offset - 1
        index = self._read_u16("reference")
        return self._resolve(self._references, index, "AMF0", start)

    def _read_date(self) -> datetime:
        start = self.offset - 1
        milliseconds = self._read_double("date")
        self._take(2, "date time zone")  # Reserved: written as 0, ignored (AMF0 2.13).
        try:
            return _EPOCH + timedelta(milliseconds=milliseconds)
        except (OverflowError, ValueError) as exc:
            raise AMFError(f"date {milliseconds!r} ms at offset {start} out of range") from exc

    def _read_avmplus(self) -> Any:
        return self._read_amf3(_AMF3Tables())

    # --- AMF3, one value after an AVM+ marker ---

    def _read_u29(self, what: str) -> int:
        """Read a variable-length unsigned 29-bit integer (AMF3 1.3.1)."""
        result = 0
        for _ in range(3):
            byte = self._read_byte(what)
            if byte < 0x80:
                return (result << 7) | byte
            result = (result << 7) | (byte & 0x7F)
        return (result << 8) | self._read_byte(what)

    def _read_amf3(self, tables: _AMF3Tables) -> Any:
        """Decode one AMF3 value (AMF3 3.1 to 3.8, 3.11, 3.12).

        :raises AMFError: the value is malformed or of a type this module refuses.
        """
        start = self.offset
        marker = self._read_byte("AMF3 type marker")
        self._count += 1
        if marker == _AMF3_STRING:
            return self._read_amf3_string(tables)
        if marker == _AMF3_INTEGER:
            number = self._read_u29("AMF3 integer")
            return number - 0x20000000 if number & 0x10000000 else number
        if marker == _AMF3_DOUBLE:
            return self._read_double("AMF3 double")
        if marker == _AMF3_OBJECT:
            return self._read_amf3_object(tables)
        if marker == _AMF3_ARRAY:
            return self._read_amf3_array(tables)
        if marker == _AMF3_NULL:
            return None
        if marker == _AMF3_UNDEFINED:
            return UNDEFINED
        if marker == _AMF3_FALSE:
            return False
        if marker == _AMF3_TRUE:
            return True
        raise AMFError(f"unsupported AMF3 type marker 0x{marker:02x} at offset {start}")

    def _read_amf3_string(self, tables: _AMF3Tables) -> str:
        """Read an AMF3 string or string reference (AMF3 3.8); no marker."""
        start = self.offset
        header = self._read_u29("AMF3 string header")
        if not header & 1:
            index = header >> 1
            if index >= len(tables.strings):
                raise AMFError(
                    f"AMF3 string reference {index} at offset {start} out of range: "
                    f"{len(tables.strings)} strings so far"
                )
            return tables.strings[index]
        text = self._read_utf8(header >> 1, "AMF3 string")
        if text:  # The empty string is never sent by reference.
            tables.strings.append(text)
        return text

    def _read_amf3_array(self, tables: _AMF3Tables) -> Any:
        start = self.offset - 1
        header = self._read_u29("AMF3 array header")
        if not header & 1:
            return self._resolve(tables.objects, header >> 1, "AMF3 object", start)
        opened = self._open(tables.objects)
        associative = ECMAArray()
        while name := self._read_amf3_string(tables):
            associative[name] = self._read_amf3(tables)
        dense_count = header >> 1
        self._check_count(dense_count, "AMF3 array", start)
        dense: list[Any] = []
        for _ in range(dense_count):
            dense.append(self._read_amf3(tables))
        if not associative:
            return self._close(tables.objects, opened, dense)
        for index, item in enumerate(dense):
            associative[str(index)] = item
        return self._close(tables.objects, opened, associative)

    def _read_amf3_object(self, tables: _AMF3Tables) -> Any:
        start = self.offset - 1
        header = self._read_u29("AMF3 object header")
        if not header & 1:
            return self._resolve(tables.objects, header >> 1, "AMF3 object", start)
        if not header & 2:
            index = header >> 2
            if index >= len(tables.traits):
                raise AMFError(
                    f"AMF3 trait reference {index} at offset {start} out of range: "
                    f"{len(tables.traits)} traits so far"
                )
            traits = tables.traits[index]
        elif header & 4:
            raise AMFError(f"externalizable AMF3 object at offset {start} is not supported")
        else:
            class_name = self._read_amf3_string(tables)
            sealed_count = header >> 4
            self._check_count(sealed_count, "AMF3 object traits", start)
            sealed: list[str] = []
            for _ in range(sealed_count):
                sealed.append(self._read_amf3_string(tables))
            traits = _Traits(class_name, sealed, bool(header & 8))
            tables.traits.append(traits)
        opened = self._open(tables.objects)
        members: dict[str, Any] = {}
        for name in traits.sealed:
            members[name] = self._read_amf3(tables)
        if traits.dynamic:
            while name := self._read_amf3_string(tables):
                members[name] = self._read_amf3(tables)
        if traits.class_name:
            return self._close(tables.objects, opened, TypedObject(traits.class_name, members))
        return self._close(tables.objects, opened, members)


#: AMF0 readers by type marker; markers missing here are refused.
_AMF0_READERS: Final[dict[int, Callable[[_Decoder], Any]]] = {
    _NUMBER: _Decoder._read_number,
    _BOOLEAN: _Decoder._read_boolean,
    _STRING: _Decoder._read_string,
    _OBJECT: _Decoder._read_object,
    _NULL: _Decoder._read_null,
    _UNDEFINED: _Decoder._read_undefined,
    _REFERENCE: _Decoder._read_reference,
    _ECMA_ARRAY: _Decoder._read_ecma_array,
    _STRICT_ARRAY: _Decoder._read_strict_array,
    _DATE: _Decoder._read_date,
    _LONG_STRING: _Decoder._read_long_string,
    _UNSUPPORTED: _Decoder._read_unsupported,
    _XML_DOCUMENT: _Decoder._read_xml_document,
    _TYPED_OBJECT: _Decoder._read_typed_object,
    _AVMPLUS: _Decoder._read_avmplus,
}
