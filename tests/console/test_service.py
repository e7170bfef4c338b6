"""The console's service: the twistd options, the service, and real SSH logins (paramiko).

The SSH tests run the console on the real reactor at 127.0.0.1 port 0 and log
in with paramiko in a thread.  ``tests/integration/test_console.py`` does the
same with OpenSSH and twistd.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads
from twisted.python import usage

from streamserver import tap
from streamserver.console.keys import (
    HOST_KEY_NAME,
    AuthorizedKeysFile,
    fingerprint,
    load_or_create_host_key,
)
from streamserver.console.service import ConsoleService, console_factory, loopback_only
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.protocol.base import hook_path
from streamserver.protocol.server import RTMPServerProtocol
from tests.console_support import (
    ClientKey,
    make_client_key,
    make_scenario,
    paramiko_session,
    password_attempt,
    write_keys_file,
)

# --- options and service ------------------------------------------------------------------


def test_manhole_without_keys_is_a_usage_error() -> None:
    """--manhole without --manhole-keys refuses to start, saying what is missing."""
    with pytest.raises(usage.UsageError, match="--manhole-keys"):
        tap.Options().parseOptions(["--manhole", "tcp:0"])


@pytest.mark.parametrize("content", [None, "", "# nothing\n", 'command="x" ssh-ed25519 AAAA\n'])
def test_manhole_keys_without_a_usable_key_is_a_usage_error(
    tmp_path: Path, content: str | None
) -> None:
    """A missing keys file, or one without a usable key, is a usage error naming the file."""
    path = tmp_path / "authorized_keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(usage.UsageError, match="--manhole-keys"):
        tap.Options().parseOptions(["--manhole", "tcp:0", "--manhole-keys", str(path)])


def test_data_dir_defaults_to_the_xdg_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --data-dir the host key goes to $XDG_DATA_HOME/streamserver."""
    _, keys = write_keys_file(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    options = tap.Options()
    options.parseOptions(["--manhole", "tcp:0", "--manhole-keys", str(keys)])
    assert Path(options["data-dir"]) == tmp_path / "xdg" / "streamserver"


def test_a_bare_port_means_loopback(tmp_path: Path) -> None:
    """--manhole 2222 listens on 127.0.0.1 only."""
    _, keys = write_keys_file(tmp_path)
    options = tap.Options()
    options.parseOptions(["--manhole", "2222", "--manhole-keys", str(keys)])
    assert options["manhole"] == "tcp:2222:interface=127.0.0.1"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("tcp:2222:interface=127.0.0.1", True),
        ("tcp6:2222:interface=\\:\\:1", True),
        ("unix:/run/streamserver/console.sock", True),
        ("tcp:2222", False),
        ("tcp:2222:interface=0.0.0.0", False),
        ("tcp6:2222:interface=\\:\\:", False),
    ],
)
def test_loopback_only_tells_which_endpoints_stay_local(endpoint: str, expected: bool) -> None:
    """Endpoints beyond loopback are recognised (the service warns about them)."""
    assert loopback_only(endpoint) is expected


def test_make_service_adds_the_console_only_when_asked(tmp_path: Path) -> None:
    """--manhole adds a "manhole" service (SSH listener + rate sampler) and creates the host key."""
    _, keys = write_keys_file(tmp_path)
    plain = tap.Options()
    plain.parseOptions(["--rtmp", "tcp:0"])
    assert "manhole" not in {s.name for s in tap.makeService(plain)}

    options = tap.Options()
    options.parseOptions(
        [
            "--rtmp", "tcp:0",
            "--manhole", "tcp:0:interface=127.0.0.1",
            "--manhole-keys", str(keys),
            "--data-dir", str(tmp_path / "data"),
        ]
    )  # fmt: skip
    top = tap.makeService(options)
    console = top.getServiceNamed("manhole")
    assert isinstance(console, ConsoleService)
    assert {s.name for s in console} == {"ssh", "rates"}
    host_key = tmp_path / "data" / HOST_KEY_NAME
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600


def test_help_documents_the_console_options() -> None:
    """--help describes --manhole, --manhole-keys and --data-dir."""
    text = str(tap.Options())
    for option in ("--manhole=", "--manhole-keys=", "--data-dir="):
        assert option in text
    assert "authorized_keys" in text


# --- real SSH logins with paramiko --------------------------------------------------------------


@dataclass
class ConsoleServer:
    """The console listening on 127.0.0.1, and the RTMP factory it looks into."""

    port: int
    factory: RTMPServerFactory
    key: ClientKey
    keys_path: Path
    host_key_fingerprint: str


@pytest_twisted.async_yield_fixture
async def console_server(tmp_path: Path) -> AsyncIterator[ConsoleServer]:
    from twisted.internet import reactor

    factory = RTMPServerFactory(ServerConfig(), reactor=reactor)
    key, keys_path = write_keys_file(tmp_path)
    host_key, _, _ = load_or_create_host_key(tmp_path / "data")
    keys_file = AuthorizedKeysFile(keys_path)
    keys_file.load()
    ssh_factory = console_factory(factory, keys_file, host_key, reactor=reactor)
    listening = reactor.listenTCP(0, ssh_factory, interface="127.0.0.1")
    try:
        yield ConsoleServer(
            listening.getHost().port, factory, key, keys_path, fingerprint(host_key)
        )
    finally:
        await defer.maybeDeferred(listening.stopListening)


def _in_thread(function: Any, *args: Any) -> defer.Deferred[Any]:
    from twisted.internet import reactor

    return threads.deferToThread(function, *args).addTimeout(60, reactor)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_paramiko_logs_in_with_a_key_and_reads_buffers_and_chain(
    console_server: ConsoleServer, log_events: list[Any]
) -> None:
    """A listed key opens the console; buffers() names the stopped viewer, chain() the hooks."""
    scenario = make_scenario(console_server.factory, task.Clock())
    scenario.publish(gops=2)
    stopped = scenario.stopped.protocol
    result = await _in_thread(
        paramiko_session,
        console_server.port,
        console_server.key.private_path,
        ["buffers()", "chain()", "help(buffers)", "buffers()[0]['id']", "1 / 0"],
    )
    buffers, chain, help_text, first_id, error = result.outputs
    assert "logged in as admin" in result.banner
    header, first_row = buffers.splitlines()[:2]
    assert header.startswith("id") and "queued" in header
    assert first_row.split()[:3] == [str(stopped.conn_id), stopped.peer, "play"]
    assert "total queued" in buffers
    assert "RTMPServerProtocol (streamserver.protocol.server), MRO:" in chain
    admit = " -> ".join(hook_path(RTMPServerProtocol, "admit_frame"))
    assert any(
        line.split()[1:] == admit.split() for line in chain.splitlines() if "admit_frame" in line
    )
    assert "holding the most bytes queued" in help_text
    assert first_id == str(stopped.conn_id)
    assert "ZeroDivisionError" in error
    assert result.exit_status == 0

    fingerprint_of_key = paramiko_fingerprint(console_server.key)
    logins = [e for e in log_events if "console login" in e.get("log_format", "")]
    assert [(e["user"], e["fingerprint"]) for e in logins] == [("admin", fingerprint_of_key)]
    typed = [e["source"] for e in log_events if "source" in e and e.get("fingerprint")]
    assert typed == ["buffers()", "chain()", "help(buffers)", "buffers()[0]['id']", "1 / 0"]


def paramiko_fingerprint(key: ClientKey) -> str:
    import paramiko

    return str(paramiko.Ed25519Key.from_private_key_file(str(key.private_path)).fingerprint)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_an_unlisted_key_is_refused(console_server: ConsoleServer, tmp_path: Path) -> None:
    """A key that is not in the keys file does not get in, whatever the user name."""
    import paramiko

    stranger = make_client_key(tmp_path, "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        await _in_thread(paramiko_session, console_server.port, stranger.private_path, [], "admin")


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_password_is_refused_and_only_publickey_is_offered(
    console_server: ConsoleServer, log_events: list[Any]
) -> None:
    """A password login fails: the server offers publickey and nothing else."""
    allowed = await _in_thread(password_attempt, console_server.port)
    assert allowed == ["publickey"]
    assert not [e for e in log_events if "console login" in e.get("log_format", "")]


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_removing_a_key_from_the_file_revokes_it(console_server: ConsoleServer) -> None:
    """The keys file is re-read when it changes: a removed line no longer logs in."""
    import paramiko

    result = await _in_thread(
        paramiko_session, console_server.port, console_server.key.private_path, ["6 * 7"]
    )
    assert result.outputs == ["42"]
    other = make_client_key(console_server.keys_path.parent, "other")
    console_server.keys_path.write_text(other.public_line + "\n")
    with pytest.raises(paramiko.AuthenticationException):
        await _in_thread(paramiko_session, console_server.port, console_server.key.private_path, [])


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_system_exit_ends_the_session_not_the_server(console_server: ConsoleServer) -> None:
    """``raise SystemExit`` at the prompt closes that session; the next login works."""
    with pytest.raises(EOFError):
        await _in_thread(
            paramiko_session,
            console_server.port,
            console_server.key.private_path,
            ["raise SystemExit"],
        )
    result = await _in_thread(
        paramiko_session, console_server.port, console_server.key.private_path, ["exit"]
    )
    assert result.outputs == ["Use exit() or Ctrl-D to leave the console."]
