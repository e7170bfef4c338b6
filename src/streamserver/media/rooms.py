"""Chat rooms: one per stream, with participants, a bounded history and muted nicks.

Plain Python, no Twisted.  A :class:`ChatRoom` is ``Stream.chat``: its
participants, a history bounded by count and bytes, the next message id and
the muted nicks.  A chat message is encoded once; each broadcast serializes it
once per group of participants sharing a ``fanout_key`` (RTMP: chunk size and
message stream id; a WebSocket or IRC participant: its wire), like media.  The
RTMP wire contract is in ``docs/chat.md``.

The rules every way in to a room shares (RTMP ``sendChatMessage``, the chat
WebSocket, IRC) are here too, so a message is accepted or refused the same
whatever the sender speaks: :func:`clean_text`, :func:`clean_nick`,
:class:`ChatRateLimit` and :func:`accept_message` (the refusals in the order
``docs/chat.md`` lists them).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Any, Protocol

from streamserver.codec import amf0
from streamserver.codec.chunk import encode_message
from streamserver.codec.messages import CSID_DATA, Message, MessageType
from streamserver.errors import (
    ChatEmptyError,
    ChatMutedError,
    ChatRateLimitedError,
    ChatTooLongError,
)

#: Default number of chat messages a room keeps for late joiners.
DEFAULT_CHAT_HISTORY = 50

#: Default bound on the encoded size of a room's history.  A joiner gets the
#: whole history in one burst; 64 KiB stays far below the default drop_low
#: watermark (192 KiB), so joining a room never tips a new viewer into dropping
#: frames, and still holds 50 messages of the default 500 characters unless they
#: are mostly multi-byte characters.
DEFAULT_CHAT_HISTORY_BYTES = 64 * 1024

#: Longest nick, in characters, after trimming.
MAX_NICK_LENGTH = 32

#: Control characters (Unicode category Cc: C0, DEL, C1) are removed; the ones
#: that are whitespace (tab, line breaks) become a space so words stay apart.
_CONTROL_TABLE: dict[int, str | None] = dict.fromkeys(
    [*range(0x20), 0x7F, *range(0x80, 0xA0)], None
)
_CONTROL_TABLE.update(dict.fromkeys(map(ord, "\t\n\v\f\r"), " "))


def clean_text(text: str) -> str:
    """*text* without control characters and surrounding whitespace."""
    return text.translate(_CONTROL_TABLE).strip()


def clean_nick(value: Any) -> str:
    """A nick from *value*: cleaned, trimmed, at most :data:`MAX_NICK_LENGTH` characters.

    :returns: the nick, or ``""`` when *value* is not a string or has nothing left.
    """
    if not isinstance(value, str):
        return ""
    return clean_text(value)[:MAX_NICK_LENGTH].strip()


class ChatMessage:
    """One chat message of a room, encoded once as its ``onChatMessage`` payload.

    :ivar id: the message's id, increasing per room from 1.
    :ivar nick: the sender's nick.
    :ivar text: the text, already cleaned.
    :ivar time: when it was sent, in milliseconds since the Unix epoch.
    :ivar payload: the AMF0 body: ``"onChatMessage"`` and one object with the
        four fields above.
    """

    __slots__ = ("id", "nick", "payload", "text", "time")

    def __init__(self, id: int, nick: str, text: str, time: int) -> None:
        self.id = id
        self.nick = nick
        self.text = text
        self.time = time
        self.payload = amf0.encode(
            "onChatMessage",
            {"id": float(id), "nick": nick, "text": text, "time": float(time)},
        )

    def __repr__(self) -> str:
        return f"<ChatMessage {self.id} {self.nick}: {self.text!r:.40}>"

    @property
    def size(self) -> int:
        """The payload's size in bytes (what the history's byte bound counts)."""
        return len(self.payload)

    def wire(self, chunk_size: int, stream_id: int, timestamp: int) -> bytes:
        """The message as a data message (type 18) in chunk bytes, fmt 0 first header.

        Sent on the data chunk stream, like relayed metadata: every write is a
        whole message with a full header, so it never shares header state with
        the connection's command chunk streams.
        """
        message = Message(MessageType.DATA_AMF0, stream_id, timestamp, self.payload)
        return encode_message(message, CSID_DATA, chunk_size)


class ChatParticipant(Protocol):
    """What a :class:`ChatRoom` needs of a participant (a seat of a connection)."""

    @property
    def fanout_key(self) -> Hashable:
        """Participants with equal keys get the same bytes for a message.

        An RTMP seat's is (outgoing chunk size, message stream id); a WebSocket
        or IRC participant's names its wire.
        """
        ...

    def encode_chat(self, message: ChatMessage, timestamp: int) -> bytes:
        """*message* as this participant's wire bytes (once per group of equal keys).

        :param timestamp: the stream's newest media timestamp (RTMP's message
            timestamp), 0 before any media.
        """
        ...

    def deliver_chat(self, data: bytes) -> None:
        """Write one chat message's bytes *data* (from :meth:`encode_chat` of its group)."""
        ...


class ChatRateLimit:
    """A sliding window: at most *count* accepted messages in any *window* seconds.

    One per sending connection (RTMP, WebSocket, IRC): the limit is the
    connection's over every room it talks in.
    """

    __slots__ = ("_times", "count", "window")

    def __init__(self, count: int, window: float) -> None:
        self.count = count
        self.window = window
        self._times: deque[float] = deque()

    def check(self, now: float) -> None:
        """Refuse a message at *now* if the window is full.

        :raises ChatRateLimitedError: *count* messages were accepted in the last
            *window* seconds.
        """
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.count:
            raise ChatRateLimitedError(f"more than {self.count} messages in {self.window:g} s")

    def record(self, now: float) -> None:
        """Count a message accepted at *now*."""
        self._times.append(now)


def accept_message(
    room: ChatRoom, nick: str, raw: Any, *, max_length: int, rate: ChatRateLimit, now: float
) -> str:
    """The cleaned text of *raw* from *nick* if *room* takes it, counted by *rate*.

    The checks run in the order of ``docs/chat.md``'s table (after the sender's
    own ``Chat.NotInRoom``); a refused message is not counted.

    :raises ChatMutedError: *nick* is muted in *room*.
    :raises ChatEmptyError: *raw* is no string, or nothing is left once cleaned.
    :raises ChatTooLongError: more than *max_length* characters once cleaned.
    :raises ChatRateLimitedError: *rate*'s window is full.
    """
    if room.is_muted(nick):
        raise ChatMutedError(f"{nick} is muted")
    text = clean_text(raw) if isinstance(raw, str) else ""
    if not text:
        raise ChatEmptyError("no text")
    if len(text) > max_length:
        raise ChatTooLongError(f"longer than {max_length} characters")
    rate.check(now)
    rate.record(now)
    return text


class ChatRoom:
    """A stream's chat room: participants, bounded history, muted nicks.

    :ivar participants: the participants, in joining order.
    :ivar history: the last messages, oldest first, bounded by
        :attr:`history_count` messages and :attr:`history_max_bytes` bytes.
    :ivar history_bytes: payload bytes held in :attr:`history`.
    :ivar next_id: the id the next message gets.
    :ivar muted: the muted nicks, casefolded.
    :ivar messages_posted: messages posted since the room was created.
    """

    def __init__(
        self,
        *,
        history_count: int = DEFAULT_CHAT_HISTORY,
        history_bytes: int = DEFAULT_CHAT_HISTORY_BYTES,
    ) -> None:
        self.history_count = history_count
        self.history_max_bytes = history_bytes
        self.participants: dict[ChatParticipant, None] = {}
        self.history: deque[ChatMessage] = deque()
        self.history_bytes = 0
        self.next_id = 1
        self.muted: set[str] = set()
        self.messages_posted = 0

    def __repr__(self) -> str:
        return f"<ChatRoom participants={len(self.participants)} history={len(self.history)}>"

    # --- membership ------------------------------------------------------------

    def join(self, participant: ChatParticipant) -> list[ChatMessage]:
        """Add *participant*; return the history it should get first, oldest first."""
        self.participants[participant] = None
        return list(self.history)

    def leave(self, participant: ChatParticipant) -> None:
        """Remove *participant* (no error if it is not in the room)."""
        self.participants.pop(participant, None)

    # --- moderation --------------------------------------------------------------

    def is_muted(self, nick: str) -> bool:
        """Whether *nick* is muted (nicks compare casefolded)."""
        return nick.casefold() in self.muted

    def mute(self, nick: str) -> bool:
        """Mute *nick*; return whether it was not muted before."""
        key = nick.casefold()
        if key in self.muted:
            return False
        self.muted.add(key)
        return True

    def unmute(self, nick: str) -> bool:
        """Unmute *nick*; return whether it was muted."""
        key = nick.casefold()
        if key not in self.muted:
            return False
        self.muted.discard(key)
        return True

    def clear_history(self) -> int:
        """Forget the history; return how many messages were dropped.

        Ids keep increasing: a message id is never reused in a room.
        """
        count = len(self.history)
        self.history.clear()
        self.history_bytes = 0
        return count

    # --- messages ----------------------------------------------------------------

    def post(self, nick: str, text: str, time_ms: int) -> ChatMessage:
        """Record a message from *nick*, keep it in the history, and return it."""
        message = ChatMessage(self.next_id, nick, text, time_ms)
        self.accept(message)
        return message

    def accept(self, message: ChatMessage) -> bool:
        """Record *message*, whose id was given elsewhere (a cluster's shared counter).

        :returns: ``False`` for a message older than the room's newest (a repeat),
            which is not recorded.
        """
        if message.id < self.next_id:
            return False
        self.next_id = message.id + 1
        self.messages_posted += 1
        if self.history_count > 0 and message.size <= self.history_max_bytes:
            self.history.append(message)
            self.history_bytes += message.size
            self._bound_history()
        return True

    def merge_history(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """Put *messages* (oldest first; a cluster's shared history) before the room's own.

        Only those older than the room's oldest are kept (the rest it has).
        :returns: the messages added, oldest first, for the participants already in.
        """
        oldest = self.history[0].id if self.history else math.inf
        older = [m for m in messages if m.id < oldest][-self.history_count :]
        if self.history_count <= 0 or not older:
            return []
        if not self.history:
            self.next_id = max(self.next_id, older[-1].id + 1)
        for message in reversed(older):
            self.history.appendleft(message)
            self.history_bytes += message.size
        self._bound_history()
        kept = {id(m) for m in self.history}
        return [m for m in older if id(m) in kept]

    def _bound_history(self) -> None:
        while len(self.history) > self.history_count or self.history_bytes > self.history_max_bytes:
            self.history_bytes -= self.history.popleft().size

    def broadcast(
        self, message: ChatMessage, timestamp: int, exclude: ChatParticipant | None = None
    ) -> int:
        """Send *message* to every participant but *exclude* (its IRC sender, which
        IRC does not echo); return how many it was written to.

        The message is serialized once per group of participants sharing a
        ``fanout_key`` (by the group's first participant), and the same ``bytes``
        object is handed to each participant of the group.
        """
        groups: dict[Hashable, list[ChatParticipant]] = {}
        for participant in tuple(self.participants):
            if participant is exclude:
                continue
            groups.setdefault(participant.fanout_key, []).append(participant)
        for group in groups.values():
            data = group[0].encode_chat(message, timestamp)
            for participant in group:
                participant.deliver_chat(data)
        return sum(len(group) for group in groups.values())
