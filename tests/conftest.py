"""Shared fixtures: a Clock-driven factory, fake peers on it, the log events of a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def factory(clock: task.Clock) -> RTMPServerFactory:
    return RTMPServerFactory(ServerConfig(), reactor=clock)


@pytest.fixture
def peer(factory: RTMPServerFactory) -> Callable[..., FakePeer]:
    """Build a FakePeer on the test's factory."""

    def make(**kwargs: Any) -> FakePeer:
        return FakePeer(factory, **kwargs)

    return make


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)
