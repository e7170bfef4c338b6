"""A child of the supervisor listens as its role says."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamserver import tap
from streamserver.workers.origin import OriginLink
from streamserver.workers.reuseport import ReusePortService
from streamserver.workers.roles import ORIGIN, WORKER, Role


def _child_services(role: Role, monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    for name, value in role.environment().items():
        monkeypatch.setenv(name, value)
    options = tap.Options()
    options.parseOptions(["--workers", str(role.workers), *argv])
    top = tap.makeService(options)
    services = {service.name: service for service in top}  # type: ignore[attr-defined]
    services["links"] = [
        observer
        for observer in top.factory.events.observers  # type: ignore[attr-defined]
        if isinstance(observer, OriginLink)
    ]
    return services


def test_origin_listens_only_on_unix_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The origin has its RTMP socket and its private HTTP socket, no TCP, no IRC."""
    role = Role(ORIGIN, -1, tmp_path, 2)
    services = _child_services(
        role, monkeypatch, "--rtmp", "tcp:1935", "--http", "tcp:8080", "--irc", "tcp:6667"
    )
    listeners = sorted(name for name in services if ":" in name)
    assert listeners == [
        "private-http:origin",
        f"rtmp:unix:{tmp_path}/origin.rtmp.sock:mode=600",
    ]
    assert services["links"] == []


def test_worker_shares_its_tcp_listeners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's TCP listeners are SO_REUSEPORT services; it has a private HTTP
    socket and links to the origin."""
    role = Role(WORKER, 1, tmp_path, 2)
    services = _child_services(
        role, monkeypatch, "--rtmp", "tcp:1935:interface=127.0.0.1", "--http", "tcp:8080"
    )
    assert isinstance(services["rtmp:tcp:1935:interface=127.0.0.1"], ReusePortService)
    assert isinstance(services["http:tcp:8080"], ReusePortService)
    assert "private-http:worker-1" in services
    [link] = services["links"]
    assert isinstance(link, OriginLink) and link.role == role
