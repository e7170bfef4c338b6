"""Real clients against the server: ffmpeg, rtmpdump, GStreamer, and twistd as a process.

Each test runs a server on 127.0.0.1 port 0 in this process (or the twistd
plugin as a child process), publishes the session's sample with ffmpeg and
checks what a real player decoded or recorded.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted

from streamserver.client import connect_client
from tests.integration.hardening_support import start_twistd
from tests.integration.support import (
    CollectingProcess,
    ffprobe_codecs,
    get_reactor,
    is_video_keyframe,
    received_views,
    run,
    wait_until,
    within,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, LoopbackServer, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

#: Bytes a recorder must have written before it is stopped: the FLV header,
#: metadata, both sequence headers and well over a second of the ~28 KB/s sample.
_RECORDING_BYTES = 64 * 1024


def _publish_argv(ffmpeg: str, sample: Path, url: str) -> list[str]:
    """ffmpeg publishing *sample* in real time, looped so it outlives any player."""
    return [
        ffmpeg, "-nostdin", "-loglevel", "error",
        "-re", "-stream_loop", "-1", "-i", str(sample),
        "-c", "copy", "-f", "flv", url,
    ]  # fmt: skip


def _play_argv(ffmpeg: str, url: str, seconds: int) -> list[str]:
    """ffmpeg decoding *seconds* of *url*, reporting progress (``frame=N``) on stdout."""
    return [
        ffmpeg, "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
        "-i", url, "-t", str(seconds), "-f", "null", "-",
    ]  # fmt: skip


def _frames_decoded(progress: bytes) -> int:
    """The last ``frame=N`` of ffmpeg's ``-progress`` output (0 if none)."""
    counts = [
        int(line.partition("=")[2])
        for line in progress.decode(errors="replace").splitlines()
        if line.startswith("frame=")
    ]
    return counts[-1] if counts else 0


def _error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]


async def _publish_sample(
    server: LoopbackServer, processes: ProcessPool, ffmpeg: str, sample: Path, name: str
) -> CollectingProcess:
    """Start ffmpeg publishing *sample* as live/*name*; return once viewers can start."""
    publisher = processes.spawn(_publish_argv(ffmpeg, sample, server.url(f"live/{name}")))
    await wait_until(
        lambda: server.stream_ready(name) or not publisher.running,
        15,
        f"ffmpeg to publish live/{name}",
    )
    assert publisher.running, publisher.result.describe()
    return publisher


async def _record_until(recorder: CollectingProcess, path: Path, size: int, timeout: float) -> None:
    """Wait until *recorder* has written *size* bytes to *path*, then stop it with SIGINT."""

    def written() -> int:
        return path.stat().st_size if path.exists() else 0

    await wait_until(
        lambda: written() >= size or not recorder.running,
        timeout,
        f"{path.name} to reach {size} bytes",
        describe=lambda: f"{written()} bytes written",
    )
    # SIGINT: both rtmpdump and gst-launch -e finish the file cleanly on it.
    result = await recorder.stop("INT", grace=5.0)
    assert written() >= size, result.describe()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_ffmpeg_plays_what_ffmpeg_publishes(
    rtmp_server: LoopbackServer,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
) -> None:
    """An ffmpeg player decodes 5 s of an ffmpeg publish through the server without errors."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    publisher = await _publish_sample(rtmp_server, processes, ffmpeg, sample_flv, "x")

    player = processes.spawn(_play_argv(ffmpeg, rtmp_server.url("live/x"), 5))
    result = await player.wait(30)

    frames = _frames_decoded(result.stdout)
    _log.info("ffmpeg decoded %d frames from the server", frames)
    assert result.exit_code == 0, result.describe()
    assert _error_lines(result.stderr) == [], result.describe()
    assert frames > 100, result.describe()
    assert publisher.running, "the publisher stopped while the player was playing"


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_rtmpdump_records_h264_and_aac(
    rtmp_server: LoopbackServer,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """rtmpdump records a live stream from the server into an FLV file holding H.264 and AAC."""
    tools = interop.tools("ffmpeg", "ffprobe", "rtmpdump")
    await _publish_sample(rtmp_server, processes, tools["ffmpeg"], sample_flv, "x")

    out = tmp_path / "out.flv"
    recorder = processes.spawn(
        [tools["rtmpdump"], "--live", "-r", rtmp_server.url("live/x"), "-o", str(out)],
        cwd=tmp_path,
    )
    await _record_until(recorder, out, _RECORDING_BYTES, 20)

    codecs = await ffprobe_codecs(tools["ffprobe"], out)
    _log.info("rtmpdump recorded %d bytes; ffprobe: %s", out.stat().st_size, codecs)
    assert "h264" in codecs
    assert "aac" in codecs


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_gstreamer_rtmp2src_records_h264_and_aac(
    rtmp_server: LoopbackServer,
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """GStreamer's rtmp2src records a live stream from the server as FLV with H.264 and AAC."""
    tools = interop.tools("ffmpeg", "ffprobe", "gst-launch-1.0", "gst-inspect-1.0")
    inspect = await run([tools["gst-inspect-1.0"], "--exists", "rtmp2src"], 30)
    if inspect.exit_code != 0:
        interop.unavailable("the GStreamer element rtmp2src (gstreamer1.0-plugins-bad) is missing")
    await _publish_sample(rtmp_server, processes, tools["ffmpeg"], sample_flv, "x")

    out = tmp_path / "gst.flv"
    pipeline = [
        tools["gst-launch-1.0"], "-q", "-e",
        "rtmp2src", f"location={rtmp_server.url('live/x')}", "!", "filesink", f"location={out}",
    ]  # fmt: skip
    recorder = processes.spawn(pipeline, cwd=tmp_path)
    await _record_until(recorder, out, _RECORDING_BYTES, 20)

    codecs = await ffprobe_codecs(tools["ffprobe"], out)
    _log.info("rtmp2src recorded %d bytes; ffprobe: %s", out.stat().st_size, codecs)
    assert "h264" in codecs
    assert "aac" in codecs


# --- twistd -------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_twistd_plugin_serves_ffmpeg_and_stops_on_sigterm(
    processes: ProcessPool,
    interop: Interop,
    sample_flv: Path,
    tmp_path: Path,
) -> None:
    """``twistd -n streamserver`` relays ffmpeg to ffmpeg and exits cleanly on SIGTERM."""
    ffmpeg = interop.tools("ffmpeg")["ffmpeg"]
    twistd = await start_twistd(processes, interop, tmp_path)
    server = twistd.process
    reactor = get_reactor()

    url = twistd.url("live/x")
    processes.spawn(_publish_argv(ffmpeg, sample_flv, url))
    # Our own client as a probe: once it got a keyframe, the stream is live.
    probe = await within(connect_client(reactor, url), 10, "connect to twistd")
    try:
        stream_id = await within(probe.create_stream(), 10, "createStream")
        await within(probe.play("x", stream_id), 10, "play live/x")
        await wait_until(
            lambda: any(is_video_keyframe(view) for view in received_views(probe)),
            15,
            "a keyframe from the ffmpeg publisher through twistd",
        )
    finally:
        probe.close()
    await within(probe.disconnected, 10, "the probe to disconnect")

    player = processes.spawn(_play_argv(ffmpeg, url, 3))
    played = await player.wait(30)
    frames = _frames_decoded(played.stdout)
    _log.info("ffmpeg decoded %d frames from twistd", frames)
    assert played.exit_code == 0, played.describe()
    assert _error_lines(played.stderr) == [], played.describe()
    assert frames > 50, played.describe()

    stopped = await server.stop("TERM", grace=10.0)
    _log.info("twistd ended: exit code %s, signal %s", stopped.exit_code, stopped.signal)
    # twistd shuts down cleanly on SIGTERM, then re-raises it so its exit status
    # says what stopped it; only SIGKILL (after the 10 s grace) means it hung.
    assert stopped.signal != signal.SIGKILL, f"twistd ignored SIGTERM\n{stopped.describe()}"
    assert stopped.exit_code == 0 or stopped.signal == signal.SIGTERM, stopped.describe()
    assert b"Server Shut Down." in stopped.stdout, stopped.describe()
    assert b"live/x published by" in stopped.stdout, stopped.describe()
    assert b"Traceback" not in stopped.stdout + stopped.stderr, stopped.describe()
