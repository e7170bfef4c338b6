"""``--on-publish-done`` and ``--on-play-done`` from a twistd server to a real local HTTP server.

ffmpeg publishes the session's sample over RTMP to ``twistd -n streamserver``;
ffmpeg plays it over RTMP and curl over HTTP-FLV, each ending by itself; then
the publisher stops.  The test's own ``twisted.web`` site (port 0) receives a
``play_done`` per player, as JSON (``json:URL``), and one ``publish_done`` as a
form, the first of them only on a retry after a 503.  A missing binary skips,
or fails under ``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.integration.hardening_support import start_twistd
from tests.integration.support import get_reactor, run, wait_until
from tests.integration.test_http_interop import STREAM, _publish
from tests.integration.test_interop import _play_argv

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration


class Receiver(Resource):
    """Takes every POST: its path and body (form or JSON); ``/flaky`` answers 503 once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.refused = 0

    def render_POST(self, request: Request) -> bytes:
        path = request.path.decode()
        if path == "/flaky" and not self.refused:
            self.refused += 1
            request.setResponseCode(503)
            return b""
        content_type = request.getHeader(b"content-type")
        if content_type == b"application/json":
            body = json.loads(request.content.read())
        else:
            body = {k.decode(): v[0].decode() for k, v in (request.args or {}).items()}
        self.received.append((path, body))
        request.setResponseCode(204)
        return b""

    def calls(self, call: str) -> list[tuple[str, dict[str, Any]]]:
        return [(path, body) for path, body in self.received if body.get("call") == call]


@pytest_twisted.async_yield_fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    resource = Receiver()
    site = Site(resource)
    site.noisy = False
    listening = get_reactor().listenTCP(0, site, interface="127.0.0.1")
    try:
        yield resource, listening.getHost().port
    finally:
        await defer.maybeDeferred(listening.stopListening)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_publish_done_and_play_done_reach_a_real_receiver(
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
    receiver: tuple[Receiver, int],
) -> None:
    """Each player's end POSTs play_done (JSON), the publisher's publish_done (a form, retried)."""
    tools = interop.tools("ffmpeg", "curl")
    hook, port = receiver
    twistd = await start_twistd(
        processes, interop, tmp_path,
        "--on-publish-done", f"http://127.0.0.1:{port}/flaky",
        "--on-play-done", f"json:http://127.0.0.1:{port}/play",
    )  # fmt: skip
    publisher = await _publish(processes, twistd, tools["ffmpeg"], sample_flv)

    rtmp_player = processes.spawn(
        _play_argv(tools["ffmpeg"], twistd.url(f"{STREAM}?player=ffmpeg"), 3)
    )
    curl = await processes.spawn(
        [tools["curl"], "-sS", "--max-time", "2", "-o", str(tmp_path / "out.flv"),
         twistd.http_url(f"{STREAM}.flv?player=curl")]
    ).wait(20)  # fmt: skip
    assert curl.exit_code == 28, curl.describe()  # cut by --max-time, as a live stream is
    played = await rtmp_player.wait(30)
    assert played.exit_code == 0, played.describe()

    def players() -> dict[str, dict[str, Any]]:
        return {body["player"]: body for _, body in hook.calls("play_done") if "player" in body}

    await wait_until(lambda: len(players()) == 2, 15, "play_done of both players",
                     describe=lambda: repr(hook.received))  # fmt: skip
    await publisher.stop("INT")
    # the first publish_done is refused with a 503; the retry comes 1 s later
    await wait_until(lambda: hook.calls("publish_done"), 15, "publish_done",
                     describe=lambda: repr(hook.received))  # fmt: skip

    by_player = players()
    ffmpeg, http = by_player["ffmpeg"], by_player["curl"]
    assert all(path == "/play" for path, _ in hook.calls("play_done"))
    assert (ffmpeg["app"], ffmpeg["name"], ffmpeg["args"]) == ("live", "x", "player=ffmpeg")
    assert ffmpeg["tcurl"] == twistd.url("live") and ffmpeg["addr"] == "127.0.0.1"
    assert isinstance(ffmpeg["clientid"], int)  # a number in JSON
    assert (http["app"], http["name"], http["args"]) == ("live", "x", "player=curl")
    assert http["tcurl"] == f"/{STREAM}.flv?player=curl"
    assert ffmpeg["clientid"] != http["clientid"]

    ((path, published),) = hook.calls("publish_done")
    assert path == "/flaky" and hook.refused == 1
    assert (published["app"], published["name"], published["addr"]) == ("live", "x", "127.0.0.1")
    assert published["tcurl"] == twistd.url("live")
    assert published["clientid"].isdigit()  # a form field is text
    assert twistd.process.running


#: Seconds the recorder's publish lasts.
RECORDED_SECONDS = 4


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_a_recording_fires_record_done_and_the_command_and_is_listed_and_served(
    processes: ProcessPool, interop: Interop, tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    """ffmpeg publishes 4 s to twistd --record: record_done (JSON) names the finished file,
    --exec-record-done copies it, /api/recordings lists it and /recordings/... serves it."""
    tools = interop.tools("ffmpeg", "curl")
    cp = shutil.which("cp")
    assert cp is not None
    hook, port = receiver
    root, copy = tmp_path / "rec", tmp_path / "copied.mp4"
    twistd = await start_twistd(
        processes, interop, tmp_path,
        "--record", str(root), "--record-reconnect-grace", "0",
        "--on-record-done", f"json:http://127.0.0.1:{port}/rec",
        "--exec-record-done", f"cp {{path}} '{copy}'",
    )  # fmt: skip
    argv = [
        tools["ffmpeg"], "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(RECORDED_SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", twistd.url("live/cam?key=k1"),
    ]  # fmt: skip
    published = await processes.spawn(argv).wait(RECORDED_SECONDS + 20)
    assert published.exit_code == 0, published.describe()
    await wait_until(
        lambda: bool(hook.calls("record_done")) and copy.exists(),
        15,
        "record_done and the command",
        describe=lambda: repr(hook.received),
    )

    ((path, done),) = hook.calls("record_done")
    recorded = Path(done["path"])
    assert path == "/rec" and recorded.parent == root / "live" / "cam"
    assert recorded.is_file() and recorded.suffix == ".mp4"
    assert (done["app"], done["name"], done["format"]) == ("live", "cam", "fmp4")
    assert (done["reason"], done["error"], done["args"], done["key"]) == (
        "unpublish",
        None,
        "key=k1",
        "k1",
    )
    assert done["size"] == recorded.stat().st_size
    assert abs(done["duration"] - RECORDED_SECONDS) <= 0.5, done
    assert 0 < done["end"] - done["start"] < RECORDED_SECONDS + 10, done
    await wait_until(lambda: copy.stat().st_size == recorded.stat().st_size, 10, "the copy")
    assert copy.read_bytes() == recorded.read_bytes()

    listing = await run([tools["curl"], "-sS", "--fail", twistd.http_url("api/recordings")], 20)
    assert listing.exit_code == 0, listing.describe()
    ((stream),) = json.loads(listing.stdout)["streams"]
    ((entry),) = stream["files"]
    assert (stream["app"], stream["name"], entry["file"]) == ("live", "cam", recorded.name)
    assert entry["size"] == done["size"] and not entry["recording"]
    assert abs(entry["duration"] - done["duration"]) < 0.01, (entry, done)
    served = tmp_path / "served.mp4"
    fetched = await run(
        [
            tools["curl"],
            "-sS",
            "--fail",
            "-o",
            str(served),
            twistd.http_url(entry["url"].lstrip("/")),
        ],
        20,
    )
    assert fetched.exit_code == 0, fetched.describe()
    assert served.read_bytes() == recorded.read_bytes()
    print(f"\nrecord_done: {done}\nlisted: {entry}")
