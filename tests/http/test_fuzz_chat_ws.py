"""Hostile frames and JSON fed to the chat WebSocket: only the offending connection suffers.

After a valid upgrade to ``/live/cam/chat``, hypothesis mutates a valid client
session -- masked text frames carrying ``join`` and ``send`` messages -- with
hostile pieces: every field of the wrong type, huge numbers, deeply nested
arrays, invalid UTF-8, control characters, unmasked and fragmented frames,
ping/pong/close with odd payloads, unknown opcodes, lengths claiming up to 2^64
bytes; and adds random bytes after the handshake.  The bytes go to one
connection at random read sizes while an RTMP chat client and a good chat
WebSocket sit in the room.  Nothing may be logged as a failure, the good clients
must still exchange a message both ways afterwards, and once the hostile
connection is closed its address count is released.  ``bench/fuzz.py --target
chat`` runs many more.
"""

from __future__ import annotations

import json
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer, FakeTransport
from tests.fuzz_support import mutate, no_failures_logged
from tests.http.chat_client import ChatClient
from tests.http.support import SiteClient

HOSTILE_PEER = IPv4Address("TCP", "198.51.100.77", 40777)

#: The upgrade of the hostile connection, valid; the fuzzing starts after it.
UPGRADE = (
    b"GET /live/cam/chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

MASK = b"\x1f\x8b\x3c\x5a"


def frame(
    payload: bytes, opcode: int = 0x1, *, fin: bool = True, masked: bool = True, length: int = -1
) -> bytes:
    """A client frame of *payload*; *length* (if given) is the length it claims."""
    size = len(payload) if length < 0 else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def text(value: object) -> bytes:
    """A masked text frame of *value* as JSON."""
    return frame(json.dumps(value).encode())


#: Valid sessions after the upgrade, as a browser sends them.
VALID_SESSIONS = [
    text({"type": "join", "nick": "eve"})
    + text({"type": "send", "text": "hello", "ref": 1})
    + text({"type": "send", "text": "again", "ref": "r2"})
    + frame(b"ping", 0x9)
    + frame(b"\x03\xe8bye", 0x8),
    text({"type": "join"}) + text({"type": "send", "text": "x" * 300}),
    frame(b'{"type": "jo', fin=False)
    + frame(b"in", 0x0, fin=False)
    + frame(b'", "nick": "frag"}', 0x0)
    + text({"type": "send", "text": "after fragments"}),
    text({"type": "send", "text": "before join"}) + text({"type": "join", "nick": "late"}),
]

#: Messages of every field with the wrong type, and other hostile JSON.
HOSTILE_JSON = [
    {"type": 1},
    {"type": None},
    {"type": ["join"]},
    {"type": {"join": 1}},
    {"type": "join", "nick": 7},
    {"type": "join", "nick": ["a", "b"]},
    {"type": "join", "nick": {"x": 1}},
    {"type": "join", "nick": "\x00\x01\x1b[31m\u202e\ufeff"},
    {"type": "join", "nick": "n" * 5000},
    {"type": "send", "text": 12},
    {"type": "send", "text": None},
    {"type": "send", "text": ["a"]},
    {"type": "send", "text": {"a": 1}},
    {"type": "send", "text": "\x00\r\n\x07\x1b"},
    {"type": "send", "text": "y" * 5000},
    {"type": "send", "text": "hi", "ref": 10**400},
    {"type": "send", "text": "hi", "ref": -(2**63)},
    {"type": "send", "text": "hi", "ref": 1e308},
    {"type": "send", "text": "hi", "ref": [1, [2, [3]]]},
    {"type": "send", "text": "hi", "ref": {"a": None}},
    {"type": "send", "text": "hi", "ref": "r" * 500},
    {"type": "send", "text": "hi", "ref": True},
    {"type": "unknown"},
    {},
    [],
]

#: Pieces a mutation inserts: hostile frames, hostile JSON, raw bytes.
HOSTILE_PIECES = [
    *(text(value) for value in HOSTILE_JSON),
    frame(b"[" * 5000 + b"]" * 5000),
    frame(b'{"type": "send", "text": "' + b"\xff\xfe\xc3" + b'"}'),
    frame(b'{"type": "send", "text": "\\ud800"}'),
    frame(b'{"type": "send", "ref": 1e99999, "text": "x"}'),
    frame(b"NaN"),
    frame(b'{"type": "join", "type": "send"}'),
    frame(b'{"type": "send", "text": "unmasked"}', masked=False),
    frame(b"binary\x00", 0x2),
    frame(b"", 0x1),
    frame(b'{"type": "jo', fin=False),
    frame(b'in"}', 0x0),
    frame(b"orphan continuation", 0x0),
    frame(b"x" * 200, 0x9),  # a ping over 125 bytes
    frame(b"pong", 0xA),
    frame(b"\x03", 0x8),  # a close of one byte
    frame(b"\x00\x00", 0x8),  # close code 0
    frame(b"\x0b\xb8\xff\xfe", 0x8),  # close 3000 with invalid UTF-8
    frame(b"reserved", 0x3),
    frame(b"control", 0xB),
    bytes([0xC1, 0x80]) + MASK,  # RSV1 set
    frame(b"", length=1 << 20),  # claims 1 MiB
    frame(b"", length=(1 << 63) - 1),  # claims 2^63 - 1
    frame(b"", length=1 << 63),  # claims 2^63: invalid
    frame(b"ping" * 10, 0x9) * 40,  # a ping flood
    b"\x81",
    b"\x00",
    b"\xff" * 12,
]


@st.composite
def hostile_frames(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A valid session mutated a few times, and where the reads are cut."""
    data = mutate(draw, draw(st.sampled_from(VALID_SESSIONS)), HOSTILE_PIECES, edits=5)
    return data, draw(st.lists(st.integers(1, 400), max_size=6))


def _rtmp_chatter(factory: RTMPServerFactory) -> FakePeer:
    peer = FakePeer(factory)
    peer.connect("live", nick="rita")
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, "cam", stream_id=sid))
    assert reply.args[0]["code"] == "Chat.Joined", reply
    return peer


def check_isolation(data: bytes, cuts: list[int]) -> None:
    """Feed *data* to one chat WebSocket after its upgrade; the room still works."""
    with no_failures_logged():
        clock = task.Clock()
        factory = RTMPServerFactory(ServerConfig(), reactor=clock)
        client = SiteClient(factory, clock)
        rtmp = _rtmp_chatter(factory)
        good = ChatClient(client, "/live/cam/chat")
        assert good.join("ann")[0]["type"] == "joined"

        hostile = FakeTransport(HOSTILE_PEER, auto_drain=True)
        channel = client.site.buildProtocol(hostile.getPeer())
        assert channel is not None
        hostile.protocol = channel
        channel.makeConnection(hostile)
        hostile.protocol.dataReceived(UPGRADE)
        assert hostile.value().startswith(b"HTTP/1.1 101 "), hostile.value()[:200]
        offset = 0
        for cut in [*cuts, len(data)]:
            if hostile.disconnecting or hostile.aborted or offset >= len(data):
                break
            hostile.protocol.dataReceived(data[offset : offset + cut])
            offset += cut
        for _ in range(3):
            clock.advance(11)  # the connect timeout, the watchdog's pings
            factory.check_viewers()
            rtmp.call("getViewerCount", None, stream_id=1)  # keeps the RTMP client alive

        before = len(rtmp.chat())
        good.say("after the storm")
        texts = [message["text"] for _, message in rtmp.chat()[before:]]
        assert "after the storm" in texts, texts
        seen = len(good.messages())
        rtmp.call("sendChatMessage", None, "from rtmp", stream_id=1)
        assert [m["text"] for m in good.messages()[seen:]] == ["from rtmp"]
        assert not good.gone
        assert not rtmp.transport.disconnecting
        hostile.loseConnection()
        clock.advance(1)
        assert factory.connections_from(HOSTILE_PEER.host) == 0


#: How many examples the suite runs (``CHAT_FUZZ_EXAMPLES`` to change it).
EXAMPLES = int(os.environ.get("CHAT_FUZZ_EXAMPLES", "2500"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(hostile_frames())
def test_hostile_chat_frames_cost_only_their_connection(case: tuple[bytes, list[int]]) -> None:
    check_isolation(*case)


@settings(max_examples=EXAMPLES // 3, deadline=None, database=None)
@given(st.binary(max_size=4000), st.lists(st.integers(1, 300), max_size=6))
def test_random_bytes_after_the_chat_upgrade(data: bytes, cuts: list[int]) -> None:
    check_isolation(data, cuts)
