"""Stream consumers: fed every frame, never dropped, and a failing one costs only itself."""

from __future__ import annotations

from typing import Any

from streamserver.codec.flv import FrameKind
from streamserver.media.stream import Frame, Stream
from tests.protocol import media


class Recorder:
    """A consumer that remembers what it was fed; ``fail_on`` makes a call raise."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.events: list[Any] = []
        self.failures: list[BaseException] = []

    def _event(self, name: str, value: Any) -> None:
        if name == self.fail_on:
            raise RuntimeError(f"{name} failed")
        self.events.append((name, value))

    def consume(self, frame: Frame) -> None:
        self._event("frame", frame.kind)

    def stream_published(self, stream: Stream) -> None:
        self._event("published", stream.name)

    def stream_unpublished(self, stream: Stream) -> None:
        self._event("unpublished", stream.name)

    def consumer_failed(self, stream: Stream, error: BaseException) -> None:
        self.failures.append(error)


class Peer:
    peer = "192.0.2.9:1935"


def _published(stream: Stream) -> Peer:
    publisher = Peer()
    stream.publish(publisher)
    for message in media.headers(1):
        stream.broadcast(message)
    return publisher


def test_a_consumer_gets_every_frame_and_the_session_events() -> None:
    """Attach returns the catch-up; then every frame, publish and unpublish, in order."""
    stream = Stream("live", "cam")
    publisher = _published(stream)
    for message in media.gop_frames(1, 0, frames=3):
        stream.broadcast(message)
    consumer = Recorder()
    catch_up = stream.attach(consumer)
    assert [f.kind for f in catch_up][:4] == [
        FrameKind.METADATA,
        FrameKind.VIDEO_SEQUENCE_HEADER,
        FrameKind.AUDIO_SEQUENCE_HEADER,
        FrameKind.KEYFRAME,
    ]
    assert stream.attach(consumer) and stream.consumers == [consumer]  # once only
    assert not stream.is_idle
    for message in media.gop_frames(1, 100, frames=2):
        stream.broadcast(message)
    stream.unpublish(publisher)
    stream.publish(publisher)
    assert consumer.events == [
        ("frame", FrameKind.KEYFRAME),
        ("frame", FrameKind.AUDIO),
        ("frame", FrameKind.INTER),
        ("frame", FrameKind.AUDIO),
        ("unpublished", "cam"),
        ("published", "cam"),
    ]
    stream.detach(consumer)
    stream.unpublish(publisher)
    assert stream.is_idle


def test_a_consumer_that_raises_is_detached_and_told_and_the_others_go_on() -> None:
    """Its failure is its own: detached, told once; the next consumer still gets the frame."""
    stream = Stream("live", "cam")
    _published(stream)
    for where in ("frame", "unpublished", "published"):
        broken, healthy = Recorder(fail_on=where), Recorder()
        stream.attach(broken)
        stream.attach(healthy)
        stream.broadcast(media.audio(1, 10))
        publisher = stream.publisher
        assert publisher is not None
        stream.unpublish(publisher)
        stream.publish(publisher)
        assert stream.consumers == [healthy], where
        assert [str(e) for e in broken.failures] == [f"{where} failed"]
        assert [name for name, _ in healthy.events] == ["frame", "unpublished", "published"]
        stream.detach(healthy)


def test_a_consumer_whose_failure_handler_raises_costs_nothing_more() -> None:
    """Even consumer_failed raising does not reach the publisher."""
    stream = Stream("live", "cam")
    _published(stream)
    broken = Recorder(fail_on="frame")

    def worse(stream: Stream, error: BaseException) -> None:
        raise RuntimeError("and its handler too")

    broken.consumer_failed = worse  # type: ignore[method-assign]
    stream.attach(broken)
    stream.broadcast(media.audio(1, 10))
    assert stream.consumers == []
