"""A newcomer's evening in a real browser: the stream list, the watch page, its chat.

``twistd -n streamserver`` runs as a child (free loopback ports); ffmpeg publishes
the session's sample with a title; an RTMP chat client of ours sits in the room.
Headless Chromium, driven over the DevTools protocol (no WebDriver), opens
``/``, clicks the stream's link, and on ``/watch/live/x``:

- the video plays with the page's default player (LL-HLS through the bundled
  hls.js): ``currentTime`` advances ≥ 5 s within 8 s of playing;
- the test fills the chat's fields and presses Enter (``Input.dispatchKeyEvent``,
  a real key press): the RTMP client and an IRC client (the ``irc`` package, on
  ``--irc``) receive the message, and the IRC client's message shows in the page;
- a message the RTMP client sends appears in the page's DOM as text;
- one with ``<script>`` and ``<img src=x onerror=...>`` appears as text: no
  element is created and the handler never runs;
- the player switch to WebSocket-FLV (mpegts.js) plays; when ffmpeg stops the
  page says it waits for the publisher, and plays again by itself on a republish.

Printed: the advance, the time from Enter to the RTMP client's receipt and from
the RTMP send to the DOM.  ``STREAMSERVER_WATCH_SCREENSHOT=FILE`` also saves a
screenshot of the page (how ``docs/watch.png`` was made; the suite writes none).

Chromium missing skips, or fails under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from streamserver.client import RTMPClientProtocol, connect_client
from tests.integration.hardening_support import start_twistd
from tests.integration.support import (
    accepts_connections,
    free_port,
    get_reactor,
    run,
    sleep,
    wait_until,
    within,
)
from tests.integration.test_browser import (
    CHROMIUM_NAMES,
    MIN_ADVANCE,
    WATCH_SECONDS,
    _DevTools,
    _devtools_page,
    _stop_chromium,
    chromium_argv,
)
from tests.integration.test_interop import _publish_argv
from tests.integration.test_irc_interop import IrcThread

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

#: The title ffmpeg puts in the stream's onMetaData.
TITLE = "Test card & tone"

#: Set to a file name to save a screenshot of the watch page there.
SCREENSHOT_VARIABLE = "STREAMSERVER_WATCH_SCREENSHOT"

#: Seconds from the click to the end of the watch, at most: the HLS segmenter starts on
#: the page's first playlist request, which waits for two segments (2 s GOPs).
PLAY_DEADLINE = 30.0

#: The markup a message carries to show it is text.
MARKUP = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


async def _cdp(devtools: _DevTools, method: str, params: dict[str, Any] | None = None) -> Any:
    """Call DevTools *method*; its result."""
    ident = devtools.next_id
    devtools.next_id += 1
    devtools.answers[ident] = answer = defer.Deferred()
    message = {"id": ident, "method": method, "params": params or {}}
    devtools.transport.sendTextMessage(json.dumps(message))
    reply = await within(answer, 10, method)
    assert "error" not in reply, reply
    return reply.get("result")


async def _until(devtools: _DevTools, expression: str, seconds: float, what: str) -> Any:
    """Evaluate *expression* in the page until it is truthy; its value."""
    deadline = get_reactor().seconds() + seconds
    while True:
        value = await devtools.evaluate(expression)
        if value:
            return value
        assert get_reactor().seconds() < deadline, f"{what}: {value!r}"
        await sleep(0.2)


async def _published(curl: str, url: str) -> bool:
    listing = await run([curl, "-sS", "--max-time", "5", url], 10)
    if listing.exit_code != 0:
        return False
    entry = json.loads(listing.stdout or b"{}")
    return entry.get("publisher") is not None and entry.get("video") is not None


async def _press_enter(devtools: _DevTools) -> None:
    """A real Enter key press (down, char, up) on the focused element."""
    key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
    await _cdp(devtools, "Input.dispatchKeyEvent", {"type": "keyDown", **key, "text": "\r"})
    await _cdp(devtools, "Input.dispatchKeyEvent", {"type": "keyUp", **key})


def _texts_expression() -> str:
    return (
        "Array.from(document.querySelectorAll('#messages li')).map(li => "
        "[li.querySelector('.nick').textContent, li.querySelector('.text').textContent])"
    )


@pytest.mark.timeout(150)
@pytest_twisted.ensureDeferred
async def test_a_viewer_finds_the_stream_watches_it_and_chats_with_rtmp(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    chromium_path = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium_path is None:
        interop.unavailable(f"Chromium is not on PATH (tried {', '.join(CHROMIUM_NAMES)})")
    tools = interop.tools("ffmpeg", "env", "curl")
    reactor = get_reactor()
    irc_port = free_port()
    twistd = await start_twistd(
        processes,
        interop,
        tmp_path,
        "--api-token",
        "moderator-token",
        "--irc",
        f"tcp:{irc_port}:interface=127.0.0.1",
    )
    argv_publish = _publish_argv(tools["ffmpeg"], sample_flv, twistd.url("live/x"))
    at = argv_publish.index("-f")
    argv_publish[at:at] = ["-metadata", f"title={TITLE}"]
    publisher = processes.spawn(argv_publish, cwd=tmp_path)
    deadline = reactor.seconds() + 15
    while not await _published(tools["curl"], twistd.http_url("api/streams/live/x")):
        assert publisher.running, publisher.result.describe() if publisher.result else ""
        assert reactor.seconds() < deadline, "ffmpeg never published live/x"
        await sleep(0.2)

    rtmp: RTMPClientProtocol = await within(
        connect_client(reactor, twistd.url("live"), nick="rita"), 10, "the RTMP chat client"
    )
    sid = await within(rtmp.create_stream(), 10, "createStream")
    await within(rtmp.join_chat("x", sid), 10, "joinChat")
    deadline = reactor.seconds() + 10
    while not await accepts_connections(irc_port):
        assert reactor.seconds() < deadline, f"nothing listens on the IRC port {irc_port}"
        await sleep(0.1)
    irc = IrcThread(irc_port, "ircy")
    irc_running = threads.deferToThread(irc.run)

    base = Path(tempfile.mkdtemp(prefix="chromium-"))
    home = twistd.http_url("")
    argv = chromium_argv(tools["env"], chromium_path, base, home)
    argv[argv.index("--window-size=640,480")] = "--window-size=1280,760"
    argv.insert(argv.index(home), "--remote-debugging-port=0")
    chromium = processes.spawn(argv, cwd=tmp_path)
    try:
        await wait_until(lambda: bool(irc.seen("welcome")), 10, "IRC's 001", describe=irc.text)
        irc.do(lambda c: c.join("#live/x"))
        await wait_until(lambda: bool(irc.seen("namreply")), 10, "IRC's join", describe=irc.text)
        devtools = await _devtools_page(tools["curl"], base / "profile", home)
        # / lists the stream by its title; follow its link as a person would
        link = "document.querySelector('a[href=\"/watch/live/x\"]')"
        title = await _until(devtools, f"{link} && {link}.textContent", 10, "the stream's link")
        assert title == TITLE
        await devtools.evaluate(f"{link}.click()")
        await _until(
            devtools, "location.pathname === '/watch/live/x' && !!window.Hls", 10, "the page"
        )

        # the video plays, with the default player
        state_js = (
            "(() => { const v = document.getElementById('video');"
            " return {t: v.currentTime, w: v.videoWidth,"
            " frames: v.getVideoPlaybackQuality().totalVideoFrames,"
            " status: document.getElementById('status').textContent,"
            " viewers: document.getElementById('viewers').textContent,"
            " player: document.getElementById('transport').value}; })()"
        )
        first: tuple[float, float] | None = None
        state: dict[str, Any] = {"t": 0}
        deadline = reactor.seconds() + PLAY_DEADLINE
        while True:
            state = await devtools.evaluate(state_js) or {"t": 0}
            if first is None and state["t"] > 0:
                first = (reactor.seconds(), state["t"])
            if first is not None and reactor.seconds() - first[0] >= WATCH_SECONDS:
                break
            assert reactor.seconds() < deadline, f"the page never played 8 s: {state}"
            await sleep(0.25)
        assert first is not None
        advanced = state["t"] - first[1]

        # the page's chat: a nick, a message typed, Enter
        await devtools.evaluate(
            "(() => { const n = document.getElementById('nick'); n.value = 'webby';"
            " n.dispatchEvent(new Event('change')); })()"
        )
        await _until(
            devtools, "document.getElementById('nick').placeholder === 'webby'", 10, "rejoined"
        )
        typed = "hello from the browser"
        await devtools.evaluate("document.getElementById('text').focus()")
        await _cdp(devtools, "Input.insertText", {"text": typed})
        pressed = reactor.seconds()
        await _press_enter(devtools)
        await wait_until(
            lambda: any(m.text == typed for m in rtmp.chat_messages), 10, "the page's message"
        )
        to_rtmp = reactor.seconds() - pressed
        got = next(m for m in rtmp.chat_messages if m.text == typed)
        assert got.nick == "webby"
        await wait_until(
            lambda: ("pubmsg", "webby", "#live/x", [typed]) in irc.seen("pubmsg"),
            10,
            "the page's message on IRC",
            describe=irc.text,
        )
        to_irc = reactor.seconds() - pressed
        irc.do(lambda c: c.privmsg("#live/x", "hello from IRC"))
        await _until(
            devtools,
            f"{_texts_expression()}.some(([n, t]) => n === 'ircy' && t === 'hello from IRC')",
            10,
            "the IRC message in the page",
        )
        assert await devtools.evaluate("document.getElementById('text').value") == ""

        # the RTMP client's messages appear as text, markup included
        sent = reactor.seconds()
        await within(rtmp.send_chat("hello from rtmp", sid), 10, "send_chat")
        await _until(
            devtools,
            f"{_texts_expression()}.some(([n, t]) => n === 'rita' && t === 'hello from rtmp')",
            10,
            "the RTMP message in the page",
        )
        to_page = reactor.seconds() - sent
        await within(rtmp.send_chat(MARKUP, sid), 10, "send_chat")
        await _until(
            devtools,
            f"{_texts_expression()}.some(([n, t]) => t === {json.dumps(MARKUP)})",
            10,
            "the markup as text",
        )
        await sleep(0.5)  # an image that was an element would have failed to load by now
        injected = await devtools.evaluate(
            "({elements: document.querySelectorAll('#messages img, #messages script,"
            " #messages *[onerror]').length, xss: window.__xss === undefined ? null : window.__xss,"
            " items: document.querySelectorAll('#messages li').length})"
        )
        assert injected["elements"] == 0 and injected["xss"] is None, injected
        texts = await devtools.evaluate(_texts_expression())
        assert ["webby", typed] in texts and ["rita", "hello from rtmp"] in texts, texts
        moderation = await devtools.evaluate("!document.getElementById('moderation').hidden")
        assert moderation, "the server has --api-token: the moderation panel shows"

        shot = os.environ.get(SCREENSHOT_VARIABLE)
        if shot:
            await sleep(1.0)
            image = await _cdp(devtools, "Page.captureScreenshot", {"format": "png"})
            Path(shot).write_bytes(base64.b64decode(image["data"]))

        # the switch: WebSocket-FLV through mpegts.js plays too
        await devtools.evaluate(
            "(() => { const s = document.getElementById('transport'); s.value = 'ws-flv';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        status_js = "document.getElementById('status').textContent"
        await _until(devtools, f"{status_js} === 'Live (ws-flv)'", 15, "WebSocket-FLV playing")

        # the publisher goes: the page waits; it comes back: the page plays by itself
        await publisher.stop("TERM", grace=5.0)
        await _until(
            devtools, f"{status_js}.startsWith('Waiting for the publisher')", 15, "waiting"
        )
        gone = reactor.seconds()
        publisher = processes.spawn(argv_publish, cwd=tmp_path)
        await _until(devtools, f"{status_js} === 'Live (ws-flv)'", 20, "playing again")
        resumed = reactor.seconds() - gone
        devtools.transport.loseConnection()
    finally:
        await _stop_chromium(chromium, base)
        rtmp.transport.loseConnection()
        irc.stop()
        await within(irc_running, 10, "the IRC client's thread")
    assert irc.error is None, irc.error

    print(
        f"\nwatch page: {state['player']} currentTime advanced {advanced:.2f} s in "
        f"{WATCH_SECONDS} s ({state['frames']} frames, {state['w']} px wide, status "
        f"{state['status']!r}, {state['viewers']!r}); Enter to the RTMP client "
        f"{to_rtmp * 1000:.0f} ms, to the IRC client's PRIVMSG {to_irc * 1000:.0f} ms; "
        f"RTMP send to the page's DOM {to_page * 1000:.0f} ms; "
        f"switched to WebSocket-FLV; playing again {resumed:.1f} s after a republish"
    )
    assert advanced >= MIN_ADVANCE, state
    assert state["frames"] > 0 and state["w"] > 0, state
    assert state["status"].startswith("Live"), state
    assert twistd.process.running, twistd.process.result
