"""Shared fixtures: a Clock-driven factory and fake peers on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import task

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
