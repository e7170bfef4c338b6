"""The HTML of ``/``: the live streams, with their FLV URLs and API entries."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from streamserver.codec.mediainfo import MediaInfo
    from streamserver.factory import RTMPServerFactory

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamserver</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 50rem; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ccc; }}
</style>
</head>
<body>
<h1>streamserver</h1>
<p>{summary}</p>
{table}
<p>Publish with <code>ffmpeg -re -i FILE -c copy -f flv rtmp://{host}/live/NAME</code>;
the stream then appears here.  <a href="/api/streams">/api/streams</a> has the numbers,
<a href="/metrics">/metrics</a> the Prometheus exposition.</p>
</body>
</html>
"""


def describe_media(info: MediaInfo) -> str:
    """One line for people: ``h264 High 3.1 1280x720 30 fps, aac LC 48 kHz 2 ch``."""
    parts = []
    video = info.video
    if video is not None:
        words = [video.codec, video.profile or "", video.level or ""]
        if video.width and video.height:
            words.append(f"{video.width}x{video.height}")
        if video.fps:
            words.append(f"{video.fps:g} fps")
        parts.append(" ".join(word for word in words if word))
    audio = info.audio
    if audio is not None:
        words = [audio.codec, audio.profile or ""]
        if audio.sample_rate:
            words.append(f"{audio.sample_rate / 1000:g} kHz")
        if audio.channels:
            words.append(f"{audio.channels} ch")
        parts.append(" ".join(word for word in words if word))
    return ", ".join(parts) or "-"


def index_page(factory: RTMPServerFactory, host: str = "HOST") -> bytes:
    """The page at ``/``: one row per published stream, linking its FLV URL and API entry."""
    rows = []
    for stream in sorted(factory.streams(), key=lambda s: (s.app, s.name)):
        if stream.publisher is None:
            continue
        path = f"/{quote(stream.app)}/{quote(stream.name)}"
        rows.append(
            f"<tr><td>{escape(stream.app)}/{escape(stream.name)}</td>"
            f'<td><a href="{escape(path)}.flv">{escape(path)}.flv</a></td>'
            f'<td><a href="/api/streams{escape(path)}">API</a></td>'
            f"<td>{escape(describe_media(stream.media_info()))}</td>"
            f"<td>{stream.subscriber_count}</td></tr>"
        )
    if rows:
        summary = f"{len(rows)} live stream{'s' if len(rows) != 1 else ''}:"
        table = (
            "<table><thead><tr><th>Stream</th><th>HTTP-FLV</th><th>Numbers</th>"
            "<th>Media</th><th>Viewers</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        summary = "No stream is live right now."
        table = ""
    return _PAGE.format(summary=summary, table=table, host=escape(host)).encode("utf-8")
