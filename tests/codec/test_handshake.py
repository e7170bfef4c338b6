"""Tests for the sans-I/O RTMP handshake (spec 5.2 and the FP9 digest variant)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.handshake import ClientHandshake, ServerHandshake
from streamserver.errors import HandshakeError, ProtocolError, UsageError

# The keys written out again from their published description, so that the
# tests do not just compare the module with itself.
FP_TEXT = b"Genuine Adobe Flash Player 001"
FMS_TEXT = b"Genuine Adobe Flash Media Server 001"
KEY_TAIL = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")

SIZE = 1536


def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(packet: bytes, base: int) -> int:
    return sum(packet[base : base + 4]) % 728 + base + 4


def digest_at(packet: bytes, base: int) -> tuple[bytes, bytes]:
    """Return (digest found at the schema at *base*, the packet without it)."""
    offset = digest_offset(packet, base)
    return packet[offset : offset + 32], packet[:offset] + packet[offset + 32 :]


def make_digest_c1(base: int = 8, version: bytes = b"\x80\x00\x07\x02", seed: int = 1) -> bytes:
    """Build a client C1 signed at the schema at *base*, independently of the module."""
    random_part = bytes((i * seed + 7) % 256 for i in range(1528))
    body = bytearray(b"\x00\x00\x00\x00" + version + random_part)
    offset = digest_offset(bytes(body), base)
    rest = bytes(body[:offset] + body[offset + 32 :])
    body[offset : offset + 32] = hmac256(FP_TEXT, rest)
    return bytes(body)


def counting_bytes(n: int) -> bytes:
    """A deterministic random_bytes: 0, 1, 2, … modulo 251."""
    return bytes(i % 251 for i in range(n))


def run(server: ServerHandshake, client: ClientHandshake, cuts: list[int] | None = None) -> None:
    """Drive *client* and *server* to completion, feeding at the given cut sizes."""

    def feed(receiver: ServerHandshake | ClientHandshake, data: bytes) -> bytes:
        out = b""
        if cuts is None:
            return receiver.receive_data(data)
        pos = 0
        i = 0
        while pos < len(data):
            step = max(1, cuts[i % len(cuts)])
            out += receiver.receive_data(data[pos : pos + step])
            pos += step
            i += 1
        return out

    s0s1s2 = feed(server, client.initial_bytes())
    assert len(s0s1s2) == 1 + 2 * SIZE
    c2 = feed(client, s0s1s2)
    assert len(c2) == SIZE
    assert client.complete
    assert feed(server, c2) == b""
    assert server.complete


@pytest.mark.parametrize("digest", [False, True])
def test_whole(digest: bool) -> None:
    """Client and server complete against each other when each packet arrives whole."""
    server, client = ServerHandshake(), ClientHandshake(digest=digest)
    run(server, client)
    assert server.digest_used is digest
    assert client.server_digest_valid is digest
    assert server.leftover == b"" and client.leftover == b""


@pytest.mark.parametrize("digest", [False, True])
def test_byte_by_byte(digest: bool) -> None:
    """Client and server complete against each other when fed one byte at a time."""
    server, client = ServerHandshake(), ClientHandshake(digest=digest)
    run(server, client, [1])
    assert server.digest_used is digest
    assert client.server_digest_valid is digest


@settings(max_examples=60, deadline=None)
@given(st.booleans(), st.lists(st.integers(1, 3100), min_size=1, max_size=8))
def test_random_splits(digest: bool, cuts: list[int]) -> None:
    """Any split of the input gives the same result as feeding it whole."""
    server, client = (
        ServerHandshake(random_bytes=counting_bytes),
        ClientHandshake(digest=digest, random_bytes=counting_bytes),
    )
    run(server, client, cuts)
    assert server.digest_used is digest
    assert client.server_digest_valid is digest


def test_simple_s1_s2() -> None:
    """A simple C1 gets S0 = 3, S1 with time and zero version, and S2 echoing C1."""
    c1 = b"\x00\x00\x12\x34" + b"\x00" * 4 + os.urandom(1528)
    server = ServerHandshake(uptime_ms=lambda: 0x01020304)
    out = server.receive_data(b"\x03" + c1)
    assert out[0] == 3
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert s1[:8] == b"\x01\x02\x03\x04\x00\x00\x00\x00"
    assert s2 == c1
    assert not server.digest_used
    assert server.client_version == b"\x00" * 4


@pytest.mark.parametrize("base", [8, 772])
def test_server_digest_response_verifies(base: int) -> None:
    """A digest C1 gets an S1 signed with the 36-byte FMS key at the same schema and
    an S2 signed with HMAC(full FMS key, client digest)."""
    c1 = make_digest_c1(base)
    client_digest, _ = digest_at(c1, base)
    server = ServerHandshake()
    out = server.receive_data(b"\x03" + c1)
    assert server.digest_used
    assert server.client_version == b"\x80\x00\x07\x02"
    s1, s2 = out[1 : 1 + SIZE], out[1 + SIZE :]
    assert s1[4:8] != b"\x00\x00\x00\x00"
    s1_digest, s1_rest = digest_at(s1, base)
    assert s1_digest == hmac256(FMS_TEXT, s1_rest)
    s2_key = hmac256(FMS_TEXT + KEY_TAIL, client_digest)
    assert s2[1504:] == hmac256(s2_key, s2[:1504])


def test_server_s1_known_answer() -> None:
    """With fixed random bytes, S1 and S2 are exactly the independently computed ones."""
    c1 = make_digest_c1(8)
    server = ServerHandshake(random_bytes=counting_bytes, uptime_ms=lambda: 1000)
    out = server.receive_data(b"\x03" + c1)
    expected_s1 = bytearray(b"\x00\x00\x03\xe8" + b"\x0d\x0e\x0a\x0d" + counting_bytes(1528))
    offset = sum(expected_s1[8:12]) % 728 + 12
    # counting_bytes puts 0 1 2 3 at S1[8:12]: the digest lands at 6 + 12 = 18.
    assert offset == 18
    expected_s1[offset : offset + 32] = hmac256(
        FMS_TEXT, bytes(expected_s1[:offset] + expected_s1[offset + 32 :])
    )
    assert out[1 : 1 + SIZE] == bytes(expected_s1)
    client_digest, _ = digest_at(c1, 8)
    random_part = counting_bytes(1504)
    expected_s2 = random_part + hmac256(hmac256(FMS_TEXT + KEY_TAIL, client_digest), random_part)
    assert out[1 + SIZE :] == expected_s2


def test_garbage_digest_falls_back_to_simple() -> None:
    """A C1 with a non-zero version but no valid digest gets the simple handshake."""
    c1 = b"\x00\x00\x00\x00" + b"\x09\x00\x7c\x02" + os.urandom(1528)
    server = ServerHandshake()
    out = server.receive_data(b"\x03" + c1)
    assert not server.digest_used
    assert server.client_version == b"\x09\x00\x7c\x02"
    assert out[1 + 4 : 1 + 8] == b"\x00\x00\x00\x00"
    assert out[1 + SIZE :] == c1


def test_client_digest_c1_and_c2() -> None:
    """The digest client signs C1 at schema 1 and answers a digest S1 with a keyed C2."""
    client = ClientHandshake(digest=True, random_bytes=counting_bytes)
    c0c1 = client.initial_bytes()
    assert c0c1[0] == 3
    c1 = c0c1[1:]
    assert c1[4:8] == b"\x80\x00\x07\x02"
    c1_digest, c1_rest = digest_at(c1, 8)
    assert c1_digest == hmac256(FP_TEXT, c1_rest)
    server = ServerHandshake(random_bytes=counting_bytes)
    out = server.receive_data(c0c1)
    s1_digest, _ = digest_at(out[1 : 1 + SIZE], 8)
    c2 = client.receive_data(out)
    assert client.server_digest_valid
    assert c2[1504:] == hmac256(hmac256(FP_TEXT + KEY_TAIL, s1_digest), c2[:1504])


def test_digest_client_against_simple_server_echoes_s1() -> None:
    """A digest client facing a server without a digest S1 echoes S1 as C2."""
    client = ClientHandshake(digest=True)
    client.initial_bytes()
    s1 = os.urandom(SIZE)
    c2 = client.receive_data(b"\x03" + s1 + os.urandom(SIZE))
    assert c2 == s1
    assert not client.server_digest_valid
    assert client.complete


def test_server_leftover_keeps_bytes_after_c2() -> None:
    """Bytes after C2 in the same read are left for the chunk layer, exactly."""
    server = ServerHandshake()
    server.receive_data(b"\x03" + os.urandom(SIZE))
    tail = b"\x03\x00\x00\x00\x00\x01\x05\x14\x00\x00\x00\x00connect..."
    assert server.receive_data(os.urandom(SIZE) + tail) == b""
    assert server.complete
    assert server.leftover == tail


def test_server_leftover_when_everything_arrives_at_once() -> None:
    """C0 C1 C2 and trailing bytes in a single read still answer S0S1S2 and keep the tail."""
    server = ServerHandshake()
    tail = os.urandom(300)
    out = server.receive_data(b"\x03" + os.urandom(2 * SIZE) + tail)
    assert len(out) == 1 + 2 * SIZE
    assert server.complete
    assert server.leftover == tail


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(1, 2 * SIZE))
def test_leftover_at_any_split(tail: bytes, cut: int) -> None:
    """Whatever the split, leftover is exactly the bytes after C2, and the output is the same."""
    data = b"\x03" + counting_bytes(SIZE) + bytes(SIZE) + tail
    server = ServerHandshake(random_bytes=counting_bytes)
    out = server.receive_data(data[:cut]) + server.receive_data(data[cut:])
    assert out == ServerHandshake(random_bytes=counting_bytes).receive_data(data[: 1 + SIZE])
    assert server.complete
    assert server.leftover == tail


def test_client_leftover() -> None:
    """Bytes the server sends after S2 stay in the client's leftover."""
    client = ClientHandshake()
    client.initial_bytes()
    tail = b"\x02\x00\x00\x00\x00\x00\x04\x05"
    client.receive_data(b"\x03" + os.urandom(2 * SIZE) + tail)
    assert client.leftover == tail


@pytest.mark.parametrize("version", [6, 8])
def test_rtmpe_refused(version: int) -> None:
    """C0 = 6 or 8 (RTMPE) is refused with a message naming RTMPE."""
    with pytest.raises(HandshakeError, match="RTMPE"):
        ServerHandshake().receive_data(bytes((version,)) + os.urandom(SIZE))


def test_rtmpe_refused_on_first_byte() -> None:
    """The version is checked as soon as C0 arrives, before C1."""
    with pytest.raises(HandshakeError, match="RTMPE"):
        ServerHandshake().receive_data(b"\x06")


def test_http_get_refused() -> None:
    """An HTTP request on the RTMP port ('G' of GET as C0) is a HandshakeError."""
    with pytest.raises(HandshakeError):
        ServerHandshake().receive_data(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")


def test_client_refuses_bad_s0() -> None:
    """A client receiving an S0 other than 3 raises HandshakeError."""
    client = ClientHandshake()
    client.initial_bytes()
    with pytest.raises(HandshakeError):
        client.receive_data(b"\x04")


def test_receive_after_complete_is_usage_error() -> None:
    """Feeding the server after completion is our bug, not the peer's."""
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(2 * SIZE))
    with pytest.raises(UsageError):
        server.receive_data(b"x")
    client = ClientHandshake()
    client.initial_bytes()
    client.receive_data(b"\x03" + bytes(2 * SIZE))
    with pytest.raises(UsageError):
        client.receive_data(b"x")


def test_client_receive_before_initial_bytes_is_usage_error() -> None:
    """The client must send C0 C1 before reading the server's reply."""
    with pytest.raises(UsageError):
        ClientHandshake().receive_data(b"\x03")


def test_initial_bytes_stable() -> None:
    """initial_bytes returns the same C0 C1 on every call."""
    client = ClientHandshake(digest=True)
    assert client.initial_bytes() == client.initial_bytes()
    assert len(client.initial_bytes()) == 1 + SIZE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.integers(1, 4000))
def test_server_garbage_raises_only_protocol_errors(data: bytes, cut: int) -> None:
    """Random bytes either progress the handshake or raise a ProtocolError."""
    server = ServerHandshake()
    with contextlib.suppress(ProtocolError):
        server.receive_data(data[:cut])
        if not server.complete:
            server.receive_data(data[cut:])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4000))
def test_server_garbage_with_valid_c0(data: bytes) -> None:
    """With a valid C0 any C1 and C2 bytes complete the handshake (C2 is not checked)."""
    server = ServerHandshake()
    payload = b"\x03" + data
    out = server.receive_data(payload)
    assert server.complete == (len(payload) >= 1 + 2 * SIZE)
    assert len(out) == (1 + 2 * SIZE if len(payload) >= 1 + SIZE else 0)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4000))
def test_client_garbage_raises_only_protocol_errors(data: bytes) -> None:
    """A digest client fed random bytes either progresses or raises a ProtocolError."""
    client = ClientHandshake(digest=True)
    client.initial_bytes()
    with contextlib.suppress(ProtocolError):
        client.receive_data(data)
