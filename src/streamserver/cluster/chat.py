"""ClusterChat: chat rooms shared by every node (the factory's ``chat_bridge``).

A message posted on any node goes to Redis in one atomic step
(:meth:`~streamserver.cluster.store.Store.append`): its id from ``INCR
chat-id:APP/NAME``, kept in the capped stream ``XADD chat-history:APP/NAME
MAXLEN ~ N`` (N: ``--chat-history``) and published on ``chat:APP/NAME``.  Every
node with that room (a stream it holds) is subscribed to the channel and hands
each message to the room (``Stream.receive_chat``), the sender's own node
included, so every participant on every node sees the same ids in the same
order.  A room opened on a node loads the shared history (``XREVRANGE``); the
participants who joined before it came get it then.

With ``--cluster`` this is the one path of chat between nodes: chat carried
over a relay connection is not posted into a room that has a ``chat_bridge``
(the relay sees ``Stream.chat_bridge`` and leaves chat to Redis), so a message
arrives once.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.cluster.store import Keys, Store
from streamserver.media.rooms import ChatMessage, ChatParticipant

if TYPE_CHECKING:
    from streamserver.media.stream import Stream

__all__ = ["ClusterChat"]

_log = Logger()

#: Senders remembered for posts not back yet; a post comes back within a round trip,
#: so more are posts lost with a subscription, forgotten oldest first.
_MAX_SENDERS = 1000


class ClusterChat:
    """The :class:`~streamserver.media.stream.ChatBridge` of a cluster node.

    :ivar rooms: the rooms this node holds, by channel.
    :ivar failed: posts the store refused (lost; the sender was told "sent").
    """

    def __init__(self, store: Store, keys: Keys, node_id: str, history_count: int) -> None:
        self.store = store
        self.keys = keys
        self.node_id = node_id
        self.history_count = history_count
        self.rooms: dict[str, Stream] = {}
        self.failed = 0
        self._refs = itertools.count(1)
        self._senders: dict[str, ChatParticipant] = {}

    # --- ChatBridge -------------------------------------------------------------------

    def send_chat(
        self, stream: Stream, nick: str, text: str, time_ms: int, sender: ChatParticipant | None
    ) -> None:
        keys = self.keys
        ref = f"{self.node_id}/{next(self._refs)}"
        if sender is not None:
            self._senders[ref] = sender
            while len(self._senders) > _MAX_SENDERS:  # posts that never came back
                del self._senders[next(iter(self._senders))]
        fields = {"nick": nick, "text": text, "time": str(time_ms), "ref": ref}
        d = self.store.append(
            keys.chat_id(stream.app, stream.name),
            keys.chat_history(stream.app, stream.name),
            keys.chat_channel(stream.app, stream.name),
            fields,
            max(1, self.history_count),
        )
        d.addErrback(self._post_failed, stream, ref)

    def _post_failed(self, failure: Failure, stream: Stream, ref: str) -> None:
        self.failed += 1
        self._senders.pop(ref, None)
        _log.warn(
            "cluster chat post in {app}/{name} lost: {error}",
            app=stream.app,
            name=stream.name,
            error=failure.getErrorMessage(),
        )

    def room_opened(self, stream: Stream) -> None:
        channel = self.keys.chat_channel(stream.app, stream.name)
        self.rooms[channel] = stream
        d = self.store.subscribe(channel, lambda message: self.message_received(channel, message))
        d.addCallback(lambda _: self._load_history(stream))
        d.addErrback(self._log, "subscribing to", stream)

    def room_closed(self, stream: Stream) -> None:
        channel = self.keys.chat_channel(stream.app, stream.name)
        if self.rooms.get(channel) is stream:
            del self.rooms[channel]
            self.store.unsubscribe(channel).addErrback(self._log, "unsubscribing from", stream)

    # --- from the store ----------------------------------------------------------------

    def _load_history(self, stream: Stream) -> Any:
        if self.history_count <= 0:
            return None
        key = self.keys.chat_history(stream.app, stream.name)
        d = self.store.history(key, self.history_count)
        d.addCallback(self._history_loaded, stream)
        return d

    def _history_loaded(self, entries: list[dict[str, str]], stream: Stream) -> None:
        if self.rooms.get(self.keys.chat_channel(stream.app, stream.name)) is not stream:
            return
        messages = [m for m in map(_message, entries) if m is not None]
        stream.merge_chat_history(messages)

    def message_received(self, channel: str, text: str) -> None:
        """A message published on *channel*: to its room here (once)."""
        stream = self.rooms.get(channel)
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            return
        sender = self._senders.pop(str(entry.get("ref")), None)
        message = _message(entry)
        if stream is None or message is None:
            return
        stream.receive_chat(message, exclude=sender)

    def _log(self, failure: Failure, what: str, stream: Stream) -> None:
        _log.warn(
            "cluster chat: {what} {app}/{name} failed: {error}",
            what=what,
            app=stream.app,
            name=stream.name,
            error=failure.getErrorMessage(),
        )


def _message(entry: dict[str, Any]) -> ChatMessage | None:
    """The room message of a stored or published entry, ``None`` if malformed."""
    try:
        return ChatMessage(
            int(entry["id"]), str(entry["nick"]), str(entry["text"]), int(entry["time"])
        )
    except (KeyError, TypeError, ValueError):
        return None
