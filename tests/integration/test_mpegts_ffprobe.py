"""The MPEG-TS muxer against ffmpeg: what it writes from real encoder output decodes cleanly.

Each test has ffmpeg encode a few seconds of test pattern and tone (H.264 with
B-frames and AAC in FLV, audio or video alone, MP3, raw HEVC), reads it back
with our FLV reader, turns the tags into samples and muxes them into segments
cut at keyframes, as the HLS segmenter will.  ffprobe must find the codecs and
durations, ``ffmpeg -v error`` must decode without a word, every segment must
decode on its own, and the decoded frames must be the very frames ffmpeg
decodes from the source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted

from streamserver.codec import avc, flv
from streamserver.codec.mpegts import AUDIO_PID, VIDEO_PID, AudioConfig, TsMuxer, VideoConfig
from streamserver.codec.samples import Codec, Sample, TimestampUnwrapper, Track, parse_tag
from tests.codec.ts_reader import read_ts
from tests.integration.support import run

if TYPE_CHECKING:
    from tests.integration.conftest import Interop

pytestmark = pytest.mark.integration

SECONDS = 4
FPS = 30
SAMPLE_RATE = 44100
#: Cut a segment at the first keyframe this long after the segment's start
#: (the encoder puts one every second).
SEGMENT_MS = 1000

_LAVFI_VIDEO = ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}"]
_LAVFI_AUDIO = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}"]
_H264 = [
    "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", str(FPS), "-pix_fmt", "yuv420p",
]  # fmt: skip
_AAC = ["-c:a", "aac", "-b:a", "64k"]


async def _ffmpeg(tools: dict[str, str], args: Sequence[str], timeout: float = 60) -> bytes:
    """Run ffmpeg quietly with *args*; return what it wrote on stdout."""
    argv = [tools["ffmpeg"], "-nostdin", "-v", "error", *args]
    result = await run(argv, timeout)
    assert result.exit_code == 0, result.describe()
    assert not result.stderr, result.describe()
    return result.stdout


async def _encode_flv(tools: dict[str, str], path: Path, args: Sequence[str]) -> Path:
    await _ffmpeg(tools, [*args, "-t", str(SECONDS), "-f", "flv", str(path)])
    return path


def _samples_of_flv(path: Path) -> list[Sample]:
    """Every sample of the FLV file at *path*, times unwrapped."""
    unwrapper = TimestampUnwrapper()
    samples = []
    for tag in flv.read_file(path):
        sample = parse_tag(tag.tag_type, tag.payload, unwrapper.unwrap(tag.timestamp))
        if sample is not None:
            samples.append(sample)
    return samples


def _mux_segments(samples: list[Sample], *, audio_group_ms: int = 0) -> list[bytes]:
    """Mux *samples* into segments, each opened by PAT/PMT at a keyframe (as HLS cuts)."""
    video = next(
        (VideoConfig.from_sample(s) for s in samples if s.is_config and s.track is Track.VIDEO),
        None,
    )
    audio = next(
        (AudioConfig.from_sample(s) for s in samples if s.is_config and s.track is Track.AUDIO),
        None,
    )
    if audio is None and any(s.codec is Codec.MP3 for s in samples):
        audio = AudioConfig.from_sample(next(s for s in samples if s.codec is Codec.MP3))
    muxer = TsMuxer(video, audio, audio_group_ms=audio_group_ms)
    segments: list[bytearray] = []
    segment_start = 0
    for sample in samples:
        cut = (sample.track is Track.VIDEO and sample.is_keyframe) or video is None
        # With B-frames a keyframe's DTS runs a frame or two ahead of its PTS.
        if not segments or (cut and sample.dts - segment_start >= SEGMENT_MS - 100):
            if segments:
                segments[-1] += muxer.flush()
            segments.append(bytearray(muxer.segment_start()))
            segment_start = sample.dts
        segments[-1] += muxer.write(sample)
    segments[-1] += muxer.flush()
    return [bytes(segment) for segment in segments]


async def _probe(tools: dict[str, str], path: Path) -> dict[str, Any]:
    result = await run(
        [
            tools["ffprobe"], "-v", "error", "-count_frames", "-of", "json",
            "-show_entries", "stream=codec_name,duration,nb_read_frames:format=duration",
            str(path),
        ],
        60,
    )  # fmt: skip
    assert result.exit_code == 0 and not result.stderr, result.describe()
    probe: dict[str, Any] = json.loads(result.stdout)
    return probe


async def _decoded_frame_hashes(tools: dict[str, str], path: Path) -> dict[int, list[str]]:
    """The MD5 of every decoded frame, per stream index, in order (timestamps left out)."""
    text = (await _ffmpeg(tools, ["-i", str(path), "-f", "framemd5", "-"])).decode()
    hashes: dict[int, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fields = [field.strip() for field in line.split(",")]
            hashes.setdefault(int(fields[0]), []).append(fields[-1])
    return hashes


async def _check_ts(
    tools: dict[str, str],
    source: Path,
    segments: list[bytes],
    tmp_path: Path,
    expected: dict[str, float],
) -> dict[str, Any]:
    """Write the segments, concatenated and alone, and check them with ffprobe and ffmpeg.

    :param expected: codec name -> the duration the stream must have (s).
    """
    joined = tmp_path / "out.ts"
    joined.write_bytes(b"".join(segments))
    probe = await _probe(tools, joined)
    streams = probe["streams"]
    assert sorted(s["codec_name"] for s in streams) == sorted(expected), probe
    for stream in streams:
        assert float(stream["duration"]) == pytest.approx(expected[stream["codec_name"]], abs=0.07)
    # Decodes without a single error message (_ffmpeg checks stderr is empty).
    await _ffmpeg(tools, ["-i", str(joined), "-f", "null", "-"])
    # The decoded pictures and sound are the source's, frame for frame.
    assert await _decoded_frame_hashes(tools, joined) == await _decoded_frame_hashes(tools, source)
    # Every segment plays on its own, from its first frame.  (-enc_time_base -1
    # keeps the frames' own 90 kHz times: a segment whose audio starts 1.5
    # frames before its video otherwise has the ffmpeg CLI duplicate the first
    # picture to fill the gap at 1/fps and complain of its own repeated times.)
    assert len(segments) >= max(expected.values()) * 1000 // SEGMENT_MS - 1
    for index, segment in enumerate(segments):
        path = tmp_path / f"segment{index}.ts"
        path.write_bytes(segment)
        await _ffmpeg(tools, ["-i", str(path), "-enc_time_base", "-1", "-f", "null", "-"])
    return probe


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_h264_with_b_frames_and_aac(interop: Interop, tmp_path: Path) -> None:
    """H.264 with B-frames and AAC from ffmpeg mux into TS that ffprobe reads as h264 + aac of
    the right durations and that decodes, whole and segment by segment, to the same frames."""
    tools = interop.tools("ffmpeg", "ffprobe")
    source = await _encode_flv(
        tools, tmp_path / "in.flv", [*_LAVFI_VIDEO, *_LAVFI_AUDIO, *_H264, *_AAC]
    )
    samples = _samples_of_flv(source)
    frames = [s for s in samples if s.track is Track.VIDEO and not s.is_config]
    audio_frames = [s for s in samples if s.track is Track.AUDIO and not s.is_config]
    # The B-frames are really there: presentation differs from decode order.
    assert any(s.pts != s.dts for s in frames)
    segments = _mux_segments(samples)
    probe = await _check_ts(
        tools,
        source,
        segments,
        tmp_path,
        {"h264": len(frames) / FPS, "aac": len(audio_frames) * 1024 / SAMPLE_RATE},
    )
    counts = {s["codec_name"]: int(s["nb_read_frames"]) for s in probe["streams"]}
    assert counts == {"h264": len(frames), "aac": len(audio_frames)}


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_grouped_audio(interop: Interop, tmp_path: Path) -> None:
    """AAC frames grouped 100 ms per PES decode to the same sound."""
    tools = interop.tools("ffmpeg", "ffprobe")
    source = await _encode_flv(
        tools, tmp_path / "in.flv", [*_LAVFI_VIDEO, *_LAVFI_AUDIO, *_H264, *_AAC]
    )
    samples = _samples_of_flv(source)
    segments = _mux_segments(samples, audio_group_ms=100)
    assert len(b"".join(segments)) < len(b"".join(_mux_segments(samples)))
    joined = tmp_path / "grouped.ts"
    joined.write_bytes(b"".join(segments))
    await _ffmpeg(tools, ["-i", str(joined), "-f", "null", "-"])
    assert await _decoded_frame_hashes(tools, joined) == await _decoded_frame_hashes(tools, source)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_audio_only_and_video_only(interop: Interop, tmp_path: Path) -> None:
    """A stream with one track muxes into TS with that track alone, decoded cleanly."""
    tools = interop.tools("ffmpeg", "ffprobe")
    (tmp_path / "a").mkdir()
    (tmp_path / "v").mkdir()
    audio_source = await _encode_flv(tools, tmp_path / "a.flv", [*_LAVFI_AUDIO, *_AAC])
    samples = _samples_of_flv(audio_source)
    count = sum(1 for s in samples if not s.is_config)
    await _check_ts(
        tools,
        audio_source,
        _mux_segments(samples),
        tmp_path / "a",
        {"aac": count * 1024 / SAMPLE_RATE},
    )
    video_source = await _encode_flv(tools, tmp_path / "v.flv", [*_LAVFI_VIDEO, *_H264])
    samples = _samples_of_flv(video_source)
    count = sum(1 for s in samples if not s.is_config)
    await _check_ts(
        tools, video_source, _mux_segments(samples), tmp_path / "v", {"h264": count / FPS}
    )


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_mp3_audio(interop: Interop, tmp_path: Path) -> None:
    """MP3 audio (no sequence header; configured from its first frame) muxes as mp3."""
    tools = interop.tools("ffmpeg", "ffprobe")
    source = await _encode_flv(
        tools,
        tmp_path / "in.flv",
        [*_LAVFI_VIDEO, *_LAVFI_AUDIO, *_H264, "-c:a", "libmp3lame", "-b:a", "64k"],
    )
    samples = _samples_of_flv(source)
    frames = sum(1 for s in samples if s.track is Track.VIDEO and not s.is_config)
    # ffmpeg writes one MP3 frame (1152 samples) per FLV tag.
    mp3_frames = sum(1 for s in samples if s.codec is Codec.MP3)
    segments = _mux_segments(samples)
    # 44.1 kHz is MPEG-1 audio: stream type 0x03.
    assert read_ts(segments[0]).streams == {VIDEO_PID: 0x1B, AUDIO_PID: 0x03}
    await _check_ts(
        tools,
        source,
        segments,
        tmp_path,
        {"h264": frames / FPS, "mp3": mp3_frames * 1152 / SAMPLE_RATE},
    )


def _hevc_access_units(stream: bytes) -> list[list[bytes]]:
    """Split a raw HEVC Annex B stream from x265 (one slice per picture) into access units:
    parameter sets and SEI go with the picture that follows them."""
    nalus = [n.rstrip(b"\x00") for n in stream.split(b"\x00\x00\x01")[1:]]
    units: list[list[bytes]] = []
    pending: list[bytes] = []
    for nalu in nalus:
        pending.append(nalu)
        if avc.hevc_nal_type(nalu) < avc.HevcNalType.VPS:  # a VCL NAL unit: a picture
            units.append(pending)
            pending = []
    return units


def _hvcc(vps: bytes, sps: bytes, pps: bytes) -> bytes:
    """An hvcC holding one VPS, SPS and PPS; the header fields a TS muxer ignores are zeros."""
    out = bytearray([1]) + bytes(21)
    out[21] = 0x0F  # lengthSizeMinusOne 3
    out.append(3)
    for nal_type, nalu in ((32, vps), (33, sps), (34, pps)):
        out += bytes([0x80 | nal_type, 0, 1]) + len(nalu).to_bytes(2, "big") + nalu
    return bytes(out)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_hevc_from_enhanced_rtmp_tags(interop: Interop, tmp_path: Path) -> None:
    """x265 output, carried as Enhanced RTMP hvc1 tags, muxes into TS that ffprobe reads as hevc
    and that decodes to the same pictures as the raw stream."""
    tools = interop.tools("ffmpeg", "ffprobe")
    raw = tmp_path / "in.hevc"
    encoders = await _ffmpeg(tools, ["-hide_banner", "-encoders"])
    if b"libx265" not in encoders:
        interop.unavailable("ffmpeg was built without libx265")
    await _ffmpeg(
        tools,
        [
            *_LAVFI_VIDEO, "-t", "2", "-c:v", "libx265", "-pix_fmt", "yuv420p",
            "-x265-params", f"log-level=error:bframes=0:keyint={FPS}", "-f", "hevc", str(raw),
        ],
    )  # fmt: skip
    units = _hevc_access_units(raw.read_bytes())
    parameter_sets = {avc.hevc_nal_type(n): n for unit in units for n in unit}
    record = _hvcc(parameter_sets[32], parameter_sets[33], parameter_sets[34])
    unwrapper = TimestampUnwrapper()
    samples = [parse_tag(9, b"\x90hvc1" + record, 0)]
    for index, unit in enumerate(units):
        key = any(16 <= avc.hevc_nal_type(n) <= 23 for n in unit)
        body = b"".join(len(n).to_bytes(4, "big") + n for n in unit)
        # IsExHeader, frame type 1 (key) or 2 (inter), packet type 3 (CodedFramesX).
        header = bytes([0x80 | (1 if key else 2) << 4 | 3]) + b"hvc1"
        time = unwrapper.unwrap(index * 1000 // FPS)
        samples.append(parse_tag(9, header + body, time))
    assert all(s is not None and s.codec is Codec.HEVC for s in samples)
    segments = _mux_segments([s for s in samples if s is not None])
    await _check_ts(tools, raw, segments, tmp_path, {"hevc": len(units) / FPS})
