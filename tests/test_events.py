"""Session events: every publish and play, RTMP or HTTP-FLV, is told to the observers once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import task

from streamserver.events import PLAY, PUBLISH, RecordingDone, SessionEvent
from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer
from tests.http.support import SiteClient


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, SessionEvent, float | None]] = []

    def session_started(self, event: SessionEvent) -> None:
        self.seen.append(("start", event, None))

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        self.seen.append(("end", event, ended_at))


class Broken:
    def session_started(self, event: SessionEvent) -> None:
        raise RuntimeError("observer bug")

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        raise RuntimeError("observer bug")


def _summary(seen: list[tuple[str, SessionEvent, float | None]]) -> list[tuple[Any, ...]]:
    return [
        (
            what,
            e.role,
            e.protocol,
            e.access.action,
            e.access.stream,
            dict(e.access.args),
            e.started_at,
            end,
        )
        for what, e, end in seen
    ]


def test_rtmp_publish_and_play_start_and_end_once(
    factory: RTMPServerFactory, clock: task.Clock, log_events: list[dict[str, Any]]
) -> None:
    """Start after the publish/play began, end after it stopped; a broken observer costs nothing."""
    observer = Recorder()
    factory.events.add(Broken())
    factory.events.add(observer)
    publisher = FakePeer(factory)
    publisher.connect("live")
    pub_sid = publisher.create_stream()
    clock.advance(1)
    publisher.publish("cam?key=k1", pub_sid)
    viewer = FakePeer(factory)
    viewer.connect("live")
    play_sid = viewer.create_stream()
    clock.advance(1)
    viewer.play("cam?t=x", play_sid)
    clock.advance(5)
    viewer.call("deleteStream", None, float(play_sid))
    clock.advance(1)
    publisher.transport.loseConnection()
    assert _summary(observer.seen) == [
        ("start", PUBLISH, "rtmp", "publish", "live/cam", {"key": "k1"}, 1.0, None),
        ("start", PLAY, "rtmp", "play", "live/cam", {"t": "x"}, 2.0, None),
        ("end", PLAY, "rtmp", "play", "live/cam", {"t": "x"}, 2.0, 7.0),
        ("end", PUBLISH, "rtmp", "publish", "live/cam", {"key": "k1"}, 1.0, 8.0),
    ]
    assert observer.seen[0][1].access.conn_id == publisher.protocol.conn_id
    failures = [e for e in log_events if "session observer" in e.get("log_format", "")]
    assert len(failures) == 4
    assert publisher.protocol.publish_events == {}


def test_http_flv_play_starts_when_it_streams_and_ends_when_it_goes(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """An HTTP-FLV play is a play session with its protocol; a refused one is none."""
    observer = Recorder()
    factory.events.add(observer)
    client = SiteClient(factory, clock)
    transport = client.play("/live/cam.flv?token=abc")
    assert observer.seen == []  # waiting for a publisher is not playing yet
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    clock.advance(2)
    transport.loseConnection()
    summary = _summary(observer.seen)
    # the waiting request starts streaming inside the publish, before it is told
    assert [s[:5] for s in summary] == [
        ("start", PLAY, "http-flv", "play", "live/cam"),
        ("start", PUBLISH, "rtmp", "publish", "live/cam"),
        ("end", PLAY, "http-flv", "play", "live/cam"),
    ]
    assert summary[0][5] == {"token": "abc"}
    assert summary[2][7] == 2.0
    factory.events.remove(observer)
    publisher.transport.loseConnection()
    assert len(observer.seen) == 3


def test_recording_listeners_are_told_and_isolated(
    factory: RTMPServerFactory, log_events: list[dict[str, Any]]
) -> None:
    """Each listener gets the record once; one that raises is logged and the rest still told."""
    got: list[RecordingDone] = []

    def broken(record: RecordingDone) -> None:
        raise RuntimeError("listener bug")

    factory.recordings.add(broken)
    factory.recordings.add(got.append)
    factory.recordings.add(got.append)  # adding twice is adding once
    record = RecordingDone("live", "cam", Path("x.mp4"), "fmp4", 10, 1.5, 0.0, 2.0, "unpublish")
    factory.recordings.done(record)
    assert got == [record]
    assert sum("recording listener" in e.get("log_format", "") for e in log_events) == 1
    factory.recordings.remove(got.append)
    factory.recordings.done(record)
    assert got == [record]
