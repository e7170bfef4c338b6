"""HTTP-FLV and WebSocket-FLV: a live stream played by a browser (mpegts.js), ffmpeg or VLC.

``GET /APP/NAME.flv`` answers with the stream as one long FLV response: the FLV
header, whose audio and video flags say which tracks the stream really has
(mpegts.js waits forever for a track the header promises), then ``onMetaData``,
the sequence headers, the cached GOP from its keyframe, then the live tags.  The
same request with ``Upgrade: websocket`` gets the same bytes as binary WebSocket
messages, one tag per message (``twisted.web.websocket``).  The end of the
publisher's session ends the response (the chunked body's last chunk, or a
WebSocket close 1000); a request for a stream nobody publishes waits up to
``--http-play-wait`` seconds for its publisher, then gets a 404.

Each request is a :class:`FlvSession`: one more :class:`~streamserver.factory.Connection`
of the factory (counted by the connection limits, listed by the console and the
API, closed by the shutdown) and the owner of one
:class:`~streamserver.media.viewer.Viewer`.  The viewer has no gate: it asks the
drop policy directly, exactly as an RTMP viewer's chain does, so a browser on a
thin link gets fewer frames resuming at keyframes, and one that stops reading
is closed after ``--stall-timeout``.  Frames are written to the TCP transport
under the HTTP channel through the session's
:class:`~streamserver.transport.TransportAdapter`, pre-framed by the group's
:class:`FlvFraming` (HTTP chunk, WebSocket frame or nothing), so one
serialization serves every viewer of a group and the eager send applies as for
RTMP.  What goes through Twisted itself is small and comes before or after the
media: the response headers (``Request.write(b"")``), the WebSocket handshake,
pings and closes, the chunked body's end (``Request.finish``).

Access: ``play`` is authorized by the factory's authorizers like an RTMP play
(``?token=`` for ``--play-token-secret``, ``--on-play``), 403 on refusal.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import WebSocketResource, WebSocketTransport

from streamserver.auth import AccessRequest, RelayRedirect, authorize
from streamserver.codec.flv import TAG_HEADER_SIZE, encode_header, metadata_tracks
from streamserver.errors import StreamError, UnauthorizedError
from streamserver.events import PLAY, SessionEvent
from streamserver.http.cors import allow_origin, preflight
from streamserver.http.websocket import BINARY, HANDSHAKE_ERRORS, SessionWebSocket, server_frame
from streamserver.media.viewer import Viewer
from streamserver.protocol.session import MAX_NAME_LENGTH
from streamserver.stats import ConnectionStats
from streamserver.transport import TransportAdapter

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Frame, Stream

_log = Logger()

__all__ = ["FlvFraming", "FlvResource", "FlvSession", "FlvTags"]

#: A disconnect's log fields before the session had a viewer.
_NO_VIEWER = {"queued": 0, "peak": 0, "lag_ms": 0, "sent": 0, "dropped": {}}

#: The suffix of a stream's HTTP-FLV path.
SUFFIX = ".flv"


class FlvFraming(StrEnum):
    """How a group's FLV tags are framed on the wire."""

    #: the FLV bytes as they are: an HTTP/1.0 response, ended by closing
    RAW = "raw"
    #: one HTTP/1.1 chunk per tag (``Transfer-Encoding: chunked``)
    CHUNKED = "chunked"
    #: one binary WebSocket message per tag (unmasked, as a server sends)
    WEBSOCKET = "websocket"


def frame_bytes(framing: FlvFraming, data: bytes) -> bytes:
    """*data* framed for *framing* (an HTTP chunk, a WebSocket message, or as it is)."""
    if framing is FlvFraming.CHUNKED:
        return b"%x\r\n%b\r\n" % (len(data), data)
    if framing is FlvFraming.WEBSOCKET:
        return server_frame(BINARY, data)
    return data


_TAG_HEADER = struct.Struct(">IIHB")
_PREVIOUS_SIZE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class FlvTags:
    """The wire format of a group of FLV viewers: tags, framed one way.

    A frame's tag type is its message type (audio 8, video 9, data 18: the
    stream turns AMF3 data into AMF0), so the tag body is the RTMP payload as
    it came, Enhanced RTMP (HEVC, AV1) included.
    """

    framing: FlvFraming

    def encode(self, frame: Frame) -> bytes:
        """*frame* as one framed FLV tag."""
        message = frame.message
        payload = message.payload
        size = len(payload)
        ts = message.timestamp
        tag = b"".join(
            (
                _TAG_HEADER.pack(
                    (message.type_id << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24), 0, 0
                ),
                payload,
                _PREVIOUS_SIZE.pack(TAG_HEADER_SIZE + size),
            )
        )
        return frame_bytes(self.framing, tag)


def stream_tracks(stream: Stream) -> tuple[bool, bool]:
    """``(audio, video)``: the tracks of *stream*, as the FLV header must announce them.

    Read when the first tag goes out to a viewer (by then that tag is cached if
    it is metadata or a sequence header).  From ``onMetaData`` when the
    publisher sent one (:func:`~streamserver.codec.flv.metadata_tracks`), else
    from the sequence headers cached.  Never neither: with no metadata and no
    sequence header (MP3 audio without ``onMetaData``) the header announces both.
    """
    metadata = stream.metadata
    described = metadata_tracks(metadata.message.payload) if metadata is not None else None
    if described is not None:
        return described
    audio = stream.audio_header is not None
    video = stream.video_header is not None
    return (audio, video) if audio or video else (True, True)


class _FlvLink(TransportAdapter):
    """The session's transport adapter: writes the FLV header before the first tag.

    The header waits for the first tag because only then are the stream's
    tracks known (its ``onMetaData`` or sequence headers are that tag, or came
    before it); :attr:`preamble` makes it.
    """

    __slots__ = ("preamble",)

    def __init__(self, transport: Any) -> None:
        super().__init__(transport)
        self.preamble: Callable[[], bytes] | None = None

    def write_media(self, data: bytes, queued: int) -> None:
        preamble = self.preamble
        if preamble is not None:
            self.preamble = None
            data = preamble() + data
            queued = self.queued()  # the preamble may have written the response's headers
        super().write_media(data, queued)

    def write_frame(self, data: bytes, queued: int) -> None:
        if self.preamble is not None:
            self.write_media(data, queued)  # the header and the first tag, now
            return
        super().write_frame(data, queued)


class SessionState(StrEnum):
    """Where an HTTP-FLV request is."""

    #: the authorizers have not answered yet
    AUTHORIZING = "authorizing"
    #: allowed; nobody publishes the stream yet
    WAITING = "waiting"
    #: the response is streaming
    PLAYING = "playing"
    #: answered or gone
    DONE = "done"


class FlvSession:
    """One HTTP-FLV or WebSocket-FLV request: a factory connection and its viewer.

    :ivar conn_id: its connection id (shared sequence with RTMP).
    :ivar closing: it is being closed (by us or the peer).
    :ivar link: its transport adapter (the TCP transport under the HTTP channel).
    :ivar peer: ``host:port``.
    :ivar protocol_name: ``http-flv`` or ``ws-flv``.
    :ivar app: the application.
    :ivar name: the stream name.
    :ivar viewer: its :class:`~streamserver.media.viewer.Viewer`, once allowed.
    :ivar access: the request its authorization saw.
    :ivar event: its session event while it plays (told to ``factory.events``).
    :ivar state: a :class:`SessionState`.
    """

    def __init__(
        self,
        factory: RTMPServerFactory,
        request: Request,
        app: str,
        name: str,
        args: dict[str, str],
        *,
        websocket: WebSocketResource | None = None,
    ) -> None:
        self.factory = factory
        self.request = request
        self.app = app
        self.name = name
        self.args = args
        self._websocket = websocket
        self._ws: WebSocketTransport | None = None
        self.protocol_name = "ws-flv" if websocket is not None else "http-flv"
        transport = request.channel.transport
        self.link = _FlvLink(transport)
        self.peer = self.link.peer_text
        self.conn_id = factory.next_conn_id()
        self.closing = False
        self.state = SessionState.AUTHORIZING
        self.viewer: Viewer | None = None
        self.access = AccessRequest(
            "play",
            app,
            name,
            args,
            self.link.peer,
            self.conn_id,
            {"tcUrl": request.uri.decode("utf-8", "replace"), "protocol": self.protocol_name},
        )
        self.event: SessionEvent | None = None
        self.opened_at = factory.seconds()
        self._pending: defer.Deferred[None] | None = None
        self._tracked = False
        if websocket is not None:
            self.framing = FlvFraming.WEBSOCKET
        elif request.clientproto == b"HTTP/1.1":
            self.framing = FlvFraming.CHUNKED
        else:
            self.framing = FlvFraming.RAW

    def __repr__(self) -> str:
        return f"<FlvSession {self.protocol_name} {self.peer} {self.app}/{self.name} {self.state}>"

    # --- the request's life ------------------------------------------------------

    def start(self) -> None:
        """Admit, authorize, then play or wait; the request answers by itself."""
        factory = self.factory
        request = self.request
        request.notifyFinish().addBoth(self._request_gone)
        factory.connection_opened(self, count_address=False)  # its HTTP connection counted
        self._tracked = True
        refusal = factory.admission_refusal(self)
        if refusal is not None:
            factory.connection_refused(self, "limit", refusal)
            self._answer(503, refusal)
            self.link.close()  # a refused connection is not kept alive
            return
        config = factory.config
        self.link.configure_socket(config.notsent_lowat, config.send_buffer)
        # twisted.web turned Nagle off for the HTTP connection; the stream keeps it, as
        # RTMP's does (half the TCP segments per frame: docs/benchmarks.md)
        self.link.set_no_delay(False)
        if not config.eager_writes:
            self.link.disable_eager_writes()
        self.link.flush_list = factory.flush_list
        pending = authorize(factory.authorizer_for(self.access.app), self.access)
        self._pending = pending
        pending.addCallbacks(self._authorized, self._refused)

    def _refused(self, failure: Failure) -> None:
        self._pending = None
        if failure.check(defer.CancelledError) or self.state is SessionState.DONE:
            return
        if failure.check(UnauthorizedError):
            _log.info(
                "{protocol} play of {app}/{name} by {peer} refused: {reason}",
                protocol=self.protocol_name,
                app=self.app,
                name=self.name,
                peer=self.peer,
                reason=failure.getErrorMessage(),
            )
            self._answer(403, "play refused")
            return
        _log.failure("authorizing {peer} failed", failure, peer=self.peer)
        self._answer(500, "could not authorize the play")

    def _authorized(self, decision: RelayRedirect | None) -> None:
        self._pending = None
        if self.state is SessionState.DONE:
            return
        try:
            stream = self.factory.open_stream(self.app, self.name, "NetStream.Play.Rejected")
        except StreamError as error:
            self._answer(503, error.description)
            return
        self.viewer = Viewer(
            stream, self, FlvTags(self.framing), self.factory.viewer_server(stream.app)
        )
        self.state = SessionState.WAITING
        catch_up = stream.subscribe(self.viewer)
        if stream.publisher is not None:
            self._begin(stream)
            self.viewer.send_catch_up(catch_up)
        elif not self.factory.config.http_play_wait:
            self._not_found()
        else:
            self.factory.pulls.demand(stream, decision.url if decision is not None else None)

    def _begin(self, stream: Stream) -> None:
        """The stream is published: start the response (or the WebSocket)."""
        self.state = SessionState.PLAYING
        request = self.request
        self.link.preamble = self._flv_header
        self.event = SessionEvent(
            PLAY, stream, self.access, self.protocol_name, self.factory.seconds()
        )
        self.factory.events.started(self.event)
        _log.info(
            "{app}/{name} played by {peer} over {protocol}",
            app=self.app,
            name=self.name,
            peer=self.peer,
            protocol=self.protocol_name,
        )
        if self._websocket is not None:
            # 101 Switching Protocols, then the connection is ours
            try:
                refused = self._websocket.render_GET(request)
            except HANDSHAKE_ERRORS as error:
                _log.info(
                    "WebSocket handshake of {peer} refused: {error}", peer=self.peer, error=error
                )
                self._answer(400, "bad WebSocket handshake")
                return
            if refused is not NOT_DONE_YET:
                # wsproto refused the handshake (a bad Sec-WebSocket-Key...): its 400
                self._leave()
                request.write(refused if isinstance(refused, bytes) else b"")
                request.finish()
            return
        request.setResponseCode(200)
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [b"video/x-flv"])
        headers.setRawHeaders(b"cache-control", [b"no-cache, no-store"])
        headers.setRawHeaders(b"x-content-type-options", [b"nosniff"])
        request.write(b"")  # the status line and headers, before any tag

    def _flv_header(self) -> bytes:
        """The FLV header (and PreviousTagSize0), framed, for the tag about to go out."""
        viewer = self.viewer
        audio, video = stream_tracks(viewer.stream) if viewer is not None else (True, True)
        return frame_bytes(self.framing, encode_header(audio=audio, video=video))

    def check_timeouts(self, now: float) -> bool:
        """A request still waiting for a publisher after ``--http-play-wait`` gets its 404."""
        if self.state is SessionState.WAITING:
            wait = self.factory.config.http_play_wait
            if now - self.opened_at >= wait:
                self._not_found()
        return self.closing

    def _not_found(self) -> None:
        self._answer(404, f"no stream {self.app}/{self.name} is being published")

    def _answer(self, code: int, message: str) -> None:
        """End the request with *code* and a one-line text body (before any media)."""
        self._leave()
        request = self.request
        if request.finished or request._disconnected or request.startedWriting:
            self._close()
            return
        request.setResponseCode(code)
        body = message.encode("utf-8") + b"\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        request.setHeader(b"cache-control", b"no-cache")
        request.write(body)
        request.finish()

    # --- ViewerOwner ---------------------------------------------------------------

    def stream_published(self, stream: Stream) -> None:
        """The stream the request waits for is published: start streaming."""
        if self.state is SessionState.WAITING:
            self._begin(stream)

    def stream_unpublished(self, stream: Stream) -> None:
        """The publisher left: end the response cleanly."""
        if self.state is not SessionState.PLAYING:
            return
        self._leave()
        self.link.flush()  # held frames go before the end of the response
        if self._ws is not None:
            self._ws.loseConnection(1000)
        elif not self.request.finished and not self.request._disconnected:
            self.request.finish()  # the chunked body's last chunk (or the close of 1.0)

    def disconnect_viewer(self, reason: str) -> bool:
        """The policy's verdict: close this request now, logged with the viewer's numbers."""
        if self.closing:
            return False
        viewer = self.viewer
        _log.warn(
            "disconnecting {protocol} viewer {peer} of {app}/{name}: {reason} (queued "
            "{queued} bytes, peak {peak}, lag {lag_ms} ms, sent {sent}, dropped {dropped})",
            protocol=self.protocol_name,
            peer=self.peer,
            app=self.app,
            name=self.name,
            reason=reason,
            **(viewer.log_fields() if viewer is not None else _NO_VIEWER),
        )
        self.drop_connection()
        return True

    def viewer_failed(self, viewer: Viewer, error: BaseException) -> None:
        """Delivering to this request's viewer raised: log it once and close the request."""
        _log.failure(
            "delivering to {protocol} viewer {peer} of {app}/{name} failed; disconnecting it",
            Failure(error, type(error), error.__traceback__),
            protocol=self.protocol_name,
            peer=self.peer,
            app=self.app,
            name=self.name,
        )
        self.drop_connection()

    # --- Connection --------------------------------------------------------------------

    def drop_connection(self) -> None:
        """Close now, discarding what is queued (idempotent)."""
        if self.closing:
            return
        self._leave()
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.link.abort()

    def stats(self) -> ConnectionStats:
        """A snapshot of this request's numbers now."""
        viewer = self.viewer
        verb = "play" if self.state is SessionState.PLAYING else str(self.state)
        return ConnectionStats(
            conn_id=self.conn_id,
            peer=self.peer,
            protocol=self.protocol_name,
            role=f"{verb} {self.app}/{self.name}",
            queued=self.link.queued(),
            bytes_sent=self.link.media_written,
            viewer=viewer.stats(closing=self.closing) if viewer is not None else None,
            publishing=(),
        )

    # --- the end -------------------------------------------------------------------

    def _leave(self) -> None:
        """Stop playing: the viewer leaves, the stream may be forgotten."""
        self.state = SessionState.DONE
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        viewer = self.viewer
        if viewer is not None and not viewer.closed:
            viewer.leave()
            event, self.event = self.event, None
            if event is not None:
                self.factory.events.ended(event, self.factory.seconds())
            self.factory.release_stream(viewer.stream)

    def _request_gone(self, result: Any) -> None:
        """The response ended or the peer went away (``notifyFinish``)."""
        self.connection_lost()

    def connection_lost(self) -> None:
        """The request is over, one way or the other: forget it."""
        self._leave()
        self.closing = True
        if self._tracked:
            self._tracked = False
            self.factory.connection_closed(self)

    # --- WebSocket ---------------------------------------------------------------

    def websocket_open(self, transport: WebSocketTransport) -> None:
        """The WebSocket handshake is done: tags follow as binary messages."""
        self._ws = transport


class _SessionWebSockets:
    """``WebSocketResource``'s factory for one session (built when it may play)."""

    def __init__(self) -> None:
        self.session: FlvSession | None = None

    def buildProtocol(self, request: Request) -> SessionWebSocket[FlvSession]:
        assert self.session is not None
        return SessionWebSocket(self.session)  # FLV viewers send nothing that matters


def parse_stream_path(segments: list[bytes]) -> tuple[str, str] | None:
    """``(app, name)`` of the path segments of ``/APP/NAME.flv``, or ``None`` if not one.

    Segments are the URL's, percent-decoded by Twisted.  Every segment must be
    non-empty UTF-8 without control characters, and neither ``.`` nor ``..``.
    """
    if len(segments) < 2 or not segments[-1].endswith(SUFFIX.encode()):
        return None
    return stream_names([*segments[:-1], segments[-1][: -len(SUFFIX)]])


def stream_names(segments: list[bytes]) -> tuple[str, str] | None:
    """``(app, name)`` of the path segments ``APP.../NAME``, or ``None`` if they name none.

    The rules of :func:`parse_stream_path` (the HLS paths ``/APP/NAME/FILE`` use
    them too): at least two segments, each non-empty UTF-8 without control
    characters, neither ``.`` nor ``..``, and neither name too long.
    """
    if len(segments) < 2:
        return None
    try:
        parts = [segment.decode("utf-8") for segment in segments]
    except UnicodeDecodeError:
        return None
    for part in parts:
        if not part or part in (".", "..") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in part):
            return None
    app, name = "/".join(parts[:-1]), parts[-1]
    if len(app) > MAX_NAME_LENGTH or len(name) > MAX_NAME_LENGTH:
        return None
    return app, name


class FlvResource(Resource):
    """``/APP/NAME.flv``: HTTP-FLV, or WebSocket-FLV on ``Upgrade: websocket``."""

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def _cors(self, request: Request) -> None:
        allow_origin(request, self.factory.config.http_cors_origin)

    def _text(self, request: Request, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return message.encode("utf-8") + b"\n"

    def render_OPTIONS(self, request: Request) -> bytes:
        """A CORS preflight: GET is allowed from the configured origin."""
        return preflight(request, self.factory.config.http_cors_origin)

    def render_HEAD(self, request: Request) -> bytes:
        """Whether the stream is published, without its body."""
        self._cors(request)
        target = parse_stream_path([*(request.prepath or ()), *(request.postpath or ())])
        stream = self.factory.find_stream(*target) if target is not None else None
        if stream is None or stream.publisher is None:
            return self._text(request, 404, "no such stream")
        request.setHeader(b"content-type", b"video/x-flv")
        request.setHeader(b"cache-control", b"no-cache, no-store")
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        """Play the stream (or answer 404 for a path that names none)."""
        self._cors(request)
        target = parse_stream_path([*(request.prepath or ()), *(request.postpath or ())])
        if target is None:
            return self._text(request, 404, "not found: streams are at /APP/NAME.flv")
        app, name = target
        args = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in request.args.items()
            if values
        }
        websocket = None
        if (request.getHeader(b"upgrade") or b"").lower() == b"websocket":
            builder = _SessionWebSockets()
            websocket = WebSocketResource(builder)
        session = FlvSession(self.factory, request, app, name, args, websocket=websocket)
        if websocket is not None:
            builder.session = session
        session.start()
        return NOT_DONE_YET
