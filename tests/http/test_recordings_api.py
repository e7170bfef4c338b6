"""GET /api/recordings: the files under --record per stream, read from the layout and the files."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import task

from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.http.recordings_support import START, flv_bytes, fmp4_bytes, place
from tests.http.support import SiteClient


def _client(clock: task.Clock, root: Path | None) -> SiteClient:
    config = ServerConfig(record_dir=None if root is None else str(root))
    return SiteClient(RTMPServerFactory(config, reactor=clock), clock)


def test_without_record_it_is_a_json_404(clock: task.Clock) -> None:
    """A server that records nothing answers 404 with a JSON error."""
    response = _client(clock, None).get("/api/recordings")
    assert response.status == 404
    assert "no --record" in response.json()["error"]


def test_files_per_stream_finished_and_being_written(clock: task.Clock, tmp_path: Path) -> None:
    """Finished files have their URL, start, duration from the file, size and format."""
    mp4 = place(tmp_path, "live", "cam", fmp4_bytes(12_042, bytes(1000)))
    second = place(tmp_path, "live", "cam", fmp4_bytes(0), counter=1)  # states none: 0
    writing = place(tmp_path, "live", "cam", fmp4_bytes(0), start=START + 60, part=True)
    flv = place(tmp_path, "live/sub", "a b", flv_bytes(3.5, bytes(10)), extension="flv")
    broken = place(tmp_path, "x", "y", b"garbage that is no mp4 at all")
    # what the layout cannot have made is not listed
    (mp4.parent / "notes.txt").write_text("no")
    (mp4.parent / ".hidden-20261201T120000Z.mp4").write_bytes(b"")
    (mp4.parent / "cam-20261201T120000Z.mkv").write_bytes(b"")
    os.symlink(mp4, mp4.parent / "cam-20261201T130000Z.mp4")
    (tmp_path / "empty" / "stream").mkdir(parents=True)

    response = _client(clock, tmp_path).get("/api/recordings")
    assert response.status == 200
    streams = response.json()["streams"]
    assert [(s["app"], s["name"]) for s in streams] == [
        ("live", "cam"), ("live/sub", "a b"), ("x", "y"),
    ]  # fmt: skip
    cam, sub, junk = (s["files"] for s in streams)
    assert cam == [
        {
            "file": mp4.name,
            "url": f"/recordings/live/cam/{mp4.name}",
            "start": "2026-12-01T12:00:00Z",
            "duration": 12.042,
            "size": mp4.stat().st_size,
            "format": "fmp4",
            "recording": False,
        },
        {
            "file": second.name,
            "url": f"/recordings/live/cam/{second.name}",
            "start": "2026-12-01T12:00:00Z",
            "duration": 0,
            "size": second.stat().st_size,
            "format": "fmp4",
            "recording": False,
        },
        {
            "file": writing.name,
            "url": None,
            "start": "2026-12-01T12:01:00Z",
            "duration": 0,
            "size": writing.stat().st_size,
            "format": "fmp4",
            "recording": True,
        },
    ]
    (only,) = sub
    assert flv.name == "a%20b-20261201T120000Z.flv"
    assert only["url"] == "/recordings/live/sub/a%20b/a%2520b-20261201T120000Z.flv"
    assert (only["duration"], only["format"], only["size"]) == (3.5, "flv", flv.stat().st_size)
    assert junk[0]["duration"] == 0 and junk[0]["size"] == broken.stat().st_size


def test_the_duration_follows_the_file(clock: task.Clock, tmp_path: Path) -> None:
    """A file patched at close (a new size) is read again; an unchanged one is not."""
    path = place(tmp_path, "live", "cam", fmp4_bytes(0))
    client = _client(clock, tmp_path)
    first = client.get("/api/recordings").json()["streams"][0]["files"][0]
    path.write_bytes(fmp4_bytes(5000, b"more"))
    second = client.get("/api/recordings").json()["streams"][0]["files"][0]
    assert (first["duration"], second["duration"]) == (0, 5.0)


def test_an_empty_or_missing_directory_lists_nothing(clock: task.Clock, tmp_path: Path) -> None:
    """No stream has a file yet: an empty list, not an error."""
    assert _client(clock, tmp_path).get("/api/recordings").json() == {"streams": []}
    assert _client(clock, tmp_path / "nope").get("/api/recordings").json() == {"streams": []}
    assert _client(clock, tmp_path).get("/api/recordings/x").status == 404
    assert _client(clock, tmp_path).post("/api/recordings").status == 405
