"""Tests for the MPEG-TS muxer (ISO/IEC 13818-1), read back with the tests' own reader."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamserver.codec.aac import AudioSpecificConfig
from streamserver.codec.mpegts import (
    AUDIO_PID,
    DECODE_DELAY_MS,
    PACKET_SIZE,
    PAT_PID,
    PMT_PID,
    VIDEO_PID,
    AudioConfig,
    StreamType,
    TsMuxer,
    VideoConfig,
    crc32_mpeg2,
)
from streamserver.codec.samples import Codec, Sample, TimestampUnwrapper, Track, parse_tag
from streamserver.errors import CodecError, UsageError
from tests.codec import ts_reader
from tests.codec.ts_reader import Pes, TransportStream, read_ts, split_adts, split_annex_b

SPS = bytes.fromhex("6764001facd9")
PPS = bytes.fromhex("68ebe3cb")
SEI = bytes.fromhex("0605ff")
IDR = bytes.fromhex("658884")
SLICE = bytes.fromhex("419a21")
AUD = bytes.fromhex("09f0")

VPS = bytes.fromhex("40010c01ff")
HEVC_SPS = bytes.fromhex("42010101")
HEVC_PPS = bytes.fromhex("4401c172")
HEVC_IDR = bytes.fromhex("2601af09")
HEVC_CRA = bytes.fromhex("2a01af09")
HEVC_TRAIL = bytes.fromhex("0201d0")
HEVC_AUD = bytes.fromhex("460150")

AVC = VideoConfig(Codec.AVC, 4, (SPS, PPS))
HEVC = VideoConfig(Codec.HEVC, 4, (VPS, HEVC_SPS, HEVC_PPS))
AAC = AudioConfig(Codec.AAC, aac=AudioSpecificConfig(2, 4, 44100, 2))
MP3 = AudioConfig(Codec.MP3)

#: 90 kHz ticks a written PTS/DTS is ahead of the sample's time.
DELAY = DECODE_DELAY_MS * 90
WRAP_33 = 1 << 33


def avcc(nalus: list[bytes], length_size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(length_size, "big") + n for n in nalus)


def video(
    nalus: list[bytes],
    dts: int,
    pts: int | None = None,
    *,
    key: bool = False,
    codec: Codec = Codec.AVC,
) -> Sample:
    return Sample(Track.VIDEO, codec, dts, dts if pts is None else pts, avcc(nalus), key)


def audio(data: bytes, time: int, codec: Codec = Codec.AAC) -> Sample:
    return Sample(Track.AUDIO, codec, time, time, data, is_keyframe=True)


def mux(muxer: TsMuxer, samples: list[Sample]) -> bytes:
    """A segment: PAT/PMT, every sample, the audio still held."""
    return muxer.segment_start() + b"".join(muxer.write(s) for s in samples) + muxer.flush()


def ticks(ms: int) -> int:
    """The 33-bit value the muxer writes for a time of *ms*."""
    return (ms * 90 + DELAY) % WRAP_33


# --- PSI --------------------------------------------------------------------------------


def test_crc_vectors() -> None:
    """The PAT CRCs nginx-rtmp (PMT PID 0x1001) and ffmpeg (0x1000) write."""
    assert crc32_mpeg2(bytes.fromhex("00b00d0001c100000001f001")) == 0x2E701905
    assert crc32_mpeg2(bytes.fromhex("00b00d0001c100000001f000")) == 0x2AB104B2
    assert crc32_mpeg2(bytes.fromhex("00b00d0001c100000001f0002ab104b2")) == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_crc_matches_the_bitwise_definition(data: bytes) -> None:
    """The table-driven CRC equals the reader's bit-by-bit one."""
    assert crc32_mpeg2(data) == ts_reader.crc32_mpeg2(data)


def test_pat_vector() -> None:
    """The PAT packet is byte for byte what ffmpeg writes for one program at PID 0x1000."""
    pat = TsMuxer(AVC, AAC).segment_start()[:PACKET_SIZE]
    expected = bytes.fromhex("474000100000b00d0001c100000001f0002ab104b2")
    assert pat == expected.ljust(PACKET_SIZE, b"\xff")


@pytest.mark.parametrize(
    ("video_config", "audio_config", "streams", "pcr_pid"),
    [
        (AVC, AAC, {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}, VIDEO_PID),
        (HEVC, MP3, {VIDEO_PID: 0x24, AUDIO_PID: 0x03}, VIDEO_PID),
        (None, AudioConfig(Codec.MP3, mpeg2=True), {AUDIO_PID: 0x04}, AUDIO_PID),
        (None, AAC, {AUDIO_PID: 0x0F}, AUDIO_PID),
        (AVC, None, {VIDEO_PID: 0x1B}, VIDEO_PID),
    ],
)
def test_pmt(
    video_config: VideoConfig | None,
    audio_config: AudioConfig | None,
    streams: dict[int, int],
    pcr_pid: int,
) -> None:
    """The PMT lists each track with its stream type; the PCR is on video, else audio."""
    ts = read_ts(TsMuxer(video_config, audio_config).segment_start())
    assert ts.programs == {1: PMT_PID}
    assert ts.streams == streams
    assert ts.pcr_pid == pcr_pid
    assert ts.packets == 2


# --- video ------------------------------------------------------------------------------


def nal_units(pes: Pes) -> list[bytes]:
    return split_annex_b(pes.data)


def test_avc_keyframe_gets_aud_and_parameter_sets() -> None:
    """A keyframe is AUD, SPS, PPS, then its own NAL units; an inter frame AUD then its own."""
    muxer = TsMuxer(AVC, None)
    ts = read_ts(mux(muxer, [video([SEI, IDR], 0, key=True), video([AUD, SLICE], 40)]))
    key, inter = ts.pes_of(VIDEO_PID)
    assert nal_units(key) == [AUD, SPS, PPS, SEI, IDR]
    assert nal_units(inter) == [AUD, SLICE]
    assert key.data.startswith(b"\x00\x00\x00\x01\x09\xf0")
    assert (key.random_access, inter.random_access) == (True, False)
    assert key.stream_id == inter.stream_id == 0xE0
    assert key.data_alignment


def test_avc_in_band_parameter_sets_are_not_repeated() -> None:
    """A keyframe that carries its SPS and PPS gets no second copy."""
    new_sps = SPS + b"\x01"
    ts = read_ts(mux(TsMuxer(AVC, None), [video([new_sps, PPS, IDR], 0, key=True)]))
    assert nal_units(ts.pes[0]) == [AUD, new_sps, PPS, IDR]


def test_avc_idr_without_key_flag_is_a_keyframe() -> None:
    """An IDR NAL unit makes a keyframe even if the FLV frame type says inter."""
    ts = read_ts(mux(TsMuxer(AVC, None), [video([IDR], 0)]))
    assert nal_units(ts.pes[0]) == [AUD, SPS, PPS, IDR]
    assert ts.pes[0].random_access


def test_new_sequence_header_replaces_parameter_sets() -> None:
    """A new avcC mid-stream puts its SPS and PPS before the next keyframe."""
    record = bytes.fromhex("01640028ffe10004") + b"\x67\x64\x00\x28" + b"\x01\x00\x02\x68\xee"
    config = Sample(Track.VIDEO, Codec.AVC, 80, 80, record, is_config=True)
    muxer = TsMuxer(AVC, None)
    data = mux(muxer, [video([IDR], 0, key=True), config, video([IDR], 80, key=True)])
    first, second = read_ts(data).pes
    assert nal_units(first)[1:3] == [SPS, PPS]
    assert nal_units(second) == [AUD, b"\x67\x64\x00\x28", b"\x68\xee", IDR]
    assert muxer.write(config) == b""


def test_hevc_access_units() -> None:
    """HEVC: an AUD of type 35, VPS/SPS/PPS before IRAP pictures (IDR, CRA), not others."""
    muxer = TsMuxer(HEVC, None)
    samples = [
        video([HEVC_IDR], 0, key=True, codec=Codec.HEVC),
        video([HEVC_AUD, HEVC_TRAIL], 40, codec=Codec.HEVC),
        video([HEVC_CRA], 80, codec=Codec.HEVC),
    ]
    idr, trail, cra = read_ts(mux(muxer, samples)).pes
    assert nal_units(idr) == [HEVC_AUD, VPS, HEVC_SPS, HEVC_PPS, HEVC_IDR]
    assert nal_units(trail) == [HEVC_AUD, HEVC_TRAIL]
    assert nal_units(cra) == [HEVC_AUD, VPS, HEVC_SPS, HEVC_PPS, HEVC_CRA]
    assert (idr.random_access, trail.random_access, cra.random_access) == (True, False, True)


def test_video_timestamps_and_pcr() -> None:
    """PTS and DTS are the times in 90 kHz plus the decode delay; DTS only if it differs; the
    PCR is the DTS itself; a PTS before the DTS is written as the DTS."""
    samples = [
        video([IDR], 0, 80, key=True),
        video([SLICE], 40, 40),
        video([SLICE], 80, 40),
    ]
    b_frame, same, backwards = read_ts(mux(TsMuxer(AVC, AAC), samples)).pes
    assert (b_frame.pts, b_frame.dts, b_frame.pcr) == (80 * 90 + DELAY, DELAY, 0)
    assert (same.pts, same.dts, same.pcr) == (40 * 90 + DELAY, None, 40 * 90)
    assert (backwards.pts, backwards.dts) == (80 * 90 + DELAY, None)


def test_timestamps_wrap_at_33_bits_only_when_written() -> None:
    """Times past 2**33 ticks are written modulo 2**33; the PES keeps its PTS-DTS distance."""
    dts = (WRAP_33 - DELAY) // 90 - 1
    ts = read_ts(mux(TsMuxer(AVC, None), [video([IDR], dts, dts + 100, key=True)]))
    (pes,) = ts.pes
    assert pes.dts == ticks(dts) == WRAP_33 - 90 - (WRAP_33 - DELAY) % 90
    assert pes.pts == ticks(dts + 100) < pes.dts
    assert pes.pcr == dts * 90
    # 64-bit times far beyond any wrap.
    far = 10**12
    (pes,) = read_ts(mux(TsMuxer(AVC, None), [video([IDR], far, key=True)])).pes
    assert (pes.pts, pes.pcr) == (ticks(far), far * 90 % WRAP_33)


def test_empty_video_frame_writes_nothing() -> None:
    """A frame whose NAL units are all empty writes no packets."""
    muxer = TsMuxer(AVC, None)
    assert muxer.write(Sample(Track.VIDEO, Codec.AVC, 0, 0, bytes(8), True)) == b""


# --- audio ------------------------------------------------------------------------------


def test_aac_frames_get_adts_headers() -> None:
    """Each raw AAC frame becomes one PES: an ADTS header then the frame, PTS only."""
    frames = [bytes([0x21, i]) * 50 for i in range(3)]
    ts = read_ts(mux(TsMuxer(AVC, AAC), [audio(f, 23 * i) for i, f in enumerate(frames)]))
    pes = ts.pes_of(AUDIO_PID)
    assert [split_adts(p.data) for p in pes] == [
        [(AAC.aac.adts_header(len(f)) if AAC.aac else b"", f)] for f in frames
    ]
    assert [(p.pts, p.dts, p.pcr, p.stream_id) for p in pes] == [
        (ticks(23 * i), None, None, 0xC0) for i in range(3)
    ]


def test_audio_only_carries_the_pcr() -> None:
    """Without video, every audio PES carries the PCR at its time."""
    ts = read_ts(mux(TsMuxer(None, AAC), [audio(b"\x21\x00", 0), audio(b"\x21\x01", 23)]))
    assert [p.pcr for p in ts.pes] == [0, 23 * 90]
    assert ts.pcr_pid == AUDIO_PID


def test_audio_grouping() -> None:
    """With audio_group_ms, frames starting within it of the first share a PES with its PTS;
    a later frame, a step back or flush() ends the group."""
    muxer = TsMuxer(AVC, MP3, audio_group_ms=100)
    out = muxer.segment_start()
    frames = [bytes([0xFF, 0xFB, i]) for i in range(8)]
    times = [0, 23, 46, 69, 92, 115, 100, 123]
    written = [muxer.write(audio(f, t, Codec.MP3)) for f, t in zip(frames, times, strict=True)]
    # Frames are held until one starts 100 ms or more after the group's first,
    # or steps back before the group's first.
    assert [bool(w) for w in written] == [False] * 5 + [True, True, False]
    out += b"".join(written) + muxer.flush()
    assert muxer.flush() == b""
    pes = read_ts(out).pes_of(AUDIO_PID)
    assert [(p.pts, p.data) for p in pes] == [
        (ticks(0), b"".join(frames[:5])),
        (ticks(115), frames[5]),
        (ticks(100), b"".join(frames[6:])),
    ]


def test_audio_grouping_respects_the_pes_size_limit() -> None:
    """Grouped frames never make an audio PES longer than PES_packet_length can say."""
    muxer = TsMuxer(None, MP3, audio_group_ms=10_000)
    frame = b"\xff\xfb" + bytes(20_000)
    out = muxer.segment_start() + b"".join(
        muxer.write(audio(frame, t, Codec.MP3)) for t in range(7)
    )
    out += muxer.flush()
    assert [len(p.data) for p in read_ts(out).pes] == [60_006, 60_006, 20_002]


def test_oversized_audio_frame_is_a_codec_error() -> None:
    """An audio frame that fits no PES packet is the peer's fault."""
    with pytest.raises(CodecError):
        TsMuxer(None, MP3).write(audio(bytes(70_000), 0, Codec.MP3))
    with pytest.raises(CodecError):
        TsMuxer(None, AAC).write(audio(bytes(9_000), 0))


# --- packets ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_video", [False, True])
def test_every_pes_size_packs_into_whole_packets(with_video: bool) -> None:
    """Audio frames of every size from 1 to 600 bytes (every stuffing case, with and
    without a PCR) come back whole from 188-byte packets."""
    muxer = TsMuxer(AVC if with_video else None, MP3)
    frames = [bytes([0xFF]) * size for size in range(1, 601)]
    data = mux(muxer, [audio(f, i, Codec.MP3) for i, f in enumerate(frames)])
    assert len(data) % PACKET_SIZE == 0
    assert all(data[i] == 0x47 for i in range(0, len(data), PACKET_SIZE))
    assert [p.data for p in read_ts(data).pes] == frames


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=8), st.booleans())
def test_video_frames_of_any_size_come_back(sizes: list[int], key: bool) -> None:
    """Video NAL units of any size come back byte for byte after AUD (and parameter sets)."""
    nalus = [b"\x41" + bytes([0x80 | (i & 0x7F)]) * (size - 1) for i, size in enumerate(sizes)]
    ts = read_ts(mux(TsMuxer(AVC, AAC), [video(nalus, 0, key=key)]))
    expected = [AUD, SPS, PPS, *nalus] if key else [AUD, *nalus]
    assert nal_units(ts.pes[0]) == expected


def test_continuity_counters_run_across_segments() -> None:
    """Counters start at 0 on every PID and keep counting across segments (PAT and PMT too)."""
    muxer = TsMuxer(AVC, AAC)
    data = b""
    for segment in range(20):
        base = segment * 1000
        samples = [video([IDR, bytes(400)], base, key=True), audio(bytes(300), base)]
        samples += [video([SLICE, b"\x01" * 900], base + 40 * i) for i in range(1, 5)]
        data += mux(muxer, samples)
    ts = read_ts(data)
    assert ts.first_continuity == {PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
    assert ts.psi_count == {PAT_PID: 20, PMT_PID: 20}
    assert ts.last_continuity[PAT_PID] == 19 % 16
    assert len(ts.pes_of(VIDEO_PID)) == 100


# --- configurations and misuse -------------------------------------------------------------


def test_config_from_samples() -> None:
    """Configurations come from sequence header samples (and MP3's first frame)."""
    avcc_record = bytes.fromhex("0164001fffe1000467640015" + "01000468ee3cb0")
    config = VideoConfig.from_sample(Sample(Track.VIDEO, Codec.AVC, 0, 0, avcc_record, False, True))
    assert config == VideoConfig(
        Codec.AVC, 4, (bytes.fromhex("67640015"), bytes.fromhex("68ee3cb0"))
    )
    assert config.stream_type == StreamType.H264
    aac_config = AudioConfig.from_sample(
        Sample(Track.AUDIO, Codec.AAC, 0, 0, b"\x12\x10", False, True)
    )
    assert aac_config.aac == AudioSpecificConfig(2, 4, 44100, 2)
    for header, stream_type in ((b"\xff\xfb", 0x03), (b"\xff\xf3", 0x04), (b"\xff\xe3", 0x04)):
        mp3 = AudioConfig.from_sample(audio(header + bytes(10), 0, Codec.MP3))
        assert mp3.stream_type == stream_type


@pytest.mark.parametrize("frame", [b"", b"\xff", b"\x00\xfb", b"\xff\xeb", b"ID3"])
def test_mp3_config_needs_a_frame_header(frame: bytes) -> None:
    """An MP3 "configuration" from something that is no MPEG audio frame is a CodecError."""
    with pytest.raises(CodecError):
        AudioConfig.from_sample(audio(frame, 0, Codec.MP3))


def test_misuse_is_a_usage_error() -> None:
    """Muxers without tracks, samples of a track or codec it lacks, codecs TS has no mapping for."""
    with pytest.raises(UsageError):
        TsMuxer(None, None)
    with pytest.raises(UsageError):
        TsMuxer(AVC, None, audio_group_ms=-1)
    with pytest.raises(UsageError):
        TsMuxer(AVC, None).write(audio(b"\x21", 0))
    with pytest.raises(UsageError):
        TsMuxer(None, AAC).write(video([IDR], 0))
    with pytest.raises(UsageError):
        TsMuxer(AVC, AAC).write(video([HEVC_IDR], 0, codec=Codec.HEVC))
    with pytest.raises(UsageError):
        TsMuxer(AVC, AAC).write(audio(b"\xff\xfb", 0, Codec.MP3))
    with pytest.raises(UsageError):
        VideoConfig.from_sample(Sample(Track.VIDEO, Codec.AV1, 0, 0, b"\x81", is_config=True))
    with pytest.raises(UsageError):
        VideoConfig.from_sample(video([IDR], 0))
    with pytest.raises(UsageError):
        VideoConfig(Codec.VP9, 4, ())
    with pytest.raises(UsageError):
        AudioConfig.from_sample(Sample(Track.AUDIO, Codec.OPUS, 0, 0, b"OpusHead", is_config=True))
    with pytest.raises(UsageError):
        AudioConfig(Codec.AAC)


def test_aac_config_adts_cannot_carry_is_a_codec_error() -> None:
    """An AudioSpecificConfig ADTS cannot express is refused when the track is set up."""
    with pytest.raises(CodecError):
        AudioConfig(Codec.AAC, aac=AudioSpecificConfig(2, 4, 44100, 0))
    with pytest.raises(CodecError):
        AudioConfig.from_sample(Sample(Track.AUDIO, Codec.AAC, 0, 0, b"\x12", is_config=True))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60), st.sampled_from([AVC, HEVC, replace(AVC, nalu_length_size=2)]))
def test_garbage_frames_raise_only_codec_errors(data: bytes, config: VideoConfig) -> None:
    """Random video frame bytes mux into a readable stream or raise CodecError."""
    muxer = TsMuxer(config, AAC)
    out = muxer.segment_start()
    with contextlib.suppress(CodecError):
        out += muxer.write(Sample(Track.VIDEO, config.codec, 0, 0, data, True))
    read_ts(out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.sampled_from([Codec.AVC, Codec.HEVC, Codec.AAC]))
def test_garbage_configurations_raise_only_codec_errors(data: bytes, codec: Codec) -> None:
    """Random sequence header bodies give a configuration or a CodecError."""
    track = Track.AUDIO if codec is Codec.AAC else Track.VIDEO
    sample = Sample(track, codec, 0, 0, data, is_config=True)
    with contextlib.suppress(CodecError):
        (AudioConfig if track is Track.AUDIO else VideoConfig).from_sample(sample)


# --- timestamp sequences, end to end ---------------------------------------------------------

#: 32-bit RTMP starts: anywhere, just before a 32-bit wrap, just before a 33-bit
#: wrap of the written 90 kHz times.
start_strategy = st.one_of(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 20_000).map(lambda back: 0xFFFFFFFF - back),
    st.tuples(st.integers(1, 44), st.integers(0, 20_000)).map(
        lambda kb: (kb[0] * WRAP_33 - DELAY) // 90 - kb[1]
    ),
)


def unwrap_33(values: list[int]) -> list[int]:
    """33-bit timestamps turned back into a running count, assuming steps under 2**32."""
    out: list[int] = []
    for value in values:
        if not out:
            out.append(value)
            continue
        step = (value - out[-1]) % WRAP_33
        out.append(out[-1] + (step - WRAP_33 if step >= WRAP_33 // 2 else step))
    return out


def check_stream(ts: TransportStream) -> None:
    """Per PID: DTS never goes back, PTS never before DTS, the PCR just before the DTS."""
    for pid in ts.streams:
        pes = ts.pes_of(pid)
        decode = unwrap_33([p.decode_time or 0 for p in pes])
        assert decode == sorted(decode), f"DTS goes back on PID {pid:#x}"
        for p in pes:
            assert p.pts is not None and p.decode_time is not None
            assert (p.pts - p.decode_time) % WRAP_33 < WRAP_33 // 2, "PTS before DTS"
            if pid == ts.pcr_pid:
                assert p.pcr is not None and (p.decode_time - p.pcr) % WRAP_33 == DELAY


@settings(max_examples=150, deadline=None)
@given(
    start_strategy,
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.lists(st.tuples(st.integers(0, 70), st.integers(0, 500), st.booleans()), max_size=40),
    st.lists(st.integers(15, 30), max_size=60),
    st.sampled_from([0, 50, 250]),
    st.booleans(),
    st.booleans(),
)
def test_timestamp_sequences_end_to_end(
    start: int,
    video_offset: int,
    audio_offset: int,
    video_steps: list[tuple[int, int, bool]],
    audio_steps: list[int],
    audio_group_ms: int,
    with_video: bool,
    with_audio: bool,
) -> None:
    """FLV tags whose 32-bit times wrap, audio and video starting at different times, B-frames
    with composition times: unwrapped, parsed and muxed, they read back with exact 33-bit times,
    monotonic DTS, PTS >= DTS, the PCR 700 ms behind, and every frame in its PES."""
    if not with_video and not with_audio:
        with_video = True
    # True 64-bit times of every tag; headers first at each track's start.
    tags: list[tuple[int, int, bytes, int]] = []  # (time, order, payload, cts)
    if with_video:
        time = start + video_offset
        tags.append(
            (
                time,
                0,
                b"\x17\x00\x00\x00\x00"
                + bytes.fromhex("0164001fffe1000467640015" + "01000468ee3cb0"),
                0,
            )
        )
        for index, (step, cts, key) in enumerate(video_steps):
            time += step
            frame_type = 0x17 if key or index == 0 else 0x27
            nalu = (b"\x65" if key or index == 0 else b"\x41") + bytes([index & 0x7F | 0x80]) * 30
            payload = bytes([frame_type, 1]) + cts.to_bytes(3, "big") + avcc([nalu])
            tags.append((time, 2, payload, cts))
    if with_audio:
        time = start + audio_offset
        tags.append((time, 1, b"\xaf\x00\x12\x10", 0))
        for index, step in enumerate(audio_steps):
            time += step
            tags.append((time, 3, b"\xaf\x01" + bytes([0x21, index & 0xFF]) * 20, 0))
    tags.sort(key=lambda tag: (tag[0], tag[1]))
    first = tags[0][0]
    base = first - first % (1 << 32)

    unwrapper = TimestampUnwrapper()
    samples = []
    for time, order, payload, _cts in tags:
        sample = parse_tag(
            9 if order in (0, 2) else 8, payload, unwrapper.unwrap(time & 0xFFFFFFFF)
        )
        assert sample is not None
        assert sample.dts == time - base
        samples.append(sample)
    video_config = next(
        (VideoConfig.from_sample(s) for s in samples if s.is_config and s.track is Track.VIDEO),
        None,
    )
    audio_config = next(
        (AudioConfig.from_sample(s) for s in samples if s.is_config and s.track is Track.AUDIO),
        None,
    )
    muxer = TsMuxer(video_config, audio_config, audio_group_ms=audio_group_ms)
    out = muxer.segment_start()
    for sample in samples:
        if sample.is_keyframe and sample.track is Track.VIDEO:
            out += muxer.flush() + muxer.segment_start()
        out += muxer.write(sample)
    out += muxer.flush()

    ts = read_ts(out)
    check_stream(ts)
    coded = [s for s in samples if not s.is_config]
    video_pes = ts.pes_of(VIDEO_PID)
    expected_video = [s for s in coded if s.track is Track.VIDEO]
    assert [(p.pts, p.decode_time) for p in video_pes] == [
        (ticks(s.pts), ticks(s.dts)) for s in expected_video
    ]
    assert [p.random_access for p in video_pes] == [s.is_keyframe for s in expected_video]
    expected_audio = [s for s in coded if s.track is Track.AUDIO]
    audio_frames = [raw for p in ts.pes_of(AUDIO_PID) for _, raw in split_adts(p.data)]
    assert audio_frames == [s.data for s in expected_audio]
    audio_pes = ts.pes_of(AUDIO_PID)
    if audio_group_ms == 0:
        assert [p.pts for p in audio_pes] == [ticks(s.pts) for s in expected_audio]
    else:
        assert {p.pts for p in audio_pes} <= {ticks(s.pts) for s in expected_audio}
