"""What the relays need of the RTMP client: a play's aggregates split."""

from __future__ import annotations

from streamserver.client import RTMPClientProtocol
from streamserver.codec.messages import Message, MessageType
from tests.protocol import media


def _aggregate(subs: list[Message], timestamp: int) -> Message:
    body = b""
    for sub in subs:
        size = len(sub.payload)
        ts = sub.timestamp
        body += bytes([sub.type_id]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        body += bytes([ts >> 24]) + b"\x00\x00\x00" + sub.payload + (size + 11).to_bytes(4, "big")
    return Message(MessageType.AGGREGATE, 1, timestamp, body)


def test_an_aggregate_reaches_on_media_as_its_sub_messages() -> None:
    """A play's aggregate message (SRS, Wowza) is delivered as its media messages."""
    client = RTMPClientProtocol()
    seen: list[Message] = []
    client.on_media = seen.append
    subs = [media.video(1, 100, key=True), media.audio(1, 120)]
    client._message_received(_aggregate(subs, 5000))
    assert [m.payload for m in seen] == [s.payload for s in subs]
    assert [m.timestamp for m in seen] == [5000, 5020]
    assert client.media_count == 2
