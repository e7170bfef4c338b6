"""Real clients on the HTTP side of ``twistd -n streamserver``: ffmpeg, ffprobe, curl, WebSocket.

Each test starts the twistd plugin as a child process (RTMP and HTTP on free
loopback ports), publishes the session's sample with ffmpeg over RTMP and plays
``/live/x.flv`` over HTTP-FLV or WebSocket-FLV with a real client.  A missing
binary skips the test, or fails it under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from streamserver.codec.flv import TAG_AUDIO, TAG_SCRIPT_DATA, TAG_VIDEO, FLVReader, FLVTag
from tests.integration.hardening_support import TwistdServer, start_twistd
from tests.integration.support import (
    CollectingProcess,
    ffprobe_codecs,
    get_reactor,
    run,
    sleep,
    wait_until,
    within,
)
from tests.integration.test_interop import (
    _error_lines,
    _frames_decoded,
    _play_argv,
    _publish_argv,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

#: The stream every test publishes and plays.
STREAM = "live/x"

_ON_METADATA = b"\x02\x00\x0aonMetaData"


async def _http_status(method: bytes, url: str) -> int | None:
    """The status code of *method* on *url* (``None`` if the connection failed)."""
    agent = Agent(get_reactor(), connectTimeout=2)
    try:
        response = await within(agent.request(method, url.encode()), 5, f"{method!r} {url}")
    except Exception:
        return None
    return int(response.code)


async def _publish(
    processes: ProcessPool, twistd: TwistdServer, ffmpeg: str, sample: Path
) -> CollectingProcess:
    """ffmpeg publishing *sample* to *twistd* over RTMP; returns once HTTP says it is live.

    ``HEAD /live/x.flv`` answers 200 once the stream has a publisher (404 before).
    """
    publisher = processes.spawn(_publish_argv(ffmpeg, sample, twistd.url(STREAM)))
    reactor = get_reactor()
    deadline = reactor.seconds() + 15
    url = twistd.http_url(f"{STREAM}.flv")
    while await _http_status(b"HEAD", url) != 200:
        assert publisher.running, publisher.result.describe() if publisher.result else ""
        assert reactor.seconds() < deadline, f"HEAD {url} never answered 200"
        await sleep(0.1)
    # Let the sequence headers and a keyframe arrive, so a player starts on a full GOP.
    await sleep(0.5)
    return publisher


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_ffmpeg_decodes_http_flv_without_errors(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """``ffmpeg -i http://…/live/x.flv -t 8 -f null -`` decodes 8 s of an RTMP publish cleanly."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    publisher = await _publish(processes, twistd, ffmpeg, sample_flv)

    player = processes.spawn(_play_argv(ffmpeg, twistd.http_url(f"{STREAM}.flv"), 8))
    result = await player.wait(40)

    frames = _frames_decoded(result.stdout)
    _log.info("ffmpeg decoded %d frames of HTTP-FLV from twistd", frames)
    assert result.exit_code == 0, result.describe()
    assert _error_lines(result.stderr) == [], result.describe()
    # 8 s at 30 fps is 240 frames; the cached GOP may add or take a few.
    assert frames > 200, result.describe()
    assert publisher.running, "the publisher stopped while the player was playing"
    assert twistd.process.running, twistd.process.result


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_ffprobe_finds_h264_and_aac_over_http_flv(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """ffprobe on the HTTP-FLV URL finds the publisher's H.264 and AAC streams."""
    tools = interop.tools("ffmpeg", "ffprobe")
    twistd = await start_twistd(processes, interop, tmp_path)
    await _publish(processes, twistd, tools["ffmpeg"], sample_flv)

    url = twistd.http_url(f"{STREAM}.flv")
    codecs = await ffprobe_codecs(tools["ffprobe"], url)
    _log.info("ffprobe on %s: %s", url, codecs)
    assert "h264" in codecs
    assert "aac" in codecs


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_curl_lists_the_stream_and_gets_flv_headers(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """curl: ``/`` lists the live stream with its FLV URL; the FLV URL's headers and first bytes.

    The FLV response never ends while the stream is live, so curl stops it
    with ``--max-time`` (exit code 28) after writing the headers and some media.
    """
    tools = interop.tools("ffmpeg", "curl")
    curl = tools["curl"]
    twistd = await start_twistd(processes, interop, tmp_path)
    await _publish(processes, twistd, tools["ffmpeg"], sample_flv)

    index = await run([curl, "-sS", "--fail", "--max-time", "10", twistd.http_url("")], 20)
    assert index.exit_code == 0, index.describe()
    page = index.stdout.decode()
    assert "live/x" in page, page
    assert 'href="/live/x.flv"' in page, page

    headers, body = tmp_path / "headers.txt", tmp_path / "body.flv"
    argv = [
        curl, "-sS", "--max-time", "2", "-H", "Origin: http://127.0.0.1:1",
        "-D", str(headers), "-o", str(body), twistd.http_url(f"{STREAM}.flv"),
    ]  # fmt: skip
    flv = await run(argv, 20)
    assert flv.exit_code == 28, flv.describe()  # cut by --max-time, as a live stream is
    lines = headers.read_text().splitlines()
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    _log.info("curl on the FLV URL: %s, %d bytes", lines, body.stat().st_size)
    assert lines[0].startswith("HTTP/1.1 200"), lines
    assert fields.get("content-type") == "video/x-flv", lines
    assert fields.get("access-control-allow-origin") == "*", lines
    assert "no-cache" in fields.get("cache-control", ""), lines
    assert fields.get("transfer-encoding") == "chunked", lines
    reader = FLVReader()
    tags = reader.receive_data(body.read_bytes())
    assert (reader.has_audio, reader.has_video) == (True, True)
    assert tags and tags[0].payload.startswith(_ON_METADATA), tags[:3]


# --- WebSocket-FLV ----------------------------------------------------------------------


class _WebSocketFlvClient(Protocol):
    """A wsproto WebSocket client collecting the binary messages of a WebSocket-FLV play.

    :ivar messages: the binary messages received, each whole.
    :ivar texts: text messages received (a FLV server sends none).
    :ivar accepted: fires when the handshake is accepted (errbacks if rejected).
    :ivar closed: fires with the close code when the connection ends.
    """

    def __init__(self, host: str, target: str) -> None:
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._host = host
        self._target = target
        self._partial = bytearray()
        self.messages: list[bytes] = []
        self.texts: list[str] = []
        self.accepted: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[int | None] = defer.Deferred()
        self._close_code: int | None = None

    def connectionMade(self) -> None:
        self.transport.write(self._ws.send(Request(host=self._host, target=self._target)))

    def dataReceived(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events():
            self._handle(event)

    def _handle(self, event: Any) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted.callback(None)
        elif isinstance(event, RejectConnection):
            self.accepted.errback(AssertionError(f"WebSocket rejected: {event.status_code}"))
        elif isinstance(event, BytesMessage):
            self._partial += event.data
            if event.message_finished:
                self.messages.append(bytes(self._partial))
                self._partial.clear()
        elif isinstance(event, TextMessage):
            self.texts.append(event.data)
        elif isinstance(event, Ping):
            self.transport.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._close_code = event.code
            if self._ws.state is ConnectionState.REMOTE_CLOSING:  # the server closed first
                self.transport.write(self._ws.send(event.response()))
            self.transport.loseConnection()

    def close(self) -> None:
        """Close the WebSocket (code 1000), or the TCP connection if it is not open."""
        try:
            self.transport.write(self._ws.send(CloseConnection(code=1000)))
        except LocalProtocolError:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.accepted.called:
            self.accepted.errback(AssertionError(f"connection lost before the handshake: {reason}"))
        self.closed.callback(self._close_code)


def _first_media(tags: list[FLVTag]) -> tuple[list[FLVTag], FLVTag | None]:
    """The tags before the first coded video frame, and that frame (``None`` if none yet)."""
    for index, tag in enumerate(tags):
        if tag.tag_type == TAG_VIDEO and tag.payload[1:2] == b"\x01":
            return tags[:index], tag
    return tags, None


def _describe(tag: FLVTag) -> str:
    return f"{tag.tag_type}@{tag.timestamp}:{tag.payload[:2].hex()}"


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_websocket_flv_messages_are_an_flv_stream(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """A wsproto client gets binary messages, one tag each, that make a playable FLV stream.

    The header announces audio and video; ``onMetaData`` comes first, then both
    sequence headers; the first coded video frame after them is a keyframe.
    """
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    await _publish(processes, twistd, ffmpeg, sample_flv)

    reactor = get_reactor()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", twistd.http_port, timeout=5)
    client = _WebSocketFlvClient(f"127.0.0.1:{twistd.http_port}", f"/{STREAM}.flv")
    await within(connectProtocol(endpoint, client), 10, "the WebSocket connection")
    try:
        await within(client.accepted, 10, "the WebSocket handshake")
        reader = FLVReader()
        tags: list[FLVTag] = []
        parsed = 0

        def enough() -> bool:
            """Whether two seconds of media after the first keyframe have arrived."""
            nonlocal parsed
            for message in client.messages[parsed:]:
                tags.extend(reader.receive_data(message))
            parsed = len(client.messages)
            first = _first_media(tags)[1]
            return first is not None and tags[-1].timestamp - first.timestamp >= 2000

        await wait_until(
            enough,
            15,
            "two seconds of WebSocket-FLV media",
            interval=0.05,
            describe=lambda: f"{len(client.messages)} messages, {[_describe(t) for t in tags[:8]]}",
        )
    finally:
        client.close()
    code = await within(client.closed, 10, "the WebSocket to close")

    messages = client.messages
    _log.info("WebSocket-FLV: %d messages, %d tags, closed with %s", len(messages), len(tags), code)
    assert client.texts == []
    # The first message is the FLV header (and PreviousTagSize0), audio and video flagged.
    assert messages[0][:3] == b"FLV" and len(messages[0]) == 13, messages[0][:16]
    assert (reader.has_audio, reader.has_video) == (True, True)
    # Then one tag per message: each message parses as exactly one whole tag.
    for message in messages[1:]:
        single = FLVReader()
        single.receive_data(messages[0])
        assert len(single.receive_data(message)) == 1 and single.at_tag_boundary, message[:16]
    headers, keyframe = _first_media(tags)
    described = [_describe(t) for t in headers]
    assert headers[0].tag_type == TAG_SCRIPT_DATA, described
    assert headers[0].payload.startswith(_ON_METADATA), described
    assert any(t.tag_type == TAG_VIDEO and t.payload[:2] == b"\x17\x00" for t in headers), described
    assert any(t.tag_type == TAG_AUDIO and t.payload[:2] == b"\xaf\x00" for t in headers), described
    assert keyframe is not None, described
    assert keyframe.payload[:2] == b"\x17\x01", _describe(keyframe)


# --- the JSON API and the metrics, with viewers of three protocols ---------------------


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_curl_reads_the_api_and_metrics_of_a_stream_with_three_kinds_of_viewers(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """curl on ``/api/streams``, ``/api/streams/live/x`` and ``/metrics`` while an RTMP, an
    HTTP-FLV and a WebSocket-FLV viewer play: the JSON names each protocol's viewer, and
    ``prometheus_client``'s parser reads the exposition with the same numbers."""
    from prometheus_client.parser import text_string_to_metric_families

    tools = interop.tools("ffmpeg", "curl")
    curl, ffmpeg = tools["curl"], tools["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    # the sample is 10 s long: publish it in a loop so the viewers outlast it
    publisher = processes.spawn(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(sample_flv), "-c", "copy", "-f", "flv", twistd.url(STREAM)]
    )  # fmt: skip
    url = twistd.http_url(f"{STREAM}.flv")
    reactor = get_reactor()
    deadline = reactor.seconds() + 15
    while await _http_status(b"HEAD", url) != 200:
        assert publisher.running and reactor.seconds() < deadline, "the stream never went live"
        await sleep(0.1)
    rtmp_viewer = processes.spawn(_play_argv(ffmpeg, twistd.url(STREAM), 30))
    http_viewer = processes.spawn(_play_argv(ffmpeg, url, 30))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", twistd.http_port, timeout=5)
    ws_viewer = _WebSocketFlvClient(f"127.0.0.1:{twistd.http_port}", f"/{STREAM}.flv")
    await within(connectProtocol(endpoint, ws_viewer), 10, "the WebSocket connection")
    try:
        await within(ws_viewer.accepted, 10, "the WebSocket handshake")

        async def get(path: str) -> bytes:
            result = await run(
                [curl, "-sS", "--fail", "--max-time", "10", twistd.http_url(path)], 20
            )
            assert result.exit_code == 0, result.describe()
            return result.stdout

        async def three_viewers() -> bool:
            streams = json.loads(await get("api/streams"))["streams"]
            return bool(streams) and streams[0]["viewers"]["total"] == 3

        deadline = reactor.seconds() + 20
        while not await three_viewers():
            assert reactor.seconds() < deadline, "the API never counted three viewers"
            await sleep(0.2)
        await sleep(2.5)  # the bit rate needs a few of the watchdog's samples
        listing = json.loads(await get("api/streams"))
        detail = json.loads(await get(f"api/streams/{STREAM}"))
        server = json.loads(await get("api/server"))
        metrics = (await get("metrics")).decode()
    finally:
        ws_viewer.close()
    _log.info("GET /api/streams: %s", json.dumps(listing))
    _log.info("GET /api/streams/%s: %s", STREAM, json.dumps(detail))
    _log.info("GET /api/server: %s", json.dumps(server))
    _log.info("GET /metrics (streamserver_ lines):\n%s", "\n".join(
        line for line in metrics.splitlines() if line.startswith("streamserver_")
    ))  # fmt: skip

    (stream,) = listing["streams"]
    assert (stream["app"], stream["name"]) == ("live", "x")
    assert stream["viewers"] == {"total": 3, "rtmp": 1, "http-flv": 1, "ws-flv": 1}
    assert stream["video"]["codec"] == "h264" and stream["audio"]["codec"] == "aac"
    assert (stream["video"]["width"], stream["video"]["height"]) == (320, 240)
    assert stream["bitrate_in"] > 0 and stream["bytes_out"] > 0
    assert sorted(v["protocol"] for v in detail["viewer_list"]) == ["http-flv", "rtmp", "ws-flv"]
    assert server["connections"]["rtmp"] == 2  # the publisher and the RTMP viewer

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    connections = {
        s.labels["protocol"]: s.value for s in families["streamserver_connections"].samples
    }
    assert connections == {"rtmp": 2.0, "http-flv": 1.0, "ws-flv": 1.0}
    viewers_by_protocol = {
        s.labels["protocol"]: s.value
        for s in families["streamserver_stream_viewers"].samples
        if s.labels.get("name") == "x"
    }
    assert viewers_by_protocol == {"rtmp": 1.0, "http-flv": 1.0, "ws-flv": 1.0}
    assert families["streamserver_streams"].samples[0].value == 1.0
    assert "process_resident_memory_bytes" in families
    assert rtmp_viewer.running and http_viewer.running and publisher.running
