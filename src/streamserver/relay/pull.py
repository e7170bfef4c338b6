"""Pull relays: a play of a stream nobody publishes here pulls it from upstream.

``factory.pulls`` is a :class:`PullManager`.  The play paths (RTMP ``play``,
HTTP-FLV and WebSocket-FLV, an HLS segmenter being opened) call
:meth:`PullManager.demand` once their viewer waits on the stream; the factory's
``release_stream`` (every viewer, publisher and segmenter leaving) calls
:meth:`PullManager.stream_released`; a local publish calls
:meth:`PullManager.supersede` first.  Nothing else of the server knows pulls.

A stream with no local publisher and no pull gets one :class:`Pull` when a
play demands it and a *router* claims it.  Routers (:class:`PullRouter`:
``route(app, name) -> Deferred[list[RelayTarget]]``, failover order, empty:
not mine) are asked in order and the first non-empty answer wins -- on EVERY
(re)connect attempt, so a router that moves a stream's origin (the cluster's
Redis lookup) moves the pull with it.  The ``pull`` rules of the stream's
application are the static router, asked first (:class:`ConfigPullRouter`;
``--pull``, or ``pull`` in ``--config``'s file, per app); ``--pull-static
rtmp://HOST/APP/NAME`` keeps a pull of ``APP/NAME`` up from the start, viewers
or not.

A :class:`Pull` is the stream's publisher: one upstream ``play(name, -1000,
-1000)`` with a SetBufferLength, whose media is broadcast to every local
viewer (RTMP, HTTP-FLV, WebSocket-FLV, HLS) like a local publisher's.  It
publishes locally at the first media message and unpublishes when the upstream
says ``UnpublishNotify`` or the connection is lost: viewers stay, wait, and the
stream rebases the timestamps of the next session so they run on.  The upstream
is re-tried with backoff (:mod:`streamserver.relay.upstream`).

Chat over the relay connection (docs/chat.md, "Relays"): the upstream play seats
the pull in the origin's room, so the origin's messages arrive as
``onChatMessage`` and are posted into the local room (never sent back); a message
posted here is posted locally at once and sent upstream with ``sendChatMessage``,
its broadcast back from the origin recognised and skipped.

A pull ends ``--pull-idle-seconds`` after its stream is no longer wanted (no
viewer and no HLS segmenter), or at once when a local publisher arrives
(:meth:`PullManager.supersede`: viewers stay and follow the local publisher).
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.codec.messages import Message
from streamserver.relay.target import RelayRule, RelayTarget, parse_rule, parse_target
from streamserver.relay.upstream import Connector, Upstream

if TYPE_CHECKING:
    from streamserver.client import ReceivedChatMessage, RTMPClientProtocol
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.rooms import ChatMessage
    from streamserver.media.stream import Stream

__all__ = ["ConfigPullRouter", "Pull", "PullManager", "PullRouter", "RulePullRouter"]

_log = Logger()

#: The buffer a pull announces upstream (SetBufferLength), as nginx-rtmp's relay.
_BUFFER_MS = 1000


class PullRouter(Protocol):
    """Says where a stream nobody publishes here can be pulled from."""

    def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The upstreams of *app*/*name* in failover order; empty: not this router's."""
        ...


class RulePullRouter:
    """Fixed pull rules: every matching rule's target, in the order given (failover)."""

    def __init__(self, rules: list[RelayRule]) -> None:
        self.rules = rules

    def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The targets of the rules matching *app*/*name*."""
        return defer.succeed([r.target for r in self.rules if r.matches(app, name)])


@functools.lru_cache(maxsize=256)
def _pull_rules(values: tuple[str, ...]) -> tuple[RelayRule, ...]:
    """The parsed ``--pull`` rules *values* (already checked by the option's parser)."""
    return tuple(parse_rule(value, with_name=False) for value in values)


class ConfigPullRouter:
    """The ``pull`` setting of the played stream's application, read at each attempt.

    As :class:`~streamserver.relay.push.ConfigPushSource` for pushes: the rules of
    :meth:`~streamserver.factory.RTMPServerFactory.settings_for` the app, so a
    reload's new rules reach the next (re)connect attempt.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        self._factory = factory

    def __repr__(self) -> str:
        return "<ConfigPullRouter>"

    def rules_for(self, app: str) -> tuple[RelayRule, ...]:
        """*app*'s pull rules, parsed, in order."""
        return _pull_rules(self._factory.settings_for(app).pull)

    def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The targets of *app*'s pull rules that match *app*/*name*, in order."""
        return defer.succeed([r.target for r in self.rules_for(app) if r.matches(app, name)])


class Pull:
    """One upstream play feeding a local stream, as its publisher.

    :ivar stream: the local stream.
    :ivar upstream: the reconnecting client session.
    :ivar permanent: kept up without viewers (``--pull-static``).
    :ivar frames_in: media messages received from upstream.
    :ivar idle_since: when the stream stopped being wanted, or ``None``.
    """

    def __init__(
        self,
        manager: PullManager,
        stream: Stream,
        *,
        permanent: bool = False,
        fixed: list[RelayTarget] | None = None,
    ) -> None:
        factory = manager.factory
        self.manager = manager
        self.stream = stream
        self.permanent = permanent
        self.frames_in = 0
        self.idle_since: float | None = None
        self.idle_call: IDelayedCall | None = None
        self._fixed = fixed
        self._client: RTMPClientProtocol | None = None
        self._play_stream_id = 0
        #: the highest id of the origin's room posted here, and that of the last session
        self._chat_seen = 0
        self._chat_floor = 0
        #: texts sent upstream whose broadcast back has not arrived yet, oldest first
        self._chat_pending: deque[str] = deque()
        self._published = False
        self.label = f"pull {stream.app}/{stream.name}"
        self.upstream = Upstream(
            factory.reactor,
            self.label,
            self._resolve,
            self,
            reconnect_seconds=factory.config.relay_reconnect_seconds,
            connector=manager.connector,
            chunk_size=factory.config.chunk_size,
        )

    def __repr__(self) -> str:
        return f"<Pull {self.label} {self.upstream.state}>"

    @property
    def peer(self) -> str:
        """How the stream's publisher shows (the API, logs): the upstream's URL."""
        target = self.upstream.target
        return f"relay {target.for_name(self.stream.name)}" if target else "relay"

    @property
    def client(self) -> RTMPClientProtocol | None:
        """The upstream client while the session is up."""
        return self._client

    def _resolve(self) -> defer.Deferred[list[RelayTarget]]:
        if self._fixed is not None:
            return defer.succeed(list(self._fixed))
        return self.manager.route(self.stream.app, self.stream.name)

    def start(self) -> None:
        """Connect."""
        self.upstream.start()

    def stop(self) -> None:
        """Close the upstream session and unpublish the local stream (idempotent)."""
        if self.idle_call is not None and self.idle_call.active():
            self.idle_call.cancel()
        self.idle_call = None
        self.upstream.stop()
        self._client = None
        self._drop_chat_relay()
        self._unpublish()

    def stats(self) -> dict[str, Any]:
        """What the API shows of this pull."""
        target = self.upstream.target
        return {
            "url": target.for_name(self.stream.name) if target else None,
            "state": self.upstream.state,
            "attempts": self.upstream.attempts,
            "sessions": self.upstream.sessions,
            "frames_in": self.frames_in,
            "permanent": self.permanent,
        }

    # --- the upstream session (UpstreamRole) -------------------------------------------

    def start_session(
        self, client: RTMPClientProtocol, target: RelayTarget, stream_id: int
    ) -> defer.Deferred[Any]:
        """``play(name, -1000, -1000)`` + SetBufferLength: live only, until its end."""
        client.on_media = self._media_received
        client.on_status = self._status_received
        client.on_chat = self._chat_received
        self._play_stream_id = stream_id
        name = target.stream_name(self.stream.name)
        return defer.ensureDeferred(
            client.play(name, stream_id, start=-1000.0, duration=-1000.0, buffer_ms=_BUFFER_MS)
        )

    def session_started(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        """The upstream plays; the stream is published locally with its first media.

        The play seats us in the origin's chat room: its messages (the history
        first) are posted here, and ours go there (:meth:`chat_posted`).
        """
        self._client = client
        self._chat_floor = self._chat_seen
        self._chat_pending.clear()
        self.stream.chat_relay = self

    def session_lost(self, target: RelayTarget) -> None:
        """The upstream went away: viewers stay and wait for the next session."""
        self._client = None
        self._drop_chat_relay()
        self._unpublish()

    # --- chat over the relay connection -------------------------------------------------

    def chat_posted(self, message: ChatMessage) -> None:
        """A local participant posted *message*: send it to the origin's room."""
        client = self._client
        if client is None:
            return
        self._chat_pending.append(message.text)
        sent = client.send_chat(message.text, self._play_stream_id)
        sent.addErrback(self._chat_refused, message)

    def _chat_refused(self, failure: Failure, message: ChatMessage) -> None:
        if message.text in self._chat_pending:
            self._chat_pending.remove(message.text)
        _log.info(
            "{relay}: the origin refused chat message {id}: {error}",
            relay=self.label,
            id=message.id,
            error=failure.getErrorMessage(),
        )

    def _chat_received(self, chat: ReceivedChatMessage) -> None:
        """An ``onChatMessage`` of the origin's room: post it here, unless it is ours or
        history already posted."""
        if chat.stream_id != self._play_stream_id or chat.id <= self._chat_floor:
            return
        if self.stream.chat_bridge is not None:
            return  # --cluster: the room gets the origin's messages over Redis instead
        self._chat_seen = max(self._chat_seen, chat.id)
        if self._chat_pending and self._chat_pending[0] == chat.text:
            self._chat_pending.popleft()  # our own, already posted here
            return
        self.stream.relay_chat(chat.nick, chat.text, int(chat.time))

    def _drop_chat_relay(self) -> None:
        if self.stream.chat_relay is self:
            self.stream.chat_relay = None

    def _media_received(self, message: Message) -> None:
        stream = self.stream
        if not self._published:
            if stream.publisher is not None or self.upstream.stopped:
                return
            stream.publish(self)
            self._published = True
            _log.info(
                "{app}/{name} published by {peer}", app=stream.app, name=stream.name, peer=self.peer
            )
        self.frames_in += 1
        stream.broadcast(message)

    def _status_received(self, info: dict[str, Any]) -> None:
        if info.get("code") == "NetStream.Play.UnpublishNotify":
            self._unpublish()

    def _unpublish(self) -> None:
        if not self._published:
            return
        self._published = False
        stream = self.stream
        stream.unpublish(self)
        _log.info(
            "{app}/{name} unpublished by {peer}", app=stream.app, name=stream.name, peer=self.peer
        )


class PullManager:
    """``factory.pulls``: one :class:`Pull` per stream played here and published elsewhere.

    :ivar routers: asked in order on every attempt; the first non-empty answer wins.
    :ivar pulls: the running pulls, by ``(app, name)``.
    :ivar connector: how targets are connected (``None``: the factory's reactor's
        endpoints); tests connect in memory.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        self.factory = factory
        self.routers: list[PullRouter] = []
        self.pulls: dict[tuple[str, str], Pull] = {}
        self.connector: Connector | None = None
        config = factory.config
        self._config_router = ConfigPullRouter(factory)
        self.config_changed()
        self._static = [parse_target(url, with_name=True) for url in config.pull_static]

    def config_changed(self) -> None:
        """Ask the ``pull`` settings first while the server or an app has some."""
        factory = self.factory
        views = factory.app_views
        if factory.config.pull or any(view.config.pull for view in views.values()):
            if self._config_router not in self.routers:
                self.routers.insert(0, self._config_router)
        else:
            self.remove_router(self._config_router)

    def add_router(self, router: PullRouter) -> None:
        """Ask *router* too (after those added before) from now on."""
        if router not in self.routers:
            self.routers.append(router)

    def remove_router(self, router: PullRouter) -> None:
        """Stop asking *router*."""
        if router in self.routers:
            self.routers.remove(router)

    def of(self, stream: Stream) -> Pull | None:
        """*stream*'s pull, or ``None``."""
        pull = self.pulls.get((stream.app, stream.name))
        return pull if pull is not None and pull.stream is stream else None

    def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The first non-empty answer of the routers, in order (empty: nobody's)."""
        return defer.ensureDeferred(self._route(app, name))

    async def _route(self, app: str, name: str) -> list[RelayTarget]:
        for router in tuple(self.routers):
            try:
                targets = await defer.maybeDeferred(router.route, app, name)
            except Exception:
                _log.failure(
                    "pull router {router} failed for {stream}",
                    Failure(),
                    router=router,
                    stream=f"{app}/{name}",
                )
                continue
            if targets:
                return list(targets)
        return []

    def start(self) -> None:
        """Start the ``--pull-static`` pulls (the factory starts)."""
        for target in self._static:
            assert target.name is not None
            stream = self.factory.open_stream(target.app, target.name, "NetStream.Play.Rejected")
            self.pull(stream, permanent=True, targets=[target])

    def pull(
        self, stream: Stream, *, permanent: bool = False, targets: list[RelayTarget] | None = None
    ) -> Pull | None:
        """Start pulling *stream* (from *targets*, else the routers); ``None`` if it has a pull
        or a publisher already."""
        existing = self.of(stream)
        if existing is not None:
            self._cancel_idle(existing)
            return None
        if stream.publisher is not None:
            return None
        old = self.pulls.pop((stream.app, stream.name), None)
        if old is not None:
            old.stop()  # a stream forgotten and made again
        pull = Pull(self, stream, permanent=permanent, fixed=targets)
        self.pulls[(stream.app, stream.name)] = pull
        pull.start()
        return pull

    def demand(self, stream: Stream, redirect: str | None = None) -> None:
        """A viewer waits on *stream*: pull it if nobody publishes it and a router may have it.

        :param redirect: an ``--on-play`` 3xx's ``rtmp://`` Location: pull from there
            (kept for the pull's life) instead of asking the routers.
        """
        if redirect is not None and self.of(stream) is None:
            try:
                target = parse_target(redirect)
            except ValueError as error:
                _log.warn(
                    "{stream}: ignoring the play callback's Location {url}: {error}",
                    stream=f"{stream.app}/{stream.name}",
                    url=redirect,
                    error=str(error),
                )
            else:
                self.pull(stream, targets=[target])
                return
        if self.routers or self.of(stream) is not None:
            self.pull(stream)

    def wanted(self, stream: Stream) -> bool:
        """Whether *stream* has a viewer or an HLS segmenter."""
        return stream.subscriber_count > 0 or self.factory.hls.get(stream) is not None

    def stream_released(self, stream: Stream) -> None:
        """Something left *stream*: start the idle wait of its pull, or pull it again.

        A stream still wanted that lost its local publisher is pulled (the routers
        may have it elsewhere).
        """
        pull = self.of(stream)
        if pull is None:
            if stream.publisher is None and self.routers and self.wanted(stream):
                self.pull(stream)
            return
        if pull.permanent or self.wanted(stream):
            self._cancel_idle(pull)
            return
        if pull.idle_call is None:
            idle = self.factory.config.pull_idle_seconds
            pull.idle_since = self.factory.seconds()
            pull.idle_call = self.factory.reactor.callLater(idle, self._idle_over, pull)

    def _cancel_idle(self, pull: Pull) -> None:
        if pull.idle_call is not None and pull.idle_call.active():
            pull.idle_call.cancel()
        pull.idle_call = None
        pull.idle_since = None

    def _idle_over(self, pull: Pull) -> None:
        pull.idle_call = None
        if self.of(pull.stream) is not pull or self.wanted(pull.stream):
            pull.idle_since = None
            return
        _log.info(
            "{relay}: no viewer for {idle:g} s; closing it",
            relay=pull.label,
            idle=self.factory.config.pull_idle_seconds,
        )
        self.close(pull.stream)

    def supersede(self, stream: Stream) -> None:
        """A local publisher is about to publish *stream*: its pull ends, viewers stay."""
        pull = self.of(stream)
        if pull is None:
            return
        _log.info("{relay}: superseded by a local publisher", relay=pull.label)
        del self.pulls[(stream.app, stream.name)]
        pull.stop()

    def close(self, stream: Stream) -> None:
        """End *stream*'s pull (the stream is released)."""
        pull = self.of(stream)
        if pull is None:
            return
        del self.pulls[(stream.app, stream.name)]
        pull.stop()
        self.factory.release_stream(stream)

    def stop_all(self) -> None:
        """End every pull (the server is stopping)."""
        for pull in list(self.pulls.values()):
            del self.pulls[(pull.stream.app, pull.stream.name)]
            pull.stop()
