"""Writing ISO base media file format boxes (ISO/IEC 14496-12) and MPEG-4 descriptors.

A box (14496-12 §4.2) is a 32-bit big-endian size, a four-character type and
its payload; a full box adds an 8-bit version and 24-bit flags before the
payload.  Sizes that do not fit 32 bits use the 64-bit ``largesize`` form
(size field 1).  The descriptors inside ``esds`` (ISO/IEC 14496-1 §7.2.2) are
a tag byte, a variable-length size (7 bits a byte, high bit set on all but the
last) and the body.

Everything here returns bytes and never writes: :mod:`streamserver.codec.fmp4`
builds init segments and fragments from these functions.  A value that does not
fit its field is our own misuse (:class:`UsageError`); nothing here reads
bytes from a peer.
"""

from __future__ import annotations

import struct

from streamserver.errors import UsageError

#: size (u32) + type; the header of every box (14496-12 §4.2).
BOX_HEADER_SIZE = 8

#: size 1 + type + largesize (u64), for a box of 4 GiB or more.
LARGE_BOX_HEADER_SIZE = 16

_U32_MAX = 0xFFFFFFFF

#: The largest size a descriptor's variable-length size field carries: four
#: bytes of 7 bits (14496-1 §8.3.3), what every reader accepts.
_MAX_DESCRIPTOR_SIZE = (1 << 28) - 1


def _check_type(box_type: bytes) -> None:
    if len(box_type) != 4:
        raise UsageError(f"box type {box_type!r} is not four bytes")


def box(box_type: bytes, *payload: bytes) -> bytes:
    """Return a box of *box_type* whose payload is the concatenation of *payload*.

    :raises UsageError: *box_type* is not four bytes.
    """
    _check_type(box_type)
    body = b"".join(payload)
    size = BOX_HEADER_SIZE + len(body)
    if size > _U32_MAX:
        return struct.pack(">I4sQ", 1, box_type, LARGE_BOX_HEADER_SIZE + len(body)) + body
    return struct.pack(">I4s", size, box_type) + body


def full_box(box_type: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """Return a full box: *version* (8 bits) and *flags* (24 bits) before *payload*.

    :raises UsageError: *box_type* is not four bytes, or the version or flags
        do not fit their fields.
    """
    if not 0 <= version <= 0xFF:
        raise UsageError(f"box version {version} does not fit 8 bits")
    if not 0 <= flags <= 0xFFFFFF:
        raise UsageError(f"box flags {flags:#x} do not fit 24 bits")
    return box(box_type, struct.pack(">I", (version << 24) | flags), *payload)


def descriptor(tag: int, *payload: bytes) -> bytes:
    """Return an MPEG-4 descriptor (14496-1 §7.2.2.2): tag, variable-length size, body.

    The size is written in the fewest bytes it needs.

    :raises UsageError: the tag does not fit a byte or the body is larger
        than 2^28 - 1 bytes.
    """
    if not 0 <= tag <= 0xFF:
        raise UsageError(f"descriptor tag {tag} does not fit 8 bits")
    body = b"".join(payload)
    size = len(body)
    if size > _MAX_DESCRIPTOR_SIZE:
        raise UsageError(f"descriptor of {size} bytes does not fit a 28-bit size")
    groups = [size & 0x7F]
    size >>= 7
    while size:
        groups.append(0x80 | (size & 0x7F))
        size >>= 7
    return bytes([tag, *reversed(groups)]) + body


def fixed_16_16(value: int) -> int:
    """Return the integer *value* as a 16.16 fixed-point number, or 0 if it is out of range.

    Used for pixel sizes and sample rates; 0 is what 14496-12 readers take as
    "look at the decoder configuration instead".
    """
    return value << 16 if 0 <= value <= 0xFFFF else 0


#: The unity transformation matrix of ``mvhd`` and ``tkhd`` (14496-12 §8.2.2).
UNITY_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def language_code(language: str) -> int:
    """Pack an ISO 639-2/T code (``"und"``) into the 15 bits of ``mdhd`` (§8.4.2).

    :raises UsageError: *language* is not three lowercase ASCII letters.
    """
    if len(language) != 3 or not all("a" <= c <= "z" for c in language):
        raise UsageError(f"language {language!r} is not three lowercase letters")
    a, b, c = (ord(ch) - 0x60 for ch in language)
    return (a << 10) | (b << 5) | c
