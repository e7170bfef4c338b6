"""Fixtures of the console tests: the log events a test emits, and the fake-peer scenario."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import globalLogPublisher

from streamserver.factory import RTMPServerFactory
from tests.console_support import Scenario, make_scenario


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def scenario(factory: RTMPServerFactory, clock: task.Clock) -> Scenario:
    return make_scenario(factory, clock)
