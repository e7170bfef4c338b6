"""Fixtures of the console tests: the log events a test emits, and the fake-peer scenario."""

from __future__ import annotations

import pytest
from twisted.internet import task

from streamserver.factory import RTMPServerFactory
from tests.console_support import Scenario, make_scenario


@pytest.fixture
def scenario(factory: RTMPServerFactory, clock: task.Clock) -> Scenario:
    return make_scenario(factory, clock)
