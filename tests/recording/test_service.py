"""The recording service: a recorder per publish, --record-apps, shutdown, recovery, retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.internet import task

from streamserver.auth import AccessRequest
from streamserver.codec import amf0
from streamserver.codec.flv import FLVReader
from streamserver.codec.messages import Message, MessageType
from streamserver.config import ServerConfig
from streamserver.events import PUBLISH, RecordingDone, SessionEvent
from streamserver.factory import RTMPServerFactory
from streamserver.recording.paths import PART_SUFFIX
from streamserver.recording.service import RecordingService, delete_expired, recover
from streamserver.recording.writer import ManualWriter
from tests.codec.mp4_reader import read_file
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER
from tests.media.test_hls import video_message
from tests.media.timed_feed import Publisher
from tests.recording.support import WALL_ZERO, Feed


def parts(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{PART_SUFFIX}"))


def crashed(root: Path, fmt: str, seconds: float = 3.5) -> Path:
    """A recording left as a crash leaves it: written up to its last flush, never finished."""
    feed = Feed(root, format=fmt)
    feed.publish()
    feed.run(seconds)
    [part] = parts(root)
    return part


def test_recovery_cuts_an_fmp4_to_its_last_fragment_and_states_its_duration(
    tmp_path: Path,
) -> None:
    part = crashed(tmp_path, "fmp4")
    with part.open("ab") as file:
        file.write(b"\x00\x00\x10\x00moof-cut-short")  # a fragment the crash cut
    [done] = recover(tmp_path, lambda: WALL_ZERO + 100)
    assert parts(tmp_path) == []
    assert done.reason == "recovered" and done.format == "fmp4"
    assert done.path == part.with_name(part.name.removesuffix(PART_SUFFIX))
    assert (done.app, done.name) == ("live", "cam")
    assert done.start == WALL_ZERO and done.access is None
    data = done.path.read_bytes()
    assert len(data) == done.size
    _, fragments = read_file(data)  # every box whole
    assert 2.9 <= done.duration <= 3.5
    assert len(fragments) >= 3


def test_recovery_cuts_an_flv_to_its_last_tag_and_patches_its_metadata(tmp_path: Path) -> None:
    part = crashed(tmp_path, "flv")
    with part.open("ab") as file:
        file.write(b"\x09\x00\x10\x00")
    [done] = recover(tmp_path)
    data = done.path.read_bytes()
    tags = FLVReader().receive_data(data)
    meta = dict(amf0.decode_all(tags[0].payload)[1])
    assert meta["filesize"] == len(data) == done.size
    assert meta["duration"] == done.duration and 2.9 <= done.duration <= 3.5


def test_recovery_of_garbage_renames_it_with_no_duration(tmp_path: Path) -> None:
    part = tmp_path / "live" / "cam" / f"cam-20251201T120000Z.mp4{PART_SUFFIX}"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not an mp4 at all")
    [done] = recover(tmp_path)
    assert done.duration == 0 and done.path.exists() and not part.exists()
    assert recover(tmp_path / "missing") == []


def test_retention_deletes_finished_files_older_than_the_limit(tmp_path: Path) -> None:
    directory = tmp_path / "live" / "cam"
    directory.mkdir(parents=True)
    old, new, part = (directory / n for n in ("a.mp4", "b.flv", f"c.mp4{PART_SUFFIX}"))
    for path in (old, new, part):
        path.write_bytes(b"x")
    os.utime(old, (1000, 1000))
    os.utime(part, (1000, 1000))
    assert delete_expired(tmp_path, 3600, now=1000 + 3601) == [old]
    assert delete_expired(tmp_path, 3600, now=1000 + 3601) == []
    assert new.exists() and part.exists() and not old.exists()


# --- the service over a factory


class Service:
    def __init__(self, root: Path, **config: object) -> None:
        self.clock = task.Clock()
        self.factory = RTMPServerFactory(
            ServerConfig(record_dir=str(root), **config),  # type: ignore[arg-type]
            reactor=self.clock,
        )
        self.writer = ManualWriter()
        self.done: list[RecordingDone] = []
        self.factory.recordings.add(self.done.append)
        self.service = RecordingService(
            self.factory, writer=self.writer, wall=lambda: WALL_ZERO + self.clock.seconds()
        )

    def publish(self, app: str = "live", name: str = "cam") -> object:
        stream = self.factory.registry(app).get_or_create(name)
        publisher = Publisher()
        stream.publish(publisher)
        access = AccessRequest("publish", app, name)
        self.factory.events.started(SessionEvent(PUBLISH, stream, access, "rtmp", 0.0))
        stream.broadcast(Message(MessageType.VIDEO, 1, 0, AVC_SEQUENCE_HEADER))
        stream.broadcast(Message(MessageType.AUDIO, 1, 0, AAC_SEQUENCE_HEADER))
        for index in range(50):
            stream.broadcast(video_message(index * 40, key=index % 25 == 0, index=index))
        return stream, publisher


def test_a_publish_gets_a_recorder_and_shutdown_finishes_its_file(tmp_path: Path) -> None:
    service = Service(tmp_path)
    service.service.startService()
    assert service.factory.recorder is service.service
    stream, _ = service.publish()
    assert list(service.service.recorders) == [stream]
    snapshot = service.service.stream_snapshot(stream)  # type: ignore[arg-type]
    assert snapshot is not None and snapshot["format"] == "fmp4"
    service.writer.run()
    assert service.service.snapshot()["active"] == 1
    stopped = service.service.stopService()
    assert stopped.called
    service.writer.run()
    [done] = service.done
    assert done.reason == "shutdown" and done.access is not None and done.access.name == "cam"
    assert done.duration == pytest.approx(2.0, abs=0.05)
    totals = service.service.snapshot()
    assert totals["active"] == 0 and totals["files_done"] == 1
    assert totals["bytes_total"] == done.size


def test_only_streams_matching_record_apps_are_recorded(tmp_path: Path) -> None:
    service = Service(tmp_path, record_apps=("live/show-*,other/*",))
    service.service.startService()
    service.publish("live", "cam")
    service.publish("live", "show-1")
    service.publish("other", "x")
    assert sorted(f"{s.app}/{s.name}" for s in service.service.recorders) == [  # type: ignore[attr-defined]
        "live/show-1",
        "other/x",
    ]
    service.service.stopService()


def test_leftover_part_files_are_recovered_and_reported_at_start(tmp_path: Path) -> None:
    crashed(tmp_path, "fmp4")
    service = Service(tmp_path)
    service.service.startService()
    service.writer.run()
    [done] = service.done
    assert done.reason == "recovered" and parts(tmp_path) == []
    assert service.service.snapshot()["recovered"] == 1


def test_retention_runs_periodically_while_started(tmp_path: Path) -> None:
    directory = tmp_path / "live" / "cam"
    directory.mkdir(parents=True)
    old = directory / "old.mp4"
    old.write_bytes(b"x")
    os.utime(old, (WALL_ZERO - 1000, WALL_ZERO - 1000))
    service = Service(tmp_path, record_delete_after=1200.0)
    service.service.startService()
    service.writer.run()
    assert old.exists()
    service.clock.advance(240)
    service.writer.run()
    assert not old.exists()
    service.service.stopService()


def test_twistd_adds_the_service_with_record_only(tmp_path: Path) -> None:
    from streamserver import tap

    def names(*argv: str) -> list[str]:
        options = tap.Options()
        options.parseOptions(["--no-http", *argv])
        return [s.name for s in tap.makeService(options)]  # type: ignore[attr-defined]

    assert "recording" not in names()
    assert "recording" in names("--record", str(tmp_path), "--record-format", "flv")


def test_the_api_and_metrics_report_the_recorder(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.http.support import SiteClient

    service = Service(tmp_path)
    client = SiteClient(service.factory, service.clock)
    off = client.get("/metrics").body.decode()
    assert "streamserver_recordings_active 0.0" in off
    service.service.startService()
    service.publish()
    service.writer.run()
    entry = client.get("/api/streams/live/cam").json()
    recording = entry["recording"]
    assert recording["format"] == "fmp4" and recording["file"].endswith(".mp4.part")
    assert recording["bytes"] > 0 and recording["duration"] > 1.5
    server = client.get("/api/server").json()["recording"]
    assert server["active"] == 1 and server["bytes_total"] == recording["bytes"]
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").body.decode())
        for sample in family.samples
        if sample.name.startswith("streamserver_recording")
    }
    assert samples == {
        "streamserver_recordings_active": 1,
        "streamserver_recording_bytes_total": recording["bytes"],
        "streamserver_recording_failures_total": 0,
    }
    service.service.stopService()
