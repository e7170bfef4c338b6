"""The HTML of ``/``: the live streams, with their FLV URLs and API entries."""

from __future__ import annotations

import json
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
            f'<td><a href="/play{escape(path)}">play</a></td>'
            f'<td><a href="{escape(path)}.flv">{escape(path)}.flv</a></td>'
            f'<td><a href="/api/streams{escape(path)}">API</a></td>'
            f"<td>{escape(describe_media(stream.media_info()))}</td>"
            f"<td>{stream.subscriber_count}</td></tr>"
        )
    if rows:
        summary = f"{len(rows)} live stream{'s' if len(rows) != 1 else ''}:"
        table = (
            "<table><thead><tr><th>Stream</th><th>Player</th><th>HTTP-FLV</th><th>Numbers</th>"
            "<th>Media</th><th>Viewers</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        summary = "No stream is live right now."
        table = ""
    return _PAGE.format(summary=summary, table=table, host=escape(host)).encode("utf-8")


_PLAYER = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - streamserver</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 60rem; padding: 0 1rem; }}
video {{ width: 100%; background: #000; aspect-ratio: 16 / 9; }}
</style>
</head>
<body>
<h1>{title}</h1>
<video id="video" controls muted autoplay playsinline></video>
<p>
<label for="transport">Transport</label>
<select id="transport">
<option value="http">HTTP-FLV</option>
<option value="ws">WebSocket-FLV</option>
</select>
<span id="status" role="status" aria-live="polite"></span>
</p>
<p><a href="/">All streams</a> &middot; <a id="flv" href="">FLV URL</a></p>
<script src="/static/mpegts.min.js"></script>
<script>
"use strict";
const path = {path};
const video = document.getElementById("video");
const status = document.getElementById("status");
const transport = document.getElementById("transport");
document.getElementById("flv").href = path + ".flv";
let player = null;
let retry = null;

function url() {{
  const base = transport.value === "ws"
    ? (location.protocol === "https:" ? "wss://" : "ws://") + location.host
    : location.origin;
  return base + path + ".flv" + location.search;
}}

function again(text) {{
  status.textContent = text;
  clearTimeout(retry);
  retry = setTimeout(start, 3000);
}}

function start() {{
  clearTimeout(retry);
  if (player) {{ player.destroy(); player = null; }}
  if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {{
    status.textContent = "This browser cannot play FLV (no Media Source Extensions).";
    return;
  }}
  status.textContent = "Connecting...";
  player = mpegts.createPlayer(
    {{type: "flv", isLive: true, url: url()}},
    {{enableStashBuffer: false, liveSync: true}});
  player.on(mpegts.Events.ERROR, () => again("Waiting for the publisher..."));
  player.on(mpegts.Events.LOADING_COMPLETE,
            () => again("The stream ended; waiting for it to come back..."));
  player.attachMediaElement(video);
  player.load();
  const playing = player.play();
  if (playing) {{ playing.catch(() => {{}}); }}
}}

video.addEventListener("playing", () => {{ status.textContent = "Live"; }});
transport.addEventListener("change", start);
start();
</script>
</body>
</html>
"""


def play_page(app: str, name: str) -> bytes:
    """A page playing ``/APP/NAME.flv`` with the bundled mpegts.js (HTTP-FLV or WebSocket-FLV).

    It tries again every 3 s while the stream is not published, so it starts by
    itself when the publisher comes (and comes back).
    """
    path = f"/{quote(app)}/{quote(name)}"
    # JSON is JavaScript; with "<" escaped, no "</script>" in a name can end the element
    literal = json.dumps(path).replace("<", "\\u003c")
    return _PLAYER.format(title=escape(f"{app}/{name}"), path=literal).encode("utf-8")
