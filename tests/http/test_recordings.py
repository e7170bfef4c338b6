"""GET /recordings/APP/NAME/FILE: range requests, content types, the play authorization, and
every path trick a 404."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import _producer_helpers, defer, task
from zope.interface import implementer

from streamserver.auth import AccessConfig, AllOf, IAuthorizer
from streamserver.errors import UnauthorizedError
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.tokens import signed_query
from tests.http.recordings_support import flv_bytes, fmp4_bytes, place
from tests.http.support import Response, SiteClient, parse_response

MEDIA = bytes(range(256)) * 40  # 10 KiB of known bytes after the moov


class RecordingsClient(SiteClient):
    """A SiteClient whose requests run the clock until answered.

    ``static.File`` is a pull producer, which twisted.web's channel drives through
    the global cooperator (``_PullToPush``); the fixture gives it one on the clock.
    """

    def __init__(self, factory: RTMPServerFactory, clock: task.Clock) -> None:
        super().__init__(factory, clock)
        self.clock = clock

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        transport = self.open()
        headers = "".join(f"{k}: {v}\r\n" for k, v in (kwargs.get("headers") or {}).items())
        transport.protocol.dataReceived(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
        )
        self.run()
        response = parse_response(transport.value())
        transport.loseConnection()
        return response

    def run(self) -> None:
        """Advance the clock until the cooperator has nothing left to do."""
        for _ in range(1000):
            now = self.clock.seconds()
            if not [c for c in self.clock.getDelayedCalls() if c.getTime() <= now]:
                return
            self.clock.advance(0)
        raise AssertionError("the response never ended")


@pytest.fixture(autouse=True)
def cooperator(clock: task.Clock, monkeypatch: pytest.MonkeyPatch) -> task.Cooperator:
    cooperator = task.Cooperator(scheduler=lambda work: clock.callLater(0, work))
    monkeypatch.setattr(_producer_helpers, "cooperate", cooperator.cooperate)
    return cooperator


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "rec"
    directory.mkdir()
    return directory


def _client(clock: task.Clock, root: Path | None, **settings: Any) -> RecordingsClient:
    config = ServerConfig(record_dir=None if root is None else str(root), **settings)
    return RecordingsClient(RTMPServerFactory(config, reactor=clock), clock)


def _url(path: Path) -> str:
    return f"/recordings/live/cam/{path.name}"


def test_a_whole_file_with_its_type(clock: task.Clock, root: Path) -> None:
    """200 with the bytes, Accept-Ranges, video/mp4 or video/x-flv, no-cache and nosniff."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000, MEDIA))
    flv = place(root, "live", "cam", flv_bytes(1.0, MEDIA), extension="flv")
    client = _client(clock, root)
    response = client.get(_url(mp4))
    assert response.status == 200
    assert response.body == mp4.read_bytes()
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    other = client.get(_url(flv))
    assert (other.status, other.headers["content-type"]) == (200, "video/x-flv")
    assert other.body == flv.read_bytes()
    head = client.request("HEAD", _url(mp4))
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(mp4.stat().st_size)


def test_range_requests(clock: task.Clock, root: Path) -> None:
    """A range is a 206 with its Content-Range; an open end and a suffix too; past the end 416."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000, MEDIA))
    data, size = mp4.read_bytes(), mp4.stat().st_size
    client = _client(clock, root)
    middle = client.get(_url(mp4), headers={"Range": "bytes=1000-1999"})
    assert middle.status == 206
    assert middle.headers["content-range"] == f"bytes 1000-1999/{size}"
    assert middle.body == data[1000:2000] and middle.headers["content-length"] == "1000"
    assert middle.headers["content-type"] == "video/mp4"
    tail = client.get(_url(mp4), headers={"Range": f"bytes={size - 10}-"})
    assert (tail.status, tail.body) == (206, data[-10:])
    suffix = client.get(_url(mp4), headers={"Range": "bytes=-100"})
    assert (suffix.status, suffix.body) == (206, data[-100:])
    beyond = client.get(_url(mp4), headers={"Range": f"bytes={size + 5}-"})
    assert beyond.status == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"


def test_without_record_everything_is_a_404(clock: task.Clock, root: Path) -> None:
    """A server without --record serves no recording, even one at the layout's path."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000))
    assert _client(clock, None).get(_url(mp4)).status == 404


def test_multi_segment_apps_and_escaped_names(clock: task.Clock, root: Path) -> None:
    """The listing's URL of live/sub + 'a b' serves that file: its %20 encoded once more."""
    path = place(root, "live/sub", "a b", fmp4_bytes(1000, b"x"))
    response = _client(clock, root).get(
        f"/recordings/live/sub/a%20b/{path.name.replace('%', '%25')}"
    )
    assert (response.status, response.body) == (200, path.read_bytes())


@pytest.mark.parametrize(
    "tail",
    [
        "cam-20261201T120000Z.mp4.part",  # being written
        "cam-20261201T120000Z.mkv",  # not a recording's extension
        "notes.txt",
        "missing-20261201T120000Z.mp4",
        "..",
        "%2e%2e",
        "%2E%2E/%2E%2E/secret.mp4",
        "..%2f..%2fsecret.mp4",
        "%2fetc%2fpasswd.mp4",
        "..%5c..%5csecret.mp4",
        "sub\\..\\..\\secret.mp4",
        "cam%00.mp4",
        "cam-20261201T120000Z.mp4%00.txt",
        ".hidden.mp4",
        "%2ehidden.mp4",
        "escape.mp4",  # a symlink out of the stream's directory
        "inside-dir.mp4",  # a directory with a recording's name
        "x" * 300 + ".mp4",
        "",
    ],
)
def test_path_tricks_are_404(clock: task.Clock, root: Path, tail: str) -> None:
    """Whatever the file segment holds, only a finished recording of that stream is served."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000))
    place(root, "live", "cam", b"being written", part=True)
    (mp4.parent / "cam-20261201T120000Z.mkv").write_bytes(b"x")
    (mp4.parent / "notes.txt").write_text("x")
    (mp4.parent / ".hidden.mp4").write_bytes(b"x")
    (mp4.parent / "inside-dir.mp4").mkdir()
    secret = root.parent / "secret.mp4"
    secret.write_bytes(b"secret")
    os.symlink(secret, mp4.parent / "escape.mp4")
    response = _client(clock, root).get(f"/recordings/live/cam/{tail}")
    assert response.status == 404, (tail, response)
    assert b"secret" not in response.body


@pytest.mark.parametrize(
    "path",
    [
        "/recordings/%2e%2e/cam/secret.mp4",
        "/recordings/live/%2e%2e/secret.mp4",
        "/recordings/live/../../secret.mp4",
        "/recordings/../rec/live/cam/cam-20261201T120000Z.mp4",
        "/recordings//live/cam/cam-20261201T120000Z.mp4",
        "/recordings/live/cam%00/cam-20261201T120000Z.mp4",
        "/recordings/%2F/cam/cam-20261201T120000Z.mp4",
        "/recordings/live%2fcam/x/cam-20261201T120000Z.mp4",
        "/recordings/" + "a" * 2000 + "/cam/cam-20261201T120000Z.mp4",
        "/recordings/live/cam",
        "/recordings/",
        "/recordings",
        "/recordings//etc/passwd",
        "/recordings/live/cam/%ff.mp4",
    ],
)
def test_stream_path_tricks_are_404(clock: task.Clock, root: Path, path: str) -> None:
    """APP and NAME segments that are empty, dots, NUL, encoded slashes or too long: 404."""
    place(root, "live", "cam", fmp4_bytes(1000))
    secret = root / "secret.mp4"
    secret.write_bytes(b"secret")
    response = _client(clock, root).get(path)
    assert response.status == 404, (path, response)


@implementer(IAuthorizer)
class _Later:
    """An authorizer that answers plays when the test says."""

    name = "later"

    def __init__(self) -> None:
        self.asked: list[Any] = []

    def authorize_publish(self, request: Any) -> bool:
        return True

    def authorize_play(self, request: Any) -> defer.Deferred[bool]:
        deferred: defer.Deferred[bool] = defer.Deferred()
        self.asked.append((request, deferred))
        return deferred


def test_the_play_authorization_applies(clock: task.Clock, root: Path) -> None:
    """With --play-token-secret, no token is a 403, a valid one serves the file."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000, MEDIA))
    secured = _client(clock, root, access=AccessConfig(play_token_secret="s3"))
    assert secured.get(_url(mp4)).status == 403
    assert secured.get(f"{_url(mp4)}?expires=60&token=00").status == 403
    query = signed_query("s3", "play", "live", "cam", 60)
    response = secured.get(f"{_url(mp4)}?{query}", headers={"Range": "bytes=0-99"})
    assert (response.status, response.body) == (206, mp4.read_bytes()[:100])


def test_a_slow_authorizer_is_waited_for(clock: task.Clock, root: Path) -> None:
    """The response waits for an authorizer's Deferred: allowed, the range follows; refused, 403."""
    mp4 = place(root, "live", "cam", fmp4_bytes(1000, MEDIA))
    client = _client(clock, root)
    later = _Later()
    factory = client.site.resource.factory  # type: ignore[attr-defined]
    factory.authorizer = AllOf(later)
    transport = client.open()
    transport.protocol.dataReceived(
        f"GET {_url(mp4)}?who=a HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n".encode()
    )
    assert transport.value() == b""
    ((request, deferred),) = later.asked
    assert (request.action, request.stream, dict(request.args)) == (
        "play",
        "live/cam",
        {"who": "a"},
    )
    assert request.connect_params["protocol"] == "recording"
    deferred.callback(True)
    client.run()
    response = parse_response(transport.value())
    assert (response.status, response.body) == (206, mp4.read_bytes()[10:20])

    refused = client.open()
    refused.protocol.dataReceived(f"GET {_url(mp4)}?who=b HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    later.asked[1][1].errback(UnauthorizedError("no"))
    assert parse_response(refused.value()).status == 403
    # the decision is kept: the same player's next range request asks nobody
    again = client.get(f"{_url(mp4)}?who=a", headers={"Range": "bytes=0-0"})
    assert again.status == 206 and len(later.asked) == 2
