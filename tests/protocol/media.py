"""Synthetic media for protocol tests: FLV-shaped H.264/AAC messages."""

from __future__ import annotations

from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType

AVC_SEQUENCE_HEADER = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04abcd"
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"


def metadata(stream_id: int, **fields: float | str) -> Message:
    """``@setDataFrame onMetaData {...}`` as a publisher sends it."""
    body = {"width": 320.0, "height": 240.0, "framerate": 30.0, **fields}
    payload = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(body))
    return Message(MessageType.DATA_AMF0, stream_id, 0, payload)


def video(stream_id: int, timestamp: int, *, key: bool, size: int = 200, tag: int = 0) -> Message:
    """An AVC NALU message: keyframe (0x17) or inter frame (0x27)."""
    header = b"\x17\x01" if key else b"\x27\x01"
    body = header + b"\x00\x00\x00" + bytes([tag & 0xFF]) * size + timestamp.to_bytes(4, "big")
    return Message(MessageType.VIDEO, stream_id, timestamp, body)


def audio(stream_id: int, timestamp: int, size: int = 50) -> Message:
    """A raw AAC frame message."""
    return Message(MessageType.AUDIO, stream_id, timestamp, b"\xaf\x01" + b"\x21" * size)


def headers(stream_id: int) -> list[Message]:
    """Metadata and both sequence headers, as an encoder starts a stream."""
    return [
        metadata(stream_id),
        Message(MessageType.VIDEO, stream_id, 0, AVC_SEQUENCE_HEADER),
        Message(MessageType.AUDIO, stream_id, 0, AAC_SEQUENCE_HEADER),
    ]


def gop_frames(
    stream_id: int, start_ms: int, frames: int = 60, fps: int = 30, tag: int = 0
) -> list[Message]:
    """One GOP: a keyframe, then inter frames, each with an audio frame."""
    out: list[Message] = []
    for index in range(frames):
        ts = start_ms + index * 1000 // fps
        out.append(video(stream_id, ts, key=index == 0, tag=tag))
        out.append(audio(stream_id, ts))
    return out
