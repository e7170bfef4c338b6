"""The page at /: the live streams, what they carry, their links."""

from __future__ import annotations

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
