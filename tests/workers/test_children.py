"""A child of the supervisor listens as its role says."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamserver import tap
from streamserver.workers import ORIGIN_LIMITS
from streamserver.workers.origin import OriginRoute
from streamserver.workers.parent import ParentWatch
from streamserver.workers.reuseport import ReusePortService
from streamserver.workers.roles import ORIGIN, WORKER, Role


def _child_services(role: Role, monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, object]:
    for name, value in role.environment().items():
        monkeypatch.setenv(name, value)
    options = tap.Options()
    options.parseOptions(["--workers", str(role.workers), *argv])
    top = tap.makeService(options)
    services = {service.name: service for service in top}  # type: ignore[attr-defined]
    factory = top.factory  # type: ignore[attr-defined]
    services["config"] = factory.config
    services["factory"] = factory
    services["links"] = [
        source for source in factory.pushes.sources if isinstance(source, OriginRoute)
    ] + [router for router in factory.pulls.routers if isinstance(router, OriginRoute)]
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
    assert "parent-watch" not in services  # no supervisor pid in this role
    link, router = services["links"]
    assert router is link
    assert isinstance(link, OriginRoute) and link.role == role


def test_a_child_watches_its_supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child told its supervisor's pid watches it (ParentWatch in its service tree)."""
    services = _child_services(Role(WORKER, 0, tmp_path, 1, supervisor=4242), monkeypatch)
    watch = services["parent-watch"]
    assert isinstance(watch, ParentWatch) and watch.supervisor_pid == 4242


#: Options a user gives every child: the worker keeps some, the origin the others.
_SPLIT = (
    "--push", "rtmp://cdn.example/live", "--pull", "rtmp://origin.example/live",
    "--on-publish", "http://auth.example/publish", "--on-play-done", "http://hooks.example/done",
)  # fmt: skip


def test_relays_and_recording_stay_at_the_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The origin keeps the user's relays and recording, drops access control and
    the session hooks (its peers are the workers) and tolerates lagging workers; a
    worker the other way round, with the user's drop policy."""
    record = str(tmp_path / "rec")
    origin = _child_services(
        Role(ORIGIN, -1, tmp_path, 2), monkeypatch, *_SPLIT, "--record", record
    )
    config = origin["config"]
    assert config.push and config.pull and config.record_dir == record  # type: ignore[attr-defined]
    assert config.access.on_publish is None and config.on_play_done is None  # type: ignore[attr-defined]
    assert config.limits.max_lag_ms == ORIGIN_LIMITS["max-lag-ms"]  # type: ignore[attr-defined]
    worker = _child_services(Role(WORKER, 0, tmp_path, 2), monkeypatch, *_SPLIT, "--record", record)
    config = worker["config"]
    assert not config.push and not config.pull and config.record_dir is None  # type: ignore[attr-defined]
    assert config.access.on_publish and config.on_play_done  # type: ignore[attr-defined]
    assert config.limits.max_lag_ms == 3000  # type: ignore[attr-defined]


def test_per_app_relays_from_the_file_stay_at_the_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[app.live] push/pull of --config's file: the origin relays live, a worker does
    not (its role's settings win over the file, as the command line does), so a
    stream is pushed once, not once per worker too."""
    path = tmp_path / "streamserver.toml"
    path.write_text(
        '[app.live]\npush = "rtmp://127.0.0.1:1/backup"\npull = "rtmp://127.0.0.1:2/live"\n'
    )
    origin = _child_services(Role(ORIGIN, -1, tmp_path, 2), monkeypatch, "--config", str(path))
    factory = origin["factory"]
    assert factory.settings_for("live").push and factory.settings_for("live").pull  # type: ignore[attr-defined]
    worker = _child_services(Role(WORKER, 0, tmp_path, 2), monkeypatch, "--config", str(path))
    factory = worker["factory"]
    live = factory.settings_for("live")  # type: ignore[attr-defined]
    assert not live.push and not live.pull
    assert [type(s).__name__ for s in factory.pushes.sources] == ["OriginRoute"]  # type: ignore[attr-defined]
