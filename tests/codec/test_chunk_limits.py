"""ChunkDecoder limits: the accepted chunk size range and the bytes held in partial messages."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
from streamserver.codec.messages import Message, MessageType, set_chunk_size
from streamserver.errors import ChunkError, UsageError


def _set_chunk_size(value: int) -> bytes:
    return ChunkEncoder(128).encode(set_chunk_size(value), 2)


@pytest.mark.parametrize(("value", "ok"), [(63, False), (64, True), (4096, True), (4097, False)])
def test_chunk_size_range(value: int, ok: bool) -> None:
    """Set Chunk Size must lie in min_chunk_size..max_chunk_size."""
    decoder = ChunkDecoder(min_chunk_size=64, max_chunk_size=4096)
    if ok:
        decoder.receive_data(_set_chunk_size(value))
        assert decoder.chunk_size == value
    else:
        with pytest.raises(ChunkError, match=r"outside 64\.\.4096"):
            decoder.receive_data(_set_chunk_size(value))


def test_min_chunk_size_must_fit_the_range() -> None:
    """A minimum above the maximum is our own misuse."""
    with pytest.raises(UsageError):
        ChunkDecoder(min_chunk_size=5000, max_chunk_size=4096)


def _start(csid: int, length: int, payload: bytes) -> bytes:
    """A fmt 0 chunk with the 2-byte basic header starting a video message of *length*."""
    header = bytes([0, csid - 64]) + b"\x00\x00\x00" + length.to_bytes(3, "big") + b"\x09"
    return header + struct.pack("<I", 1) + payload


def test_partial_messages_are_bounded_in_total() -> None:
    """Starting big messages on many chunk streams fails past max_pending_bytes."""
    decoder = ChunkDecoder(max_message_size=10_000, max_pending_bytes=25_000)
    decoder.receive_data(_set_chunk_size(9000))
    decoder.receive_data(_start(64, 10_000, bytes(9000)))
    decoder.receive_data(_start(65, 10_000, bytes(9000)))
    assert decoder.pending_bytes == 18_000
    with pytest.raises(ChunkError, match="incomplete messages would hold 27000 bytes"):
        decoder.receive_data(_start(66, 10_000, bytes(9000)))


def test_the_default_pending_bound_leaves_room_for_interleaving() -> None:
    """By default a largest message plus 1 MiB of other partial messages may be held."""
    decoder = ChunkDecoder(max_message_size=2_000_000)
    assert decoder.max_pending_bytes == 2_000_000 + 1024 * 1024


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=8),
    chunk_size=st.integers(128, 1024),
)
def test_pending_bytes_return_to_zero_after_whole_messages(
    sizes: list[int], chunk_size: int
) -> None:
    """Interleaved messages that complete leave nothing counted as pending."""
    encoder = ChunkEncoder(128)
    data = encoder.encode(set_chunk_size(chunk_size), 2)
    encoder.chunk_size = chunk_size
    for index, size in enumerate(sizes):
        message = Message(MessageType.VIDEO, 1, index, bytes([index]) * size)
        data += encoder.encode(message, 4 + index % 3)
    decoder = ChunkDecoder()
    got = []
    for start in range(0, len(data), 333):
        got.extend(decoder.receive_data(data[start : start + 333]))
    assert [len(m.payload) for m in got[1:]] == sizes
    assert decoder.pending_bytes == 0
