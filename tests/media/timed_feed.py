"""Synthetic H.264 + AAC published through a real Stream in time with a fake clock.

:class:`TimedFeed` is what the HLS segmenter's tests (``tests/media/test_hls.py``)
and the recorder's (``tests/recording/support.py``) publish with: a session's
metadata and sequence headers, then video frames at *fps* (a keyframe where
:attr:`TimedFeed.keyframes` says) and 44.1 kHz AAC frames, in time order, the
clock advanced with the media as a publisher in real time would.  The tags are
real avcC / AudioSpecificConfig streams (``video_message``, ``audio_message``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import task

from streamserver.codec.messages import Message, MessageType
from streamserver.media.stream import Stream
from tests.integration.support import AAC_SEQUENCE_HEADER, AVC_SEQUENCE_HEADER
from tests.protocol import media

SAMPLE_RATE = 44100
AAC_FRAME = 1024


def nal_units(*units: bytes) -> bytes:
    """AVCC: each NAL unit after its 4-byte length (the avcC's lengthSizeMinusOne is 3)."""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in units)


def video_message(timestamp: int, *, key: bool, index: int, size: int = 300) -> Message:
    """An AVC NALU tag: an IDR (type 5) or a non-IDR slice (type 1) of *size* bytes, unique."""
    header = b"\x17\x01\x00\x00\x00" if key else b"\x27\x01\x00\x00\x00"
    # No zero bytes: a real NAL unit never holds a start code (emulation prevention).
    unit = bytes([0x65 if key else 0x41]) + f"{index:08d}".encode()
    unit += bytes([index % 250 + 1]) * (size - len(unit))
    return Message(MessageType.VIDEO, 1, timestamp, header + nal_units(unit))


def audio_message(timestamp: int, *, index: int, size: int = 60) -> Message:
    """A raw AAC frame tag."""
    body = index.to_bytes(4, "big") + b"\x21" * (size - 4)
    return Message(MessageType.AUDIO, 1, timestamp, b"\xaf\x01" + body)


class Publisher:
    peer = "192.0.2.1:1935"


class TimedFeed:
    """A stream published with synthetic media in time with a fake clock.

    :ivar keyframes: decides which video frame index is a keyframe.
    :ivar metadata: the ``onMetaData`` each session starts with.
    """

    def __init__(
        self,
        stream: Stream,
        clock: task.Clock,
        *,
        video: bool = True,
        audio: bool = True,
        fps: int = 30,
        gop: int = 60,
        frame_size: int = 300,
        metadata: Message | None = None,
    ) -> None:
        self.clock = clock
        self.stream = stream
        self.video = video
        self.audio = audio
        self.fps = fps
        self.frame_size = frame_size
        self.keyframes: Callable[[int], bool] = lambda index: index % gop == 0
        self.metadata = metadata or media.metadata(1)
        self.publisher = Publisher()
        self.video_index = self.audio_index = 0
        self.session_start = 0.0

    def publish(self, video_header: bytes = AVC_SEQUENCE_HEADER) -> None:
        """A new session: metadata and sequence headers, its clocks from 0."""
        self.stream.publish(self.publisher)
        self.stream.broadcast(self.metadata)
        if self.video:
            self.stream.broadcast(Message(MessageType.VIDEO, 1, 0, video_header))
        if self.audio:
            self.stream.broadcast(Message(MessageType.AUDIO, 1, 0, AAC_SEQUENCE_HEADER))
        self.video_index = self.audio_index = 0
        self.session_start = self.clock.seconds()

    def unpublish(self) -> None:
        self.stream.unpublish(self.publisher)

    def next_message(self) -> Message:
        """The next frame in time order (video first at the same millisecond)."""
        video_ms = self.video_index * 1000 // self.fps
        audio_ms = self.audio_index * AAC_FRAME * 1000 // SAMPLE_RATE
        if self.video and (not self.audio or video_ms <= audio_ms):
            index = self.video_index
            self.video_index += 1
            key = self.keyframes(index)
            return video_message(video_ms, key=key, index=index, size=self.frame_size)
        self.audio_index += 1
        return audio_message(audio_ms, index=self.audio_index - 1)

    def run(self, seconds: float, *, each: Callable[[Message], None] | None = None) -> None:
        """Publish *seconds* of media, the clock keeping up with it."""
        end = self.clock.seconds() - self.session_start + seconds
        while True:
            message = self.next_message()
            at = message.timestamp / 1000
            if at >= end:
                # Not sent: take it back.
                if message.type_id == MessageType.VIDEO:
                    self.video_index -= 1
                else:
                    self.audio_index -= 1
                break
            self.clock.advance(max(0.0, self.session_start + at - self.clock.seconds()))
            self.stream.broadcast(message)
            if each is not None:
                each(message)
