"""An --on-play / --on-publish 3xx with Location: rtmp://... means allow and relay."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.web.http_headers import Headers
from zope.interface import implementer

from streamserver.auth import (
    AccessRequest,
    AllOf,
    HTTPCallbackAuthorizer,
    IAuthorizer,
    RelayRedirect,
)
from streamserver.errors import UnauthorizedError
from tests.relay.support import Net, publisher, send_gop, viewer


class _Response:
    def __init__(self, code: int, location: str | None) -> None:
        self.code = code
        self.headers = Headers({b"Location": [location.encode()]} if location else {})

    def deliverBody(self, protocol: Any) -> None:
        pass


def _callback() -> HTTPCallbackAuthorizer:
    return HTTPCallbackAuthorizer("http://127.0.0.1:9/", "play", reactor=object(), agent=object())


def test_a_3xx_with_an_rtmp_location_allows_through_a_relay() -> None:
    """302 + Location rtmp://... is a RelayRedirect; 2xx is a plain allow."""
    callback = _callback()
    answer = callback._answered(_Response(302, "rtmp://10.0.0.2:1936/live/cam"))
    assert answer == RelayRedirect("rtmp://10.0.0.2:1936/live/cam")
    assert callback._answered(_Response(204, None)) is True


@pytest.mark.parametrize(("code", "location"), [(302, "http://elsewhere/"), (301, None)])
def test_other_redirects_still_refuse(code: int, location: str | None) -> None:
    """A 3xx without an rtmp:// Location refuses, as before."""
    with pytest.raises(UnauthorizedError, match=f"answered {code}"):
        _callback()._answered(_Response(code, location))


@implementer(IAuthorizer)
class _Redirecting:
    name = "redirecting"

    def __init__(self, url: str) -> None:
        self.url = url
        self.asked: list[AccessRequest] = []

    def authorize_publish(self, request: AccessRequest) -> Any:
        self.asked.append(request)
        return RelayRedirect(self.url)

    def authorize_play(self, request: AccessRequest) -> Any:
        self.asked.append(request)
        return RelayRedirect(self.url)


def test_a_play_redirect_pulls_from_the_location_without_a_router() -> None:
    """The edge has no --pull; the play callback's Location names the origin's stream."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    # the endpoint of rtmp://origin.test/... rewritten onto the in-memory origin
    net.servers["tcp:host=origin.test:port=1935:timeout=10"] = origin
    edge.authorizer = AllOf(_Redirecting("rtmp://origin.test/live/other"))
    source = publisher(origin, "other")
    watcher = viewer(edge, "cam")
    net.flush()
    send_gop(source, 0)
    net.flush()
    video = [m for m in watcher.media() if m.type_id == 9]
    assert len(video) == 1 + 10
    pull = edge.pulls.of(edge.find_stream("live", "cam"))
    assert pull is not None and pull.stats()["url"] == "rtmp://origin.test:1935/live/other"


def test_a_publish_redirect_pushes_to_the_location() -> None:
    """The publish callback's Location gets the stream; the publish goes on here too."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    net.servers["tcp:host=origin.test:port=1935:timeout=10"] = origin
    edge.authorizer = AllOf(_Redirecting("rtmp://origin.test/ingest"))
    source = publisher(edge, "cam")
    net.flush()
    send_gop(source, 0)
    net.flush()
    upstream = origin.find_stream("ingest", "cam")
    assert upstream is not None and upstream.publisher is not None
    assert upstream.frames_in == 3 + 20
    assert edge.find_stream("live", "cam").publisher is source.protocol


def test_an_hls_play_redirect_pulls_from_the_location() -> None:
    """An HLS playlist request allowed by a 3xx opens the stream's pull from the Location
    (as an RTMP or HTTP-FLV play does), and the segmenter gets the origin's media."""
    from tests.http.support import SiteClient

    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    net.servers["tcp:host=origin.test:port=1935:timeout=10"] = origin
    edge.authorizer = AllOf(_Redirecting("rtmp://origin.test/live/other"))
    source = publisher(origin, "other")
    net.flush()
    site = SiteClient(edge, net.clock)
    transport = site.open()
    transport.protocol.dataReceived(
        b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )  # parked until the first segments
    net.flush()
    stream = edge.find_stream("live", "cam")
    pull = edge.pulls.of(stream)
    assert pull is not None and pull.stats()["url"] == "rtmp://origin.test:1935/live/other"
    send_gop(source, 0)
    net.flush()
    assert stream.frames_in == 3 + 20
