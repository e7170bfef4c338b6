"""A child's role from its environment, and what follows from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamserver.workers.roles import ORIGIN, WORKER, Role, current_role


def test_no_role_without_the_variables() -> None:
    """Without STREAMSERVER_ROLE the process is the single server or the supervisor."""
    assert current_role({}, workers=2) is None


def test_role_round_trips_through_the_environment(tmp_path: Path) -> None:
    """The environment a role gives its child reads back as the same role."""
    for role in (Role(ORIGIN, -1, tmp_path, 3), Role(WORKER, 2, tmp_path, 3, 4242)):
        assert current_role(role.environment(), workers=3) == role


@pytest.mark.parametrize(
    "environ",
    [
        {"STREAMSERVER_ROLE": "edge", "STREAMSERVER_WORKERS_DIR": "/x"},
        {"STREAMSERVER_ROLE": "worker"},
        {"STREAMSERVER_ROLE": "worker", "STREAMSERVER_WORKERS_DIR": "/x",
         "STREAMSERVER_WORKER_INDEX": "2"},
    ],
)  # fmt: skip
def test_bad_environment_is_refused(environ: dict[str, str]) -> None:
    """An unknown role, a missing directory or an index past --workers is an error."""
    with pytest.raises(ValueError, match="STREAMSERVER_"):
        current_role(environ, workers=2)


def test_names_and_sockets(tmp_path: Path) -> None:
    """Each child names its own socket; the siblings are the origin and every worker."""
    role = Role(WORKER, 1, tmp_path, 2)
    assert role.name == "worker-1"
    assert role.label == "1"
    assert role.http_path() == tmp_path / "worker-1.http.sock"
    assert role.http_path("origin") == tmp_path / "origin.http.sock"
    assert role.origin_rtmp_path == tmp_path / "origin.rtmp.sock"
    assert role.siblings() == ["origin", "worker-0", "worker-1"]


@pytest.mark.parametrize(
    ("role", "endpoint", "expected"),
    [
        (Role(ORIGIN, -1, Path("/d"), 2), "tcp:2222:interface=::1", "tcp:2222:interface=::1"),
        (Role(WORKER, 0, Path("/d"), 2), "tcp:2222:interface=::1", "tcp:2223:interface=::1"),
        (Role(WORKER, 1, Path("/d"), 2), "tcp6:port=2222", "tcp6:2224"),
        (Role(WORKER, 1, Path("/d"), 2), "unix:/run/console.sock:mode=600",
         "unix:/run/console.sock-worker-1:mode=600"),
    ],
)  # fmt: skip
def test_console_endpoint(role: Role, endpoint: str, expected: str) -> None:
    """The origin's console keeps port P, worker I's is P + 1 + I (a path gets a suffix)."""
    assert role.console_endpoint(endpoint) == expected


def test_unix_endpoint_removes_a_stale_socket(tmp_path: Path) -> None:
    """A socket file a killed process left is removed before listening again."""
    role = Role(WORKER, 0, tmp_path, 1)
    role.http_path().write_text("stale")
    assert role.unix_endpoint(role.http_path()) == f"unix:{tmp_path}/worker-0.http.sock:mode=600"
    assert not role.http_path().exists()
