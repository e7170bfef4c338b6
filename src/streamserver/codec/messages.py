"""RTMP message value type, message type ids and builders for control messages.

Implements the message layer of the Adobe RTMP specification (December 2012):
section 5.4 (protocol control messages 1, 2, 3, 5, 6), section 6.2 (user control
messages, type 4) and section 7.1 (command, data, audio, video, aggregate
messages).  Command and data messages are AMF0 encoded (section 7.1.1); their
AMF3 variants (types 17 and 15) carry a one-byte format selector followed by an
AMF0 body, which is how every encoder in practice sends them.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any

from streamserver.codec import amf0
from streamserver.errors import ChunkError, ProtocolError


class MessageType(IntEnum):
    """RTMP message type ids (spec 5.4, 6.2 and 7.1)."""

    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(IntEnum):
    """User control event types (spec 7.1.7)."""

    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(IntEnum):
    """Limit types of Set Peer Bandwidth (spec 5.4.5)."""

    HARD = 0
    SOFT = 1
    DYNAMIC = 2


#: Message types the chunk layer handles itself (spec 5.4: sent on chunk stream 2,
#: message stream 0).
PROTOCOL_CONTROL_TYPES = frozenset(
    {
        MessageType.SET_CHUNK_SIZE,
        MessageType.ABORT,
        MessageType.ACKNOWLEDGEMENT,
        MessageType.WINDOW_ACK_SIZE,
        MessageType.SET_PEER_BANDWIDTH,
    }
)

#: Chunk stream ids this server uses when sending.  Spec 5.3.1.1: id 2 is
#: reserved for protocol control messages; the rest is convention shared by
#: librtmp and ffmpeg (3 for commands, then one per media kind).
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_DATA = 5
CSID_AUDIO = 4
CSID_VIDEO = 6

#: Largest value a 24-bit timestamp field can hold before the extended field is
#: used (spec 5.3.1.3).
MAX_TIMESTAMP = 0xFFFFFFFF


class Message:
    """One RTMP message: type, message stream id, timestamp and payload.

    Timestamps are absolute milliseconds modulo 2**32.  The payload is ``bytes``
    so that one message object can be shared by many subscribers.
    """

    __slots__ = ("payload", "stream_id", "timestamp", "type_id")

    def __init__(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        self.type_id = type_id
        self.stream_id = stream_id
        self.timestamp = timestamp
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.type_id == other.type_id
            and self.stream_id == other.stream_id
            and self.timestamp == other.timestamp
            and self.payload == other.payload
        )

    def __hash__(self) -> int:
        return hash((self.type_id, self.stream_id, self.timestamp, self.payload))

    def __repr__(self) -> str:
        return (
            f"Message(type_id={self.type_id}, stream_id={self.stream_id}, "
            f"timestamp={self.timestamp}, payload=<{len(self.payload)} bytes>)"
        )


# --- protocol control messages (spec 5.4) -------------------------------------


def set_chunk_size(size: int) -> Message:
    """Build a Set Chunk Size message (spec 5.4.1); the top bit must be zero."""
    return Message(MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size & 0x7FFFFFFF))


def abort(csid: int) -> Message:
    """Build an Abort message for chunk stream *csid* (spec 5.4.2)."""
    return Message(MessageType.ABORT, 0, 0, struct.pack(">I", csid))


def acknowledgement(sequence_number: int) -> Message:
    """Build an Acknowledgement of *sequence_number* bytes received (spec 5.4.3)."""
    return Message(
        MessageType.ACKNOWLEDGEMENT, 0, 0, struct.pack(">I", sequence_number & 0xFFFFFFFF)
    )


def window_ack_size(size: int) -> Message:
    """Build a Window Acknowledgement Size message (spec 5.4.4)."""
    return Message(MessageType.WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", size))


def set_peer_bandwidth(size: int, limit: int = PeerBandwidthLimit.DYNAMIC) -> Message:
    """Build a Set Peer Bandwidth message (spec 5.4.5)."""
    return Message(MessageType.SET_PEER_BANDWIDTH, 0, 0, struct.pack(">IB", size, limit))


def parse_uint32(message: Message) -> int:
    """Read the 4-byte value of a Set Chunk Size, Abort, Ack or Window Ack Size message.

    :raises ChunkError: the payload is shorter than 4 bytes.
    """
    if len(message.payload) < 4:
        raise ChunkError(f"control message type {message.type_id} shorter than 4 bytes")
    return int(struct.unpack_from(">I", message.payload)[0])


# --- user control messages (spec 6.2, 7.1.7) ----------------------------------


def user_control(event: int, *values: int) -> Message:
    """Build a User Control message: a 16-bit event type and 32-bit values."""
    payload = struct.pack(">H", event) + b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in values)
    return Message(MessageType.USER_CONTROL, 0, 0, payload)


def stream_begin(stream_id: int) -> Message:
    """Build a User Control Stream Begin event for *stream_id*."""
    return user_control(UserControlEvent.STREAM_BEGIN, stream_id)


def stream_eof(stream_id: int) -> Message:
    """Build a User Control Stream EOF event for *stream_id*."""
    return user_control(UserControlEvent.STREAM_EOF, stream_id)


def stream_is_recorded(stream_id: int) -> Message:
    """Build a User Control Stream Is Recorded event for *stream_id*."""
    return user_control(UserControlEvent.STREAM_IS_RECORDED, stream_id)


def ping_request(timestamp: int) -> Message:
    """Build a User Control Ping Request carrying *timestamp*."""
    return user_control(UserControlEvent.PING_REQUEST, timestamp)


def ping_response(timestamp: int) -> Message:
    """Build a User Control Ping Response echoing *timestamp*."""
    return user_control(UserControlEvent.PING_RESPONSE, timestamp)


def set_buffer_length(stream_id: int, milliseconds: int) -> Message:
    """Build a User Control Set Buffer Length event (sent by clients)."""
    return user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, milliseconds)


def parse_user_control(message: Message) -> tuple[int, tuple[int, ...]]:
    """Split a User Control message into its event type and 32-bit values.

    :raises ProtocolError: the payload is too short for an event type.
    """
    payload = message.payload
    if len(payload) < 2:
        raise ProtocolError("user control message shorter than 2 bytes")
    (event,) = struct.unpack_from(">H", payload)
    count = (len(payload) - 2) // 4
    values = struct.unpack_from(f">{count}I", payload, 2) if count else ()
    return int(event), tuple(int(v) for v in values)


# --- command and data messages (spec 7.1.1, 7.1.2, 7.2) -----------------------


class Command:
    """A decoded command message: ``name``, ``transaction_id``, ``command_object``, ``args``.

    :ivar stream_id: the message stream id the command arrived on.
    """

    __slots__ = ("args", "command_object", "name", "stream_id", "transaction_id")

    def __init__(
        self,
        name: str,
        transaction_id: float,
        command_object: Any,
        args: list[Any],
        stream_id: int = 0,
    ) -> None:
        self.name = name
        self.transaction_id = transaction_id
        self.command_object = command_object
        self.args = args
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return (
            f"Command({self.name!r}, txn={self.transaction_id}, "
            f"obj={self.command_object!r}, args={self.args!r}, stream_id={self.stream_id})"
        )


def amf0_body(message: Message) -> bytes:
    """Return the AMF0 body of a command or data message.

    AMF3 command (17) and data (15) messages begin with a one-byte format
    selector (0 for AMF0, as every encoder in practice sends) before the body.
    """
    payload = message.payload
    if (
        message.type_id in (MessageType.COMMAND_AMF3, MessageType.DATA_AMF3)
        and payload[:1] == b"\x00"
    ):
        return payload[1:]
    return payload


def parse_command(message: Message) -> Command:
    """Decode a command message (type 20 or 17) into a :class:`Command`.

    :raises ProtocolError: the body is not a name, a number and a command object.
    """
    values = amf0.decode_all(amf0_body(message))
    if len(values) < 2 or not isinstance(values[0], str):
        raise ProtocolError("command message without a name and a transaction id")
    name, txn = values[0], values[1]
    if not isinstance(txn, (int, float)) or isinstance(txn, bool):
        raise ProtocolError(f"command {name!r} has a non-numeric transaction id")
    command_object = values[2] if len(values) > 2 else None
    return Command(name, float(txn), command_object, list(values[3:]), message.stream_id)


def parse_data(message: Message) -> list[Any]:
    """Decode a data message (type 18 or 15) into its list of AMF0 values."""
    return amf0.decode_all(amf0_body(message))


def command(
    name: str,
    transaction_id: float,
    command_object: Any = None,
    *args: Any,
    stream_id: int = 0,
    timestamp: int = 0,
) -> Message:
    """Build an AMF0 command message (type 20)."""
    payload = amf0.encode(name, transaction_id, command_object, *args)
    return Message(MessageType.COMMAND_AMF0, stream_id, timestamp, payload)


def data(*values: Any, stream_id: int = 0, timestamp: int = 0) -> Message:
    """Build an AMF0 data message (type 18) from *values*."""
    return Message(MessageType.DATA_AMF0, stream_id, timestamp, amf0.encode(*values))


def status_info(
    code: str, description: str = "", level: str = "status", **extra: Any
) -> dict[str, Any]:
    """Build the info object of an ``onStatus`` or ``_error`` reply."""
    info: dict[str, Any] = {"level": level, "code": code, "description": description or code}
    info.update(extra)
    return info


def on_status(
    code: str,
    description: str = "",
    level: str = "status",
    *,
    stream_id: int = 0,
    **extra: Any,
) -> Message:
    """Build an ``onStatus`` command for *stream_id* (spec 7.2.2)."""
    return command(
        "onStatus", 0, None, status_info(code, description, level, **extra), stream_id=stream_id
    )
