"""A stream published with synthetic H.264 + AAC in time with a fake clock, and its recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import task

from streamserver.events import RecordingDone
from streamserver.media.stream import Stream
from streamserver.recording.recorder import RecorderSettings, StreamRecorder
from streamserver.recording.writer import ManualWriter, Opener
from tests.integration.support import AVC_SEQUENCE_HEADER
from tests.media.timed_feed import TimedFeed
from tests.protocol import media

#: The wall clock at the fake clock's 0 (2025-12-01T12:00:00Z).
WALL_ZERO = 1764590400.0


class Feed(TimedFeed):
    """Publishes synthetic media to a stream with a :class:`StreamRecorder` attached.

    A :class:`~tests.media.timed_feed.TimedFeed` at *fps* video frames (a keyframe
    every *gop*) and 44.1 kHz AAC frames; the clock keeps up.  The writer runs jobs
    when :meth:`flush` is called (and after every :meth:`run` and :meth:`unpublish`).
    """

    def __init__(
        self,
        root: Path,
        *,
        app: str = "live",
        name: str = "cam",
        video: bool = True,
        audio: bool = True,
        fps: int = 25,
        gop: int = 50,
        frame_size: int = 300,
        writer: ManualWriter | None = None,
        opener: Opener | None = None,
        **settings: Any,
    ) -> None:
        clock = task.Clock()
        super().__init__(
            Stream(app, name, clock=clock.seconds),
            clock,
            video=video,
            audio=audio,
            fps=fps,
            gop=gop,
            frame_size=frame_size,
            metadata=media.metadata(1, width=640.0, height=360.0, framerate=25.0),
        )
        self.writer = writer or ManualWriter()
        self.done: list[RecordingDone] = []
        self.closed: list[StreamRecorder] = []
        self.recorder = StreamRecorder(
            self.stream,
            RecorderSettings(root=root, **settings),
            self.writer,
            self.clock,
            on_done=self.done.append,
            on_closed=self.closed.append,
            wall=lambda: WALL_ZERO + self.clock.seconds(),
            opener=opener,
        )
        self.started = False

    def publish(self, video_header: bytes = AVC_SEQUENCE_HEADER) -> None:
        """A new session (the recorder started with the first)."""
        super().publish(video_header)
        if not self.started:
            self.started = True
            self.recorder.start()

    def unpublish(self) -> None:
        super().unpublish()
        self.flush()

    def flush(self) -> None:
        self.writer.run()

    def run(self, seconds: float, **kwargs: Any) -> None:
        """Publish *seconds* of media, the clock keeping up; then let the writer run."""
        super().run(seconds, **kwargs)
        self.flush()
