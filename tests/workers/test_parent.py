"""A child stops once the supervisor is gone."""

from __future__ import annotations

from twisted.internet.task import Clock

from streamserver.workers.parent import CHECK_INTERVAL, ParentWatch


def test_an_orphan_stops() -> None:
    """While the parent is the supervisor nothing happens; once it is not (the child
    was reparented), the process is stopped once and the checks end."""
    clock = Clock()
    parents = [100]
    stops: list[None] = []
    watch = ParentWatch(clock, 100, getppid=lambda: parents[0], stop=lambda: stops.append(None))
    watch.startService()
    clock.advance(CHECK_INTERVAL * 5)
    assert stops == []
    parents[0] = 1
    clock.advance(CHECK_INTERVAL)
    assert stops == [None]
    clock.advance(CHECK_INTERVAL * 5)
    assert stops == [None]
    watch.stopService()


def test_stopping_the_service_ends_the_checks() -> None:
    """A stopped watch no longer checks."""
    clock = Clock()
    watch = ParentWatch(clock, 100, getppid=lambda: 1, stop=lambda: None)
    watch.startService()
    watch.stopService()
    assert clock.getDelayedCalls() == []
