"""ffmpeg reads what the HLS segmenter makes of a real encoder's FLV, without an error.

The FLV comes from ffmpeg (libx264 + AAC, a keyframe every 2 s, and one with
B-frames); its tags are published through a real
:class:`~streamserver.media.stream.Stream` into a
:class:`~streamserver.media.hls.Segmenter`, on a fake clock that keeps pace
with the media.  Then:

- fMP4: the init segment followed by every segment is one file where
  ffprobe finds H.264 and AAC with every packet of the FLV, the FLV's own
  decode and presentation times, and ffmpeg decodes it all silently; each
  segment decodes on its own after the init segment;
- MPEG-TS: the segments one after the other read the same way, and each
  alone;
- the playlists: written next to the segments (with an ``EXT-X-ENDLIST``
  added, as a recording would end), ffmpeg's HLS demuxer plays
  ``index.m3u8`` and ``ts.m3u8`` with every frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted

from streamserver.codec.flv import TAG_AUDIO, TAG_VIDEO, read_file, tag_to_message
from streamserver.media.hls import HlsSettings, Segmenter
from streamserver.media.stream import Stream
from tests.integration.support import run
from tests.integration.test_fmp4_ffprobe import FlvMedia, decode_errors, read_flv, video_times_ms

if TYPE_CHECKING:
    from tests.integration.conftest import Interop

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)


class _Publisher:
    peer = "127.0.0.1:1935"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def segment_flv(flv: Path) -> Segmenter:
    """Publish the FLV at *flv* into a segmenter (2 s segments, 200 ms parts) and unpublish."""
    clock = _Clock()
    stream = Stream("live", "x", clock=clock)
    segmenter = Segmenter(stream, HlsSettings(window=20), clock)
    segmenter.start()
    publisher = _Publisher()
    stream.publish(publisher)
    for tag in read_file(flv):
        clock.now = max(clock.now, tag.timestamp / 1000)
        stream.broadcast(tag_to_message(tag, 1))
    stream.unpublish(publisher)
    assert segmenter.failure is None and not segmenter.closed
    return segmenter


async def probe_packets(ffprobe: str, path: Path) -> dict[str, Any]:
    """ffprobe's streams (with packet counts) of the file at *path*, quietly."""
    result = await run(
        [
            ffprobe, "-v", "error", "-count_packets",
            "-show_entries", "stream=codec_name,codec_type,nb_read_packets",
            "-of", "json", str(path),
        ],
        30,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    assert result.stderr == b"", result.describe()
    streams = json.loads(result.stdout)["streams"]
    return {s["codec_type"]: s for s in streams}


def check_streams(streams: dict[str, Any], media: FlvMedia) -> None:
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["video"]["nb_read_packets"]) == len(media.video)
    assert int(streams["audio"]["nb_read_packets"]) == len(media.audio)


def write_hls(segmenter: Segmenter, directory: Path) -> None:
    """The init segments, segments and both playlists (ended) as files in *directory*."""
    directory.mkdir()
    for number in {s.init for s in segmenter.segments}:
        init = segmenter.init_segment(number)
        assert init is not None
        (directory / f"init-{number}.mp4").write_bytes(init)
    for segment in segmenter.segments:
        (directory / f"seg-{segment.msn}.m4s").write_bytes(segment.mp4())
        (directory / f"seg-{segment.msn}.ts").write_bytes(segment.ts)
    for variant, name in (("fmp4", "index.m3u8"), ("ts", "ts.m3u8")):
        text = segmenter.playlist(variant)
        assert text is not None
        _log.info("%s as the segmenter wrote it:\n%s", name, text)
        (directory / name).write_text(text + "#EXT-X-ENDLIST\n")


async def check_segments(interop: Interop, flv: Path, tmp_path: Path) -> Segmenter:
    """Segment *flv* and hold ffprobe's and ffmpeg's reading of every form to the FLV."""
    tools = interop.tools("ffmpeg", "ffprobe")
    media = read_flv(flv)
    segmenter = segment_flv(flv)
    segments = segmenter.segments
    assert all(s.complete for s in segments) and len(segments) >= 4
    init = segmenter.init_segment(0)
    assert init is not None

    mp4 = tmp_path / "all.mp4"
    mp4.write_bytes(init + b"".join(s.mp4() for s in segments))
    check_streams(await probe_packets(tools["ffprobe"], mp4), media)
    assert await video_times_ms(tools["ffprobe"], mp4) == [
        (dts, dts + cts) for dts, cts, _, _ in media.video
    ]
    assert await decode_errors(tools["ffmpeg"], mp4) == b""

    ts = tmp_path / "all.ts"
    ts.write_bytes(b"".join(s.ts for s in segments))
    check_streams(await probe_packets(tools["ffprobe"], ts), media)
    assert await decode_errors(tools["ffmpeg"], ts) == b""

    for segment in segments:
        alone = tmp_path / f"alone-{segment.msn}.mp4"
        alone.write_bytes(init + segment.mp4())
        assert await decode_errors(tools["ffmpeg"], alone) == b"", alone.name
        alone_ts = tmp_path / f"alone-{segment.msn}.ts"
        alone_ts.write_bytes(segment.ts)
        assert await decode_errors(tools["ffmpeg"], alone_ts) == b"", alone_ts.name

    hls = tmp_path / "hls"
    write_hls(segmenter, hls)
    for name in ("index.m3u8", "ts.m3u8"):
        result = await run(
            [
                tools["ffmpeg"], "-nostdin", "-v", "error", "-i", str(hls / name),
                "-map", "0", "-c", "copy", "-f", "null", "-",
            ],
            60,
        )  # fmt: skip
        assert result.exit_code == 0, result.describe()
        assert result.stderr == b"", result.describe()
        assert await decode_errors(tools["ffmpeg"], hls / name) == b"", name
    return segmenter


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_ffmpeg_reads_the_segments_of_a_real_flv(
    interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """10 s of H.264 + AAC, a keyframe every 2 s: 2 s segments in fMP4 and TS, all readable."""
    segmenter = await check_segments(interop, sample_flv, tmp_path)
    segments = segmenter.segments
    assert [round(s.duration, 1) for s in segments[:-1]] == [2.0] * (len(segments) - 1)
    assert all(0.19 <= p.duration <= 0.24 for s in segments for p in s.parts[:-1])
    assert all(s.parts[0].independent for s in segments)


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_b_frames_keep_their_times_through_the_segments(
    interop: Interop, tmp_path: Path
) -> None:
    """H.264 with B-frames: composition times kept in fMP4, TS and both playlists."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    flv = tmp_path / "bframes.flv"
    result = await run(
        [
            ffmpeg, "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "7",
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "25",
            "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-ac", "2", "-b:a", "96k",
            "-f", "flv", str(flv),
        ],
        60,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    tags = read_file(flv)
    assert any(t.tag_type == TAG_VIDEO for t in tags) and any(t.tag_type == TAG_AUDIO for t in tags)
    media = read_flv(flv)
    assert any(cts for _, cts, _, _ in media.video), "the encoder wrote B-frames"
    await check_segments(interop, flv, tmp_path)
