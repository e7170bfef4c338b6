"""The HTML pages: ``/`` (the live streams), ``/watch/APP/NAME`` (player and chat),
``/play/APP/NAME`` (the bare mpegts.js player).

Stream names reach a page only escaped: as HTML text and attributes through
:func:`html.escape`, and as JavaScript through JSON with ``<`` escaped, so no
name can end a ``<script>`` element.  The pages' scripts are static files
(``/static/index.js``, ``/static/watch.js``) that render user text with
``textContent`` only.
"""

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
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ccc; }}
.name {{ color: #555; font-size: .9em; }}
</style>
</head>
<body>
<h1>streamserver</h1>
<p id="summary" aria-live="polite">{summary}</p>
<table id="streams"{hidden}><thead><tr><th>Stream</th><th>Media</th><th>Viewers</th>
<th>Live for</th><th>Links</th></tr></thead>
<tbody>{rows}</tbody></table>
<p>Publish with <code>ffmpeg -re -i FILE -c copy -f flv rtmp://{host}/live/NAME</code>;
the stream then appears here.  <a href="/api/streams">/api/streams</a> has the numbers,
<a href="/metrics">/metrics</a> the Prometheus exposition.</p>
<script src="/static/index.js"></script>
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


def describe_uptime(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: how long a stream has been live."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def stream_path(app: str, name: str) -> str:
    """``/APP/NAME`` with each part percent-encoded (``/`` in an application kept)."""
    return f"/{quote(app)}/{quote(name, safe='')}"


def index_page(factory: RTMPServerFactory, host: str = "HOST") -> bytes:
    """The page at ``/``: one row per published stream, linking its watch page.

    Each row: the title (the publisher's ``onMetaData`` title, else the name),
    codecs and size, viewers, how long it has been live, and the links: the
    watch page, the FLV URL, the API entry.  ``/static/index.js`` redraws the
    rows from ``/api/streams`` every few seconds, so the page follows streams
    starting and ending without a reload.
    """
    rows = []
    now = factory.seconds()
    for stream in sorted(factory.streams(), key=lambda s: (s.app, s.name)):
        if stream.publisher is None:
            continue
        path = stream_path(stream.app, stream.name)
        key = f"{stream.app}/{stream.name}"
        title = stream.title or key
        since = stream.published_at if stream.published_at is not None else now
        rows.append(
            f'<tr><td><a href="/watch{escape(path)}">{escape(title)}</a>'
            + (f' <span class="name">{escape(key)}</span>' if title != key else "")
            + f"</td><td>{escape(describe_media(stream.media_info()))}</td>"
            f"<td>{stream.subscriber_count}</td>"
            f"<td>{describe_uptime(now - since)}</td>"
            f'<td><a href="/watch{escape(path)}">watch</a> &middot; '
            f'<a href="{escape(path)}.flv">{escape(path)}.flv</a> &middot; '
            f'<a href="/api/streams{escape(path)}">API</a></td></tr>'
        )
    if rows:
        summary = f"{len(rows)} live stream{'s' if len(rows) != 1 else ''}:"
    else:
        summary = "No stream is live right now."
    return _PAGE.format(
        summary=summary,
        rows="".join(rows),
        hidden="" if rows else " hidden",
        host=escape(host),
    ).encode("utf-8")


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
    literal = script_json(f"/{quote(app)}/{quote(name)}")
    return _PLAYER.format(title=escape(f"{app}/{name}"), path=literal).encode("utf-8")


_WATCH = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - streamserver</title>
<link rel="stylesheet" href="/static/watch.css">
</head>
<body>
<header>
<a href="/">All streams</a>
<h1 id="title">{title}</h1>
<span id="viewers" aria-live="polite"></span>
</header>
<main>
<section class="player" aria-label="Player">
<video id="video" controls muted autoplay playsinline></video>
<p class="controls">
<label for="transport">Player</label>
<select id="transport">
<option value="hls">LL-HLS (default)</option>
<option value="http-flv">HTTP-FLV (lowest latency)</option>
<option value="ws-flv">WebSocket-FLV (lowest latency)</option>
</select>
<span id="status" role="status" aria-live="polite"></span>
</p>
</section>
<section class="chat" aria-labelledby="chat-heading">
<h2 id="chat-heading">Chat</h2>
<ol id="messages" aria-live="polite" aria-relevant="additions" aria-label="Messages"></ol>
<p id="chat-status" role="status" aria-live="assertive"></p>
<form id="chat-form" autocomplete="off">
<label for="nick">Nick</label>
<input id="nick" name="nick" maxlength="32" placeholder="guest" autocomplete="nickname">
<label for="text">Message</label>
<input id="text" name="text" required>
<button type="submit">Send</button>
</form>
<details id="moderation" hidden>
<summary>Moderation</summary>
<form id="moderation-form">
<label for="token">API token</label>
<input id="token" type="password" autocomplete="off">
<label for="target">Nick</label>
<input id="target" maxlength="32">
<div class="actions">
<button type="submit" value="mute">Mute</button>
<button type="submit" value="unmute">Unmute</button>
<button type="submit" value="kick">Kick</button>
<button type="submit" value="clear">Clear history</button>
</div>
</form>
<p id="moderation-status" role="status" aria-live="polite"></p>
</details>
</section>
</main>
<script id="watch-config" type="application/json">{config}</script>
<script src="/static/hls.min.js"></script>
<script src="/static/mpegts.min.js"></script>
<script src="/static/watch.js"></script>
</body>
</html>
"""


def script_json(value: object) -> str:
    """*value* as JSON safe inside a ``<script>`` element: ``<`` escaped, so no
    ``</script>`` (or ``<!--``) in a stream name can end or change the element."""
    return json.dumps(value).replace("<", "\\u003c")


def watch_page(app: str, name: str, max_length: int) -> bytes:
    """``/watch/APP/NAME``: the player (LL-HLS, or HTTP-FLV / WebSocket-FLV) and the chat.

    The page learns the stream from a JSON script element (``watch-config``):
    application, name, its path, and the longest chat message accepted.
    """
    config = {"app": app, "name": name, "path": stream_path(app, name), "maxLength": max_length}
    return _WATCH.format(title=escape(f"{app}/{name}"), config=script_json(config)).encode("utf-8")
