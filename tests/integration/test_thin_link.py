"""A slow viewer behind a real thin link, while fast viewers load the server.

Two network namespaces joined by a veth pair, a ``tbf`` qdisc (300 kbit/s, 16 kb
burst, 200 ms latency) on the server's end (``tests/integration/netns.py``).  In
the server namespace: ``twistd -n streamserver`` as its own process, a publisher
sending a stamped ~0.95 Mbit/s H.264 + AAC shaped stream in real time, and 100
fast viewers on loopback.  In the client namespace: one viewer reading over the
link as fast as its socket allows (``tests/integration/thin_link_peers.py``).

Receiver-side pacing (``bench/soak.py``'s token bucket) cannot show what this
shows: on a real link the bytes in flight and in the qdisc are invisible to
``TCP_NOTSENT_LOWAT``, so the user-space queue the policy watches understates
how late the viewer is.

Asserted: the server's RSS stays flat after a warm-up; the fast viewers lose no
frame; the slow viewer's video starts and resumes only at keyframes, it receives
frames throughout and stays connected to the end; and after its first 10 s no
frame arrives older than ``--max-lag-ms`` (3 s, the server's default).  The lag
assertion comes last, so a failing one does not hide the others.

Needs root and iproute2 (as CI has); elsewhere the test skips, and under
``STREAMSERVER_REQUIRE_INTEROP=1`` it fails instead.  The numbers are printed
(``pytest -s``) and logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet.task import LoopingCall

from tests.integration import netns
from tests.integration.hardening_support import find_twistd
from tests.integration.support import CollectingProcess, get_reactor, wait_until
from tests.integration.thin_link_peers import SETTLE_SECONDS

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

_log = logging.getLogger(__name__)

#: The checkout: the peers run as ``python -m tests.integration.thin_link_peers`` from here.
ROOT = Path(__file__).resolve().parents[2]

#: Seconds of stream.  The slow viewer's first 10 s are its start-up (GOP burst, the
#: first drops); 60 s leaves ~45 s and ~23 keyframes after that in which the lag is
#: judged, matches the issue's measurements, and keeps the test near 70 s.
STREAM_SECONDS = 60
STREAM_KBPS = 950
FAST_VIEWERS = 100
#: The server's --max-lag-ms default: the budget the slow viewer is held to.
MAX_LAG_MS = 3000
#: RSS is compared with its value this long after publishing starts: by then the
#: 100 fast viewers and the slow one have joined, the GOP cache is full and the slow
#: viewer's queue has met the drop watermarks.
RSS_WARMUP_SECONDS = 15
#: What RSS may gain after the warm-up.  Measured +4 to +28 KiB on a 2-core machine
#: (and -0.11 MB over 300 s in the soak).  The failure it guards against, a slow
#: viewer's backlog kept instead of dropped, grows by the stream rate minus the link
#: rate (~80 KB/s of payload): with --no-drop, +8.4 MiB over the same 45 s.
RSS_GROWTH_LIMIT_KIB = 2 * 1024
#: Longest the slow viewer may go without any frame: a frozen picture and silence.
#: Well under the 10 s stall timeout, well over a keyframe's ~0.7 s on the link.
LONGEST_SILENCE_S = 5.0
#: How long a peer may take to start (100 viewers connect in about a second).
READY_TIMEOUT = 20.0
#: The server listens on this port inside its own namespace, where nothing else runs.
PORT = 1935
STREAM_PATH = "live/thin"


@pytest.fixture
def thin_link(interop: Interop) -> Iterator[netns.ThinLink]:
    """The link; listed before ``processes``, it is torn down after the children are killed."""
    link = netns.new_link()
    try:
        netns.bring_up(link)
    except netns.LinkUnavailable as unavailable:
        interop.unavailable(f"no thin link: {unavailable}")
    try:
        yield link
    finally:
        errors = netns.tear_down(link)
        left = link.exists()
        assert not errors and not left, f"thin link teardown: {errors}, left: {left}"


def _events(process: CollectingProcess, name: str) -> list[dict[str, Any]]:
    """The JSON lines with ``"event": name`` a peer printed so far."""
    found = []
    for line in bytes(process.stdout).splitlines():
        if line.startswith(b"{"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


async def _ready(process: CollectingProcess, what: str, **others: CollectingProcess) -> None:
    """Wait for *process*'s ``ready`` line while it and *others* (by name) keep running."""
    watched = {what: process, **others}
    await wait_until(
        lambda: bool(_events(process, "ready")) or not all(p.running for p in watched.values()),
        READY_TIMEOUT,
        f"{what} to be ready",
        interval=0.05,
    )
    for name, peer in watched.items():
        assert peer.running, f"{name} exited early:\n{peer.result and peer.result.describe()}"


async def _summary(process: CollectingProcess, what: str, seconds: float) -> dict[str, Any]:
    """Wait for *process* to exit by itself and return its summary line."""
    result = await process.wait(seconds)
    summaries = _events(process, "summary")
    assert summaries, f"{what} printed no summary:\n{result.describe()}"
    return summaries[-1]


class RSSSampler:
    """The server's ``VmRSS`` every half second, with the time since publishing started."""

    def __init__(self, pid: int, start: float) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._start = start
        self.samples: list[tuple[float, int]] = []
        self._loop = LoopingCall(self._sample)
        self._loop.clock = get_reactor()

    def start(self) -> None:
        self._loop.start(0.5)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _sample(self) -> None:
        try:
            text = self._status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                now = get_reactor().seconds() - self._start
                self.samples.append((now, int(line.split()[1])))

    def growth(self, warmup: float) -> dict[str, Any]:
        """RSS at start, after *warmup* s, at the end and its peak after, in KiB."""
        after = [kib for t, kib in self.samples if t >= warmup]
        if not after:
            return {"samples": len(self.samples)}
        return {
            "start_kib": self.samples[0][1],
            "warm_kib": after[0],
            "end_kib": after[-1],
            "max_after_warmup_kib": max(after),
            "growth_kib": max(after) - after[0],
            "end_growth_kib": after[-1] - after[0],
            "samples": len(self.samples),
        }


def _report(
    link: netns.ThinLink,
    publisher: dict[str, Any],
    fast: dict[str, Any],
    slow_all: dict[str, Any],
    rss: dict[str, Any],
    qdisc: str,
    congestion: str,
) -> str:
    slow = slow_all["each"][0]
    per_second = " ".join(
        f"{t}:{'-' if age is None else age}" for t, _, _, _, age in slow["per_second"]
    )
    return "\n".join(
        [
            f"thin link: {link.describe()}; TCP congestion control {congestion}",
            f"qdisc at the end: {qdisc}",
            f"publisher: {publisher['nominal_kbps']} kbit/s nominal, "
            f"{publisher['video_sent']} video ({publisher['keyframes_sent']} key) and "
            f"{publisher['audio_sent']} audio frames in {publisher['seconds']} s, "
            f"writes late p99 {publisher['late_ms']['p99']} ms",
            f"server RSS (KiB): start {rss.get('start_kib')}, after {RSS_WARMUP_SECONDS} s "
            f"{rss.get('warm_kib')}, end {rss.get('end_kib')}, peak after warm-up "
            f"{rss.get('max_after_warmup_kib')} (growth {rss.get('growth_kib')} KiB, "
            f"limit {RSS_GROWTH_LIMIT_KIB})",
            f"fast viewers: {fast['playing']}/{fast['viewers']} playing, ended {fast['ended_by']}, "
            f"lost {fast['lost_frames']} frames, bad starts {fast['bad_starts']}, out of order "
            f"{fast['out_of_order']}, last video/audio seq (min) {fast['last_video_seq_min']}/"
            f"{fast['last_audio_seq_min']}, age p99 {fast['age_ms']['p99']} ms max "
            f"{fast['age_ms']['max']} ms, their process used {fast['cpu_s']} CPU s",
            f"slow viewer: ended by {slow['ended_by']} after {slow['played_s']} s, "
            f"{slow['video']} video ({slow['keyframes']} key, {slow['keyframes_after_10s']} after "
            f"10 s) and {slow['audio']} audio frames, {slow['video_gaps']} video gaps, bad starts "
            f"{slow['bad_starts']}, out of order {slow['out_of_order']}, longest silence "
            f"{slow['longest_silence_s']} s",
            f"slow viewer frame age (ms): max {slow['max_age_ms']}, first 10 s "
            f"{slow['max_age_first_10s_ms']}, after 10 s {slow['max_age_after_10s_ms']} "
            f"({slow['frames_over_budget_after_10s']} frames > {MAX_LAG_MS} ms), last 10 s "
            f"{slow['max_age_last_10s_ms']}, p50 {slow['age_ms']['p50']}, "
            f"p99 {slow['age_ms']['p99']}",
            f"slow viewer max age per second (s:ms): {per_second}",
        ]
    )


@pytest.mark.timeout(200)
@pytest_twisted.ensureDeferred
async def test_slow_viewer_on_a_thin_link_stays_within_max_lag_and_costs_nobody(
    thin_link: netns.ThinLink, processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """Behind a 300 kbit/s link, no frame older than 3 s arrives after 10 s; nobody else pays."""
    reactor = get_reactor()
    twistd = await find_twistd(interop, tmp_path)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    twistd_argv = [
        str(twistd), "-n", "--pidfile=", f"--logfile={server_dir / 'twistd.log'}",
        "streamserver", "--rtmp", f"tcp:{PORT}:interface=0.0.0.0", "--no-http",
    ]  # fmt: skip
    server = processes.spawn(thin_link.in_server(twistd_argv), cwd=server_dir)
    peers = [sys.executable, "-m", "tests.integration.thin_link_peers"]
    local_url = f"rtmp://127.0.0.1:{PORT}/{STREAM_PATH}"
    remote_url = f"rtmp://{thin_link.server_address}:{PORT}/{STREAM_PATH}"
    rss: RSSSampler | None = None
    try:
        # the publisher retries its connection until twistd listens
        publish_argv = [
            *peers, "publish", "--url", local_url,
            "--seconds", str(STREAM_SECONDS), "--kbps", str(STREAM_KBPS),
        ]  # fmt: skip
        publisher = processes.spawn(thin_link.in_server(publish_argv), cwd=ROOT)
        await _ready(publisher, "the publisher", server=server)
        assert server.transport is not None
        # `ip netns exec` execs twistd in place: its pid is the server's
        rss = RSSSampler(server.transport.pid, reactor.seconds())
        rss.start()
        fast = processes.spawn(
            thin_link.in_server(
                [*peers, "play", "--url", local_url, "--viewers", str(FAST_VIEWERS)]
            ),
            cwd=ROOT,
        )
        await _ready(fast, "the fast viewers", server=server, publisher=publisher)
        slow = processes.spawn(
            thin_link.in_client(
                [*peers, "play", "--url", remote_url, "--record", "--budget-ms", str(MAX_LAG_MS)]
            ),
            cwd=ROOT,
        )
        await _ready(slow, "the slow viewer", server=server, publisher=publisher)

        published = await _summary(publisher, "the publisher", STREAM_SECONDS + 20)
        # viewers end at UnpublishNotify, the slow one once its queue has drained
        fast_summary = await _summary(fast, "the fast viewers", 15)
        slow_summary = await _summary(slow, "the slow viewer", 20)
        rss.stop()
        assert server.running, f"the server died:\n{server.result and server.result.describe()}"
        qdisc = thin_link.qdisc_stats()
        congestion = thin_link.sysctl("net.ipv4.tcp_congestion_control")
    finally:
        if rss is not None:
            rss.stop()
        await processes.kill_all()  # the peers have exited; this ends the server

    memory = rss.growth(RSS_WARMUP_SECONDS)
    report = _report(thin_link, published, fast_summary, slow_summary, memory, qdisc, congestion)
    print(report)
    _log.warning(report)
    server_log = (server_dir / "twistd.log").read_text(errors="replace")
    assert "Traceback" not in server_log, server_log[-3000:]
    assert not published["connection_lost_early"], report

    assert "growth_kib" in memory, report
    assert memory["growth_kib"] <= RSS_GROWTH_LIMIT_KIB, f"server RSS grew\n{report}"

    assert fast_summary["playing"] == FAST_VIEWERS, f"fast viewers failed to play\n{report}"
    assert fast_summary["ended_by"] == {"unpublished": FAST_VIEWERS}, report
    assert fast_summary["lost_frames"] == 0, f"fast viewers lost frames\n{report}"
    assert fast_summary["last_video_seq_min"] == published["video_sent"] - 1, report
    assert fast_summary["last_audio_seq_min"] == published["audio_sent"] - 1, report
    assert fast_summary["bad_starts"] == 0 and fast_summary["out_of_order"] == 0, report

    slow = slow_summary["each"][0]
    assert slow["ended_by"] == "unpublished", f"the slow viewer was disconnected\n{report}"
    assert slow["bad_starts"] == 0, f"slow viewer's video resumed at an inter frame\n{report}"
    assert slow["out_of_order"] == 0, report
    assert slow["keyframes_after_10s"] > 0, f"the slow viewer got no video\n{report}"
    assert slow["longest_silence_s"] <= LONGEST_SILENCE_S, f"the slow viewer starved\n{report}"

    assert slow["max_age_after_10s_ms"] <= MAX_LAG_MS, (
        f"the slow viewer received frames up to {slow['max_age_after_10s_ms']} ms old after "
        f"its first {SETTLE_SECONDS} s ({slow['frames_over_budget_after_10s']} frames over "
        f"--max-lag-ms {MAX_LAG_MS}; {slow['max_age_last_10s_ms']} ms in its last 10 s)\n{report}"
    )
