"""ffprobe and ffmpeg read the fragmented MP4 the muxer makes from a real encoder's FLV.

The FLV comes from ffmpeg (libx264 + AAC); its tags are read with
``codec/flv.py`` and their bodies taken apart here, by hand and minimally (the
segmenter will use the AVC/AAC modules): AVC packet type, composition time and
keyframe flag; raw AAC frames; the two sequence headers for the configuration
records; the picture size and audio format from ``onMetaData``.  The samples go
through ``codec/fmp4.py`` as an init segment and fragments of about 1 s, in
one file: ffprobe must find H.264 and AAC with every packet, the right
duration and the FLV's own presentation times, and ffmpeg must decode it all
without an error.

HEVC, AV1 and Opus come from an ffmpeg that cannot write them into FLV (5.x):
ffmpeg writes them into its own fragmented MP4, whose records (``hvcC``,
``av1C``, ``dOps`` turned back into the ``OpusHead`` Enhanced RTMP carries) and
samples are taken out here and muxed again by ours.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted

from streamserver.codec import amf0
from streamserver.codec.flv import TAG_AUDIO, TAG_SCRIPT_DATA, TAG_VIDEO, read_file
from streamserver.codec.fmp4 import (
    AudioTrack,
    Fragment,
    FragmentWriter,
    Mp4Sample,
    VideoTrack,
    init_segment,
    ms_to_ticks,
)
from tests.codec.mp4_reader import Box, full_box, parse_boxes
from tests.integration.support import run

if TYPE_CHECKING:
    from tests.integration.conftest import Interop

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

# FLV video tag header (FLV spec E.4.3.1): frame type << 4 | codec id, then
# for AVC a packet type and a signed 24-bit composition time in ms.
_AVC = 7
_KEYFRAME = 1
_AVC_SEQUENCE_HEADER = 0
_AVC_NALU = 1
# FLV audio tag header (E.4.2.1): AAC is sound format 10; then a packet type.
_AAC = 10
_AAC_SEQUENCE_HEADER = 0
_AAC_RAW = 1


@dataclass
class FlvMedia:
    """The tracks of an H.264 + AAC FLV, with their samples in MP4 form (ms timestamps)."""

    avcc: bytes = b""
    asc: bytes = b""
    metadata: dict[str, Any] = field(default_factory=dict)
    #: (dts ms, composition time ms, keyframe, AVCC NAL units)
    video: list[tuple[int, int, bool, bytes]] = field(default_factory=list)
    #: (dts ms, raw AAC frame)
    audio: list[tuple[int, bytes]] = field(default_factory=list)


def read_flv(path: Path) -> FlvMedia:
    """Take the FLV at *path* apart into configuration records and samples."""
    media = FlvMedia()
    for tag in read_file(path):
        body = tag.payload
        if tag.tag_type == TAG_SCRIPT_DATA:
            values = amf0.decode_all(body)
            if values and values[0] == "onMetaData":
                media.metadata = dict(values[1])
        elif tag.tag_type == TAG_VIDEO and len(body) >= 5 and body[0] & 0x0F == _AVC:
            if body[1] == _AVC_SEQUENCE_HEADER:
                media.avcc = body[5:]
            elif body[1] == _AVC_NALU:
                cts = int.from_bytes(body[2:5], "big", signed=True)
                media.video.append((tag.timestamp, cts, body[0] >> 4 == _KEYFRAME, body[5:]))
        elif tag.tag_type == TAG_AUDIO and len(body) >= 2 and body[0] >> 4 == _AAC:
            if body[1] == _AAC_SEQUENCE_HEADER:
                media.asc = body[2:]
            elif body[1] == _AAC_RAW:
                media.audio.append((tag.timestamp, body[2:]))
    assert media.avcc and media.asc and media.video and media.audio, "an H.264 + AAC FLV"
    return media


def mux(media: FlvMedia, fragment_ms: int = 1000) -> tuple[bytes, list[Fragment]]:
    """Init segment + fragments cut every *fragment_ms* of decode time, holding back one sample."""
    video = VideoTrack(
        1, b"avc1", media.avcc, int(media.metadata["width"]), int(media.metadata["height"])
    )
    rate = int(media.metadata["audiosamplerate"])
    audio = AudioTrack(2, b"mp4a", media.asc, rate, 2 if media.metadata["stereo"] else 1)
    video_samples = [
        Mp4Sample(ms_to_ticks(dts, 90000), data, key, ms_to_ticks(cts, 90000))
        for dts, cts, key, data in media.video
    ]
    audio_samples = [Mp4Sample(ms_to_ticks(dts, rate), data) for dts, data in media.audio]
    writer = FragmentWriter([video, audio])
    out = init_segment([video, audio])
    fragments = []
    cut = fragment_ms
    v = a = 0
    while v < len(video_samples) or a < len(audio_samples):
        v_end, a_end = v, a
        while v_end < len(video_samples) and media.video[v_end][0] < cut:
            v_end += 1
        while a_end < len(audio_samples) and media.audio[a_end][0] < cut:
            a_end += 1
        next_dts = {}
        if v_end < len(video_samples):
            next_dts[1] = video_samples[v_end].dts
        if a_end < len(audio_samples):
            next_dts[2] = audio_samples[a_end].dts
        if v_end > v or a_end > a:
            fragment = writer.write(
                {1: video_samples[v:v_end], 2: audio_samples[a:a_end]}, next_dts=next_dts
            )
            fragments.append(fragment)
            out += fragment.data
        v, a = v_end, a_end
        cut += fragment_ms
    return out, fragments


async def probe(ffprobe: str, path: Path) -> dict[str, Any]:
    """ffprobe's streams (with packet counts) and format of the file at *path*, as JSON."""
    result = await run(
        [
            ffprobe, "-v", "error", "-count_packets",
            "-show_entries", "stream=codec_name,codec_type,nb_read_packets,duration",
            "-show_entries", "format=format_name,duration",
            "-of", "json", str(path),
        ],
        30,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    assert result.stderr == b"", result.describe()
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def video_times_ms(ffprobe: str, path: Path) -> list[tuple[int, int]]:
    """(dts, pts) of every video packet in ms, as ffprobe reads them."""
    result = await run(
        [
            ffprobe, "-v", "error", "-select_streams", "v",
            "-show_entries", "packet=dts_time,pts_time", "-of", "csv=p=0", str(path),
        ],
        30,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    times = []
    for line in result.stdout.decode().split():
        pts, dts = (round(float(value) * 1000) for value in line.split(","))
        times.append((dts, pts))
    return times


async def decode_errors(ffmpeg: str, path: Path) -> bytes:
    """What ``ffmpeg -v error -i path -f null -`` prints (nothing when all decodes)."""
    result = await run([ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"], 60)
    assert result.exit_code == 0, result.describe()
    return result.stderr


async def check_remux(interop: Interop, flv: Path, out: Path) -> tuple[FlvMedia, list[Fragment]]:
    """Mux *flv* into *out* and hold ffprobe's and ffmpeg's reading of it to the FLV."""
    tools = interop.tools("ffmpeg", "ffprobe")
    media = read_flv(flv)
    data, fragments = mux(media)
    out.write_bytes(data)

    report = await probe(tools["ffprobe"], out)
    _log.info("ffprobe of %s (%d fragments): %s", out.name, len(fragments), json.dumps(report))
    streams = {s["codec_type"]: s for s in report["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["video"]["nb_read_packets"]) == len(media.video)
    assert int(streams["audio"]["nb_read_packets"]) == len(media.audio)
    assert "mp4" in report["format"]["format_name"]
    expected = max(media.video[-1][0], media.audio[-1][0]) / 1000
    assert float(report["format"]["duration"]) == pytest.approx(expected, abs=0.1)

    times = await video_times_ms(tools["ffprobe"], out)
    assert times == [(dts, dts + cts) for dts, cts, _, _ in media.video]
    assert await decode_errors(tools["ffmpeg"], out) == b""
    return media, fragments


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_ffprobe_reads_h264_and_aac_fragments(
    interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """10 s of H.264 + AAC in 1 s fragments: all packets, duration and times; no decode error."""
    media, fragments = await check_remux(interop, sample_flv, tmp_path / "out.mp4")
    assert len(fragments) >= 10
    assert all(f.duration == pytest.approx(1.0, abs=0.05) for f in fragments[:-1])
    assert [f.sequence_number for f in fragments] == list(range(1, len(fragments) + 1))
    # A keyframe every 2 s (-g 60 at 30 fps): the fragments at even seconds start with one.
    keyframe_seconds = {dts // 1000 for dts, _, key, _ in media.video if key}
    first_seconds = [f.decode_times[1] // 90000 for f in fragments[:-1]]
    assert [f.independent for f in fragments[:-1]] == [
        second in keyframe_seconds for second in first_seconds
    ]
    assert fragments[0].independent and not fragments[1].independent


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_b_frames_keep_their_presentation_times(interop: Interop, tmp_path: Path) -> None:
    """An FLV with B-frames (composition times) keeps every pts through the fMP4 muxer."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    flv = tmp_path / "bframes.flv"
    result = await run(
        [
            ffmpeg, "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "4",
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "50",
            "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-ac", "2", "-b:a", "96k",
            "-f", "flv", str(flv),
        ],
        60,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    media, _ = await check_remux(interop, flv, tmp_path / "out.mp4")
    assert any(cts for _, cts, _, _ in media.video), "the encoder wrote B-frames"


# --- HEVC, AV1 and Opus, by way of ffmpeg's own fragmented MP4 ------------------------


@dataclass
class ForeignTrack:
    """A track of an MP4 written by ffmpeg: sample entry, configuration and samples."""

    track_id: int
    timescale: int
    entry: bytes
    config: bytes
    width: int = 0
    height: int = 0
    #: (dts, composition offset, sync, bytes) in the track's own timescale.
    samples: list[tuple[int, int, bool, bytes]] = field(default_factory=list)


def _trak_info(trak: Box) -> ForeignTrack:
    _, _, tkhd = full_box(trak.one(b"tkhd"))
    (track_id,) = struct.unpack_from(">I", tkhd, 8)
    mdia = trak.one(b"mdia")
    _, _, mdhd = full_box(mdia.one(b"mdhd"))
    (timescale,) = struct.unpack_from(">I", mdhd, 8)
    [entry] = mdia.path(b"minf", b"stbl", b"stsd").children
    config = next(c for c in entry.children if c.type in (b"hvcC", b"av1C", b"dOps"))
    info = ForeignTrack(track_id, timescale, entry.type, config.payload)
    if entry.type != b"Opus":
        info.width, info.height = struct.unpack_from(">HH", entry.payload, 24)
    return info


def _tfhd_defaults(tfhd: Box, trex: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Track id and default (duration, size, flags) of a ``tfhd`` (§8.8.7) over the ``trex``'s."""
    flags, body = full_box(tfhd)[1:]
    assert flags & 0x020000 and not flags & 0x01, "default-base-is-moof"
    (track_id,) = struct.unpack_from(">I", body)
    values = list(trex)
    pos = 8 if flags & 0x02 else 4  # after sample_description_index
    for index, bit in enumerate((0x08, 0x10, 0x20)):
        if flags & bit:
            (values[index],) = struct.unpack_from(">I", body, pos)
            pos += 4
    return track_id, values[0], values[1], values[2]


def _trun_samples(
    data: bytes, moof: Box, trun: Box, dts: int, defaults: tuple[int, int, int]
) -> tuple[list[tuple[int, int, bool, bytes]], int]:
    """The samples of a ``trun`` (§8.8.8) and where they end; fields read by their flags."""
    version, flags, body = full_box(trun)
    count, data_offset = struct.unpack_from(">Ii", body)
    pos = 8
    first_flags = None
    if flags & 0x04:
        (first_flags,) = struct.unpack_from(">I", body, pos)
        pos += 4
    cursor = moof.offset + data_offset
    samples = []
    for i in range(count):
        duration, size, sample_flags = defaults
        if i == 0 and first_flags is not None:
            sample_flags = first_flags
        offset = 0
        if flags & 0x100:
            (duration,) = struct.unpack_from(">I", body, pos)
            pos += 4
        if flags & 0x200:
            (size,) = struct.unpack_from(">I", body, pos)
            pos += 4
        if flags & 0x400:
            (sample_flags,) = struct.unpack_from(">I", body, pos)
            pos += 4
        if flags & 0x800:
            (offset,) = struct.unpack_from(">i" if version else ">I", body, pos)
            pos += 4
        sync = not sample_flags & 0x00010000
        samples.append((dts, offset, sync, data[cursor : cursor + size]))
        cursor += size
        dts += duration
    return samples, dts


def read_ffmpeg_fmp4(data: bytes) -> list[ForeignTrack]:
    """The tracks and samples of ffmpeg's ``frag_keyframe+empty_moov+default_base_moof`` MP4.

    Reads ``tfhd`` and ``trun`` by their flags, ffmpeg's defaults included;
    other boxes (``udta``, ``mfra``…) are skipped.
    """
    boxes = parse_boxes(data)
    moov = next(b for b in boxes if b.type == b"moov")
    tracks = {info.track_id: info for info in map(_trak_info, moov.all(b"trak"))}
    trex = {}
    for box in moov.one(b"mvex").all(b"trex"):
        track_id, _, duration, size, flags = struct.unpack(">IIIII", full_box(box)[2])
        trex[track_id] = (duration, size, flags)
    for moof in (b for b in boxes if b.type == b"moof"):
        for traf in moof.all(b"traf"):
            tfhd = traf.one(b"tfhd")
            (track_id,) = struct.unpack_from(">I", full_box(tfhd)[2])
            _, duration, size, flags = _tfhd_defaults(tfhd, trex[track_id])
            tfdt_version, _, tfdt = full_box(traf.one(b"tfdt"))
            (dts,) = struct.unpack(">Q" if tfdt_version else ">I", tfdt)
            for trun in traf.all(b"trun"):
                run_samples, dts = _trun_samples(data, moof, trun, dts, (duration, size, flags))
                tracks[track_id].samples += run_samples
    return list(tracks.values())


def opus_head(dops: bytes) -> bytes:
    """The Ogg Opus ID header (RFC 7845 §5.1) a ``dOps`` record was made from."""
    _, channels, pre_skip, rate, gain, family = struct.unpack_from(">BBHIhB", dops)
    head = struct.pack("<BBHIhB", 1, channels, pre_skip, rate, gain, family)
    return b"OpusHead" + head + dops[11:]


def remux_foreign(tracks: list[ForeignTrack], fragment_seconds: float = 0.5) -> bytes:
    """Init segment + fragments of *fragment_seconds* of ours, from ffmpeg's tracks."""
    ours: list[VideoTrack | AudioTrack] = []
    samples: dict[int, list[Mp4Sample]] = {}
    for foreign in tracks:
        if foreign.entry == b"Opus":
            track: VideoTrack | AudioTrack = AudioTrack(
                foreign.track_id, b"Opus", opus_head(foreign.config), 48000, foreign.config[1]
            )
        else:
            track = VideoTrack(
                foreign.track_id, foreign.entry, foreign.config, foreign.width, foreign.height
            )
        ours.append(track)
        scale = track.timescale / foreign.timescale
        samples[track.track_id] = [
            Mp4Sample(round(dts * scale), data, sync, round(offset * scale))
            for dts, offset, sync, data in foreign.samples
        ]
    writer = FragmentWriter(ours)
    out = init_segment(ours)
    start = 0.0
    while any(samples.values()):
        run_samples = {}
        next_dts = {}
        for track in ours:
            queue = samples[track.track_id]
            end = start + fragment_seconds
            count = sum(1 for s in queue if s.dts / track.timescale < end)
            run_samples[track.track_id], samples[track.track_id] = queue[:count], queue[count:]
            if samples[track.track_id]:
                next_dts[track.track_id] = samples[track.track_id][0].dts
        if any(run_samples.values()):
            out += writer.write(run_samples, next_dts=next_dts).data
        start += fragment_seconds
    return out


_FOREIGN_ENCODERS = {
    "hevc": [
        "-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
        "-x265-params", "log-level=error:bframes=2:keyint=25",
    ],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-g", "25", "-svtav1-params", "lp=1"],
}  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize("video", ["hevc", "av1"])
@pytest_twisted.ensureDeferred
async def test_hevc_av1_and_opus_decode(interop: Interop, tmp_path: Path, video: str) -> None:
    """HEVC or AV1 with Opus remuxed from ffmpeg's fMP4: same packets and times, no error."""
    tools = interop.tools("ffmpeg", "ffprobe")
    encoders = await run([tools["ffmpeg"], "-hide_banner", "-encoders"], 30)
    wanted = {"hevc": "libx265", "av1": "libsvtav1"}[video]
    for name in (wanted, "libopus"):
        if f" {name} ".encode() not in encoders.stdout:
            interop.unavailable(f"ffmpeg has no {name} encoder")
    source = tmp_path / f"{video}-ffmpeg.mp4"
    result = await run(
        [
            tools["ffmpeg"], "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", "3", *_FOREIGN_ENCODERS[video], "-pix_fmt", "yuv420p",
            "-c:a", "libopus", "-ac", "2",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(source),
        ],
        90,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    foreign = read_ffmpeg_fmp4(source.read_bytes())
    assert [t.entry for t in foreign] == [{"hevc": b"hvc1", "av1": b"av01"}[video], b"Opus"]
    out = tmp_path / f"{video}-ours.mp4"
    out.write_bytes(remux_foreign(foreign))

    report = await probe(tools["ffprobe"], out)
    _log.info("ffprobe of %s: %s", out.name, json.dumps(report))
    streams = {s["codec_type"]: s for s in report["streams"]}
    assert streams["video"]["codec_name"] == video
    assert streams["audio"]["codec_name"] == "opus"
    for stream, track in zip((streams["video"], streams["audio"]), foreign, strict=True):
        assert int(stream["nb_read_packets"]) == len(track.samples)
    assert await video_times_ms(tools["ffprobe"], out) == await video_times_ms(
        tools["ffprobe"], source
    )
    assert await decode_errors(tools["ffmpeg"], out) == b""
