"""Real clients on ``twistd -n streamserver``'s HLS: ffmpeg, ffprobe and the ``m3u8`` parser.

Each test starts the twistd plugin as a child process (RTMP and HTTP on free
loopback ports), publishes the session's sample (H.264 with a keyframe every
2 s, AAC) with ffmpeg over RTMP, and reads ``/live/x/index.m3u8`` (LL-HLS, fMP4)
and ``/live/x/ts.m3u8`` (MPEG-TS) with a real client.  The playlists are also
parsed by the ``m3u8`` package and held to RFC 8216's rules while the stream
runs and across a republish.  A missing binary skips the test, or fails it under
``STREAMSERVER_REQUIRE_INTEROP=1``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import m3u8
import pytest
import pytest_twisted
from twisted.web.client import Agent

from tests.http.test_hls import BodyCollector
from tests.integration.hardening_support import TwistdServer, start_twistd
from tests.integration.support import get_reactor, run, sleep, within
from tests.integration.test_http_interop import STREAM, _publish
from tests.integration.test_interop import _error_lines, _frames_decoded, _play_argv

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

#: The playlists, by name.
VARIANTS = ("index.m3u8", "ts.m3u8")

#: Seconds ffmpeg decodes.
PLAY_SECONDS = 10


async def _get(url: str) -> tuple[int, bytes]:
    """The status and body of ``GET url``."""
    agent = Agent(get_reactor(), connectTimeout=5)
    response = await within(agent.request(b"GET", url.encode()), 20, f"GET {url}")
    collector = BodyCollector()
    response.deliverBody(collector)
    body = await within(collector.done, 20, f"the body of {url}")
    return int(response.code), body


async def _playlist(twistd: TwistdServer, variant: str) -> m3u8.M3U8:
    """The playlist *variant* as served now, parsed (the first waits for its first segment)."""
    code, body = await _get(twistd.http_url(f"{STREAM}/{variant}"))
    assert code == 200, body
    return m3u8.loads(body.decode())


def _last_msn(playlist: m3u8.M3U8) -> int:
    """The media sequence number of the last complete segment *playlist* lists."""
    return max(playlist.media_sequence + i for i, s in enumerate(playlist.segments) if s.uri)


def _check_rules(playlist: m3u8.M3U8, variant: str) -> None:
    """RFC 8216 (and 8216bis for LL-HLS) rules on one playlist as served."""
    assert playlist.is_endlist is False
    target = playlist.target_duration
    complete = [s for s in playlist.segments if s.uri is not None]
    assert complete, "a playlist with no complete segment"
    for segment in complete:
        # 4.3.3.1: each EXTINF, rounded to the nearest integer, at most the target duration
        assert math.floor(segment.duration + 0.5) <= target, (segment.duration, target)
    if variant == "index.m3u8":
        assert playlist.version == 10
        assert playlist.server_control.can_block_reload == "YES"
        part_target = playlist.part_inf.part_target
        parts = [part for segment in playlist.segments for part in segment.parts]
        assert parts, "an LL-HLS playlist with no part"
        for part in parts:
            assert part.duration <= part_target + 1e-6, (part.duration, part_target)
        # 4.4.3.8: PART-HOLD-BACK at least twice the part target
        assert playlist.server_control.part_hold_back >= 2 * part_target
        assert playlist.preload_hint is not None and playlist.preload_hint.hint_type == "PART"
        assert playlist.segment_map and playlist.segment_map[0].uri.startswith("init-")
    else:
        assert playlist.version == 3
        assert all(s.uri.split("?")[0].endswith(".ts") for s in complete)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest_twisted.ensureDeferred
async def test_ffmpeg_decodes_hls_without_errors(
    variant: str, processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """``ffmpeg -i http://…/live/x/VARIANT -t 10 -f null -`` decodes 10 s cleanly while ffmpeg
    publishes over RTMP (the segmenter starting on that first request)."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    publisher = await _publish(processes, twistd, ffmpeg, sample_flv)

    url = twistd.http_url(f"{STREAM}/{variant}")
    player = processes.spawn(_play_argv(ffmpeg, url, PLAY_SECONDS))
    result = await player.wait(80)

    frames = _frames_decoded(result.stdout)
    _log.info("ffmpeg decoded %d frames of %s from twistd", frames, variant)
    assert result.exit_code == 0, result.describe()
    assert _error_lines(result.stderr) == [], result.describe()
    # 10 s at 30 fps is 300 frames
    assert frames >= 270, result.describe()
    assert publisher.running, "the publisher stopped while the player was playing"
    assert twistd.process.running, twistd.process.result


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_ffprobe_finds_h264_and_aac_in_both_variants(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """ffprobe on index.m3u8 and on ts.m3u8 finds the publisher's H.264 and AAC."""
    tools = interop.tools("ffmpeg", "ffprobe")
    twistd = await start_twistd(processes, interop, tmp_path)
    await _publish(processes, twistd, tools["ffmpeg"], sample_flv)
    for variant in VARIANTS:
        url = twistd.http_url(f"{STREAM}/{variant}")
        argv = [tools["ffprobe"], "-v", "error", "-show_entries", "stream=codec_name"]
        result = await run([*argv, "-of", "csv", url], 60)
        assert result.exit_code == 0, result.describe()
        codecs = {
            line.split(",")[-1].strip()
            for line in result.stdout.decode().splitlines()
            if line.startswith("stream,")
        }
        _log.info("ffprobe on %s: %s", url, codecs)
        assert {"h264", "aac"} <= codecs, result.describe()


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_playlists_keep_the_rules_and_their_numbers_across_a_republish(
    processes: ProcessPool, interop: Interop, sample_flv: Path, tmp_path: Path
) -> None:
    """Both playlists, read every 0.5 s while ffmpeg publishes, then stops, then publishes
    again: every one keeps RFC 8216's rules, the media sequence and the last segment's
    number never go back, and the first segment after the republish carries
    EXT-X-DISCONTINUITY."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    publisher = await _publish(processes, twistd, ffmpeg, sample_flv)
    sequences: dict[str, list[tuple[int, int]]] = {variant: [] for variant in VARIANTS}
    last_before: dict[str, int] = {}

    async def read_for(seconds: float) -> None:
        deadline = get_reactor().seconds() + seconds
        while get_reactor().seconds() < deadline:
            for variant in VARIANTS:
                playlist = await _playlist(twistd, variant)
                _check_rules(playlist, variant)
                sequences[variant].append((playlist.media_sequence, _last_msn(playlist)))
            await sleep(0.5)

    await read_for(6)
    await publisher.stop("KILL", grace=2.0)
    await sleep(1.0)  # the segment in progress is completed with what it had
    for variant in VARIANTS:
        playlist = await _playlist(twistd, variant)
        last_before[variant] = _last_msn(playlist)
    await _publish(processes, twistd, ffmpeg, sample_flv)
    await read_for(8)

    for variant in VARIANTS:
        numbers = sequences[variant]
        firsts, lasts = [first for first, _ in numbers], [last for _, last in numbers]
        assert firsts == sorted(firsts) and lasts == sorted(lasts), (variant, numbers)
        assert lasts[-1] > last_before[variant] > lasts[0], (variant, numbers, last_before)
        playlist = await _playlist(twistd, variant)
        first = playlist.media_sequence
        after = [
            (first + i, s)
            for i, s in enumerate(playlist.segments)
            if s.uri and first + i > last_before[variant]
        ]
        assert after, (variant, last_before, playlist.dumps())
        tagged = [msn for msn, s in after if s.discontinuity]
        assert tagged, f"{variant}: no EXT-X-DISCONTINUITY after the republish\n{playlist.dumps()}"
        assert tagged[0] == min(msn for msn, _ in after), playlist.dumps()
    assert twistd.process.running, twistd.process.result
