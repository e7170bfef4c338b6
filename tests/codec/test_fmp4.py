"""Tests for the fragmented MP4 muxer (ISO/IEC 14496-12, 14496-15, AV1-ISOBMFF, Opus-in-ISOBMFF).

Init segments and fragments are read back with ``tests/codec/mp4_reader.py``,
a strict reader written from the spec's box layouts, not from the muxer.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamserver.codec import isobmff
from streamserver.codec.fmp4 import (
    AudioTrack,
    FragmentWriter,
    Mp4Sample,
    Track,
    VideoTrack,
    brands,
    init_segment,
    ms_to_ticks,
)
from streamserver.errors import CodecError, UsageError
from tests.codec import mp4_reader
from tests.codec.mp4_reader import parse_boxes, read_file, read_fragments, read_init

#: The AVCDecoderConfigurationRecord ffmpeg's libx264 (baseline, 320x240) puts in FLV.
AVCC = bytes.fromhex("0142c00dffe100166742c00dda0507ec0440000003004000000f23c50aa801000468ce0fc8")

#: AAC-LC, 44100 Hz, mono: ffmpeg's AudioSpecificConfig for the sample FLV.
ASC = bytes.fromhex("1208")

#: An HEVCDecoderConfigurationRecord by hand: Main profile (1), compatibility
#: 0x60000000, constraints B0, level 93, 4:2:0 8-bit, 4-byte lengths, then
#: one VPS, SPS and PPS array (the NAL units are placeholders).
HVCC = bytes.fromhex(
    "01" "01" "60000000" "b00000000000" "5d" "f000" "fc" "fd" "f8" "f8" "0000" "0f"
    "03"
    "a0" "0001" "0004" "40010c01"
    "a1" "0001" "0003" "420101"
    "a2" "0001" "0002" "4401"
)  # fmt: skip

#: An AV1CodecConfigurationRecord: Main profile, level 8 (4.0), Main tier,
#: 8-bit 4:2:0, then a placeholder sequence header OBU.
AV1C = bytes.fromhex("81080c000a0b00000024c4fffe04")

#: An Ogg Opus ID header (RFC 7845 §5.1): version 1, stereo, pre-skip 312,
#: input 48000 Hz, gain 0, family 0.
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)


def avc_track(track_id: int = 1) -> VideoTrack:
    return VideoTrack(track_id, b"avc1", AVCC, 320, 240)


def aac_track(track_id: int = 2) -> AudioTrack:
    return AudioTrack(track_id, b"mp4a", ASC, 44100, 1)


# --- box writer vectors ----------------------------------------------------------


def test_box_vectors() -> None:
    """A box is u32 size, type, payload; a full box adds version and 24-bit flags."""
    assert isobmff.box(b"free").hex() == "0000000866726565"
    assert isobmff.box(b"free", b"ab", b"c").hex() == "0000000b66726565616263"
    assert isobmff.full_box(b"url ", 0, 1).hex() == "0000000c75726c2000000001"
    assert isobmff.full_box(b"tfdt", 1, 0x020000).hex() == "0000000c7466647401020000"


def test_descriptor_sizes_use_as_few_bytes_as_they_need() -> None:
    """A descriptor's size is 7 bits a byte, continuation bit on all but the last byte."""
    assert isobmff.descriptor(5, b"\x12\x08").hex() == "05021208"
    assert isobmff.descriptor(5, bytes(127))[:2].hex() == "057f"
    assert isobmff.descriptor(5, bytes(128))[:3].hex() == "058100"
    assert isobmff.descriptor(5, bytes(16384))[:4].hex() == "05818000"
    assert mp4_reader.descriptors(isobmff.descriptor(5, bytes(300))) == [(5, bytes(300))]


def test_box_writer_rejects_misuse() -> None:
    """Types that are not four bytes, and versions, flags or tags that do not fit, are misuse."""
    with pytest.raises(UsageError):
        isobmff.box(b"abc")
    with pytest.raises(UsageError):
        isobmff.full_box(b"abcd", 256, 0)
    with pytest.raises(UsageError):
        isobmff.full_box(b"abcd", 0, 1 << 24)
    with pytest.raises(UsageError):
        isobmff.descriptor(256)
    with pytest.raises(UsageError):
        isobmff.language_code("UND")


def test_language_und() -> None:
    """'und' packs to 0x55C4 (three 5-bit letters minus 0x60)."""
    assert isobmff.language_code("und") == 0x55C4


# --- init segment ------------------------------------------------------------------


def test_init_segment_h264_aac() -> None:
    """An H.264 + AAC init segment carries both records as they are, with the right clocks."""
    data = init_segment([avc_track(), aac_track()])
    init = read_init(parse_boxes(data))
    assert init.major_brand == b"iso6"
    assert init.brands == [b"iso6", b"mp41"]
    assert init.next_track_id == 3
    video, audio = init.tracks
    assert (video.track_id, video.handler, video.timescale) == (1, b"vide", 90000)
    assert (video.entry, video.config_type, video.config) == (b"avc1", b"avcC", AVCC)
    assert (video.width, video.height) == (320, 240)
    assert (audio.track_id, audio.handler, audio.timescale) == (2, b"soun", 44100)
    assert (audio.entry, audio.config_type) == (b"mp4a", b"esds")
    assert (audio.channels, audio.sample_rate) == (1, 44100)
    audio_trak = parse_boxes(data)[1].all(b"trak")[1]
    esds = audio_trak.path(b"mdia", b"minf", b"stbl", b"stsd", b"mp4a", b"esds")
    assert mp4_reader.audio_specific_config(esds) == (0x40, ASC)


def test_single_track_init_claims_cmaf() -> None:
    """A one-track init segment is a CMAF header and says so with the cmfc brand."""
    assert brands([avc_track()]) == [b"iso6", b"mp41", b"cmfc"]
    init = read_init(parse_boxes(init_segment([aac_track(7)])))
    assert b"cmfc" in init.brands
    assert [t.track_id for t in init.tracks] == [7]
    assert init.next_track_id == 8


def test_init_segment_hevc_av1_opus() -> None:
    """HEVC, AV1 and Opus get hvcC, av1C and a big-endian dOps; AV1 and Opus add their brands."""
    tracks: list[Track] = [
        VideoTrack(1, b"hvc1", HVCC, 1920, 1080),
        VideoTrack(2, b"av01", AV1C, 1280, 720),
        AudioTrack(3, b"Opus", OPUS_HEAD, 48000, 2),
    ]
    init = read_init(parse_boxes(init_segment(tracks)))
    assert init.brands == [b"iso6", b"mp41", b"av01", b"Opus"]
    hevc, av1, opus = init.tracks
    assert (hevc.entry, hevc.config_type, hevc.config) == (b"hvc1", b"hvcC", HVCC)
    assert (hevc.width, hevc.height) == (1920, 1080)
    assert (av1.entry, av1.config_type, av1.config) == (b"av01", b"av1C", AV1C)
    assert (opus.entry, opus.config_type, opus.timescale) == (b"Opus", b"dOps", 48000)
    assert opus.config == struct.pack(">BBHIhB", 0, 2, 312, 48000, 0, 0)
    assert (opus.channels, opus.sample_rate) == (2, 48000)


def test_init_segment_is_deterministic() -> None:
    """The same tracks give the same bytes."""
    assert init_segment([avc_track(), aac_track()]) == init_segment([avc_track(), aac_track()])


def test_high_sample_rate_leaves_the_16_16_field_zero() -> None:
    """96 kHz does not fit the sample entry's 16.16 rate: it says 0, the timescale says 96000."""
    init = read_init(parse_boxes(init_segment([AudioTrack(1, b"mp4a", b"\x11\x88", 96000, 2)])))
    assert (init.tracks[0].sample_rate, init.tracks[0].timescale) == (0, 96000)


@pytest.mark.parametrize(
    ("track", "codec_string"),
    [
        (VideoTrack(1, b"avc1", AVCC, 320, 240), "avc1.42C00D"),
        (VideoTrack(1, b"hvc1", HVCC, 1920, 1080), "hvc1.1.6.L93.B0"),
        (VideoTrack(1, b"av01", AV1C, 1280, 720), "av01.0.08M.08"),
        (VideoTrack(1, b"av01", bytes.fromhex("8133c000"), 1280, 720), "av01.1.19H.10"),
        (VideoTrack(1, b"av01", bytes.fromhex("8140e000"), 1280, 720), "av01.2.00H.12"),
        (AudioTrack(1, b"mp4a", ASC, 44100, 1), "mp4a.40.2"),
        (AudioTrack(1, b"mp4a", bytes.fromhex("2b8a0800"), 24000, 2), "mp4a.40.5"),
        (AudioTrack(1, b"mp4a", bytes.fromhex("f8e50000"), 48000, 2), "mp4a.40.39"),
        (AudioTrack(1, b"Opus", b"", 48000, 2), "opus"),
    ],
)
def test_codec_strings(track: Track, codec_string: str) -> None:
    """Each track names its codec as RFC 6381 and the codec bindings spell it."""
    assert track.codec_string == codec_string


def test_hevc_codec_string_with_profile_space_and_high_tier() -> None:
    """Profile space 1 is 'A', the high tier 'H'; all-zero constraint bytes are left out."""
    record = bytearray(HVCC)
    record[1] = 0x62  # profile space 1, high tier, profile 2
    record[2:6] = bytes.fromhex("20000000")
    record[6:12] = bytes(6)
    record[12] = 120
    assert VideoTrack(1, b"hvc1", bytes(record), 64, 64).codec_string == "hvc1.A2.4.H120"


# --- Opus ID headers -----------------------------------------------------------------


def test_opus_without_id_header_gets_a_made_up_one() -> None:
    """A stereo Opus stream that sent no ID header gets family 0, 80 ms pre-skip, its rate."""
    init = read_init(parse_boxes(init_segment([AudioTrack(1, b"Opus", b"", 48000, 2)])))
    assert init.tracks[0].config == struct.pack(">BBHIhB", 0, 2, 3840, 48000, 0, 0)


def test_opus_family_1_keeps_its_mapping_table() -> None:
    """A 5.1 ID header keeps stream count, coupled count and mapping; the header's count wins."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 6, 312, 44100, -256, 1) + bytes([4, 2])
    head += bytes([0, 4, 1, 2, 3, 5])
    track = AudioTrack(1, b"Opus", head, 48000, 2)
    init = read_init(parse_boxes(init_segment([track])))
    assert init.tracks[0].config == struct.pack(">BBHIhB", 0, 6, 312, 44100, -256, 1) + bytes(
        [4, 2, 0, 4, 1, 2, 3, 5]
    )
    assert init.tracks[0].channels == 6


@pytest.mark.parametrize(
    "head",
    [
        b"OpusHeaX" + OPUS_HEAD[8:],
        OPUS_HEAD[:18],
        b"OpusHead" + struct.pack("<BBHIhB", 0x10, 2, 312, 48000, 0, 0),
        b"OpusHead" + struct.pack("<BBHIhB", 1, 0, 312, 48000, 0, 0),
        b"OpusHead" + struct.pack("<BBHIhB", 1, 3, 312, 48000, 0, 1) + bytes([2, 1, 0, 1]),
        b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 1) + bytes([1, 2, 0, 1]),
        b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 1) + bytes([0, 0, 0, 1]),
    ],
)
def test_bad_opus_headers_raise_codec_errors(head: bytes) -> None:
    """Bad magic, truncation, an unknown major version, no channels or a bad table: CodecError."""
    with pytest.raises(CodecError):
        AudioTrack(1, b"Opus", head, 48000, 2)


def test_multichannel_opus_needs_an_id_header() -> None:
    """Without an ID header only mono and stereo can be described."""
    with pytest.raises(CodecError):
        AudioTrack(1, b"Opus", b"", 48000, 6)


# --- configuration records: garbage and truncation -------------------------------------


@pytest.mark.parametrize(
    ("codec", "record"), [(b"avc1", AVCC), (b"hvc1", HVCC), (b"av01", AV1C[:4])]
)
def test_truncated_video_records_raise_codec_errors(codec: bytes, record: bytes) -> None:
    """Every prefix of a record that ends with its last parameter set is a CodecError."""
    for end in range(len(record)):
        with pytest.raises(CodecError):
            VideoTrack(1, codec, record[:end], 64, 64)
    VideoTrack(1, codec, record, 64, 64)


@pytest.mark.parametrize(
    ("codec", "record"),
    [
        (b"avc1", b"\x02" + AVCC[1:]),  # version 2
        (b"avc1", AVCC[:5] + b"\xe0" + AVCC[6:]),  # no SPS
        (b"avc1", AVCC[:-7] + b"\x00"),  # no PPS
        (b"avc1", AVCC[:6] + b"\x00\x00" + AVCC[8:]),  # an empty SPS
        (b"hvc1", b"\x00" + HVCC[1:]),  # version 0
        (b"av01", b"\x01\x08\x0c\x00"),  # no marker bit
        (b"av01", b"\x82\x08\x0c\x00"),  # version 2
    ],
)
def test_malformed_video_records_raise_codec_errors(codec: bytes, record: bytes) -> None:
    """A wrong version, a missing SPS or PPS or an empty parameter set is a CodecError."""
    with pytest.raises(CodecError):
        VideoTrack(1, codec, record, 64, 64)


@pytest.mark.parametrize("config", [b"", b"\x12", b"\x00\x08", b"\x07\xff"])
def test_malformed_audio_specific_configs_raise_codec_errors(config: bytes) -> None:
    """An ASC shorter than 2 bytes or of audio object type 0 is a CodecError."""
    with pytest.raises(CodecError):
        AudioTrack(1, b"mp4a", config, 44100, 2)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([b"avc1", b"hvc1", b"av01", b"mp4a", b"Opus"]), st.binary(max_size=64))
def test_garbage_configs_raise_only_codec_errors(codec: bytes, config: bytes) -> None:
    """Any configuration bytes describe a track whose init reads back, or raise CodecError."""
    track: Track
    try:
        if codec in (b"mp4a", b"Opus"):
            track = AudioTrack(1, codec, config, 48000, 2)
        else:
            track = VideoTrack(1, codec, config, 64, 64)
    except CodecError:
        return
    assert isinstance(track.codec_string, str)
    read_init(parse_boxes(init_segment([track])))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, len(AVCC) - 1))
def test_avcc_with_garbage_inside_raises_only_codec_errors(junk: bytes, at: int) -> None:
    """A valid record with bytes spliced in either still parses or raises CodecError."""
    with contextlib.suppress(CodecError):
        VideoTrack(1, b"avc1", AVCC[:at] + junk + AVCC[at:], 64, 64)


def test_track_misuse_is_a_usage_error() -> None:
    """Unknown codecs, sizes, rates, counts and ids out of range, duplicate ids: UsageError."""
    cases = [
        lambda: VideoTrack(1, b"vp09", AVCC, 64, 64),
        lambda: VideoTrack(1, b"mp4a", AVCC, 64, 64),
        lambda: VideoTrack(0, b"avc1", AVCC, 64, 64),
        lambda: VideoTrack(1, b"avc1", AVCC, 0, 64),
        lambda: VideoTrack(1, b"avc1", AVCC, 64, 65536),
        lambda: AudioTrack(1, b"fLaC", b"", 48000, 2),
        lambda: AudioTrack(1, b"mp4a", ASC, 0, 2),
        lambda: AudioTrack(1, b"mp4a", ASC, 44100, 0),
        lambda: AudioTrack(1 << 32, b"mp4a", ASC, 44100, 1),
        lambda: init_segment([]),
        lambda: init_segment([avc_track(1), aac_track(1)]),
        lambda: FragmentWriter([avc_track(1), aac_track(1)]),
        lambda: FragmentWriter([avc_track()], sequence_number=-1),
    ]
    for case in cases:
        with pytest.raises(UsageError):
            case()


# --- fragments: vectors and rules ------------------------------------------------------


def test_fragment_vector() -> None:
    """One sample at a decode time past 32 bits: moof (mfhd, traf: tfhd, tfdt v1, trun v1), mdat."""
    writer = FragmentWriter([avc_track()])
    sample = Mp4Sample(dts=0x0102030405, data=b"ab", is_sync=True)
    fragment = writer.write({1: [sample]}, next_dts={1: 0x0102030405 + 3000})
    assert fragment.data.hex() == (
        "00000064" "6d6f6f66"
        "00000010" "6d666864" "00000000" "00000001"
        "0000004c" "74726166"
        "00000010" "74666864" "00020000" "00000001"
        "00000014" "74666474" "01000000" "0000000102030405"
        "00000020" "7472756e" "01000701" "00000001" "0000006c" "00000bb8" "00000002" "02000000"
        "0000000a" "6d646174" "6162"
    )  # fmt: skip
    assert fragment.sequence_number == 1
    assert fragment.independent
    assert fragment.decode_times == {1: 0x0102030405}
    assert fragment.durations == {1: 3000}
    assert fragment.duration == pytest.approx(3000 / 90000)


def test_b_frames_write_signed_composition_offsets() -> None:
    """Composition offsets (negative too) make the trun carry a signed offset per sample."""
    writer = FragmentWriter([avc_track()])
    samples = [
        Mp4Sample(0, b"I", True, 6000),
        Mp4Sample(3000, b"P", False, 9000),
        Mp4Sample(6000, b"B", False, -3000),
    ]
    fragment = writer.write({1: samples}, next_dts={1: 9000})
    [info] = read_fragments(fragment.data, parse_boxes(fragment.data))
    [traf] = info.trafs
    assert [(s.duration, s.composition_offset, s.is_sync) for s in traf.samples] == [
        (3000, 6000, True),
        (3000, 9000, False),
        (3000, -3000, False),
    ]
    assert [s.flags for s in traf.samples] == [0x02000000, 0x01010000, 0x01010000]


def test_a_fragment_without_offsets_leaves_them_out() -> None:
    """When no sample has a composition offset the trun has no offset field."""
    fragment = FragmentWriter([aac_track()]).write({2: [Mp4Sample(0, b"x"), Mp4Sample(1024, b"y")]})
    trun = parse_boxes(fragment.data)[0].path(b"traf", b"trun")
    assert mp4_reader.full_box(trun)[1] == 0x000701
    assert len(trun.payload) == 12 + 2 * 12


def _last_duration(writer: FragmentWriter, samples: list[Mp4Sample], **kwargs: object) -> int:
    fragment = writer.write({1: samples}, **kwargs)
    [info] = read_fragments(fragment.data, parse_boxes(fragment.data))
    return info.trafs[0].samples[-1].duration


def test_last_sample_duration_rules() -> None:
    """A last duration is next_dts, else its own, else the one before, else the codec's frame."""
    writer = FragmentWriter([avc_track()])
    assert _last_duration(writer, [Mp4Sample(0, b"a")]) == 3000
    assert _last_duration(writer, [Mp4Sample(3000, b"a"), Mp4Sample(6003, b"b")]) == 3003
    assert _last_duration(writer, [Mp4Sample(9006, b"a")]) == 3003
    assert _last_duration(writer, [Mp4Sample(12009, b"a", duration=2990)]) == 2990
    assert _last_duration(writer, [Mp4Sample(15000, b"a", duration=2990)], next_dts={1: 18000}) == (
        3000
    )
    assert writer.decode_end(1) == 18000
    assert writer.decode_end(2) is None
    for track, frame in [(aac_track(1), 1024), (AudioTrack(1, b"Opus", b"", 48000, 2), 960)]:
        assert _last_duration(FragmentWriter([track]), [Mp4Sample(0, b"a")]) == frame


def test_independent_only_when_every_track_starts_with_a_sync_sample() -> None:
    """A fragment is independent when each of its tracks starts with a sync sample."""
    writer = FragmentWriter([avc_track(), aac_track()])
    audio = [Mp4Sample(0, b"a")]
    assert writer.write({1: [Mp4Sample(0, b"k", True)], 2: audio}).independent
    assert not writer.write({1: [Mp4Sample(3000, b"p", False)], 2: []}).independent
    assert writer.write({2: [Mp4Sample(1024, b"a")]}).independent
    assert [writer.sequence_number] == [4]


def test_fragments_are_deterministic() -> None:
    """Two writers given the same samples write the same bytes."""
    samples = {1: [Mp4Sample(90, b"k", True, 3000), Mp4Sample(3090, b"p", False)], 2: []}
    first = FragmentWriter([avc_track(), aac_track()]).write(samples)
    second = FragmentWriter([avc_track(), aac_track()]).write(samples)
    assert first.data == second.data


def test_sequence_numbers_go_on_from_the_one_given() -> None:
    """A writer for a new init segment can go on counting from where the last one stopped."""
    writer = FragmentWriter([aac_track()], sequence_number=41)
    assert writer.write({2: [Mp4Sample(0, b"a")]}).sequence_number == 41
    assert writer.write({2: [Mp4Sample(1024, b"a")]}).sequence_number == 42
    assert writer.sequence_number == 43


def test_fragment_misuse_is_a_usage_error_and_changes_nothing() -> None:
    """Bad timings and values raise UsageError and leave the writer as it was."""
    writer = FragmentWriter([avc_track()])
    writer.write({1: [Mp4Sample(9000, b"a")]})
    cases = [
        {"samples": {}},
        {"samples": {1: []}},
        {"samples": {3: [Mp4Sample(9000, b"a")]}},
        {"samples": {1: [Mp4Sample(8999, b"a")]}},
        {"samples": {1: [Mp4Sample(9000, b"a"), Mp4Sample(8000, b"b")]}},
        {"samples": {1: [Mp4Sample(9000, b"a")]}, "next_dts": {1: 8999}},
        {"samples": {1: [Mp4Sample(9000, b"a"), Mp4Sample(9000 + (1 << 32), b"b")]}},
        {"samples": {1: [Mp4Sample(9000, b"a", composition_offset=1 << 31)]}},
        {"samples": {1: [Mp4Sample(9000, b"a", duration=-1)]}},
        {"samples": {1: [Mp4Sample(1 << 64, b"a")]}},
    ]
    for case in cases:
        with pytest.raises(UsageError):
            writer.write(case["samples"], next_dts=case.get("next_dts"))
    assert writer.sequence_number == 2
    assert writer.decode_end(1) == 12000
    assert writer.write({1: [Mp4Sample(9000, b"a")]}).sequence_number == 2


def test_dts_below_zero_is_a_usage_error() -> None:
    """Decode times start at 0: tfdt is unsigned."""
    with pytest.raises(UsageError):
        FragmentWriter([avc_track()]).write({1: [Mp4Sample(-1, b"a")]})


def test_ms_to_ticks() -> None:
    """Milliseconds become ticks, halves rounded up, negative values too."""
    assert ms_to_ticks(23, 90000) == 2070
    assert ms_to_ticks(23, 44100) == 1014  # 1014.3
    assert ms_to_ticks(70, 44100) == 3087
    assert ms_to_ticks(10, 44100) == 441
    assert ms_to_ticks(-33, 90000) == -2970
    assert ms_to_ticks(1, 22050) == 22  # 22.05
    assert ms_to_ticks(1, 500) == 1  # 0.5 rounds up


# --- fragments: property tests ------------------------------------------------------


@dataclass
class Timeline:
    """Samples of one track and the track."""

    track: Track
    samples: list[Mp4Sample]


#: Decode times to start from: near 0, around 2^32 (a 32-bit tfdt would wrap), far past it.
START_TIMES = st.one_of(
    st.integers(0, 100_000),
    st.integers((1 << 32) - 200_000, (1 << 32) + 200_000),
    st.integers(1 << 40, 1 << 62),
)


@st.composite
def video_timelines(draw: st.DrawFn) -> Timeline:
    count = draw(st.integers(1, 30))
    start = draw(START_TIMES)
    steps = draw(st.lists(st.integers(0, 9000), min_size=count - 1, max_size=count - 1))
    samples = []
    dts = start
    for i in range(count):
        if i:
            dts += steps[i - 1]
        offset = draw(st.integers(-9000, 30000))
        sync = i == 0 or draw(st.booleans())
        samples.append(Mp4Sample(dts, draw(st.binary(max_size=24)), sync, offset))
    return Timeline(avc_track(1), samples)


@st.composite
def audio_timelines(draw: st.DrawFn) -> Timeline:
    track = draw(st.sampled_from([aac_track(2), AudioTrack(2, b"Opus", OPUS_HEAD, 48000, 2)]))
    count = draw(st.integers(1, 30))
    dts = draw(START_TIMES)
    samples = []
    for i in range(count):
        if i:
            dts += draw(st.sampled_from([1024, 960, 1023, 1025, 0, 20000]))
        samples.append(Mp4Sample(dts, draw(st.binary(max_size=16))))
    return Timeline(track, samples)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[Timeline], list[list[int]], bool]:
    """One or two timelines, fragment cut indexes for each, whether next_dts is given."""
    kinds = draw(st.sampled_from(["video", "audio", "both"]))
    timelines = []
    if kinds in ("video", "both"):
        timelines.append(draw(video_timelines()))
    if kinds in ("audio", "both"):
        timelines.append(draw(audio_timelines()))
    fragments = draw(st.integers(1, 6))
    cuts = []
    for timeline in timelines:
        size = fragments - 1
        points = draw(st.lists(st.integers(0, len(timeline.samples)), min_size=size, max_size=size))
        cuts.append([0, *sorted(points), len(timeline.samples)])
    return timelines, cuts, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_fragments_round_trip(session: tuple[list[Timeline], list[list[int]], bool]) -> None:
    """Init + fragments read back to the same samples: dts, durations, offsets, flags and bytes."""
    timelines, cuts, hold_back = session
    tracks = [t.track for t in timelines]
    writer = FragmentWriter(tracks)
    data = init_segment(tracks)
    written = []
    for index in range(len(cuts[0]) - 1):
        samples = {}
        next_dts = {}
        for timeline, points in zip(timelines, cuts, strict=True):
            run = timeline.samples[points[index] : points[index + 1]]
            samples[timeline.track.track_id] = run
            rest = timeline.samples[points[index + 1] :]
            if hold_back and rest:
                next_dts[timeline.track.track_id] = rest[0].dts
        if not any(samples.values()):
            continue
        fragment = writer.write(samples, next_dts=next_dts)
        assert fragment.independent == all(run[0].is_sync for run in samples.values() if run)
        data += fragment.data
        written.append((fragment, samples, next_dts))

    init, fragments = read_file(data)
    assert [t.track_id for t in init.tracks] == [t.track_id for t in tracks]
    assert [f.sequence_number for f in fragments] == list(range(1, len(fragments) + 1))
    by_track: dict[int, list[mp4_reader.SampleInfo]] = {t.track_id: [] for t in tracks}
    last_base: dict[int, int] = {}
    for info, (fragment, samples, next_dts) in zip(fragments, written, strict=True):
        assert [traf.track_id for traf in info.trafs] == [t for t, run in samples.items() if run]
        assert info.size == len(fragment.data)
        for traf in info.trafs:
            run = samples[traf.track_id]
            assert traf.base_decode_time == run[0].dts == fragment.decode_times[traf.track_id]
            assert traf.base_decode_time >= last_base.get(traf.track_id, 0), "tfdt goes forward"
            last_base[traf.track_id] = traf.base_decode_time
            dts = traf.base_decode_time
            for sample, read in zip(run, traf.samples, strict=True):
                assert read.data == sample.data
                assert read.is_sync == sample.is_sync
                assert read.composition_offset == sample.composition_offset
                assert dts == sample.dts, "tfdt + durations give every sample's dts"
                dts += read.duration
            if traf.track_id in next_dts:
                assert dts == next_dts[traf.track_id], "held back: the last duration is exact"
            assert sum(r.duration for r in traf.samples) == fragment.durations[traf.track_id]
            by_track[traf.track_id] += traf.samples
    for timeline in timelines:
        assert [s.data for s in by_track[timeline.track.track_id]] == [
            s.data for s in timeline.samples
        ]
