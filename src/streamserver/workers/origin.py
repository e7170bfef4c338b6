"""A worker's links to the origin: every publish pushed there, every play
without a local publisher pulled from there.

This is a minimal stand-in for the relay package (issue 15, part 1), built
against the interface it announced -- a push per publish, one shared pull per
stream on demand, closed :data:`PULL_IDLE_SECONDS` after its last viewer --
and limited to what one machine's workers need: the origin is a Unix socket
(:attr:`Role.origin_rtmp_path <streamserver.workers.roles.Role.origin_rtmp_path>`)
that cannot be slow or far.  It does not carry chat (each worker keeps its own
room) and does not reconnect a push: a publisher whose push fails is served by
its own worker only, and a pull that fails is retried on the next play.

:class:`OriginLink` observes the factory's session events
(:class:`~streamserver.events.SessionEvents`):

- a publish: a :class:`_Push` attached to the stream as a
  :class:`~streamserver.media.stream.Consumer` (it is fed every frame, never
  dropped), publishing the same ``APP/NAME`` at the origin;
- a play of a stream without a publisher: a :class:`_Pull` playing
  ``APP/NAME`` at the origin and publishing what arrives into the local stream,
  shared by every local viewer (RTMP, HTTP-FLV, HLS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.client import RTMPClientProtocol
from streamserver.codec.messages import Message
from streamserver.events import PLAY, PUBLISH, SessionEvent

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Frame, Stream
    from streamserver.workers.roles import Role

__all__ = ["PULL_IDLE_SECONDS", "RELAY_PEER", "OriginLink", "install_origin_link"]

_log = Logger()

#: Seconds a pull stays up after its last local viewer left (the relay's
#: ``--pull-idle-seconds`` default): a viewer reloading its page finds it up.
PULL_IDLE_SECONDS = 10.0

#: The publisher's address a pulled stream shows (the API, the logs): the origin.
RELAY_PEER = "origin"

#: Frames a push holds while its connection to the origin is being made; past it
#: the oldest go (the origin starts from the next keyframe anyway).
PUSH_BACKLOG_FRAMES = 1000


async def _open(reactor: Any, role: Role, app: str) -> RTMPClientProtocol:
    """An RTMP connection to the origin, ``connect``-ed to *app*."""
    endpoint = UNIXClientEndpoint(reactor, str(role.origin_rtmp_path), timeout=5)
    client = RTMPClientProtocol(keep_media=False)
    await connectProtocol(endpoint, client)
    await client.connect(app, f"rtmp://origin/{app}")
    return client


class _Push:
    """A local publish, published at the origin too (a stream's consumer)."""

    def __init__(self, link: OriginLink, stream: Stream) -> None:
        self.link = link
        self.stream = stream
        self.client: RTMPClientProtocol | None = None
        self.stream_id = 0
        self.closed = False
        self._backlog: list[Frame] = list(stream.attach(self))
        defer.ensureDeferred(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        client = await _open(self.link.reactor, self.link.role, self.stream.app)
        if self.closed:
            client.close()
            return
        self.stream_id = await client.create_stream()
        await client.publish(self.stream.name, self.stream_id)
        self.client = client
        backlog, self._backlog = self._backlog, []
        for frame in backlog:
            self.consume(frame)
        _log.info("{stream} pushed to the origin", stream=self.stream)

    def _failed(self, failure: Failure) -> None:
        _log.warn("push of {stream} to the origin failed: {error}", stream=self.stream,
                  error=failure.getErrorMessage())  # fmt: skip
        self.close()

    def consume(self, frame: Frame) -> None:
        if self.client is None:
            self._backlog.append(frame)
            del self._backlog[:-PUSH_BACKLOG_FRAMES]
            return
        message = frame.message
        self.client.send(
            Message(message.type_id, self.stream_id, message.timestamp, message.payload)
        )

    def stream_published(self, stream: Stream) -> None:
        """Nothing: a push lives for one publish."""

    def stream_unpublished(self, stream: Stream) -> None:
        self.close()

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        _log.error("push of {stream} failed: {error!r}", stream=stream, error=error)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.detach(self)
        if self.client is not None:
            self.client.close()
        self.link.pushes.pop(self.stream, None)


class _Pull:
    """The origin's ``APP/NAME`` played once, published into the local stream."""

    def __init__(self, link: OriginLink, stream: Stream) -> None:
        self.link = link
        self.stream = stream
        self.client: RTMPClientProtocol | None = None
        self.closed = False
        self.publishing = False
        self._idle: Any = None
        defer.ensureDeferred(self._start()).addErrback(self._failed)

    @property
    def peer(self) -> str:
        """How the API and the logs name this publisher."""
        return RELAY_PEER

    async def _start(self) -> None:
        client = await _open(self.link.reactor, self.link.role, self.stream.app)
        if self.closed:
            client.close()
            return
        self.client = client
        client.on_media = self._received
        client.disconnected.addCallback(lambda _: self.close())
        stream_id = await client.create_stream()
        await client.play(self.stream.name, stream_id)
        _log.info("{stream} pulled from the origin", stream=self.stream)

    def _received(self, message: Message) -> None:
        if self.closed:
            return
        if not self.publishing:
            if self.stream.publisher is not None:
                # A local publish came first: it supersedes the pull.
                self.close()
                return
            self.stream.publish(self)
            self.publishing = True
        self.stream.broadcast(message)

    def _failed(self, failure: Failure) -> None:
        _log.warn("pull of {stream} from the origin failed: {error}", stream=self.stream,
                  error=failure.getErrorMessage())  # fmt: skip
        self.close()

    def viewers_changed(self) -> None:
        """A viewer came or left: close after the link's idle seconds without any."""
        if self.stream.subscriber_count or self.stream.consumers:
            if self._idle is not None and self._idle.active():
                self._idle.cancel()
            return
        if self._idle is None or not self._idle.active():
            self._idle = self.link.reactor.callLater(self.link.idle, self._idle_check)

    def _idle_check(self) -> None:
        if not (self.stream.subscriber_count or self.stream.consumers):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.publishing:
            self.stream.unpublish(self)
        if self.client is not None:
            self.client.close()
        self.link.pulls.pop(self.stream, None)
        self.link.factory.release_stream(self.stream)


class OriginLink:
    """Pushes and pulls of a worker (a session observer of its factory).

    :ivar pushes: the push of each locally published stream.
    :ivar pulls: the pull of each stream played here without a local publisher.
    :ivar idle: seconds a pull stays up without viewers.
    """

    def __init__(
        self, role: Role, factory: RTMPServerFactory, reactor: Any, *,
        idle: float = PULL_IDLE_SECONDS,
    ) -> None:  # fmt: skip
        self.idle = idle
        self.role = role
        self.factory = factory
        self.reactor = reactor
        self.pushes: dict[Stream, _Push] = {}
        self.pulls: dict[Stream, _Pull] = {}

    def session_started(self, event: SessionEvent) -> None:
        stream = event.stream
        if event.role == PUBLISH:
            pull = self.pulls.get(stream)
            if pull is not None and not pull.publishing:
                pull.close()
            if stream not in self.pushes:
                self.pushes[stream] = _Push(self, stream)
        elif event.role == PLAY:
            pull = self.pulls.get(stream)
            if pull is not None:
                pull.viewers_changed()
            elif stream.publisher is None:
                self.pulls[stream] = _Pull(self, stream)

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        if event.role == PLAY:
            pull = self.pulls.get(event.stream)
            if pull is not None:
                pull.viewers_changed()


def install_origin_link(role: Role, factory: RTMPServerFactory, reactor: Any) -> OriginLink:
    """Observe *factory*'s sessions with an :class:`OriginLink` to *role*'s origin."""
    link = OriginLink(role, factory, reactor)
    factory.events.add(link)
    return link
