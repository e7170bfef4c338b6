"""Reading an HTTP-FLV response as cheaply as fanout.py reads RTMP: no payload is copied.

An HTTP-FLV play (``GET /APP/NAME.flv``) answers with a response head and then
the FLV bytes: the FLV header (Adobe FLV spec v10.1, annex E.2), PreviousTagSize0
and one tag after another (E.3, E.4.1), in an HTTP/1.1 chunked body (RFC 9112
7.1) or, for HTTP/1.0, as they are until the connection closes.
:class:`HttpFlvReader` walks that in the caller's buffer: chunk-size lines,
then, inside chunk data, tag headers and the first bytes of each tag body (where
fanout.py's stamp is), skipping the rest of the body.  What it must see whole
(the head, a chunk-size line, a tag header and the body bytes asked for) may be
cut by a read or, in general, by a chunk boundary; only those few bytes are
gathered into a small buffer of its own.

Sans-I/O, Twisted-free: :meth:`HttpFlvReader.receive` takes the bytes of one
read, calls ``tag_received(tag_type, buffer, at, available)`` for each tag of
the types asked for once its first bytes are there, and raises
:class:`HttpFlvError` on anything that is not an HTTP-FLV response (a status
other than 200 included).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HttpFlvError", "HttpFlvReader", "request_bytes"]

#: Tag header: type, u24 DataSize, u24 Timestamp, u8 TimestampExtended, u24 StreamID (E.4.1).
TAG_HEADER_SIZE = 11
#: The u32 PreviousTagSize after the FLV header and after every tag (E.3).
PREVIOUS_TAG_SIZE = 4
FLV_HEADER_SIZE = 9
#: Anything longer is not an HTTP-FLV response head (ours are ~300 bytes).
MAX_HEAD = 16 * 1024
#: A chunk-size line is a few hex digits; extensions are allowed but never this long.
MAX_SIZE_LINE = 1024
#: A DataOffset past this is garbage, not a header to skip (as the server's FLV reader says).
MAX_DATA_OFFSET = 64 * 1024

# where the reader is in the response
_HEAD = 0
_SIZE_LINE = 1
_DATA = 2
_DATA_END = 3  # the CRLF after a chunk's data
_DONE = 4
_RAW = 5  # HTTP/1.0 or no chunking: the body is the FLV bytes until the close


class HttpFlvError(Exception):
    """The bytes are not an HTTP-FLV response (or not one this reader understands)."""


def request_bytes(host: str, port: int, path: str) -> bytes:
    """The ``GET`` of an HTTP-FLV play of *path* on ``host:port``, as a player sends it."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: fanout\r\nAccept: */*\r\n\r\n"
    ).encode("ascii")


class HttpFlvReader:
    """The FLV tags of one HTTP-FLV response, read incrementally.

    :param tag_received: called as ``tag_received(tag_type, buffer, at,
        available)`` for each tag of a type in *body_need*, once its header and
        its first ``body_need[tag_type]`` body bytes (or all of a shorter body)
        have arrived: the body starts at ``buffer[at]`` and ``available`` of its
        bytes are there.  *buffer* is the caller's, or the reader's own when
        those bytes were cut; either is only valid during the call.
    :param body_need: how many body bytes the caller wants to see, per tag type;
        tags of other types are skipped unseen.
    :ivar status: the response's status code, once the head is in.
    :ivar headers: the response's header fields (names lower-cased), once in.
    :ivar ended: the chunked body's last chunk arrived.
    :ivar tags: tags seen.
    """

    def __init__(
        self,
        tag_received: Callable[[int, bytearray | bytes, int, int], None],
        body_need: dict[int, int],
    ) -> None:
        self._tag_received = tag_received
        self._body_need = body_need
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.ended = False
        self.tags = 0
        self._where = _HEAD
        self._gathered = bytearray()
        self._chunk_left = 0
        self._crlf_left = 0
        # FLV layer: bytes to skip, and what the next unit needs
        self._skip = 0
        self._flv_header = True
        self._want = FLV_HEADER_SIZE
        self._partial = bytearray()

    # --- the HTTP layer -----------------------------------------------------------------

    def receive(self, buf: bytearray, pos: int, end: int) -> None:
        """Read ``buf[pos:end]``, the next bytes of the response.

        :raises HttpFlvError: the response is not HTTP-FLV, or not 200.
        """
        while pos < end:
            where = self._where
            if where == _DATA:
                left = self._chunk_left
                stop = pos + left if end - pos > left else end
                self._flv(buf, pos, stop)
                left -= stop - pos
                pos = stop
                self._chunk_left = left
                if not left:
                    self._where = _DATA_END
                    self._crlf_left = 2
            elif where == _DATA_END:
                take = min(self._crlf_left, end - pos)
                self._crlf_left -= take
                pos += take
                if not self._crlf_left:
                    self._where = _SIZE_LINE
            elif where == _SIZE_LINE:
                pos = self._size_line(buf, pos, end)
            elif where == _RAW:
                self._flv(buf, pos, end)
                return
            elif where == _HEAD:
                pos = self._head(buf, pos, end)
            else:  # _DONE: a trailer or the next response; nothing we read
                return

    def _head(self, buf: bytearray, pos: int, end: int) -> int:
        gathered = self._gathered
        before = len(gathered)
        # the blank line may start up to 3 bytes before this read
        gathered += buf[pos:end]
        found = gathered.find(b"\r\n\r\n", max(0, before - 3))
        if found < 0:
            if len(gathered) > MAX_HEAD:
                raise HttpFlvError(f"no end of the response head in {MAX_HEAD} bytes")
            return end
        head = bytes(gathered[:found]).decode("latin-1")
        gathered.clear()
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpFlvError(f"not an HTTP response: {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status != 200:
            raise HttpFlvError(f"HTTP {self.status} {parts[2] if len(parts) > 2 else ''}".strip())
        coding = self.headers.get("transfer-encoding", "").lower()
        self._where = _SIZE_LINE if "chunked" in coding else _RAW
        return pos + (found + 4 - before)

    def _size_line(self, buf: bytearray, pos: int, end: int) -> int:
        newline = buf.find(b"\n", pos, end)
        gathered = self._gathered
        if newline < 0:
            gathered += buf[pos:end]
            if len(gathered) > MAX_SIZE_LINE:
                raise HttpFlvError("chunk-size line too long")
            return end
        if gathered:
            gathered += buf[pos:newline]
            line = bytes(gathered)
            gathered.clear()
        else:
            line = buf[pos:newline]
        if b";" in line:
            line = line.split(b";", 1)[0]
        try:
            size = int(line, 16)  # int() strips the CR and any blanks
        except ValueError:
            raise HttpFlvError(f"bad chunk-size line {bytes(line[:20])!r}") from None
        if size < 0:
            raise HttpFlvError(f"bad chunk-size line {bytes(line[:20])!r}")
        if size == 0:
            self.ended = True
            self._where = _DONE
        else:
            self._chunk_left = size
            self._where = _DATA
        return newline + 1

    # --- the FLV layer ----------------------------------------------------------------

    def _flv(self, buf: bytearray, pos: int, end: int) -> None:
        """Read the FLV bytes ``buf[pos:end]`` (chunk data, or a raw body)."""
        while pos < end:
            skip = self._skip
            if skip:
                if skip >= end - pos:
                    self._skip = skip - (end - pos)
                    return
                pos += skip
                self._skip = 0
                continue
            partial = self._partial
            if partial or end - pos < self._want:
                # a unit cut by the end of the read or of the chunk: gather its first bytes
                take = min(self._want - len(partial), end - pos)
                partial += buf[pos : pos + take]
                pos += take
                if len(partial) < self._want:
                    return
                length = self._unit(partial, 0, len(partial))
                if length >= 0:
                    self._skip = length - len(partial)
                    partial.clear()
                continue
            length = self._unit(buf, pos, end)
            if length < 0:
                continue  # it wants more than the bytes here: gathered above
            if length > end - pos:
                self._skip = length - (end - pos)
                return
            pos += length

    def _unit(self, buf: bytearray, at: int, end: int) -> int:
        """The unit (FLV header or tag) at ``buf[at]``, whose first ``_want`` bytes are there.

        :returns: its length in bytes (PreviousTagSize included), or -1 when it
            needs more of its bytes first (``_want`` grew).
        """
        if self._flv_header:
            if buf[at : at + 3] != b"FLV":
                raise HttpFlvError(f"not FLV: {bytes(buf[at : at + 3])!r}")
            offset = int.from_bytes(buf[at + 5 : at + 9], "big")
            if not FLV_HEADER_SIZE <= offset <= MAX_DATA_OFFSET:
                raise HttpFlvError(f"FLV DataOffset {offset}")
            self._flv_header = False
            self._want = TAG_HEADER_SIZE
            return offset + PREVIOUS_TAG_SIZE
        size = (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]
        tag_type = buf[at] & 0x1F
        need = self._body_need.get(tag_type, 0)
        if need:
            if need > size:
                need = size
            if end - at < TAG_HEADER_SIZE + need:
                self._want = TAG_HEADER_SIZE + need
                return -1
            body = at + TAG_HEADER_SIZE
            self._tag_received(tag_type, buf, body, min(size, end - body))
        self._want = TAG_HEADER_SIZE
        self.tags += 1
        return TAG_HEADER_SIZE + size + PREVIOUS_TAG_SIZE
