"""The page at /: the live streams, what they carry, their links."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.internet import task

from streamserver.codec import amf0
from streamserver.codec.mediainfo import (
    MAX_TITLE_LENGTH,
    AudioInfo,
    MediaInfo,
    VideoInfo,
    metadata_title,
)
from streamserver.factory import RTMPServerFactory
from streamserver.http.pages import describe_media, describe_uptime
from tests.http.conftest import publish
from tests.http.support import SiteClient
from tests.protocol import media


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


def test_the_page_links_each_stream_to_its_watch_page(
    factory: RTMPServerFactory, client: SiteClient, clock: task.Clock
) -> None:
    """The row's title and its watch link lead to /watch/APP/NAME; uptime and viewers shown;
    the script that keeps the rows current is the bundled /static/index.js."""
    publish(factory, "live", "cam")
    clock.advance(125)
    page = client.get("/").body.decode()
    assert '<td><a href="/watch/live/cam">live/cam</a></td>' in page
    assert '<a href="/watch/live/cam">watch</a>' in page
    assert "<td>2 min 05 s</td>" in page
    assert '<script src="/static/index.js"></script>' in page
    assert 'id="streams" hidden' not in page
    factory.kick(next(iter(factory.connections)))
    assert 'id="streams" hidden' in client.get("/").body.decode()


def test_the_title_is_the_publishers_and_is_escaped(
    factory: RTMPServerFactory, client: SiteClient
) -> None:
    """``onMetaData`` ``title`` (cleaned, escaped) instead of the name; the API has it too."""
    publisher, sid = publish(factory, "live", "cam")
    publisher.send(media.metadata(sid, title="  <b>Morning</b>\nshow "))
    page = client.get("/").body.decode()
    assert "&lt;b&gt;Morning&lt;/b&gt; show</a>" in page
    assert '<span class="name">live/cam</span>' in page
    assert "<b>Morning" not in page
    entry = client.get("/api/streams").json()["streams"][0]
    assert entry["title"] == "<b>Morning</b> show"


def test_titles_from_metadata() -> None:
    def payload(**fields: object) -> bytes:
        return amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(fields))

    assert metadata_title(None) is None
    assert metadata_title(payload(width=320.0)) is None
    assert metadata_title(payload(title=5.0)) is None
    assert metadata_title(payload(title=" \x00 ")) is None
    assert metadata_title(payload(title="a\tb")) == "a b"
    assert metadata_title(payload(title="x" * 500)) == "x" * MAX_TITLE_LENGTH


def test_uptimes_for_people() -> None:
    assert [describe_uptime(s) for s in (-1, 0, 59.9, 60, 3599, 3600, 7321)] == [
        "0 s",
        "0 s",
        "59 s",
        "1 min 00 s",
        "59 min 59 s",
        "1 h 00 min",
        "2 h 02 min",
    ]


def test_the_watch_page_has_the_player_the_chat_and_the_stream_as_json(
    client: SiteClient,
) -> None:
    """/watch/APP/NAME: video, the player switch, the chat form with labels, the bundled
    scripts, and the stream in a JSON script element."""
    response = client.get("/watch/a/b/cam")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    config = re.search(r'<script id="watch-config" type="application/json">(.*?)</script>', page)
    assert config is not None
    assert json.loads(config.group(1)) == {
        "app": "a/b",
        "name": "cam",
        "path": "/a/b/cam",
        "maxLength": 500,
    }
    for needle in (
        '<video id="video"',
        '<select id="transport">',
        '<option value="hls">',
        '<option value="http-flv">',
        '<option value="ws-flv">',
        '<label for="nick">',
        '<label for="text">',
        '<ol id="messages" aria-live="polite"',
        '<script src="/static/hls.min.js"></script>',
        '<script src="/static/mpegts.min.js"></script>',
        '<script src="/static/watch.js"></script>',
        '<link rel="stylesheet" href="/static/watch.css">',
    ):
        assert needle in page, needle
    assert client.get("/watch/cam").status == 404
    assert client.get("/watch/").status == 404


def test_a_stream_name_cannot_break_out_of_the_watch_page(client: SiteClient) -> None:
    page = client.get("/watch/live/%3C%2Fscript%3E%3Cimg%20src%3Dx%3E").body.decode()
    assert "</script><img" not in page
    assert "<img src=x>" not in page
    assert "&lt;/script&gt;&lt;img src=x&gt;" in page  # the title and heading, as text
    config = re.search(r'type="application/json">(.*?)</script>', page)
    assert config is not None and json.loads(config.group(1))["name"] == "</script><img src=x>"


def test_the_pages_scripts_never_write_html() -> None:
    """User text (nicks, messages, titles) reaches the DOM with textContent only."""
    static = Path(__file__).resolve().parents[2] / "src" / "streamserver" / "http" / "static"
    for name in ("index.js", "watch.js"):
        source = (static / name).read_text()
        assert "textContent" in source, name
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, (name, sink)


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
    for name, kind in (
        ("index.js", "text/javascript"),
        ("watch.js", "text/javascript"),
        ("watch.css", "text/css"),
    ):
        asset = client.get(f"/static/{name}")
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind), name
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


#: Path tricks against ``/static/``: none may reach a file outside the bundled list.
STATIC_TRICKS = [
    "/static/..\\pages.py",
    "/static/..%5cpages.py",
    "/static/%5c..%5c..%5csite.py",
    "/static/mpegts.min.js%00",
    "/static/mpegts.min.js%00.txt",
    "/static/%00",
    "/static/%00/../pages.py",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/%2fetc/passwd",
    "/static/%2e%2e%2fpages.py",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/%252e%252e%252fpages.py",
    "/static/....//pages.py",
    "/static/C:%5cWindows%5cwin.ini",
    "/static/file:%2f%2f%2fetc%2fpasswd",
    "/static/" + "a" * 10240,
    "/static/" + "../" * 3000 + "etc/passwd",
]


def test_static_path_tricks_get_a_short_refusal_and_never_a_file(client: SiteClient) -> None:
    """Backslashes, NUL, absolute paths, encoded dots and slashes, 10 KB names: a short 4xx."""
    secrets = [
        (Path(__file__).parents[2] / "src/streamserver/http/pages.py").read_bytes()[:200],
        b"root:",
    ]
    for path in STATIC_TRICKS:
        response = client.get(path)
        assert response.status in (400, 404, 431), (path[:80], response.status)
        assert len(response.body) < 1000, path[:80]
        assert not any(secret in response.body for secret in secrets), path[:80]
    assert client.get("/static/" + "a" * 20000).status == 431  # past --http-max-header-bytes


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
