"""RTMP chunk stream: split messages into chunks and reassemble them.

Implements section 5.3 of the Adobe RTMP specification (December 2012):

- 5.3.1.1 *Chunk basic header*: the format (``fmt``, top two bits) and the chunk
  stream id (csid).  Ids 2..63 fit in the one-byte form; a low-six-bit value of
  0 means a second byte follows and the id is 64 + that byte (64..319); a value
  of 1 means two bytes follow and the id is 64 + the first + 256 * the second,
  little-endian (64..65599).  Id 2 is reserved for protocol control messages.
- 5.3.1.2 *Chunk message header*, four formats: type 0 (11 bytes: absolute
  timestamp, length, type id, little-endian message stream id), type 1 (7 bytes:
  timestamp delta, length, type id; stream id from the previous chunk), type 2
  (3 bytes: timestamp delta only) and type 3 (no header: everything from the
  previous chunk of that chunk stream).  A type 3 chunk that starts a new message
  adds the previous delta again (5.3.1.2.4); after a type 0 chunk that delta is
  the type 0 timestamp itself.  Timestamps are modulo 2**32.
- 5.3.1.3 *Extended timestamp*: a 24-bit field of 0xFFFFFF means a 4-byte
  timestamp (or delta) follows the message header.  Type 3 chunks repeat those
  4 bytes whenever the last type 0/1/2 header of that chunk stream used them,
  continuation chunks included; this is what ffmpeg and librtmp write and
  expect, and what this module reads and writes.
- 5.4.1 *Set Chunk Size* and 5.4.2 *Abort* act on the chunk layer itself, so
  :class:`ChunkDecoder` applies them the moment such a message is complete (and
  still returns them to the caller).

Contract: :class:`ChunkDecoder` is sans-I/O (bytes in, :class:`Message` objects
out) and raises only :class:`~streamserver.errors.ChunkError` whatever bytes
arrive; after it raised, the connection is to be dropped.  The encoders raise
:class:`~streamserver.errors.UsageError` when *we* pass them values the format
cannot carry.
"""

from __future__ import annotations

import struct

from streamserver.codec.messages import Message, MessageType
from streamserver.codec.messages import set_chunk_size as _set_chunk_size_message
from streamserver.errors import ChunkError, UsageError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CHUNK_SIZE",
    "DEFAULT_MAX_CHUNK_STREAMS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MIN_CHUNK_SIZE",
    "ChunkDecoder",
    "ChunkEncoder",
    "encode_message",
]

#: Chunk size in both directions until a Set Chunk Size message says otherwise
#: (spec 5.4.1).
DEFAULT_CHUNK_SIZE = 128

#: Largest inbound message we reassemble.  16 MiB is the most a 24-bit length can
#: express, so every legal message passes: a 4K keyframe after a scene change is
#: several MiB, and nginx-rtmp's 1 MiB default (``max_message``) disconnects such
#: publishers (nginx-rtmp #324, nginx-http-flv #242).  Lower it per server to
#: bound memory harder; it is checked at the header, before any payload is kept.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

#: Most chunk streams a peer may open on one connection.  Each chunk stream can
#: hold a partial message, so without a bound a peer could make us keep thousands
#: of them.  Real encoders use fewer than ten (2 control, 3 commands, 4-8 media);
#: 64 leaves room, unlike nginx-rtmp's 32 which broke some clients (#246).
DEFAULT_MAX_CHUNK_STREAMS = 64

#: Largest Set Chunk Size we accept from a peer.  nginx-rtmp and MediaMTX cap it
#: at 10 MiB; a chunk bigger than the largest message is pointless, so the same
#: 16 MiB as the message cap.  The spec allows up to 2**31 - 1 (5.4.1).
DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024

#: Smallest Set Chunk Size accepted by default: the spec's 1 (5.4.1).  Servers
#: should raise it (streamserver uses 128): every chunk costs a header and a pass
#: of the parse loop, so a peer at chunk size 1 makes us parse 128 times as many
#: chunks per byte as one at the spec's initial 128, and no encoder sets less.
DEFAULT_MIN_CHUNK_SIZE = 1

#: Bytes of partly assembled messages held across all chunk streams, beyond the
#: largest message: room for the audio and data chunks a publisher interleaves
#: with a large video message.  Without a total, a peer could hold up to
#: ``max_chunk_streams`` x ``max_message_size`` (1 GiB at the defaults) by
#: starting a large message on every chunk stream and never finishing one.
PENDING_HEADROOM = 1024 * 1024

#: Largest chunk size the 31-bit Set Chunk Size field can carry (spec 5.4.1).
MAX_ENCODABLE_CHUNK_SIZE = 0x7FFFFFFF

#: Smallest and largest chunk stream ids the basic header can carry; 0 and 1 are
#: the markers of the 2- and 3-byte forms (spec 5.3.1.1).
MIN_CSID = 2
MAX_CSID = 65599

#: A 24-bit timestamp field holding this value announces an extended timestamp.
_EXTENDED = 0xFFFFFF
_MAX_LENGTH = 0xFFFFFF
_U32_MASK = 0xFFFFFFFF

#: Compact the input buffer once this many consumed bytes sit at its front (or
#: when more than half of it is consumed), so that memory moves stay amortised O(1).
_COMPACT_THRESHOLD = 64 * 1024

_MESSAGE_HEADER_SIZES = (11, 7, 3, 0)

# 3-byte big-endian fields are read as 16 + 8 or 8 + 16 bits to stay in one call.
_FMT0_FMT1 = struct.Struct(">HBBHB")  # timestamp (3), length (3), type id (1)
_FMT2 = struct.Struct(">HB")  # timestamp delta (3)
_U32_BE = struct.Struct(">I")
_U32_LE = struct.Struct("<I")


# --- decoding -------------------------------------------------------------------


class _InboundChunkStream:
    """What :class:`ChunkDecoder` remembers about one inbound chunk stream.

    :ivar timestamp: absolute timestamp of the current (or last) message.
    :ivar delta: the delta a type 3 chunk starting a new message adds.
    :ivar length: message length from the last type 0/1 header.
    :ivar type_id: message type id from the last type 0/1 header.
    :ivar stream_id: message stream id from the last type 0 header.
    :ivar extended: whether the last type 0/1/2 header used an extended timestamp,
        so that type 3 chunks carry 4 more bytes.
    :ivar partial: the payload bytes of the message being assembled.  One
        ``bytearray`` rather than a list of pieces: with a chunk size of 1 a list
        would cost some 40 bytes of object overhead per payload byte.
    :ivar received: how many payload bytes of that message arrived.
    :ivar pending: whether a message is partly assembled.
    """

    __slots__ = (
        "delta",
        "extended",
        "length",
        "partial",
        "pending",
        "received",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.partial = bytearray()
        self.received = 0
        self.pending = False


class ChunkDecoder:
    """Reassemble RTMP messages from the chunk stream a peer sends.

    Feed bytes with :meth:`receive_data` in whatever pieces they arrive; any
    split of the same bytes yields the same messages in the same order.

    :ivar chunk_size: the inbound chunk size, 128 until the peer's Set Chunk Size.
    :ivar bytes_received: total bytes fed so far (for Acknowledgement windows).
    :ivar max_message_size: longest message accepted, checked at its header.
    :ivar max_chunk_streams: most chunk stream ids the peer may use.
    :ivar max_chunk_size: largest chunk size the peer may set.
    :ivar min_chunk_size: smallest chunk size the peer may set.
    :ivar max_pending_bytes: most payload bytes of incomplete messages held
        across all chunk streams at once.
    :ivar pending_bytes: payload bytes of incomplete messages held now.
    :ivar _buffer: bytes received but not yet parsed, from ``_offset`` on.
    :ivar _offset: where the unparsed bytes start in ``_buffer``.
    :ivar _need: how many unparsed bytes the next chunk needs at least; fewer
        means nothing can be parsed yet, which keeps byte-by-byte feeding cheap.
    :ivar _streams: per chunk stream id state.
    :ivar _failure: the error raised, once the stream turned out to be malformed.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS,
        max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
        min_chunk_size: int = DEFAULT_MIN_CHUNK_SIZE,
        max_pending_bytes: int | None = None,
    ) -> None:
        if max_message_size < 0:
            raise UsageError(f"max_message_size must not be negative, got {max_message_size}")
        if max_chunk_streams < 1:
            raise UsageError(f"max_chunk_streams must be at least 1, got {max_chunk_streams}")
        if not 1 <= max_chunk_size <= MAX_ENCODABLE_CHUNK_SIZE:
            raise UsageError(f"max_chunk_size must be 1..2**31-1, got {max_chunk_size}")
        if not 1 <= min_chunk_size <= max_chunk_size:
            raise UsageError(f"min_chunk_size must be 1..max_chunk_size, got {min_chunk_size}")
        self.max_message_size = max_message_size
        self.min_chunk_size = min_chunk_size
        self.max_pending_bytes = (
            max_message_size + PENDING_HEADROOM if max_pending_bytes is None else max_pending_bytes
        )
        self.pending_bytes = 0
        self.max_chunk_streams = max_chunk_streams
        self.max_chunk_size = max_chunk_size
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self._buffer = bytearray()
        self._offset = 0
        self._need = 1
        self._streams: dict[int, _InboundChunkStream] = {}
        self._failure: ChunkError | None = None

    def receive_data(self, data: bytes) -> list[Message]:
        """Buffer *data* and return the messages it completes, in order.

        Set Chunk Size and Abort messages take effect as soon as they are
        complete, for the bytes after them in the same call too, and are also
        returned.

        :param data: the next bytes from the peer (any bytes-like object).
        :returns: the completed messages, possibly none.
        :raises ChunkError: the chunk stream is malformed or exceeds a limit; the
            decoder is then unusable and raises again on every call.
        """
        if self._failure is not None:
            raise ChunkError(f"chunk stream already failed: {self._failure}")
        buffer = self._buffer
        buffer += data
        self.bytes_received += len(data)
        if len(buffer) - self._offset < self._need:
            return []
        try:
            return self._parse()
        except ChunkError as error:
            self._failure = error
            raise

    def _parse(self) -> list[Message]:
        """Parse every complete chunk in the buffer; see :meth:`receive_data`."""
        messages: list[Message] = []
        buffer = self._buffer
        end = len(buffer)
        pos = self._offset
        streams = self._streams
        view = memoryview(buffer)
        try:
            while True:
                # Basic header (5.3.1.1).
                available = end - pos
                if available < 1:
                    need = 1
                    break
                first = buffer[pos]
                fmt = first >> 6
                csid = first & 0x3F
                if csid > 1:
                    p = pos + 1
                elif csid == 0:
                    if available < 2:
                        need = 2
                        break
                    csid = 64 + buffer[pos + 1]
                    p = pos + 2
                else:
                    if available < 3:
                        need = 3
                        break
                    csid = 64 + buffer[pos + 1] + (buffer[pos + 2] << 8)
                    p = pos + 3
                known = streams.get(csid)
                if known is not None:
                    stream = known
                else:
                    if fmt != 0:
                        raise ChunkError(f"chunk stream {csid} used before a type 0 header")
                    if len(streams) >= self.max_chunk_streams:
                        raise ChunkError(
                            f"chunk stream {csid} exceeds the limit of "
                            f"{self.max_chunk_streams} chunk streams"
                        )
                    # Stored only once the whole chunk is here, like every change below.
                    stream = _InboundChunkStream()
                if fmt != 3 and stream.pending:
                    raise ChunkError(
                        f"type {fmt} header on chunk stream {csid} while a message "
                        f"is still incomplete ({stream.received} of {stream.length} bytes)"
                    )

                # Message header (5.3.1.2) and extended timestamp (5.3.1.3).
                header_end = p + _MESSAGE_HEADER_SIZES[fmt]
                if end < header_end:
                    need = header_end - pos
                    break
                length = type_id = 0
                if fmt == 3:
                    extended = stream.extended
                    field = 0
                elif fmt == 2:
                    high, low = _FMT2.unpack_from(buffer, p)
                    field = (high << 8) | low
                    extended = field == _EXTENDED
                else:
                    high, low, length_high, length_low, type_id = _FMT0_FMT1.unpack_from(buffer, p)
                    field = (high << 8) | low
                    extended = field == _EXTENDED
                    length = (length_high << 16) | length_low
                    if length > self.max_message_size:
                        raise ChunkError(
                            f"message of {length} bytes on chunk stream {csid} exceeds "
                            f"the limit of {self.max_message_size} bytes"
                        )
                if extended:
                    if end < header_end + 4:
                        need = header_end + 4 - pos
                        break
                    field = _U32_BE.unpack_from(buffer, header_end)[0]
                    header_end += 4

                # Chunk data: wait until the whole chunk is here, then commit.
                continuation = fmt == 3 and stream.pending
                if continuation:
                    remaining = stream.length - stream.received
                elif fmt >= 2:
                    remaining = stream.length
                else:
                    remaining = length
                size = self.chunk_size if remaining > self.chunk_size else remaining
                chunk_end = header_end + size
                if end < chunk_end:
                    need = chunk_end - pos
                    break
                pos = chunk_end

                if known is None:
                    streams[csid] = stream
                if fmt == 0:
                    stream.timestamp = field
                    stream.delta = field
                    stream.length = length
                    stream.type_id = type_id
                    stream.stream_id = _U32_LE.unpack_from(buffer, p + 7)[0]
                    stream.extended = extended
                elif fmt == 1:
                    stream.delta = field
                    stream.timestamp = (stream.timestamp + field) & _U32_MASK
                    stream.length = length
                    stream.type_id = type_id
                    stream.extended = extended
                elif fmt == 2:
                    stream.delta = field
                    stream.timestamp = (stream.timestamp + field) & _U32_MASK
                    stream.extended = extended
                elif not continuation:
                    if extended:
                        stream.delta = field
                    stream.timestamp = (stream.timestamp + stream.delta) & _U32_MASK

                if continuation:
                    received = stream.received + size
                    if received < stream.length:
                        self._hold(size, csid)
                        stream.partial += view[header_end:chunk_end]
                        stream.received = received
                        continue
                    stream.partial += view[header_end:chunk_end]
                    payload = bytes(stream.partial)
                    self.pending_bytes -= stream.received
                    stream.partial = bytearray()
                    stream.received = 0
                    stream.pending = False
                elif size < stream.length:
                    self._hold(size, csid)
                    stream.partial = bytearray(view[header_end:chunk_end])
                    stream.received = size
                    stream.pending = True
                    continue
                else:
                    payload = bytes(view[header_end:chunk_end])

                message = Message(stream.type_id, stream.stream_id, stream.timestamp, payload)
                messages.append(message)
                if message.type_id <= MessageType.ABORT:
                    self._apply_control(message)
        finally:
            view.release()

        self._need = need
        if pos == end:
            buffer.clear()
            pos = 0
        elif pos > _COMPACT_THRESHOLD or pos > end - pos:
            del buffer[:pos]
            pos = 0
        self._offset = pos
        return messages

    def _hold(self, size: int, csid: int) -> None:
        """Account for *size* more bytes of an incomplete message on *csid*.

        :raises ChunkError: the incomplete messages would exceed
            :attr:`max_pending_bytes` in total.
        """
        held = self.pending_bytes + size
        if held > self.max_pending_bytes:
            raise ChunkError(
                f"incomplete messages would hold {held} bytes (chunk stream {csid}), "
                f"over the limit of {self.max_pending_bytes} bytes"
            )
        self.pending_bytes = held

    def _apply_control(self, message: Message) -> None:
        """Apply a complete Set Chunk Size (5.4.1) or Abort (5.4.2) message."""
        if message.type_id == MessageType.SET_CHUNK_SIZE:
            value = self._control_value(message, "Set Chunk Size")
            if value & 0x80000000:
                raise ChunkError(f"Set Chunk Size {value:#x} has its reserved top bit set")
            if not self.min_chunk_size <= value <= self.max_chunk_size:
                raise ChunkError(
                    f"Set Chunk Size {value} outside {self.min_chunk_size}..{self.max_chunk_size}"
                )
            self.chunk_size = value
        elif message.type_id == MessageType.ABORT:
            stream = self._streams.get(self._control_value(message, "Abort"))
            if stream is not None and stream.pending:
                self.pending_bytes -= stream.received
                stream.partial = bytearray()
                stream.received = 0
                stream.pending = False

    @staticmethod
    def _control_value(message: Message, name: str) -> int:
        """Read the 32-bit value of a protocol control message."""
        if len(message.payload) < 4:
            raise ChunkError(f"{name} message shorter than 4 bytes")
        return int(_U32_BE.unpack_from(message.payload)[0])


# --- encoding -------------------------------------------------------------------


def _basic_header(fmt: int, csid: int) -> bytes:
    """Return the basic header of a *fmt* chunk on *csid* (spec 5.3.1.1)."""
    if csid < 64:
        return bytes(((fmt << 6) | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    csid -= 64
    return bytes(((fmt << 6) | 1, csid & 0xFF, csid >> 8))


#: Precomputed basic headers for the one-byte chunk stream ids, per format.
_SMALL_BASIC_HEADERS = tuple(
    tuple(bytes(((fmt << 6) | csid,)) for csid in range(64)) for fmt in range(4)
)


def _check_csid(csid: int) -> None:
    if not MIN_CSID <= csid <= MAX_CSID:
        raise UsageError(f"chunk stream id must be {MIN_CSID}..{MAX_CSID}, got {csid}")


def _check_chunk_size(chunk_size: int) -> None:
    if not 1 <= chunk_size <= MAX_ENCODABLE_CHUNK_SIZE:
        raise UsageError(f"chunk size must be 1..2**31-1, got {chunk_size}")


def _check_message(message: Message) -> int:
    """Validate the fields of *message*; return its payload length."""
    length = len(message.payload)
    if length > _MAX_LENGTH:
        raise UsageError(f"message payload of {length} bytes exceeds the 24-bit length field")
    if not 0 <= message.type_id <= 0xFF:
        raise UsageError(f"message type id must be 0..255, got {message.type_id}")
    if not 0 <= message.stream_id <= _U32_MASK:
        raise UsageError(f"message stream id must be 0..2**32-1, got {message.stream_id}")
    if not 0 <= message.timestamp <= _U32_MASK:
        raise UsageError(f"message timestamp must be 0..2**32-1, got {message.timestamp}")
    return length


def _chunk(
    first_header: bytes, continuation_header: bytes, payload: bytes, length: int, chunk_size: int
) -> bytes:
    """Join *first_header*, the payload pieces and the continuation headers."""
    if length <= chunk_size:
        return first_header + payload
    view = memoryview(payload)
    pieces: list[bytes | memoryview] = [continuation_header] * (
        2 * ((length + chunk_size - 1) // chunk_size)
    )
    pieces[0] = first_header
    pieces[1::2] = [view[i : i + chunk_size] for i in range(0, length, chunk_size)]
    return b"".join(pieces)


def _type0_header(csid: int, message: Message, length: int) -> tuple[bytes, bytes]:
    """Return the type 0 header of *message* and the type 3 header of its continuations."""
    timestamp = message.timestamp
    field = timestamp if timestamp < _EXTENDED else _EXTENDED
    body = ((field << 32) | (length << 8) | message.type_id).to_bytes(7, "big") + _U32_LE.pack(
        message.stream_id
    )
    if csid < 64:
        basic = _SMALL_BASIC_HEADERS[0][csid]
        continuation = _SMALL_BASIC_HEADERS[3][csid]
    else:
        basic = _basic_header(0, csid)
        continuation = _basic_header(3, csid)
    if field == _EXTENDED:
        extended = _U32_BE.pack(timestamp)
        return basic + body + extended, continuation + extended
    return basic + body, continuation


def encode_message(message: Message, csid: int, chunk_size: int) -> bytes:
    """Encode *message* as chunks on *csid*, without any compression state.

    The first chunk has a type 0 header (absolute timestamp, extended when it is
    0xFFFFFF or more); continuation chunks have type 3 headers that repeat the
    extended timestamp when there is one.  Because the result is the same for
    every connection that uses the same chunk size, it is the fan-out fast path:
    encode once, write to every viewer.

    A type 0 header resets what the peer's decoder knows about *csid*; a
    connection that also uses a :class:`ChunkEncoder` must call its
    :meth:`ChunkEncoder.reset` for *csid* after sending these bytes, or keep the
    two on separate chunk stream ids.

    :param message: the message to encode.
    :param csid: the chunk stream id, 2..65599.
    :param chunk_size: the outbound chunk size the peer has been told.
    :raises UsageError: an argument is out of range.
    """
    _check_csid(csid)
    _check_chunk_size(chunk_size)
    length = _check_message(message)
    first, continuation = _type0_header(csid, message, length)
    return _chunk(first, continuation, message.payload, length, chunk_size)


class _OutboundChunkStream:
    """What :class:`ChunkEncoder` told the peer about one chunk stream.

    The fields mirror :class:`_InboundChunkStream` so that the peer's decoder and
    this encoder agree on what a type 1, 2 or 3 header leaves out.
    """

    __slots__ = ("delta", "length", "stream_id", "timestamp", "type_id")

    def __init__(self, timestamp: int, delta: int, length: int, type_id: int, stream_id: int):
        self.timestamp = timestamp
        self.delta = delta
        self.length = length
        self.type_id = type_id
        self.stream_id = stream_id


class ChunkEncoder:
    """Encode messages for one connection, compressing headers per chunk stream.

    Like real encoders it sends a type 0 header for the first message on a chunk
    stream, when the message stream id changes or when the timestamp goes
    backwards (including a wrap around 2**32); type 1 when only the length or type
    id change; type 2 when only the timestamp delta changes; type 3 when length,
    type, stream and delta all repeat.  Continuation chunks are type 3.

    :ivar chunk_size: the outbound chunk size used by :meth:`encode`.
    :ivar _streams: per chunk stream id, what the peer's decoder remembers.
    :ivar _announcement: the Set Chunk Size message last returned by
        :meth:`set_chunk_size`, until it is encoded.
    :ivar _announced_from: the chunk size to encode that message with.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        _check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutboundChunkStream] = {}
        self._announcement: Message | None = None
        self._announced_from = chunk_size

    def set_chunk_size(self, size: int) -> Message:
        """Switch to chunk size *size* and return the Set Chunk Size message for the peer.

        Every :meth:`encode` after this call uses *size*, except the returned
        message itself: when that exact object is passed to :meth:`encode` it is
        encoded with the previous size, as the peer expects.  The caller must send
        it before any bytes encoded after this call.

        :param size: the new outbound chunk size, 1..2**31-1.
        :raises UsageError: *size* is out of range.
        """
        _check_chunk_size(size)
        message = _set_chunk_size_message(size)
        self._announcement = message
        self._announced_from = self.chunk_size
        self.chunk_size = size
        return message

    def reset(self, csid: int) -> None:
        """Forget what the peer knows about *csid*, so the next message gets a type 0 header.

        Call it after bytes for *csid* were produced elsewhere, for example by
        :func:`encode_message`.
        """
        self._streams.pop(csid, None)

    def encode(self, message: Message, csid: int) -> bytes:
        """Encode *message* as chunks on *csid* with the smallest headers the peer can expand.

        :param message: the message to encode.
        :param csid: the chunk stream id, 2..65599.
        :raises UsageError: an argument is out of range.
        """
        _check_csid(csid)
        length = _check_message(message)
        chunk_size = self.chunk_size
        if message is self._announcement:
            chunk_size = self._announced_from
            self._announcement = None

        timestamp = message.timestamp
        type_id = message.type_id
        previous = self._streams.get(csid)
        if (
            previous is None
            or previous.stream_id != message.stream_id
            or timestamp < previous.timestamp
        ):
            first, continuation = _type0_header(csid, message, length)
            # After a type 0 header the peer's delta is the timestamp itself (5.3.1.2.4).
            self._streams[csid] = _OutboundChunkStream(
                timestamp, timestamp, length, type_id, message.stream_id
            )
            return _chunk(first, continuation, message.payload, length, chunk_size)

        delta = timestamp - previous.timestamp
        if length != previous.length or type_id != previous.type_id:
            fmt = 1
        elif delta != previous.delta:
            fmt = 2
        else:
            fmt = 3
        previous.timestamp = timestamp
        previous.delta = delta
        previous.length = length
        previous.type_id = type_id

        if csid < 64:
            basic = _SMALL_BASIC_HEADERS[fmt][csid]
            continuation = _SMALL_BASIC_HEADERS[3][csid]
        else:
            basic = _basic_header(fmt, csid)
            continuation = _basic_header(3, csid)
        field = delta if delta < _EXTENDED else _EXTENDED
        if fmt == 1:
            first = basic + ((field << 32) | (length << 8) | type_id).to_bytes(7, "big")
        elif fmt == 2:
            first = basic + field.to_bytes(3, "big")
        else:
            first = basic
        if field == _EXTENDED:
            extended = _U32_BE.pack(delta)
            first += extended
            continuation += extended
        return _chunk(first, continuation, message.payload, length, chunk_size)
