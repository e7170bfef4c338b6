"""A stream published with synthetic H.264 + AAC in time with a fake clock, and its recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import task

from streamserver.codec.messages import Message, MessageType
from streamserver.events import RecordingDone
from streamserver.media.stream import Stream
from streamserver.recording.recorder import RecorderSettings, StreamRecorder
from streamserver.recording.writer import ManualWriter, Opener
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER
from tests.media.test_hls import AAC_FRAME, SAMPLE_RATE, audio_message, video_message
from tests.protocol import media

#: The wall clock at the fake clock's 0 (2025-12-01T12:00:00Z).
WALL_ZERO = 1764590400.0


class Publisher:
    peer = "192.0.2.1:1935"


class Feed:
    """Publishes synthetic media to a stream with a :class:`StreamRecorder` attached.

    Frames come in time order at *fps* video frames (a keyframe every *gop*)
    and 44.1 kHz AAC frames; the clock keeps up.  The writer runs jobs when
    :meth:`flush` is called (and after every :meth:`run`).
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
        self.clock = task.Clock()
        self.stream = Stream(app, name, clock=self.clock.seconds)
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
        self.video = video
        self.audio = audio
        self.fps = fps
        self.gop = gop
        self.frame_size = frame_size
        self.publisher = Publisher()
        self.video_index = self.audio_index = 0
        self.session_start = 0.0
        self.started = False

    def publish(self, video_header: bytes = AVC_SEQUENCE_HEADER) -> None:
        """A new session: metadata and sequence headers, its clocks from 0."""
        self.stream.publish(self.publisher)
        self.stream.broadcast(media.metadata(1, width=640.0, height=360.0, framerate=25.0))
        if self.video:
            self.stream.broadcast(Message(MessageType.VIDEO, 1, 0, video_header))
        if self.audio:
            self.stream.broadcast(Message(MessageType.AUDIO, 1, 0, AAC_SEQUENCE_HEADER))
        if not self.started:
            self.started = True
            self.recorder.start()
        self.video_index = self.audio_index = 0
        self.session_start = self.clock.seconds()

    def unpublish(self) -> None:
        self.stream.unpublish(self.publisher)
        self.flush()

    def flush(self) -> None:
        self.writer.run()

    def next_message(self) -> Message:
        video_ms = self.video_index * 1000 // self.fps
        audio_ms = self.audio_index * AAC_FRAME * 1000 // SAMPLE_RATE
        if self.video and (not self.audio or video_ms <= audio_ms):
            index = self.video_index
            self.video_index += 1
            key = index % self.gop == 0
            return video_message(video_ms, key=key, index=index, size=self.frame_size)
        self.audio_index += 1
        return audio_message(audio_ms, index=self.audio_index - 1)

    def run(self, seconds: float) -> None:
        """Publish *seconds* of media, the clock keeping up; then let the writer run."""
        end = self.clock.seconds() - self.session_start + seconds
        while True:
            message = self.next_message()
            at = message.timestamp / 1000
            if at >= end:
                if message.type_id == MessageType.VIDEO:
                    self.video_index -= 1
                else:
                    self.audio_index -= 1
                break
            self.clock.advance(max(0.0, self.session_start + at - self.clock.seconds()))
            self.stream.broadcast(message)
        self.flush()
