"""Real clients on ``twistd -n streamserver --record``: ffmpeg publishes, ffprobe reads the files.

ffmpeg publishes 12 s of ``lavfi`` testsrc + sine (H.264 with a keyframe every
2 s, AAC, ``-re``) over RTMP to a twistd child recording to a temporary
directory.  After the unpublish (reconnect grace 0) the finished file is read
by ``ffprobe`` (h264 + aac, the duration within 0.5 s of 12 s) and decoded by
``ffmpeg -v error -f null`` without a line of error, in both formats.  A server
killed with SIGKILL mid-recording leaves a ``.part`` fMP4 that ffprobe reads up
to within ``--record-flush-seconds`` + one GOP of what was published, and the
next server finalizes it at its start (renamed, logged as recovered); a server
stopped with SIGTERM finishes the file before it exits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted

from streamserver.recording.paths import PART_SUFFIX
from tests.integration.hardening_support import start_twistd
from tests.integration.support import get_reactor, run, sleep

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

#: Seconds published.
SECONDS = 12
#: Frames per second and the GOP (a keyframe every 2 s).
FPS, GOP = 25, 50
FLUSH_SECONDS = 1.0


def _publish_argv(ffmpeg: str, url: str, seconds: float) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc=size=640x360:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-g", str(GOP), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", url,
    ]  # fmt: skip


async def _probe(ffprobe: str, path: Path) -> dict:
    result = await run(
        [
            ffprobe, "-v", "error", "-show_entries",
            "format=format_name,duration:stream=codec_name,codec_type", "-of", "json", str(path),
        ],
        30,
    )  # fmt: skip
    assert result.exit_code == 0, result.describe()
    probed = json.loads(result.stdout)
    _log.info("ffprobe %s: %s", path.name, json.dumps(probed))
    return dict(probed)


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern))


async def _wait_for(root: Path, pattern: str, seconds: float) -> list[Path]:
    reactor = get_reactor()
    deadline = reactor.seconds() + seconds
    while not (found := _files(root, pattern)):
        assert reactor.seconds() < deadline, f"no {pattern} under {root} after {seconds} s"
        await sleep(0.1)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("fmt", "extension"), [("fmp4", "mp4"), ("flv", "flv")])
@pytest_twisted.ensureDeferred
async def test_a_12_s_publish_becomes_a_file_ffprobe_and_ffmpeg_read_whole(
    processes: ProcessPool, interop: Interop, tmp_path: Path, fmt: str, extension: str
) -> None:
    tools = interop.tools("ffmpeg", "ffprobe")
    root = tmp_path / "rec"
    twistd = await start_twistd(
        processes, interop, tmp_path,
        "--record", str(root), "--record-format", fmt, "--record-reconnect-grace", "0",
    )  # fmt: skip
    publisher = await processes.spawn(
        _publish_argv(tools["ffmpeg"], twistd.url("live/cam"), SECONDS)
    ).wait(SECONDS + 15)
    assert publisher.exit_code == 0, publisher.describe()
    [path] = await _wait_for(root, f"*.{extension}", 10)
    assert path.parent == root / "live" / "cam"
    assert _files(root, f"*{PART_SUFFIX}") == []

    probed = await _probe(tools["ffprobe"], path)
    codecs = sorted(s["codec_name"] for s in probed["streams"])
    assert codecs == ["aac", "h264"], probed
    duration = float(probed["format"]["duration"])
    assert abs(duration - SECONDS) <= 0.5, probed

    decoded = await run([tools["ffmpeg"], "-v", "error", "-i", str(path), "-f", "null", "-"], 30)
    assert decoded.exit_code == 0, decoded.describe()
    assert decoded.stderr.strip() == b"", decoded.describe()
    assert twistd.process.running


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_server_killed_mid_recording_leaves_a_readable_file_recovered_at_the_next_start(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    tools = interop.tools("ffmpeg", "ffprobe")
    root = tmp_path / "rec"
    options = ("--record", str(root), "--record-flush-seconds", str(FLUSH_SECONDS))
    twistd = await start_twistd(processes, interop, tmp_path, *options)
    publisher = processes.spawn(_publish_argv(tools["ffmpeg"], twistd.url("live/cam"), 30))
    reactor = get_reactor()
    # The file is opened at the first keyframe: the publish starts then.
    [part] = await _wait_for(root, f"*.mp4{PART_SUFFIX}", 15)
    started = reactor.seconds()
    await sleep(6)
    twistd.process.send_signal("KILL")
    published = reactor.seconds() - started
    await twistd.process.wait(10)
    await publisher.stop("KILL", grace=1.0)

    probed = await _probe(tools["ffprobe"], part)
    duration = float(probed["format"]["duration"])
    gop_seconds = GOP / FPS
    _log.info("killed after %.2f s published: the .part file holds %.3f s", published, duration)
    assert sorted(s["codec_name"] for s in probed["streams"]) == ["aac", "h264"], probed
    assert published - FLUSH_SECONDS - gop_seconds <= duration <= published + 0.5, (
        published,
        probed,
    )

    restarted = await start_twistd(processes, interop, tmp_path, *options)
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    deadline = reactor.seconds() + 10
    while not final.exists():
        assert reactor.seconds() < deadline, "the .part file was not recovered"
        await sleep(0.1)
    assert not part.exists()
    await sleep(0.3)
    result = await restarted.process.stop("TERM")
    log = result.stdout + result.stderr
    assert b"recovered" in log and final.name.encode() in log, result.describe()
    probed = await _probe(tools["ffprobe"], final)
    assert abs(float(probed["format"]["duration"]) - duration) <= 0.1, probed
    decoded = await run([tools["ffmpeg"], "-v", "error", "-i", str(final), "-f", "null", "-"], 30)
    assert decoded.exit_code == 0 and decoded.stderr.strip() == b"", decoded.describe()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_server_stopped_mid_recording_finishes_the_file(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """SIGTERM while ffmpeg publishes: the file is finished (renamed, duration) before exit."""
    tools = interop.tools("ffmpeg", "ffprobe")
    root = tmp_path / "rec"
    twistd = await start_twistd(processes, interop, tmp_path, "--record", str(root))
    publisher = processes.spawn(_publish_argv(tools["ffmpeg"], twistd.url("live/cam"), 30))
    reactor = get_reactor()
    [part] = await _wait_for(root, f"*.mp4{PART_SUFFIX}", 15)
    started = reactor.seconds()
    await sleep(4)
    result = await twistd.process.stop("TERM", grace=10)
    published = reactor.seconds() - started
    await publisher.stop("KILL", grace=1.0)
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    assert final.exists() and not part.exists(), result.describe()
    assert b"(shutdown)" in result.stdout + result.stderr, result.describe()
    probed = await _probe(tools["ffprobe"], final)
    assert published - 1.0 <= float(probed["format"]["duration"]) <= published + 0.5, probed
