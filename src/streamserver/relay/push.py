"""Push relays: every stream published here, published upstream too.

``factory.pushes`` is a :class:`PushManager`, a
:class:`~streamserver.events.SessionObserver` of ``factory.events``: when a
local publish starts it asks each of its *sources* (:class:`PushSource`:
``targets(app, name) -> Deferred[list[RelayTarget]]``) where the stream goes --
the ``push`` rules of the stream's application are one (:class:`ConfigPushSource`;
``--push``, or ``push`` in ``--config``'s file, per app), the workers' local
origin and an ``--on-publish`` 3xx (:meth:`PushManager.push_to`) others -- and
starts one :class:`Push` per target; when the publish ends they stop.  A pull's
stream (``factory.pulls``) is no local publish: it is never pushed.

A :class:`Push` is a :class:`~streamserver.media.stream.Consumer` of the stream
(it never slows the publisher or the local viewers) with an
:class:`~streamserver.relay.upstream.Upstream` that publishes upstream and
reconnects with backoff.  Frames go out with the local stream's timestamps,
which the stream keeps continuous, so the upstream's timeline runs on across
our reconnects.  On each (re)connect it sends the cached ``onMetaData`` (as
``@setDataFrame``) and sequence headers, then waits for the next keyframe.

A slow upstream is under the drop policy's byte watermarks
(``--drop-low`` / ``--drop-high``, :class:`~streamserver.policy.PolicyLimits`),
keyframe-safe and never disconnected for lag: past ``drop_low`` queued bytes in
its transport, every audio and video frame is dropped until a keyframe finds
the queue back under ``drop_low`` (whole GOP tails go, the upstream resumes
with a decodable keyframe, audio with it); past ``drop_high`` keyframes wait
too.  Metadata and sequence headers are never dropped.  A stream without video
drops audio frames past ``drop_low`` alone.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.codec.flv import FrameKind
from streamserver.codec.messages import Message
from streamserver.events import PUBLISH, SessionEvent
from streamserver.policy import NEVER_DROPPED
from streamserver.relay.target import RelayRule, RelayTarget, parse_rule, parse_target
from streamserver.relay.upstream import Connector, Upstream
from streamserver.transport import TransportAdapter

if TYPE_CHECKING:
    from streamserver.client import RTMPClientProtocol
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Frame, Stream

__all__ = ["ConfigPushSource", "Push", "PushManager", "PushSource", "RulePushSource"]

_log = Logger()

#: AMF0 "@setDataFrame": a publisher sends metadata behind it.
_SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"


class PushSource(Protocol):
    """Says where a local publish is pushed."""

    def targets(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The upstreams *app*/*name* is published to (empty: none)."""
        ...


class RulePushSource:
    """Fixed push rules: every rule that matches the stream is one target."""

    def __init__(self, rules: list[RelayRule]) -> None:
        self.rules = rules

    def targets(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The targets of the rules matching *app*/*name*."""
        return defer.succeed([r.target for r in self.rules if r.matches(app, name)])


@functools.lru_cache(maxsize=256)
def _push_rules(values: tuple[str, ...]) -> tuple[RelayRule, ...]:
    """The parsed ``--push`` rules *values* (already checked by the option's parser)."""
    return tuple(parse_rule(value) for value in values)


class ConfigPushSource:
    """The ``push`` setting of the published stream's application, read at each publish.

    ``--push`` on the command line, ``push`` in ``--config``'s ``[server]`` table, an
    ``[app.NAME]`` or ``[app."*"]`` table: whatever
    :meth:`~streamserver.factory.RTMPServerFactory.settings_for` gives for the app,
    so a reload's new rules reach the next publish and never a running push.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        self._factory = factory

    def __repr__(self) -> str:
        return "<ConfigPushSource>"

    def rules_for(self, app: str) -> tuple[RelayRule, ...]:
        """*app*'s push rules, parsed."""
        return _push_rules(self._factory.settings_for(app).push)

    def targets(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """The targets of *app*'s push rules that match *app*/*name*."""
        return defer.succeed([r.target for r in self.rules_for(app) if r.matches(app, name)])


class Push:
    """One local stream published to one upstream target (a stream consumer).

    :ivar stream: the local stream.
    :ivar target: where it goes.
    :ivar upstream: the reconnecting client session.
    :ivar frames_sent: frames written upstream.
    :ivar frames_dropped: frames dropped for a slow upstream (or while down).
    :ivar bytes_sent: payload bytes written upstream.
    :ivar awaiting_keyframe: media resumes at the next keyframe.
    """

    def __init__(
        self,
        factory: RTMPServerFactory,
        stream: Stream,
        target: RelayTarget,
        *,
        connector: Connector | None = None,
    ) -> None:
        self.factory = factory
        self.stream = stream
        self.target = target
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_sent = 0
        self.awaiting_keyframe = True
        self._video_seen = stream.video_header is not None
        self._client: RTMPClientProtocol | None = None
        self._link: TransportAdapter | None = None
        self._stream_id = 0
        self.label = f"push {stream.app}/{stream.name} -> {target.for_name(stream.name)}"
        self.upstream = Upstream(
            factory.reactor,
            self.label,
            lambda: defer.succeed([target]),
            self,
            reconnect_seconds=factory.config.relay_reconnect_seconds,
            connector=connector,
            chunk_size=factory.config.chunk_size,
        )

    def __repr__(self) -> str:
        return f"<Push {self.label} {self.upstream.state}>"

    @property
    def url(self) -> str:
        """The upstream stream's URL."""
        return self.target.for_name(self.stream.name)

    def start(self) -> None:
        """Attach to the stream and connect."""
        self.stream.attach(self)
        self.upstream.start()

    def stop(self) -> None:
        """Detach and close the upstream session (idempotent)."""
        self.stream.detach(self)
        self.upstream.stop()
        self._client = self._link = None

    def stats(self) -> dict[str, Any]:
        """What the API shows of this push."""
        return {
            "url": self.url,
            "state": self.upstream.state,
            "attempts": self.upstream.attempts,
            "sessions": self.upstream.sessions,
            "frames_sent": self.frames_sent,
            "frames_dropped": self.frames_dropped,
            "bytes_sent": self.bytes_sent,
        }

    # --- the upstream session (UpstreamRole) --------------------------------------------

    def start_session(
        self, client: RTMPClientProtocol, target: RelayTarget, stream_id: int
    ) -> defer.Deferred[Any]:
        """``publish`` the stream's upstream name."""
        self._stream_id = stream_id
        return defer.ensureDeferred(client.publish(target.stream_name(self.stream.name), stream_id))

    def session_started(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        """Send metadata and sequence headers; media resumes at the next keyframe."""
        self._client = client
        self._link = TransportAdapter(client.transport)
        self.awaiting_keyframe = True
        stream = self.stream
        for frame in (stream.metadata, stream.video_header, stream.audio_header):
            if frame is not None:
                self._send(frame)

    def session_lost(self, target: RelayTarget) -> None:
        """The upstream went away; frames are dropped until it is back."""
        self._client = self._link = None

    # --- the stream (Consumer) -------------------------------------------------------

    def consume(self, frame: Frame) -> None:
        """Send *frame* upstream, unless the upstream is down or too slow (keyframe-safe)."""
        kind = frame.kind
        if frame.is_video and kind is not FrameKind.VIDEO_SEQUENCE_HEADER:
            self._video_seen = True
        if self._link is None:
            if kind not in NEVER_DROPPED:
                self.frames_dropped += 1
            return
        if kind in NEVER_DROPPED or self._admits(kind, frame.is_video):
            self._send(frame)
        else:
            self.frames_dropped += 1

    def _admits(self, kind: FrameKind, is_video: bool) -> bool:
        """Whether a media frame goes out now; the keyframe rule of a slow upstream."""
        assert self._link is not None
        queued = self._link.queued()
        limits = self.factory.policy.limits
        if not limits.enabled:
            return True
        if kind is FrameKind.KEYFRAME:
            self.awaiting_keyframe = queued > limits.drop_low
            return queued <= limits.drop_high and not self.awaiting_keyframe
        if not self._video_seen:
            return queued <= limits.drop_low  # audio only: no keyframe to wait for
        if queued > limits.drop_low:
            self.awaiting_keyframe = True
        return not self.awaiting_keyframe

    def _send(self, frame: Frame) -> None:
        client = self._client
        if client is None:
            return
        message = frame.message
        payload = message.payload
        if frame.kind is FrameKind.METADATA:
            payload = _SET_DATA_FRAME + payload
        client.send(Message(message.type_id, self._stream_id, message.timestamp, payload))
        self.frames_sent += 1
        self.bytes_sent += len(payload)

    def stream_published(self, stream: Stream) -> None:
        """A new publishing session: its headers come as frames."""

    def stream_unpublished(self, stream: Stream) -> None:
        """The publisher left; the manager stops us at the session's end."""

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        """A bug of ours: log it, close the upstream session."""
        _log.failure(
            "relay {relay} failed; stopping it",
            Failure(error, type(error), error.__traceback__),
            relay=self.label,
        )
        self.upstream.stop()


class PushManager:
    """``factory.pushes``: the pushes of every local publish, from its sources.

    :ivar sources: consulted in order on each publish; their targets add up.
    :ivar pushes: the running pushes, by stream.
    :ivar connector: how targets are connected (``None``: the factory's reactor's
        endpoints); tests connect in memory.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        self.factory = factory
        self.sources: list[PushSource] = []
        self.pushes: dict[Stream, list[Push]] = {}
        self.connector: Connector | None = None
        self._config_source = ConfigPushSource(factory)
        self.config_changed()

    def config_changed(self) -> None:
        """Ask the ``push`` settings on each publish while the server or an app has some."""
        factory = self.factory
        views = factory.app_views
        if factory.config.push or any(view.config.push for view in views.values()):
            self.add_source(self._config_source)
        else:
            self.remove_source(self._config_source)

    def add_source(self, source: PushSource) -> None:
        """Ask *source* too on every publish from now on (the manager observes publishes
        while it has a source)."""
        if source not in self.sources:
            self.sources.append(source)
        self.factory.events.add(self)

    def remove_source(self, source: PushSource) -> None:
        """Stop asking *source* (running pushes go on)."""
        if source in self.sources:
            self.sources.remove(source)
        if not self.sources:
            self.factory.events.remove(self)

    def of(self, stream: Stream) -> list[Push]:
        """The pushes of *stream*."""
        return list(self.pushes.get(stream, ()))

    def push_to(self, stream: Stream, target: RelayTarget) -> Push | None:
        """Push *stream* to *target* while it is published; ``None`` if it is already."""
        if stream.publisher is None:
            return None
        running = self.pushes.setdefault(stream, [])
        if any(push.target == target for push in running):
            return None
        push = Push(self.factory, stream, target, connector=self.connector)
        running.append(push)
        push.start()
        return push

    def redirect(self, stream: Stream, url: str) -> Push | None:
        """Push *stream* to an ``--on-publish`` 3xx's ``rtmp://`` Location while published.

        A Location that is no relay URL is logged and ignored (the publish goes on).
        """
        try:
            target = parse_target(url)
        except ValueError as error:
            _log.warn(
                "{stream}: ignoring the publish callback's Location {url}: {error}",
                stream=f"{stream.app}/{stream.name}",
                url=url,
                error=str(error),
            )
            return None
        return self.push_to(stream, target)

    def stop(self, stream: Stream) -> None:
        """Stop every push of *stream*."""
        for push in self.pushes.pop(stream, []):
            push.stop()

    def stop_all(self) -> None:
        """Stop every push (the server is stopping)."""
        for stream in list(self.pushes):
            self.stop(stream)

    # --- SessionObserver -----------------------------------------------------------

    def session_started(self, event: SessionEvent) -> None:
        """A local publish: ask every source where it goes."""
        if event.role != PUBLISH or not self.sources:
            return
        stream = event.stream
        asked = [
            defer.maybeDeferred(source.targets, stream.app, stream.name) for source in self.sources
        ]
        gathered = defer.gatherResults(asked, consumeErrors=True)
        gathered.addCallback(self._start, stream, event)
        gathered.addErrback(self._sources_failed, stream)

    def _start(self, answers: list[list[RelayTarget]], stream: Stream, event: SessionEvent) -> None:
        if stream.publisher is None:
            return  # the publish ended while the sources answered
        for targets in answers:
            for target in targets:
                self.push_to(stream, target)

    def _sources_failed(self, failure: Failure, stream: Stream) -> None:
        _log.failure(
            "push sources failed for {stream}", failure, stream=f"{stream.app}/{stream.name}"
        )

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        """The publish ended: its pushes stop."""
        if event.role == PUBLISH:
            self.stop(event.stream)
