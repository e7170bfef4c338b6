"""Upstream: attempts, failover, backoff and re-resolving, on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from streamserver.client import RTMPClientProtocol
from streamserver.relay.target import RelayTarget
from streamserver.relay.upstream import BACKOFF_CAP, Upstream, backoff_delay
from tests.relay.support import Net, target


def test_backoff_doubles_from_the_first_delay_to_the_cap() -> None:
    """3 s, 6, 12, 24, then the 30 s cap."""
    assert [backoff_delay(3, n) for n in range(1, 8)] == [3, 6, 12, 24, 30, 30, 30]
    assert backoff_delay(60, 3) == 60  # a first delay above the cap is kept
    assert BACKOFF_CAP == 30


class _Role:
    def __init__(self) -> None:
        self.started: list[RelayTarget] = []
        self.lost: list[RelayTarget] = []

    def start_session(
        self, client: RTMPClientProtocol, target: RelayTarget, stream_id: int
    ) -> defer.Deferred[Any]:
        return defer.ensureDeferred(client.publish("cam", stream_id))

    def session_started(self, client: RTMPClientProtocol, target: RelayTarget) -> None:
        self.started.append(target)

    def session_lost(self, target: RelayTarget) -> None:
        self.lost.append(target)


def test_attempts_follow_the_backoff_and_each_is_logged_once(
    log_events: list[dict[str, Any]],
) -> None:
    """A target that refuses is tried at 0, 3, 9, 21, 45, 75 s, one log line per attempt."""
    clock = task.Clock()
    net = Net(clock)
    upstream = Upstream(
        clock,
        "push live/cam",
        lambda: defer.succeed([target("mem:down")]),
        _Role(),
        reconnect_seconds=3,
        connector=net.connect,
    )
    upstream.start()
    times = [clock.seconds()]
    for _ in range(5):
        assert upstream.state == "waiting"
        assert upstream.next_attempt_at is not None
        clock.advance(upstream.next_attempt_at - clock.seconds())
        times.append(clock.seconds())
    assert times == [0, 3, 9, 21, 45, 75]
    assert upstream.attempts == 6
    connecting = [e for e in log_events if e.get("log_format", "").endswith("(attempt {attempt})")]
    assert [e["attempt"] for e in connecting] == [1, 2, 3, 4, 5, 6]
    assert all(e["relay"] == "push live/cam" and e["url"] for e in connecting)
    upstream.stop()
    assert upstream.state == "stopped" and not clock.getDelayedCalls()


def test_failover_in_order_and_targets_asked_again_on_every_attempt() -> None:
    """The first target that works wins; after a loss the resolver is asked again."""
    clock = task.Clock()
    net = Net(clock)
    net.server("mem:b")
    net.server("mem:c")
    answers = [[target("mem:a"), target("mem:b")], [target("mem:c")]]
    asked: list[int] = []

    def resolve() -> defer.Deferred[list[RelayTarget]]:
        asked.append(1)
        return defer.succeed(answers[min(len(asked), len(answers)) - 1])

    role = _Role()
    upstream = Upstream(
        clock, "push live/cam", resolve, role, reconnect_seconds=3, connector=net.connect
    )
    upstream.start()
    net.flush()
    assert net.connects == ["mem:a", "mem:b"]
    assert [t.endpoint for t in role.started] == ["mem:b"]
    assert upstream.state == "connected" and upstream.failures == 0
    assert upstream.client is not None
    net.cut(upstream.client)
    assert [t.endpoint for t in role.lost] == ["mem:b"]
    assert upstream.state == "waiting"
    net.advance(3)
    assert net.connects[-1] == "mem:c"
    assert [t.endpoint for t in role.started] == ["mem:b", "mem:c"]
    assert len(asked) == 2
    upstream.stop()
    net.flush()


def test_stop_during_an_attempt_gives_it_up() -> None:
    """Stopping while waiting cancels the next attempt; none follows."""
    clock = task.Clock()
    net = Net(clock)
    upstream = Upstream(
        clock,
        "pull live/cam",
        lambda: defer.succeed([]),
        _Role(),
        reconnect_seconds=3,
        connector=net.connect,
    )
    upstream.start()
    assert upstream.state == "waiting"
    upstream.stop()
    clock.advance(100)
    assert upstream.attempts == 1 and net.connects == []


def test_retry_now_cuts_a_backoff_wait_short_and_nothing_else() -> None:
    """A waiting upstream attempts at once (one attempt, the old timer gone, the
    backoff count kept); an idle, connected or stopped one is left alone."""
    clock = task.Clock()
    net = Net(clock)
    upstream = Upstream(
        clock,
        "pull live/cam",
        lambda: defer.succeed([target("mem:down")]),
        _Role(),
        reconnect_seconds=3,
        connector=net.connect,
    )
    assert not upstream.retry_now()  # idle: start() makes the first attempt
    upstream.start()
    clock.advance(3)
    assert upstream.state == "waiting" and upstream.failures == 2
    assert upstream.retry_now()
    assert upstream.attempts == 3 and upstream.failures == 3
    assert len(clock.getDelayedCalls()) == 1  # only the next backoff's timer
    assert upstream.next_attempt_at == clock.seconds() + 12
    upstream.stop()
    assert not upstream.retry_now()
