"""The page at /: the live streams, what they carry, their links."""

from __future__ import annotations

from pathlib import Path

from streamserver.codec.mediainfo import AudioInfo, MediaInfo, VideoInfo
from streamserver.factory import RTMPServerFactory
from streamserver.http.pages import describe_media
from tests.http.conftest import publish
from tests.http.support import SiteClient


def test_the_page_lists_live_streams_with_their_media(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """Each published stream: its FLV link, its API entry, its codecs and size, its viewers."""
    publish(factory, "live", "cam")
    response = client.get("/")
    assert response.status == 200
    page = response.body.decode()
    assert '<a href="/live/cam.flv">' in page
    assert '<a href="/api/streams/live/cam">' in page
    assert "<td>h264 High 3.1 320x240 30 fps, aac LC 44.1 kHz 2 ch</td>" in page


def test_media_in_one_line() -> None:
    """What is unknown is left out; nothing known is a dash."""
    assert describe_media(MediaInfo()) == "-"
    assert describe_media(MediaInfo(VideoInfo("hevc", fps=59.94), None)) == "hevc 59.94 fps"
    assert describe_media(MediaInfo(None, AudioInfo("mp3", None, 48000, None))) == "mp3 48 kHz"


def test_the_page_links_each_stream_to_its_player(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """The row's player link is the server's own player page."""
    publish(factory, "live", "cam")
    assert '<a href="/play/live/cam">play</a>' in client.get("/").body.decode()


def test_the_player_page_plays_the_streams_flv_with_the_bundled_player(client: SiteClient) -> None:
    """``/play/APP/NAME``: the stream's path as a JavaScript string, mpegts.js from /static/."""
    response = client.get("/play/a/b/cam")
    assert response.status == 200
    page = response.body.decode()
    assert 'const path = "/a/b/cam";' in page
    assert '<script src="/static/mpegts.min.js"></script>' in page
    assert client.get("/play/").status == 404
    assert client.get("/play/cam").status == 404  # no application


def test_a_stream_name_cannot_break_out_of_the_player_page(client: SiteClient) -> None:
    """A name with markup is escaped in the title and cannot close the script element."""
    page = client.get("/play/live/%3C%2Fscript%3E%3Cscript%3Ealert(1)").body.decode()
    assert "</script><script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the title, as text


def test_static_serves_the_bundled_files_only(client: SiteClient) -> None:
    """The listed files, with their types and a long cache; nothing else, however named."""
    script = client.get("/static/mpegts.min.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "max-age" in script.headers["cache-control"]
    assert b"mpegts" in script.body[:2000]
    assert b"Apache License" in client.get("/static/LICENSE.mpegts.js.txt").body
    hls = client.get("/static/hls.min.js")
    assert hls.status == 200 and hls.headers["content-type"].startswith("text/javascript")
    assert b"Apache License" in client.get("/static/LICENSE.hls.js.txt").body
    for path in (
        "/static/README.md",
        "/static/../pages.py",
        "/static/%2e%2e/pages.py",
        "/static/..%2fpages.py",
        "/static/sub/mpegts.min.js",
        "/static/",
    ):
        assert client.get(path).status == 404, path


def test_requests_are_logged_only_to_the_access_log_file(tmp_path: Path) -> None:
    """Without --http-access-log nothing is logged per request; with it, a line in the file."""
    from twisted.web.test.requesthelper import DummyRequest

    from streamserver.config import ServerConfig
    from streamserver.http import build_site

    class Lines:
        def __init__(self) -> None:
            self.written: list[str] = []

        def write(self, line: str) -> None:
            self.written.append(line)

    quiet = build_site(RTMPServerFactory(ServerConfig()))
    quiet.startFactory()
    assert quiet._logFile is not None  # Twisted's default would write to the server's log
    lines = Lines()
    quiet._logFile = lines  # type: ignore[assignment]
    quiet.log(DummyRequest([b""]))  # type: ignore[arg-type]
    quiet._logFile = None
    quiet.stopFactory()
    assert lines.written == []
    path = tmp_path / "access.log"
    logged = build_site(RTMPServerFactory(ServerConfig(http_access_log=str(path))))
    logged.startFactory()
    request = DummyRequest([b"live", b"x.flv"])
    request.uri = b"/live/x.flv"
    request.code = 200
    request.sentLength = 0
    request.clientproto = b"HTTP/1.1"
    logged.log(request)  # type: ignore[arg-type]
    logged.stopFactory()
    assert "/live/x.flv" in path.read_text()
