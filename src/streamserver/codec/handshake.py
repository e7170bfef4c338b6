"""The RTMP handshake, both sides, sans-I/O.

Implements section 5.2 of the Adobe RTMP specification (December 2012): the
client sends C0 (one version byte, 3) and C1 (1536 bytes: time, four zero
bytes, 1528 random bytes); the server answers S0, S1 and S2 (S2 echoes C1);
the client answers C2 (an echo of S1).  This server sends S0, S1 and S2 in one
write as soon as C0 and C1 have arrived, as nginx-rtmp and SRS do; the spec
allows it (5.2.1: the server MAY wait for C1 only).

The digest ("FP9", "complex") variant is not in the published spec but is what
Flash Player 9+, librtmp and ffmpeg send, and what some players insist on
getting back.  It is recognised by a non-zero version field (C1 bytes 4..8):

- A 32-byte HMAC-SHA256 digest sits somewhere in the 1536-byte packet.  Its
  offset is derived from four bytes at a *base* offset: schema 1 (base 8,
  digest right after time and version) puts it at ``sum(p[8:12]) % 728 + 12``,
  schema 0 (base 772) at ``sum(p[772:776]) % 728 + 776``.
- The digest is HMAC-SHA256 over the packet with the 32 digest bytes cut out.
  The client keys it with the first 30 bytes of :data:`FLASH_PLAYER_KEY`
  ("Genuine Adobe Flash Player 001"), the server with the first 36 bytes of
  :data:`FLASH_MEDIA_SERVER_KEY` ("Genuine Adobe Flash Media Server 001").
- S2 (and C2) are 1504 random bytes followed by HMAC-SHA256 of them, keyed
  with HMAC-SHA256(full peer key, the *other* side's digest): the server uses
  the full 68-byte server key and the client digest, the client the full
  62-byte player key and the server digest.

A server that cannot find a valid client digest falls back to the simple
handshake (S1 with a zero version, S2 an echo of C1), as nginx-rtmp does.  C2 is
never validated: clients disagree on what they put in it; only its length is
consumed.  The encrypted variants (RTMPE, C0 = 6 or 8) are refused.

Bytes that follow the last handshake packet in the same read (C2 and the first
chunk of ``connect`` commonly arrive together) are not consumed: they are left
in ``leftover`` for the chunk layer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from streamserver.errors import HandshakeError, UsageError

#: The only plain RTMP version (spec 5.2.2); C0 and S0 carry it.
RTMP_VERSION = 3

#: C0 values of the encrypted variants: 6 is RTMPE, 8 RTMPE with XTEA/Blowfish
#: (librtmp).  Refused with a message of their own so the log says why.
RTMPE_VERSIONS = frozenset({6, 8})

#: C1, C2, S1 and S2 are all this long (spec 5.2.3, 5.2.4).
HANDSHAKE_SIZE = 1536

#: An HMAC-SHA256 digest.
DIGEST_SIZE = 32

#: Key the client signs C1 with (its first :data:`FP_KEY_PARTIAL_LENGTH` bytes)
#: and derives the C2 key from (all of it).  Published in librtmp, ffmpeg,
#: nginx-rtmp and others: the ASCII text followed by 32 constant bytes.
FLASH_PLAYER_KEY = (
    b"Genuine Adobe Flash Player 001"
    b"\xf0\xee\xc2\x4a\x80\x68\xbe\xe8\x2e\x00\xd0\xd1\x02\x9e\x7e\x57"
    b"\x6e\xec\x5d\x2d\x29\x80\x6f\xab\x93\xb8\xe6\x36\xcf\xeb\x31\xae"
)

#: Key the server signs S1 with (its first :data:`FMS_KEY_PARTIAL_LENGTH`
#: bytes) and derives the S2 key from (all of it).  Same 32 trailing bytes.
FLASH_MEDIA_SERVER_KEY = (
    b"Genuine Adobe Flash Media Server 001"
    b"\xf0\xee\xc2\x4a\x80\x68\xbe\xe8\x2e\x00\xd0\xd1\x02\x9e\x7e\x57"
    b"\x6e\xec\x5d\x2d\x29\x80\x6f\xab\x93\xb8\xe6\x36\xcf\xeb\x31\xae"
)

#: Length of the ASCII part of each key, the part used to sign C1 / S1.
FP_KEY_PARTIAL_LENGTH = 30
FMS_KEY_PARTIAL_LENGTH = 36

#: Version field this server puts in a digest S1.  Any non-zero value works;
#: this is the one nginx-rtmp sends (players only check it is non-zero, and
#: ffmpeg validates the S1 digest when the first byte is at least 3).
SERVER_VERSION = b"\x0d\x0e\x0a\x0d"

#: Version field :class:`ClientHandshake` puts in a digest C1 (ffmpeg's).
CLIENT_VERSION = b"\x80\x00\x07\x02"

#: Base offsets of the two digest schemas: 8 for schema 1, 772 for schema 0.
#: Schema 0 is tried first, as nginx-rtmp and ffmpeg do; a random packet
#: matches either by chance with probability 2**-256.
SCHEMA_1_BASE = 8
SCHEMA_0_BASE = 772
_DIGEST_BASES = (SCHEMA_0_BASE, SCHEMA_1_BASE)

#: The digest offset is taken modulo this so that base + 4 + offset + 32 stays
#: inside one half of the packet (764 - 4 - 32 = 728).
_DIGEST_OFFSET_MODULUS = 728

#: Length of the random part of a digest S2 / C2, before its trailing digest.
_RESPONSE_RANDOM_SIZE = HANDSHAKE_SIZE - DIGEST_SIZE

#: First bytes of HTTP methods, to say "HTTP on the RTMP port" instead of only
#: "bad version" (browsers and health checks hit RTMP ports all the time).
_HTTP_FIRST_BYTES = frozenset(b"GPHODC")


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _digest_offset(packet: bytes, base: int) -> int:
    """Return where the digest starts in *packet* for the schema at *base*."""
    return sum(packet[base : base + 4]) % _DIGEST_OFFSET_MODULUS + base + 4


def _find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Look for a valid digest in *packet* under either schema.

    :returns: the schema base and the 32 digest bytes, or ``None``.
    """
    for base in _DIGEST_BASES:
        offset = _digest_offset(packet, base)
        digest = packet[offset : offset + DIGEST_SIZE]
        expected = _hmac_sha256(key, packet[:offset] + packet[offset + DIGEST_SIZE :])
        if hmac.compare_digest(digest, expected):
            return base, digest
    return None


def _imprint_digest(packet: bytes, key: bytes, base: int) -> tuple[bytes, bytes]:
    """Write a digest into *packet* at the schema at *base*.

    :returns: the signed packet and its digest.
    """
    offset = _digest_offset(packet, base)
    digest = _hmac_sha256(key, packet[:offset] + packet[offset + DIGEST_SIZE :])
    return packet[:offset] + digest + packet[offset + DIGEST_SIZE :], digest


def _digest_response(random_part: bytes, full_key: bytes, peer_digest: bytes) -> bytes:
    """Build a digest S2 / C2: random bytes, then their HMAC under a derived key."""
    key = _hmac_sha256(full_key, peer_digest)
    return random_part + _hmac_sha256(key, random_part)


def _check_version(version: int) -> None:
    """Refuse every C0 / S0 except plain RTMP version 3.

    :raises HandshakeError: the version is not 3.
    """
    if version == RTMP_VERSION:
        return
    if version in RTMPE_VERSIONS:
        raise HandshakeError("encrypted RTMP (RTMPE) is not supported")
    if version in _HTTP_FIRST_BYTES:
        raise HandshakeError(f"unsupported RTMP version {version} (an HTTP request?)")
    raise HandshakeError(f"unsupported RTMP version {version}")


class ServerHandshake:
    """The server side of the handshake: feed it C0 C1 C2, send what it returns.

    :ivar complete: True once C2 has been consumed.
    :ivar leftover: bytes received after C2, for the chunk layer (empty until
        ``complete``).
    :ivar digest_used: True when the client sent a valid digest C1 and got a
        digest S1 / S2 back.
    :ivar client_version: C1 bytes 4..8 (the Flash Player version of a digest
        client, zeros for a simple one); empty until C1 has arrived.
    """

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        uptime_ms: Callable[[], int] | None = None,
    ) -> None:
        """
        :param random_bytes: source of the random parts of S1 and S2.
        :param uptime_ms: the server's uptime in milliseconds, sent as the S1
            time (spec 5.2.3 allows 0, sent when this is ``None``).
        """
        self._random_bytes = random_bytes
        self._uptime_ms = uptime_ms
        self._received = bytearray()
        self._sent_response = False
        self.complete = False
        self.leftover = b""
        self.digest_used = False
        self.client_version = b""

    def receive_data(self, data: bytes) -> bytes:
        """Consume handshake bytes from the client.

        :returns: bytes to send now: S0 S1 S2 once C0 and C1 have arrived, else
            nothing.
        :raises HandshakeError: C0 is not version 3.
        :raises UsageError: the handshake is already complete.
        """
        if self.complete:
            raise UsageError("receive_data called after the handshake completed")
        received = self._received
        received += data
        out = b""
        if not self._sent_response:
            if not received:
                return b""
            _check_version(received[0])
            if len(received) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(received[1 : 1 + HANDSHAKE_SIZE])
            del received[: 1 + HANDSHAKE_SIZE]
            out = bytes((RTMP_VERSION,)) + self._respond(c1)
            self._sent_response = True
        if len(received) >= HANDSHAKE_SIZE:
            self.leftover = bytes(received[HANDSHAKE_SIZE:])
            received.clear()
            self.complete = True
        return out

    def _respond(self, c1: bytes) -> bytes:
        """Build S1 + S2 for *c1*: digest if C1 carries a valid one, else simple."""
        self.client_version = c1[4:8]
        uptime = self._uptime_ms() if self._uptime_ms is not None else 0
        time_field = struct.pack(">I", uptime & 0xFFFFFFFF)
        if self.client_version != b"\x00\x00\x00\x00":
            found = _find_digest(c1, FLASH_PLAYER_KEY[:FP_KEY_PARTIAL_LENGTH])
            if found is not None:
                base, client_digest = found
                self.digest_used = True
                s1 = time_field + SERVER_VERSION + self._random_bytes(HANDSHAKE_SIZE - 8)
                s1, _ = _imprint_digest(s1, FLASH_MEDIA_SERVER_KEY[:FMS_KEY_PARTIAL_LENGTH], base)
                s2 = _digest_response(
                    self._random_bytes(_RESPONSE_RANDOM_SIZE), FLASH_MEDIA_SERVER_KEY, client_digest
                )
                return s1 + s2
        s1 = time_field + b"\x00\x00\x00\x00" + self._random_bytes(HANDSHAKE_SIZE - 8)
        return s1 + c1


class ClientHandshake:
    """The client side of the handshake, for tests and relaying to other servers.

    Send :meth:`initial_bytes` first, then feed the server's bytes to
    :meth:`receive_data` and send what it returns.

    :ivar complete: True once S0 S1 S2 have been consumed and C2 returned.
    :ivar leftover: bytes received after S2 (empty until ``complete``).
    :ivar server_digest_valid: True when S1 carried a valid server digest (only
        looked for when the handshake was created with ``digest=True``).
    """

    def __init__(
        self, *, digest: bool = False, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        """
        :param digest: send a digest ("FP9") C1 and answer a digest S1 in kind.
        :param random_bytes: source of the random parts of C1 and C2.
        """
        self._digest = digest
        self._random_bytes = random_bytes
        self._c0c1: bytes | None = None
        self._received = bytearray()
        self.complete = False
        self.leftover = b""
        self.server_digest_valid = False

    def initial_bytes(self) -> bytes:
        """Return C0 + C1, the bytes to send first (the same bytes on every call)."""
        if self._c0c1 is None:
            random_part = self._random_bytes(HANDSHAKE_SIZE - 8)
            if self._digest:
                c1, _ = _imprint_digest(
                    b"\x00\x00\x00\x00" + CLIENT_VERSION + random_part,
                    FLASH_PLAYER_KEY[:FP_KEY_PARTIAL_LENGTH],
                    SCHEMA_1_BASE,
                )
            else:
                c1 = b"\x00" * 8 + random_part
            self._c0c1 = bytes((RTMP_VERSION,)) + c1
        return self._c0c1

    def receive_data(self, data: bytes) -> bytes:
        """Consume handshake bytes from the server.

        :returns: C2 once S0 S1 S2 have arrived, else nothing.
        :raises HandshakeError: S0 is not version 3.
        :raises UsageError: :meth:`initial_bytes` was not called first, or the
            handshake is already complete.
        """
        if self.complete:
            raise UsageError("receive_data called after the handshake completed")
        if self._c0c1 is None:
            raise UsageError("initial_bytes must be sent before receive_data")
        received = self._received
        received += data
        if not received:
            return b""
        _check_version(received[0])
        end = 1 + 2 * HANDSHAKE_SIZE
        if len(received) < end:
            return b""
        s1 = bytes(received[1 : 1 + HANDSHAKE_SIZE])
        self.leftover = bytes(received[end:])
        received.clear()
        self.complete = True
        if self._digest:
            found = _find_digest(s1, FLASH_MEDIA_SERVER_KEY[:FMS_KEY_PARTIAL_LENGTH])
            if found is not None:
                self.server_digest_valid = True
                return _digest_response(
                    self._random_bytes(_RESPONSE_RANDOM_SIZE), FLASH_PLAYER_KEY, found[1]
                )
        return s1
