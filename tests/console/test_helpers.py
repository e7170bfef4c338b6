"""The console's helpers, tested directly on a factory with fake peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from streamserver.console.errors import ConsoleError
from streamserver.console.helpers import Console, RateSampler
from streamserver.console.keys import ConsoleLogin
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.policy import ADMIT, Decision, PolicyLimits
from streamserver.protocol.base import ProtocolRoot, hook_path
from streamserver.protocol.server import RTMPServerProtocol
from tests.console_support import Scenario, make_scenario, play_viewer

LOGIN = ConsoleLogin("admin", "SHA256:test-fingerprint", "ssh-ed25519", "tester@example")


def _console_events(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("console_action") == action]


def test_buffers_names_the_viewer_that_stopped_reading_first(scenario: Scenario) -> None:
    """buffers() lists the stopped viewer first, with the total over every connection."""
    scenario.publish(gops=3)
    console = Console(scenario.factory, LOGIN)
    rows = console.buffers()
    stopped = scenario.stopped.protocol
    assert rows[0]["id"] == stopped.conn_id
    assert rows[0]["queued"] == scenario.stopped.transport.queued > 50_000
    assert rows[0]["role"] == "play live/cam"
    assert all(row["id"] != peer.protocol.conn_id for peer in scenario.normal for row in rows)
    text = repr(rows)
    header, first = text.splitlines()[:2]
    assert header.split() == ["id", "address", "role", "queued", "peak", "lag", "ms", "state"]
    assert first.split()[:2] == [str(stopped.conn_id), stopped.peer]
    assert f"total queued: {scenario.factory.bytes_queued_total():,} bytes" in text


def test_buffers_orders_largest_first_and_keeps_the_top(factory: RTMPServerFactory) -> None:
    """With several viewers holding bytes, buffers(top=n) gives the n largest, largest first."""
    scenario = make_scenario(factory, task.Clock())
    small = play_viewer(factory, auto_drain=False)  # stops reading later, so holds less
    scenario.publish(gops=2)
    small.transport.drain()
    scenario.publish(gops=1)
    rows = Console(factory, LOGIN).buffers(top=1)
    assert [row["id"] for row in rows] == [scenario.stopped.protocol.conn_id]
    assert "top 1 shown" in repr(rows)
    both = Console(factory, LOGIN).buffers()
    assert [row["id"] for row in both] == [
        scenario.stopped.protocol.conn_id,
        small.protocol.conn_id,
    ]


def test_viewers_shows_queue_drops_lag_and_state(clock: task.Clock) -> None:
    """viewers() gives queued/peak bytes, frames sent, drops by reason, lag and state per viewer."""
    limits = PolicyLimits(drop_low=8_000, drop_high=16_000, max_queue=1 << 24)
    factory = RTMPServerFactory(ServerConfig(limits=limits), reactor=clock)
    scenario = make_scenario(factory, clock)
    scenario.publish(gops=4, size=1500)
    rows = {row["id"]: row for row in Console(factory, LOGIN).viewers()}
    stopped = rows[scenario.stopped.protocol.conn_id]
    assert (stopped["stream"], stopped["protocol"]) == ("live/cam", "rtmp")
    assert stopped["queued"] == scenario.stopped.transport.queued
    assert stopped["peak"] >= stopped["queued"] > limits.drop_high
    assert stopped["drop_inter"] > 0 and stopped["drop_keyframe"] > 0 and stopped["drop_audio"] > 0
    assert stopped["lag_ms"] > 0
    assert stopped["state"] == "congested"
    for peer in scenario.normal:
        row = rows[peer.protocol.conn_id]
        assert row["queued"] == 0
        assert sum(row["dropped"].values()) == 0
        assert row["frames_sent"] == peer.protocol.viewer.frames_sent > 0
        assert row["state"] == "ok"
    assert len(rows) == 4  # the publisher is not a viewer
    assert Console(factory, LOGIN).viewers("live/other") == []
    assert len(Console(factory, LOGIN).viewers("cam")) == 4


def test_streams_shows_publisher_viewers_bitrates_and_uptime(scenario: Scenario) -> None:
    """streams() gives the publisher's address, the viewer count, kbit/s in/out and uptime."""
    console = Console(scenario.factory, LOGIN, sampler=RateSampler(scenario.factory))
    first = console.streams()[0]
    assert first["kbit_in"] is None  # no sample yet
    console.sampler.sample()
    stream = scenario.factory.find_stream("live", "cam")
    assert stream is not None
    before_in = stream.bytes_in
    before_out = sum(p.protocol.link.media_written for p in scenario.normal)
    scenario.clock.advance(2)
    scenario.publish(gops=1)
    row = console.streams()[0]
    assert (row["app"], row["name"], row["viewers"]) == ("live", "cam", 4)
    assert row["publisher"] == scenario.publisher.protocol.peer
    assert row["uptime"] == 2.0
    assert row["kbit_in"] == pytest.approx((stream.bytes_in - before_in) * 8 / 2 / 1000)
    sent_out = sum(p.protocol.link.media_written for p in scenario.normal) - before_out
    assert row["kbit_out"] >= sent_out * 8 / 2 / 1000 > 0
    assert "0:00:02" in repr(console.streams())


def test_memory_reports_queued_bytes_gop_caches_and_gc_counts(scenario: Scenario) -> None:
    """memory() totals transport queues and GOP caches and counts gc objects by type."""
    scenario.publish(gops=1)
    report = Console(scenario.factory, LOGIN).memory()
    stream = scenario.factory.find_stream("live", "cam")
    assert stream is not None
    assert report["queued"] == scenario.factory.bytes_queued_total() > 0
    assert report["queued_connections"] == 1
    assert report["gop_bytes"] == stream.gop_bytes > 0
    assert report["gop_frames"] == len(stream.gop)
    assert len(report["gc_top"]) == 10
    assert report["gc_objects"] >= sum(count for _, count in report["gc_top"])
    if Path("/proc/self/status").exists():
        assert report["rss"] > 1_000_000
    text = repr(report)
    for label in ("RSS", "queued in transports", "GOP caches", "chat histories", "gc-tracked"):
        assert label in text


class _LeakyMixin(ProtocolRoot, unchecked_chain=True):
    """The story's bug: an admit_frame override that forgot super()."""

    def admit_frame(self, viewer: Any, frame: Any, size: int) -> Decision:
        return ADMIT


class _BrokenProtocol(_LeakyMixin, RTMPServerProtocol, unchecked_chain=True):
    """A composition the import-time check would have refused."""


def test_chain_shows_each_hook_path_and_marks_a_lost_super(factory: RTMPServerFactory) -> None:
    """chain() lists the MRO and every hook's path; a lost super() is marked BROKEN."""
    console = Console(factory, LOGIN)
    report = console.chain()
    assert report["class"] == "RTMPServerProtocol"
    assert report["mro"][-3:] == ["Protocol", "BaseProtocol", "object"]
    assert report["hooks"]["admit_frame"] == hook_path(RTMPServerProtocol, "admit_frame")
    assert report["broken"] == {}
    admit_line = next(line for line in repr(report).splitlines() if "admit_frame" in line)
    assert " -> ".join(hook_path(RTMPServerProtocol, "admit_frame")) in admit_line

    broken = console.chain(_BrokenProtocol)
    assert broken["broken"]["admit_frame"][0] == "_LeakyMixin"
    admit_line = next(line for line in repr(broken).splitlines() if "admit_frame" in line)
    assert "_LeakyMixin [BROKEN: never calls super().admit_frame()]" in admit_line
    assert "never reached: BackpressureMixin" in admit_line


def test_kick_disconnects_and_logs_the_key(scenario: Scenario, log_events: list[Any]) -> None:
    """kick(id) drops that connection at once and logs who did it with the key fingerprint."""
    scenario.publish(gops=1)
    stopped = scenario.stopped
    message = Console(scenario.factory, LOGIN).kick(stopped.protocol.conn_id)
    assert stopped.transport.aborted
    assert stopped.protocol.conn_id not in scenario.factory.connections
    assert (
        repr(message) == f"kicked connection {stopped.protocol.conn_id} ({stopped.protocol.peer})"
    )
    (event,) = _console_events(log_events, "kick")
    assert event["fingerprint"] == LOGIN.fingerprint
    assert event["user"] == "admin"
    assert event["console_conn_id"] == stopped.protocol.conn_id
    with pytest.raises(ConsoleError, match="no connection 999"):
        Console(scenario.factory, LOGIN).kick(999)


def test_set_policy_applies_to_existing_viewers_at_once(
    scenario: Scenario, log_events: list[Any]
) -> None:
    """set_policy() changes the limits every connected viewer is judged by, and is logged."""
    scenario.publish(gops=1)
    stopped = scenario.stopped.protocol
    queued = stopped.link.queued()
    assert queued < scenario.factory.policy.limits.drop_low
    assert stopped.viewer.dropped["inter"] == 0
    console = Console(scenario.factory, LOGIN)
    report = console.set_policy(drop_low=queued // 2, drop_high=queued * 4)
    assert report["drop_low"] == queued // 2
    scenario.publish(gops=1)
    assert stopped.viewer.dropped["inter"] > 0
    (event,) = _console_events(log_events, "set_policy")
    assert event["fingerprint"] == LOGIN.fingerprint
    assert event["console_changes"]["drop_low"] == (196608, queued // 2)
    with pytest.raises(ValueError, match="drop_low"):
        console.set_policy(drop_low=10**9)
    assert scenario.factory.policy.limits.drop_low == queued // 2


class _ModeratedFactory:
    """Just enough of a factory with chat moderation to see the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.reactor = task.Clock()

    def mute(self, stream: str, nick: str) -> bool:
        self.calls.append(("mute", stream, nick))
        return True

    def unmute(self, stream: str, nick: str) -> bool:
        self.calls.append(("unmute", stream, nick))
        return False

    def clear_history(self, stream: str) -> int:
        self.calls.append(("clear_history", stream))
        return 7


def test_moderation_calls_the_factory_and_is_logged(log_events: list[Any]) -> None:
    """mute/unmute/clear_history call the factory's methods and log the key."""
    factory = _ModeratedFactory()
    console = Console(factory, LOGIN)
    assert repr(console.mute("live/cam", "troll")) == "troll muted in live/cam"
    assert "not unmuted" in repr(console.unmute("live/cam", "troll"))
    assert "7" in repr(console.clear_history("live/cam"))
    assert factory.calls == [
        ("mute", "live/cam", "troll"),
        ("unmute", "live/cam", "troll"),
        ("clear_history", "live/cam"),
    ]
    for action in ("mute", "unmute", "clear_history"):
        (event,) = _console_events(log_events, action)
        assert event["fingerprint"] == LOGIN.fingerprint
    with pytest.raises(ConsoleError, match="'app/name'"):
        console.mute("cam", "troll")


def test_moderation_without_chat_is_a_clear_error() -> None:
    """On a factory without chat moderation, mute() says so instead of an AttributeError."""
    console = Console(object(), LOGIN, sampler=RateSampler(None))
    with pytest.raises(ConsoleError, match=r"no chat moderation: object\.mute\(\)"):
        console.mute("live/cam", "troll")


def test_namespace_has_the_helpers_and_a_safe_exit(factory: RTMPServerFactory) -> None:
    """The namespace holds every helper with a docstring, the objects, and an exit that closes."""
    closed: list[bool] = []
    console = Console(factory, LOGIN)
    namespace = console.namespace(close=lambda: closed.append(True))
    for name in Console.HELPERS:
        assert namespace[name].__doc__
    assert namespace["factory"] is factory
    assert namespace["registry"] is factory.registries
    assert namespace["reactor"] is factory.reactor
    namespace["exit"]()
    assert closed == [True]
    assert "exit()" in repr(namespace["quit"])
