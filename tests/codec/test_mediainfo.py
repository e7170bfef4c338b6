"""Tests of media info: spec vectors, records made by real encoders, and garbage."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec import amf0
from streamserver.codec.flv import FrameKind, classify, read_file
from streamserver.codec.mediainfo import AudioInfo, MediaInfo, VideoInfo, media_info

# A real x264 AVCDecoderConfigurationRecord's first bytes: version 1, High (100),
# compatibility 0, level 3.1 (31), then lengthSizeMinusOne and one SPS.
AVC_HIGH_31 = b"\x17\x00\x00\x00\x00" + bytes.fromhex("0164001f ffe1 0004 6764001f")
# AudioSpecificConfig 0x1210: AAC LC (2), 44100 Hz (index 4), 2 channels.
AAC_LC_44100_STEREO = b"\xaf\x00\x12\x10"


def metadata(**properties: Any) -> bytes:
    """An ``onMetaData`` payload as the stream caches it."""
    return amf0.encode("onMetaData", amf0.ECMAArray(properties))


# --- video vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "codec", "profile", "level"),
    [
        (AVC_HIGH_31, "h264", "High", "3.1"),
        (b"\x17\x00\x00\x00\x00\x01\x42\xc0\x1e\xff", "h264", "Constrained Baseline", "3.0"),
        (b"\x17\x00\x00\x00\x00\x01\x42\x10\x0b\xff", "h264", "Baseline", "1b"),
        (b"\x17\x00\x00\x00\x00\x01\x4d\x40\x28\xff", "h264", "Main", "4.0"),
        (b"\x17\x00\x00\x00\x00\x01\x6e\x00\x33", "h264", "High 10", "5.1"),
        (b"\x17\x00\x00\x00\x00\x01\x07\x00\x33", "h264", "7", "5.1"),
        # legacy HEVC (id 12): hvcC with Main (1), level 93 / 30 = 3.1
        (b"\x1c\x00\x00\x00\x00\x01\x01" + b"\x60" + b"\x00" * 9 + b"\x5d", "hevc", "Main", "3.1"),
        # Enhanced RTMP SequenceStart with hvcC: Main 10, level 120 / 30 = 4.0
        (b"\x90hvc1\x01\x02" + b"\x00" * 10 + b"\x78\xf0", "hevc", "Main 10", "4.0"),
        # av1C: marker+version 0x81, seq_profile 0, seq_level_idx 8 = 4.0
        (b"\x90av01\x81\x08\x0c\x00", "av1", "Main", "4.0"),
        (b"\x90av01\x81\x3f\x0c\x00", "av1", "High", None),  # level index 31: unconstrained
        # vpcC as ffmpeg writes it (version 1, flags 0) and bare: profile 0, level 3.1
        (b"\x90vp09\x01\x00\x00\x00\x00\x1f\x80", "vp9", "Profile 0", "3.1"),
        (b"\x90vp09\x02\x28\x80", "vp9", "Profile 2", "4.0"),
        # Enhanced RTMP avc1 carries the same record as legacy AVC
        (b"\x90avc1\x01\x4d\x00\x1f", "h264", "Main", "3.1"),
        # ModEx prefix (2 bytes of data, then the packet type SequenceStart)
        (b"\x97\x01\xaa\xbb\x00av01\x81\x08", "av1", "Main", "4.0"),
        # multitrack, OneTrack: AvMultitrackType 0 | SequenceStart, FourCC, track id 0
        (b"\x96\x00hvc1\x00\x01\x01" + b"\x00" * 10 + b"\x5d", "hevc", "Main", "3.1"),
        # multitrack, ManyTracks: FourCC, track id, u24 size, the record
        (b"\x96\x10av01\x00\x00\x00\x02\x81\x08\x01\x00\x00\x02\x81\x00", "av1", "Main", "4.0"),
        # codecs without a record of their own
        (b"\x90vp08", "vp8", None, None),
        (b"\x22\x00\x00", "h263", None, None),
        (b"\x14\x00", "vp6", None, None),
        (b"\x90xyzw\x01", "unknown", None, None),
        # truncated records: the codec without profile and level
        (b"\x17\x00\x00\x00\x00\x01\x64", "h264", None, None),
        (b"\x90hvc1\x01\x01", "hevc", None, None),
        (b"\x90av01\x80\x08", "av1", None, None),
        (b"\x90hv", "unknown", None, None),
    ],
)
def test_video_header(header: bytes, codec: str, profile: str | None, level: str | None) -> None:
    """A video sequence header gives the codec, and from its record the profile and level."""
    info = media_info(video_header=header)
    assert info.video == VideoInfo(codec, profile, level)
    assert info.audio is None


def test_video_size_and_rate_come_from_metadata() -> None:
    """Width, height and frame rate are the metadata's; the codec and profile the header's."""
    info = media_info(
        metadata=metadata(width=1280.0, height=720.0, framerate=29.97, videocodecid=7.0),
        video_header=AVC_HIGH_31,
    )
    assert info.video == VideoInfo("h264", "High", "3.1", 1280, 720, 29.97)


@pytest.mark.parametrize(
    ("properties", "video"),
    [
        ({"videocodecid": 7.0, "width": 640.0}, VideoInfo("h264", width=640)),
        ({"videocodecid": 12.0}, VideoInfo("hevc")),
        ({"videocodecid": float(int.from_bytes(b"hvc1", "big"))}, VideoInfo("hevc")),
        ({"videocodecid": "av01", "videoframerate": 50.0}, VideoInfo("av1", fps=50.0)),
        ({"videocodecid": 2.0}, VideoInfo("h263")),
        ({"width": 320.0, "height": 240.0}, VideoInfo("unknown", width=320, height=240)),
        # nonsense values are ignored, not believed
        ({"videocodecid": 99.0, "width": -5.0, "height": float("nan")}, None),
        ({"videocodecid": True, "width": True, "framerate": 1e9}, None),
        ({"videocodecid": "h", "height": "240"}, None),
    ],
)
def test_video_from_metadata_alone(properties: dict[str, Any], video: VideoInfo | None) -> None:
    """Without a sequence header the metadata names the codec (legacy id or FourCC)."""
    assert media_info(metadata=metadata(**properties)).video == video


def test_a_video_frame_names_a_codec_without_header() -> None:
    """H.263 and VP6 have no sequence header: a coded frame names the codec."""
    assert media_info(video_frame=b"\x12\x00\x84").video == VideoInfo("h263")
    # a header wins over the frame; metadata over an unknown header
    assert media_info(video_header=AVC_HIGH_31, video_frame=b"\x12").video == VideoInfo(
        "h264", "High", "3.1"
    )
    assert media_info(
        metadata=metadata(videocodecid=7.0), video_header=b"\x90zzzz\x00"
    ).video == VideoInfo("h264")


# --- audio vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "audio"),
    [
        (AAC_LC_44100_STEREO, AudioInfo("aac", "LC", 44100, 2)),
        (b"\xaf\x00\x11\x88", AudioInfo("aac", "LC", 48000, 1)),
        (b"\xaf\x00\x0a\x10", AudioInfo("aac", "Main", 44100, 2)),
        # explicit HE-AAC (5): 22050 Hz core, SBR to 44100, stereo
        (b"\xaf\x00\x2b\x92\x08\x00", AudioInfo("aac", "HE-AAC", 44100, 2)),
        # HE-AACv2 (29): mono core, parametric stereo: 2 channels out
        (b"\xaf\x00\xeb\x8a\x08\x00", AudioInfo("aac", "HE-AACv2", 44100, 2)),
        # escaped object type 42 (31, then 10), explicit rate 32000, 6 channels
        (b"\xaf\x00\xf9\x5e\x00\xfa\x00\xc0", AudioInfo("aac", "xHE-AAC", 32000, 6)),
        # channel configuration 0 (in a PCE): no count
        (b"\xaf\x00\x12\x00", AudioInfo("aac", "LC", 44100, None)),
        # a reserved rate index (13), a truncated config: the codec only
        (b"\xaf\x00\x16\x80", AudioInfo("aac")),
        (b"\xaf\x00\x12", AudioInfo("aac")),
        (b"\xaf\x00", AudioInfo("aac")),
        # Enhanced RTMP: mp4a with the same AudioSpecificConfig, Opus with an OpusHead
        (b"\x90mp4a\x12\x10", AudioInfo("aac", "LC", 44100, 2)),
        (b"\x90OpusOpusHead\x01\x06\x38\x01\x80\xbb\x00\x00", AudioInfo("opus", None, 48000, 6)),
        (b"\x90Opus", AudioInfo("opus", None, 48000, None)),
        (b"\x94ac-3\x00", AudioInfo("ac3")),  # multichannel config: the codec only
        (b"\x95\x00fLaC\x00fLaC", AudioInfo("flac")),
        (b"\x97\x00\x00\x00mp4a\x12\x10", AudioInfo("aac", "LC", 44100, 2)),  # ModEx
        (b"\x9f", AudioInfo("unknown")),
        # legacy codecs: the rate and type bits (fixed rates where the spec says so)
        (b"\x2e", AudioInfo("mp3", None, 44100, 1)),
        (b"\x2b", AudioInfo("mp3", None, 22050, 2)),
        (b"\xe2", AudioInfo("mp3", None, 8000, 1)),
        (b"\x72", AudioInfo("g711a", None, 8000, 1)),
        (b"\xb6", AudioInfo("speex", None, 16000, 1)),
        (b"\x03", AudioInfo("pcm", None, 5512, 2)),
    ],
)
def test_audio_header(header: bytes, audio: AudioInfo) -> None:
    """An audio header gives the codec, and from AudioSpecificConfig/OpusHead rate and channels."""
    info = media_info(audio_header=header)
    assert info.audio == audio
    assert info.video is None


def test_audio_precedence() -> None:
    """A sequence header wins over metadata; metadata over a legacy header's rate bits."""
    meta = metadata(audiocodecid=2.0, audiosamplerate=48000.0, stereo=False)
    # MP3 at 48 kHz: the FLV header can only say 44 kHz; metadata knows better
    assert media_info(metadata=meta, audio_frame=b"\x2f").audio == AudioInfo("mp3", None, 48000, 1)
    assert media_info(metadata=meta).audio == AudioInfo("mp3", None, 48000, 1)
    aac_meta = metadata(audiocodecid=10.0, audiosamplerate=22050.0, audiochannels=1.0)
    assert media_info(metadata=aac_meta, audio_header=AAC_LC_44100_STEREO).audio == AudioInfo(
        "aac", "LC", 44100, 2
    )
    # an AAC raw frame's bits say nothing: metadata fills in
    assert media_info(metadata=aac_meta, audio_frame=b"\xaf\x01\x21").audio == AudioInfo(
        "aac", None, 22050, 1
    )
    opus = metadata(audiocodecid=float(int.from_bytes(b"Opus", "big")))
    assert media_info(metadata=opus).audio == AudioInfo("opus")


def test_nothing_known_is_nothing() -> None:
    """No payloads, empty payloads, or metadata that is not onMetaData: no tracks."""
    assert media_info() == MediaInfo()
    assert media_info(metadata=b"", video_header=b"", audio_header=b"") == MediaInfo()
    assert media_info(metadata=amf0.encode("onCuePoint", {"width": 5.0})) == MediaInfo()
    assert media_info(metadata=b"\x02\x00\x0aonMetaData\x08\x00") == MediaInfo()
    # the form a publisher sends, before the stream strips @setDataFrame
    sent = amf0.encode("@setDataFrame", "onMetaData", {"audiocodecid": 10.0})
    assert media_info(metadata=sent).audio == AudioInfo("aac")


# --- garbage -------------------------------------------------------------------------------

_HEADER_PREFIXES = [
    b"",
    b"\x17\x00\x00\x00\x00",
    b"\x1c\x00\x00\x00\x00",
    b"\x90hvc1",
    b"\x90av01",
    b"\x90vp09",
    b"\x90avc1",
    b"\x96\x00hvc1\x00",
    b"\x96\x10av01\x00",
    b"\x97",
    b"\xaf\x00",
    b"\x90mp4a",
    b"\x90Opus",
    b"\x95\x00mp4a\x00",
    b"\x97\xff",
]

_amf_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_metadata_keys = st.sampled_from(
    [
        "width",
        "height",
        "framerate",
        "videoframerate",
        "videocodecid",
        "audiocodecid",
        "audiosamplerate",
        "audiochannels",
        "stereo",
    ]
)
_garbage_metadata = st.one_of(
    st.binary(max_size=80),
    st.dictionaries(_metadata_keys, _amf_values, max_size=9).map(
        lambda props: amf0.encode("onMetaData", amf0.ECMAArray(props))
    ),
    st.binary(max_size=40).map(lambda tail: b"\x02\x00\x0aonMetaData" + tail),
)
_garbage_header = st.tuples(st.sampled_from(_HEADER_PREFIXES), st.binary(max_size=40)).map(
    lambda parts: parts[0] + parts[1]
)


def _check(info: MediaInfo) -> None:
    assert isinstance(info, MediaInfo)
    if info.video is not None:
        video = info.video
        assert isinstance(video.codec, str) and video.codec
        assert video.profile is None or isinstance(video.profile, str)
        assert video.level is None or isinstance(video.level, str)
        for number in (video.width, video.height):
            assert number is None or (isinstance(number, int) and number > 0)
        assert video.fps is None or 0 < video.fps <= 1000
    if info.audio is not None:
        audio = info.audio
        assert isinstance(audio.codec, str) and audio.codec
        assert audio.sample_rate is None or audio.sample_rate > 0
        assert audio.channels is None or audio.channels > 0


@settings(max_examples=500, deadline=None)
@given(
    _garbage_metadata,
    _garbage_header,
    _garbage_header,
    st.binary(max_size=12),
    st.binary(max_size=12),
)
def test_garbage_never_raises(
    meta: bytes, video: bytes, audio: bytes, video_frame: bytes, audio_frame: bytes
) -> None:
    """Whatever the bytes, media_info returns partial or unknown info, well typed."""
    _check(
        media_info(
            metadata=meta,
            video_header=video,
            audio_header=audio,
            video_frame=video_frame,
            audio_frame=audio_frame,
        )
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_in_any_place(data: bytes) -> None:
    """The same bytes as metadata, video header and audio header never make it raise."""
    _check(media_info(metadata=data, video_header=data, audio_header=data))
    _check(media_info(video_frame=data, audio_frame=data))


# --- records made by real encoders -----------------------------------------------------


def _ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        if os.environ.get("STREAMSERVER_REQUIRE_INTEROP") == "1":
            pytest.fail("ffmpeg is required (STREAMSERVER_REQUIRE_INTEROP=1) but not found")
        pytest.skip("ffmpeg not installed")


def _encode(out: Path, *args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(out)],
        check=True,
        timeout=120,
    )


def _probe(path: Path) -> dict[str, dict[str, Any]]:
    """ffprobe's view of *path*: the first stream of each type."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    streams: dict[str, dict[str, Any]] = {}
    for stream in json.loads(result.stdout)["streams"]:
        streams.setdefault(stream["codec_type"], stream)
    return streams


def _box(data: bytes, name: bytes) -> bytes:
    """The body of the first MP4 box called *name* in *data*."""
    at = data.index(name)
    (size,) = struct.unpack(">I", data[at - 4 : at])
    return data[at + 4 : at - 4 + size]


def test_an_ffmpeg_flv_reads_as_ffprobe_sees_it(tmp_path: Path) -> None:
    """H.264 Main 3.1 with AAC LC mono 48 kHz, muxed to FLV by ffmpeg: the info ffprobe finds."""
    _ffmpeg()
    out = tmp_path / "out.flv"
    _encode(
        out,
        "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "main",
        "-level", "3.1", "-c:a", "aac", "-ac", "1", "-f", "flv",
    )  # fmt: skip
    tags = read_file(out)
    first = {classify(t.tag_type, t.payload): t.payload for t in reversed(tags)}
    info = media_info(
        metadata=first[FrameKind.METADATA],
        video_header=first[FrameKind.VIDEO_SEQUENCE_HEADER],
        audio_header=first[FrameKind.AUDIO_SEQUENCE_HEADER],
    )
    probed = _probe(out)
    video, audio = probed["video"], probed["audio"]
    assert info.video == VideoInfo(
        video["codec_name"],
        video["profile"],
        f"{video['level'] // 10}.{video['level'] % 10}",
        video["width"],
        video["height"],
        25.0,
    )
    assert info.audio == AudioInfo(
        audio["codec_name"], audio["profile"], int(audio["sample_rate"]), audio["channels"]
    )


def test_an_ffmpeg_mp3_flv_names_its_codec_without_header(tmp_path: Path) -> None:
    """MP3 has no sequence header: metadata and a frame's bits name it, with its rate."""
    _ffmpeg()
    out = tmp_path / "out.flv"
    _encode(
        out,
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "1",
        "-c:a", "libmp3lame", "-ac", "2", "-f", "flv",
    )  # fmt: skip
    tags = read_file(out)
    meta = next(t.payload for t in tags if t.tag_type == 18)
    frame = next(t.payload for t in tags if t.tag_type == 8)
    info = media_info(metadata=meta, audio_frame=frame)
    assert info == MediaInfo(None, AudioInfo("mp3", None, 22050, 2))


@pytest.mark.parametrize(
    ("encoder", "box", "fourcc"),
    [
        ("libx265", b"hvcC", b"hvc1"),
        ("libsvtav1", b"av1C", b"av01"),
        ("libvpx-vp9", b"vpcC", b"vp09"),
    ],
)
def test_records_of_real_encoders(tmp_path: Path, encoder: str, box: bytes, fourcc: bytes) -> None:
    """hvcC, av1C and vpcC written by ffmpeg, sent as Enhanced RTMP sequence starts.

    ffmpeg 5 writes no enhanced FLV, so the records come from MP4 files; the
    profile is ffprobe's, and so is the level where ffprobe reports one.
    """
    _ffmpeg()
    encoders = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout
    if encoder not in encoders:
        pytest.skip(f"ffmpeg has no {encoder}")
    out = tmp_path / "out.mp4"
    _encode(
        out,
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "0.2",
        "-pix_fmt", "yuv420p", "-c:v", encoder,
    )  # fmt: skip
    record = _box(out.read_bytes(), box)
    info = media_info(video_header=b"\x90" + fourcc + record).video
    probed = _probe(out)["video"]
    assert info is not None
    assert info.codec == probed["codec_name"]
    assert info.profile is not None
    assert info.profile.replace(" ", "") == probed["profile"].replace(" ", "")
    if fourcc == b"hvc1":
        level = probed["level"]
        assert info.level == f"{level // 30}.{level % 30 // 3}"
    elif fourcc == b"av01":
        level = probed["level"]
        assert info.level == f"{2 + (level >> 2)}.{level & 3}"
    else:
        assert info.level is not None  # ffprobe reports none for VP9 (-99)
