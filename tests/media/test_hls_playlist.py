"""The segmenter's playlists, parsed by the ``m3u8`` package and held to the spec's rules.

RFC 8216 and draft-pantos-hls-rfc8216bis: every ``EXTINF`` rounded is at
most ``EXT-X-TARGETDURATION``; no part is longer than PART-TARGET and all
but a segment's last are at least 85 % of it; PART-HOLD-BACK is at least
three part targets and CAN-SKIP-UNTIL six target durations; the media
sequence number is the first segment's and never goes back, across a
republish too, where ``EXT-X-DISCONTINUITY`` marks the first new segment and
``EXT-X-DISCONTINUITY-SEQUENCE`` counts those that slid out, so that a
client gives every segment the same discontinuity number in every playlist;
a delta update skips only segments older than CAN-SKIP-UNTIL.
"""

from __future__ import annotations

import math
import re

import m3u8
import pytest

from streamserver.media import playlist as playlist_module
from streamserver.media.hls import HlsSettings, Segmenter
from streamserver.media.playlist import render_fmp4
from tests.media.test_hls import Feed, published


def parse(text: str | None) -> m3u8.M3U8:
    assert text is not None
    return m3u8.loads(text)


def rounded(seconds: float) -> int:
    """Nearest integer, halves up (RFC 8216 §4.3.3.1)."""
    return math.floor(seconds + 0.5)


def complete_segments(playlist: m3u8.M3U8) -> list[m3u8.Segment]:
    return [s for s in playlist.segments if s.uri is not None]


def check_fmp4(segmenter: Segmenter, text: str | None) -> m3u8.M3U8:
    """Hold one LL-HLS playlist to the rules; return it parsed."""
    playlist = parse(text)
    assert playlist.version == 10
    target = playlist.target_duration
    assert target == segmenter.target_duration
    segments = complete_segments(playlist)
    assert 0 < len(segments) <= segmenter.settings.window or not segments
    for segment in segments:
        assert rounded(segment.duration) <= target
    control = playlist.server_control
    assert control.can_block_reload == "YES"
    part_target = playlist.part_inf.part_target
    assert part_target == pytest.approx(segmenter.part_target)
    assert control.part_hold_back >= 3 * part_target - 1e-9
    assert control.can_skip_until >= 6 * target
    msn = playlist.media_sequence
    assert [s.uri for s in segments] == [f"seg-{msn + i}.m4s" for i in range(len(segments))]
    with_parts = [s for s in playlist.segments if s.parts]
    # Parts for at most the last two complete segments and the one in progress.
    assert with_parts == playlist.segments[-len(with_parts) :]
    assert len([s for s in with_parts if s.uri is not None]) <= 2
    for segment in with_parts:
        number = msn + playlist.segments.index(segment)
        assert [p.uri for p in segment.parts] == [
            f"part-{number}-{i}.m4s" for i in range(len(segment.parts))
        ]
        assert segment.parts[0].independent == "YES"
        for part in segment.parts:
            assert part.duration <= part_target + 1e-9
        if segment.uri is not None:
            # Each duration is written with 5 decimals: the sum is off by that much per part.
            total = sum(p.duration for p in segment.parts)
            assert abs(total - segment.duration) <= 1e-5 * len(segment.parts)
            for part in segment.parts[:-1]:
                assert part.duration >= 0.85 * part_target
    hint = playlist.preload_hint
    assert hint.hint_type == "PART"
    assert hint.uri == f"part-{segmenter.next_msn}-{segmenter.next_part}.m4s"
    assert segments[0].init_section is not None if segments else True
    return playlist


def test_ll_hls_playlists_follow_the_spec_after_every_part() -> None:
    """Every playlist served during 20 s (one per finished part) keeps the LL-HLS rules."""
    feed = published()
    segmenter = feed.segmenter
    seen: list[int] = []

    def served() -> None:
        playlist = check_fmp4(segmenter, segmenter.playlist("fmp4"))
        seen.append(playlist.media_sequence)

    segmenter.add_listener(served)
    feed.run(20)
    assert segmenter.listener_failure is None
    assert seen == sorted(seen) and seen[-1] == segmenter.next_msn - 7
    text = segmenter.playlist("fmp4")
    assert text is not None
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:10\n#EXT-X-TARGETDURATION:2\n")
    control = "CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12.0"
    assert f"#EXT-X-SERVER-CONTROL:{control}\n" in text
    assert "#EXT-X-PART-INF:PART-TARGET=0.200\n" in text
    assert text.count('#EXT-X-MAP:URI="init-0.mp4"') == 1
    assert text.endswith(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-9-{segmenter.next_part}.m4s"\n')


def test_classic_playlists_list_ts_segments_only() -> None:
    """The TS playlist: version 3, the same window of segments as .ts, no parts, no LL tags."""
    feed = published()
    feed.run(20)
    segmenter = feed.segmenter
    playlist = parse(segmenter.playlist("ts"))
    assert playlist.version == 3
    assert not playlist.part_inf and playlist.preload_hint is None
    assert not playlist.server_control
    assert playlist.is_independent_segments
    msn = playlist.media_sequence
    assert [s.uri for s in playlist.segments] == [f"seg-{msn + i}.ts" for i in range(7)]
    assert all(not s.parts for s in playlist.segments)
    held = {s.msn: s for s in segmenter.segments}
    for segment in playlist.segments:
        assert segment.duration == pytest.approx(held[int(segment.uri[4:-3])].duration)
        assert rounded(segment.duration) <= playlist.target_duration


def test_playlists_wait_for_their_first_part_and_segment() -> None:
    """None before anything exists; fMP4 from the first part, TS from the first segment."""
    feed = Feed()
    segmenter = feed.segmenter
    assert segmenter.playlist("fmp4") is None and segmenter.playlist("ts") is None
    feed.publish()
    feed.run(0.2)
    assert segmenter.playlist("fmp4") is None
    feed.run(0.05)
    playlist = parse(segmenter.playlist("fmp4"))
    assert complete_segments(playlist) == [] and len(playlist.segments[0].parts) == 1
    assert playlist.media_sequence == 0
    assert segmenter.playlist("ts") is None
    feed.run(2)
    assert [s.uri for s in parse(segmenter.playlist("ts")).segments] == ["seg-0.ts"]
    with pytest.raises(ValueError, match="variant"):
        segmenter.playlist("dash")


def test_the_query_goes_on_every_uri() -> None:
    """A play token is carried to the init segment, segments, parts and the preload hint."""
    feed = published()
    feed.run(5)
    query = "?token=abc&expires=99"
    for variant in ("fmp4", "ts"):
        text = feed.segmenter.playlist(variant, query=query)
        assert text is not None
        uris = re.findall(r'URI="([^"]+)"', text) + [
            line for line in text.splitlines() if line and not line.startswith("#")
        ]
        assert uris and all(uri.endswith(query) for uri in uris)
    bare = feed.segmenter.playlist("ts", query="token=abc")
    assert bare is not None and "seg-0.ts?token=abc\n" in bare
    with pytest.raises(ValueError, match="query"):
        feed.segmenter.playlist("fmp4", query='?a="b"')


def test_delta_updates_skip_only_segments_older_than_can_skip_until() -> None:
    """_HLS_skip=YES: EXT-X-SKIP replaces the oldest segments; 12 s or more stay listed."""
    feed = published(HlsSettings(window=10))
    feed.run(25)
    segmenter = feed.segmenter
    full = parse(segmenter.playlist("fmp4"))
    delta = parse(segmenter.playlist("fmp4", skip=True))
    skipped = delta.skip.skipped_segments
    kept = complete_segments(delta)
    assert skipped + len(kept) == len(complete_segments(full)) == 10
    assert delta.media_sequence == full.media_sequence
    tail = sum(s.duration for s in kept) + segmenter.segments[-1].duration
    assert tail >= full.server_control.can_skip_until
    # One more skipped segment would leave less than CAN-SKIP-UNTIL.
    assert tail - kept[0].duration < full.server_control.can_skip_until
    assert skipped == 4
    assert kept[0].init_section is not None and kept[0].init_section.uri == "init-0.mp4"
    assert [s.uri for s in kept] == [s.uri for s in complete_segments(full)[skipped:]]
    # Nothing to skip: the whole playlist.
    short = published()
    short.run(7)
    text = short.segmenter.playlist("fmp4", skip=True)
    assert text is not None and "EXT-X-SKIP" not in text


def test_target_duration_covers_long_segments() -> None:
    """A 3.6 s GOP with 2 s segments: EXTINF 3.6 and TARGETDURATION 4."""
    feed = published(gop=108)
    feed.run(12)
    for variant in ("fmp4", "ts"):
        playlist = parse(feed.segmenter.playlist(variant))
        assert playlist.target_duration == 4
        assert {round(s.duration, 3) for s in complete_segments(playlist)} == {3.6}


def cc_by_msn(playlist: m3u8.M3U8) -> dict[int, int]:
    """What a client makes of a playlist: each segment's discontinuity number (as hls.js does)."""
    numbers = {}
    cc = playlist.discontinuity_sequence or 0
    for index, segment in enumerate(playlist.segments):
        if segment.discontinuity:
            cc += 1
        # m3u8 leaves the tags before trailing parts off their segment: skip that one.
        if segment.uri is not None:
            numbers[playlist.media_sequence + index] = cc
    return numbers


def test_republish_keeps_numbers_and_counts_discontinuities() -> None:
    """Unpublish/publish: MSN goes on, the first new segment is tagged, DISCONTINUITY-SEQUENCE
    counts it once it slid out, and every segment keeps its discontinuity number throughout."""
    feed = published()
    segmenter = feed.segmenter
    numbers: dict[tuple[str, int], int] = {}
    sequences: dict[str, list[int]] = {"fmp4": [], "ts": []}

    def served() -> None:
        for variant in ("fmp4", "ts"):
            text = segmenter.playlist(variant)
            if text is None:
                continue
            playlist = parse(text)
            if variant == "fmp4":
                check_fmp4(segmenter, text)
            sequences[variant].append(playlist.media_sequence)
            for msn, cc in cc_by_msn(playlist).items():
                assert numbers.setdefault((variant, msn), cc) == cc, (variant, msn)

    segmenter.add_listener(served)
    feed.run(7)  # segments 0-2 complete, 3 in progress
    feed.unpublish()  # 3 completes with what it has
    assert [round(s.duration, 2) for s in segmenter.segments] == [2.0, 2.0, 2.0, 1.0]
    feed.clock.advance(5)
    feed.publish()
    feed.run(5)
    first_new = segmenter.segments[4]
    assert first_new.msn == 4 and first_new.discontinuity and first_new.init == 0
    assert not any(s.discontinuity for s in segmenter.segments[:4])
    text = segmenter.playlist("fmp4")
    assert text is not None and text.count("#EXT-X-DISCONTINUITY\n") == 1
    tagged = [s.uri for s in parse(text).segments if s.discontinuity]
    assert tagged == ["seg-4.m4s"]
    feed.run(20)
    assert segmenter.listener_failure is None
    for variant in ("fmp4", "ts"):
        assert sequences[variant] == sorted(sequences[variant])
        playlist = parse(segmenter.playlist(variant))
        assert playlist.media_sequence > 4
        assert playlist.discontinuity_sequence == 1
        assert not any(s.discontinuity for s in playlist.segments)
    assert numbers[("fmp4", 3)] == 0 and numbers[("fmp4", 4)] == 1
    assert numbers[("ts", 3)] == 0 and numbers[("ts", 4)] == 1


def test_render_fmp4_lists_map_and_discontinuity_before_the_parts_in_progress() -> None:
    """A new init in the segment in progress: DISCONTINUITY and MAP come before its parts."""
    feed = published()
    feed.run(2.5)
    segmenter = feed.segmenter
    old, current = segmenter.segments
    current.discontinuity, current.init = True, 1
    text = render_fmp4(
        [old],
        current,
        target_duration=2,
        part_target_ms=200,
        discontinuity_sequence=0,
        preload=(1, 2),
    )
    assert text.endswith(
        "#EXT-X-DISCONTINUITY\n"
        '#EXT-X-MAP:URI="init-1.mp4"\n'
        '#EXT-X-PART:DURATION=0.20000,URI="part-1-0.m4s",INDEPENDENT=YES\n'
        '#EXT-X-PART:DURATION=0.20000,URI="part-1-1.m4s"\n'
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-1-2.m4s"\n'
    )
    # (m3u8 does not give the tags before trailing parts to that segment; hls.js does.)
    assert m3u8.loads(text).segments[-1].parts[1].uri == "part-1-1.m4s"


def test_a_playlist_is_rendered_once_per_change_whatever_the_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many viewers with their own tokens between two parts: one rendering, their query put in."""
    feed = published()
    feed.run(3)
    renders: list[int] = []
    real = playlist_module._fmp4_text

    def counting(*args: object, **kwargs: object) -> str:
        renders.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(playlist_module, "_fmp4_text", counting)
    segmenter = feed.segmenter
    texts = [segmenter.playlist("fmp4", query=f"?token={n}") for n in range(50)]
    assert len(renders) == 1
    assert texts[7] == texts[0].replace("?token=0", "?token=7")  # type: ignore[union-attr]
    assert segmenter.playlist("fmp4") == texts[0].replace("?token=0", "")  # type: ignore[union-attr]
    feed.run(0.25)  # a part finishes
    after = segmenter.playlist("fmp4", query="?token=1")
    assert len(renders) == 2 and after != texts[1]
    assert f"part-{segmenter.next_msn}-{segmenter.next_part}.m4s?token=1" in (after or "")
