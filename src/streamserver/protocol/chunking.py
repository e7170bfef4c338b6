"""ChunkingMixin: RTMP chunk stream in and out, and protocol control messages.

Hooks overridden: ``connectionMade`` (builds the decoder and encoder),
``dataReceived`` (decodes chunks and emits ``message_received`` per message,
corking the factory's :class:`~streamserver.transport.FlushList` meanwhile, so
the frames a publisher's read carries leave in one ``sendmsg`` per viewer at
its end),
``message_received`` (Window Acknowledgement Size and Acknowledgement
bookkeeping; Set Chunk Size and Abort are applied inside the decoder).

Offers :class:`~streamserver.protocol.contracts.Messaging` (:meth:`send_message`,
:meth:`set_outgoing_chunk_size`, ``out_chunk_size``); needs no other mixin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import override

from streamserver.codec import messages
from streamserver.codec.chunk import ChunkDecoder, ChunkEncoder
from streamserver.codec.messages import (
    CSID_COMMAND,
    CSID_CONTROL,
    PROTOCOL_CONTROL_TYPES,
    Message,
    MessageType,
)
from streamserver.protocol.base import ProtocolRoot

_CSID_FOR_TYPE: dict[int, int] = {
    MessageType.USER_CONTROL: CSID_CONTROL,
    MessageType.COMMAND_AMF0: CSID_COMMAND,
    MessageType.COMMAND_AMF3: CSID_COMMAND,
}


if TYPE_CHECKING:
    from streamserver.protocol.contracts import Messaging

    class _Contracts(Messaging, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class ChunkingMixin(_Contracts):
    """Decodes the peer's chunk stream and encodes what we send.

    :ivar _chunk_decoder: decodes the peer's chunks (its chunk size, limits).
    :ivar _chunk_encoder: encodes our control and command messages (stateful,
        header compression per chunk stream).
    :ivar _ack_window: the peer's Window Acknowledgement Size (0: none set).
    :ivar _acked_bytes: the byte count we last acknowledged.
    :ivar out_chunk_size: our outgoing chunk size.
    """

    _chunk_decoder: ChunkDecoder
    _chunk_encoder: ChunkEncoder
    _ack_window = 0
    _acked_bytes = 0
    out_chunk_size = 128

    @override
    def connectionMade(self) -> None:
        config = self.factory.config
        self._chunk_decoder = ChunkDecoder(
            max_message_size=config.max_message_bytes,
            max_chunk_streams=config.max_chunk_streams,
            max_chunk_size=config.max_peer_chunk_size,
            min_chunk_size=config.min_peer_chunk_size,
        )
        self._chunk_encoder = ChunkEncoder(128)
        self.out_chunk_size = 128
        super().connectionMade()

    @override
    def dataReceived(self, data: bytes) -> None:
        received = self._chunk_decoder.receive_data(data) if data else []
        super().dataReceived(data)
        if not received:
            self._maybe_acknowledge()
            return
        # the frames of one read go out together: one sendmsg per viewer at its end
        flush_list = self.factory.flush_list
        flush_list.cork()
        try:
            for message in received:
                if self.closing:
                    break
                self.message_received(message)
        finally:
            flush_list.uncork()
        self._maybe_acknowledge()

    @override
    def message_received(self, message: Message) -> None:
        if message.type_id == MessageType.WINDOW_ACK_SIZE:
            self._ack_window = messages.parse_uint32(message)
        super().message_received(message)

    def _maybe_acknowledge(self) -> None:
        """Send an Acknowledgement each time the peer's window is filled (spec 5.4.3)."""
        received = self._chunk_decoder.bytes_received
        if self._ack_window and received - self._acked_bytes >= self._ack_window:
            self._acked_bytes = received
            self.send_message(messages.acknowledgement(received))

    def send_message(self, message: Message, csid: int | None = None) -> None:
        """Encode *message* with our chunk encoder and write it."""
        if csid is None:
            if message.type_id in PROTOCOL_CONTROL_TYPES:
                csid = CSID_CONTROL
            else:
                csid = _CSID_FOR_TYPE.get(message.type_id, CSID_COMMAND)
        self.link.write(self._chunk_encoder.encode(message, csid))

    def set_outgoing_chunk_size(self, size: int) -> None:
        """Announce *size* with Set Chunk Size and use it for everything after."""
        self.send_message(messages.set_chunk_size(size))
        self._chunk_encoder.chunk_size = size
        self.out_chunk_size = size
