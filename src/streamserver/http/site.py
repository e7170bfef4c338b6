"""The one ``twisted.web`` site of a server: every HTTP path, routed.

``/``
    the live streams, with links to their watch pages, FLV URLs and API entries;
``/APP/NAME.flv``
    the live stream as HTTP-FLV, or as WebSocket-FLV when the request asks for
    an ``Upgrade: websocket`` (:mod:`streamserver.http.flv`);
``/APP/NAME/chat``
    the stream's chat room as a WebSocket of JSON messages
    (:mod:`streamserver.http.chat`);
``/APP/NAME/index.m3u8``, ``/APP/NAME/ts.m3u8`` and the files they name
    the live stream as LL-HLS (fMP4) and classic HLS (MPEG-TS)
    (:mod:`streamserver.http.hls`);
``/api/...``
    the JSON API (:mod:`streamserver.http.api`);
``/metrics``
    the Prometheus exposition (:mod:`streamserver.http.metrics`);
``/recordings/APP/NAME/FILE``
    a finished recording (``--record``), with range requests, behind the play
    authorization (:mod:`streamserver.http.recordings`);
``/watch/APP/NAME``
    the watch page: the player (LL-HLS by default, HTTP-FLV / WebSocket-FLV)
    and the stream's chat room (``docs/watch.md``);
``/play/APP/NAME``
    a bare page playing the stream with the bundled mpegts.js;
``/static/NAME``
    the bundled player JavaScript and its licences (:mod:`streamserver.http.assets`).

Every other path is a stream's, routed on its last segment: a playlist or
segment name (:func:`~streamserver.http.hls.is_hls_name`) goes to HLS, the
segments before it being the application and the stream (``/live/cam/index.m3u8``);
``chat`` to the chat WebSocket (``/live/cam/chat``); anything else to HTTP-FLV,
whose last segment is ``NAME.flv`` after the application (``/live/cam.flv`` is
``rtmp://HOST/live/cam``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamserver.http.assets import AssetsResource
from streamserver.http.channel import StreamChannel
from streamserver.http.chat import CHAT_SEGMENT, ChatResource
from streamserver.http.flv import SUFFIX, FlvResource, parse_stream_path, stream_names
from streamserver.http.hls import HlsResource, is_hls_name

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory


class RootResource(Resource):
    """``/``, and every stream path routed to :class:`FlvResource`, :class:`HlsResource`
    or :class:`ChatResource`."""

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory
        self.streams = FlvResource(factory)
        from streamserver.http.api import ApiResource
        from streamserver.http.metrics import MetricsResource
        from streamserver.http.recordings import RecordingsResource

        self.putChild(b"api", ApiResource(factory))
        self.putChild(b"metrics", MetricsResource(factory))
        self.putChild(b"recordings", RecordingsResource(factory))
        self.putChild(b"static", AssetsResource())
        self.putChild(b"play", PlayerResource())
        self.putChild(b"watch", WatchResource(factory))
        self.hls = HlsResource(factory)
        self.chat = ChatResource(factory)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        last = request.postpath[-1] if request.postpath else path
        if last == CHAT_SEGMENT:
            return self.chat
        return self.hls if is_hls_name(last) else self.streams

    def render_GET(self, request: Request) -> bytes:
        from streamserver.http.pages import index_page

        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return index_page(self.factory)


class PlayerResource(Resource):
    """``/play/APP/NAME``: a page playing the stream's HTTP-FLV in the browser."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        from streamserver.http.pages import play_page

        segments = list(request.postpath or [])
        if segments:
            segments[-1] += SUFFIX.encode()
        target = parse_stream_path(segments)
        if target is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: players are at /play/APP/NAME\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return play_page(*target)


class WatchResource(Resource):
    """``/watch/APP/NAME``: the player and the chat of a stream."""

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def render_GET(self, request: Request) -> bytes:
        from streamserver.http.pages import watch_page

        target = stream_names(list(request.postpath or []))
        if target is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: watch pages are at /watch/APP/NAME\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return watch_page(*target, self.factory.settings_for(target[0]).chat_max_length)


#: Seconds an HTTP connection may sit idle between requests (Twisted's default is
#: 12 hours).  A request being answered, an FLV response or a WebSocket, is never
#: idle: the timeout is off while Twisted handles a request.
IDLE_TIMEOUT = 60


class StreamSite(Site):
    """The site: its connections are :class:`~streamserver.http.channel.StreamChannel`
    (the server's HTTP limits), and it logs requests only to ``--http-access-log``
    (Twisted's ``Site`` logs every request into the server's log, 20% of its CPU
    under many HLS players).

    :ivar stream_factory: the server's factory.
    """

    protocol = StreamChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, stream_factory: RTMPServerFactory, **kwargs: Any):
        super().__init__(resource, **kwargs)
        self.stream_factory = stream_factory

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.stream_factory = self.stream_factory
        return channel

    def log(self, request: http.Request) -> None:
        if self.logPath is not None:
            super().log(request)


def build_site(factory: RTMPServerFactory) -> Site:
    """The site serving every HTTP path of *factory*'s server."""
    root = RootResource(factory)
    site = StreamSite(root, factory, timeout=IDLE_TIMEOUT, logPath=factory.config.http_access_log)
    site.displayTracebacks = False
    return site
