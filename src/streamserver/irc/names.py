"""What IRC calls things here: channels of streams, nicks, topics, and a message's lines.

Plain functions, no Twisted (the protocol is :mod:`streamserver.irc.server`).
The rules are the IRC half of ``docs/watch.md`` ("IRC"):

- A stream ``APP/NAME`` is the channel ``#APP/NAME``: the text after ``#`` is
  split at its last ``/``, so ``#live/cam`` is ``live``/``cam`` and
  ``#live/eu/cam`` is application ``live/eu``, stream ``cam`` (as the HTTP
  paths ``/live/eu/cam.flv`` split).  Channel names are case-sensitive, as
  stream names are.
- An IRC client's own nick follows RFC 2812 (ASCII letters, digits and
  ``[]\\`_^{|}-``, not starting with a digit or ``-``), at most
  :data:`~streamserver.media.rooms.MAX_NICK_LENGTH` characters, and is not of
  the ``guest-<n>`` form the server gives RTMP guests.  Such a nick is left
  unchanged by the chat rules' :func:`~streamserver.media.rooms.clean_nick`, so
  it is the same nick in the room (mutes match it, casefolded).
- Other participants' nicks (RTMP, WebSocket) are shown in an IRC-safe form
  (:func:`display_nick`).
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

from streamserver.media.rooms import MAX_NICK_LENGTH, ChatMessage, clean_nick, clean_text

if TYPE_CHECKING:
    from streamserver.media.stream import Stream

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_TAGS_BYTES",
    "SERVER_NAME",
    "channel_name",
    "channel_stream",
    "chat_lines",
    "display_nick",
    "hostmask",
    "nick_error",
    "server_time",
    "stream_title",
    "stream_topic",
]

#: The server's name in prefixes and numerics, and the host of every hostmask:
#: a participant's address is never shown.
SERVER_NAME = "streamserver"

#: RFC 1459's line limit, CR LF included (tags not counted).
MAX_LINE_BYTES = 512

#: IRCv3 message tags sent by a client may take this much more in front of a line.
MAX_TAGS_BYTES = 4096

#: Longest application or stream name (``protocol/session.py``'s bound, repeated
#: so that this module does not import the RTMP protocol).
MAX_NAME_LENGTH = 256


_NICK = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*\Z")
_GUEST = re.compile(r"guest-[0-9]+\Z", re.IGNORECASE)

#: Characters that end or split an IRC parameter or a hostmask, replaced by ``_``
#: in a nick shown to IRC clients.
_NOT_IN_NICK = frozenset(" ,*?!@:")

#: A nick must not start with these: channel types, membership prefixes in NAMES
#: (``@`` ``+`` ``%`` ``~`` ``&``), a prefix marker, a digit, ``-``.
_NOT_FIRST = frozenset("#&$:+%~@-0123456789")

#: Characters no channel name may hold (RFC 2812: space, comma, BELL).
_NOT_IN_CHANNEL = frozenset(" ,\x07")


def nick_error(nick: str) -> str | None:
    """Why *nick* cannot be an IRC client's nick here, or ``None`` if it can (432 otherwise)."""
    if len(nick) > MAX_NICK_LENGTH:
        return f"longer than {MAX_NICK_LENGTH} characters"
    if not _NICK.match(nick) or clean_nick(nick) != nick:
        return "a nick is an ASCII letter or one of []\\`_^{|} then letters, digits, those or -"
    if _GUEST.match(nick):
        return "guest-<n> nicks are the server's names for guests"
    return None


def display_nick(nick: str) -> str:
    """*nick* (a room's nick, already cleaned) as IRC clients are shown it.

    Spaces and ``,*?!@:`` become ``_``; a nick starting with a channel or
    membership prefix, a digit or ``-`` gets a ``_`` in front; an empty one is
    ``_``.  A valid IRC nick is unchanged.
    """
    safe = "".join("_" if c in _NOT_IN_NICK or c.isspace() else c for c in nick)
    if not safe or safe[0] in _NOT_FIRST:
        safe = "_" + safe
    return safe


def hostmask(nick: str) -> str:
    """The ``nick!user@host`` prefix of *nick*'s lines: no address is shown."""
    return f"{nick}!chat@{SERVER_NAME}"


def channel_stream(channel: str) -> tuple[str, str] | None:
    """``(app, name)`` of the stream channel *channel* names, or ``None`` if none (403).

    ``#APP/NAME``, split at the last ``/``; every segment non-empty, neither
    ``.`` nor ``..``, without control characters, spaces or commas.
    """
    if not channel.startswith("#"):
        return None
    parts = channel[1:].split("/")
    if len(parts) < 2:
        return None
    for part in parts:
        if not part or part in (".", "..") or clean_text(part) != part:
            return None
        if any(c in _NOT_IN_CHANNEL for c in part):
            return None
    app, name = "/".join(parts[:-1]), parts[-1]
    if len(app) > MAX_NAME_LENGTH or len(name) > MAX_NAME_LENGTH:
        return None
    return app, name


def channel_name(app: str, name: str) -> str:
    """The channel of stream *app*/*name*."""
    return f"#{app}/{name}"


def stream_title(stream: Stream) -> str:
    """The stream's title: its ``onMetaData`` ``title`` if it has one
    (:attr:`Stream.title <streamserver.media.stream.Stream.title>`, as the page and
    the API show it), else its name."""
    return stream.title or stream.name


def stream_topic(stream: Stream) -> str:
    """The topic of *stream*'s channel: its title and whether it is live."""
    status = "live" if stream.publisher is not None else "waiting for the publisher"
    return f"{stream_title(stream)} | {status}"


def server_time(time_ms: int) -> str:
    """*time_ms* (Unix milliseconds) as IRCv3 ``server-time`` writes it, in UTC."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def chat_lines(message: ChatMessage, channel: str, *, tags: bool) -> bytes:
    """*message* as ``PRIVMSG`` lines to *channel*, each within :data:`MAX_LINE_BYTES`.

    A text too long for one line (a 500-character message of multi-byte
    characters) is cut at character boundaries into several ``PRIVMSG``\\ s.

    :param tags: put the ``@time=`` tag (``server-time``) in front of each line.
    """
    head = f":{hostmask(display_nick(message.nick))} PRIVMSG {channel} :".encode()
    tag = f"@time={server_time(message.time)} ".encode() if tags else b""
    room = max(MAX_LINE_BYTES - len(head) - 2, 64)
    lines = []
    text = message.text.encode()
    while True:
        piece = text[:room]
        if len(text) > room:
            # back up to the start of a UTF-8 character
            cut = room
            while cut > 0 and (text[cut] & 0xC0) == 0x80:
                cut -= 1
            piece = text[:cut]
        lines.append(b"%b%b%b\r\n" % (tag, head, piece))
        text = text[len(piece) :]
        if not text:
            return b"".join(lines)
