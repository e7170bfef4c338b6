"""The SSH console with the OpenSSH client: in-process, and through ``twistd`` end to end.

``ssh -tt`` forces a remote pty even though its stdin is a pipe (the console
needs a terminal); the test types a line, reads up to the next prompt, and
leaves with Ctrl-D.  The host key is pinned from the ``.pub`` file the server
wrote (``StrictHostKeyChecking=yes``), so the key OpenSSH sees is the one on disk.
"""

from __future__ import annotations

import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, connect_client, pace_tags
from streamserver.console import (
    HOST_KEY_NAME,
    AuthorizedKeysFile,
    console_factory,
    fingerprint,
    load_or_create_host_key,
)
from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.console_support import PROMPT, ClientKey, command_output, make_client_key
from tests.integration.support import (
    CollectingProcess,
    ProcessResult,
    accepts_connections,
    child_env,
    free_port,
    get_reactor,
    run,
    sleep,
    wait_until,
    within,
)
from tests.integration.test_backpressure_sockets import heavy_tags, heavy_viewer

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration


class ConsoleProcess(CollectingProcess):
    """``ssh -tt`` into the console: type lines into its stdin, read what they print."""

    def connectionMade(self) -> None:
        """Keep stdin open: it is the keyboard."""

    async def prompt(self, timeout: float = 20) -> str:
        """Wait for the first prompt; return the banner."""
        await wait_until(
            lambda: b">>> " in self.stdout or not self.running,
            timeout,
            "the console's first prompt",
            describe=self._describe,
        )
        assert self.running, self._describe()
        return bytes(self.stdout).decode(errors="replace")

    async def run(self, line: str, timeout: float = 15) -> str:
        """Type *line* and Enter; return what it printed."""
        start = len(self.stdout)
        self.transport.write(line.encode() + b"\r")
        await wait_until(
            lambda: PROMPT in self.stdout[start:] or not self.running,
            timeout,
            f"the output of {line}",
            describe=self._describe,
        )
        assert self.running, self._describe()
        return command_output(bytes(self.stdout[start:]))

    async def leave(self, timeout: float = 15) -> ProcessResult:
        """Ctrl-D at an empty prompt; wait for ssh to exit."""
        self.transport.write(b"\x04")
        return await self.wait(timeout)

    def _describe(self) -> str:
        return f"stdout: {bytes(self.stdout)[-600:]!r}; stderr: {bytes(self.stderr)[-600:]!r}"


def ssh_console_argv(ssh: str, port: int, key: ClientKey, known_hosts: Path) -> list[str]:
    """OpenSSH into 127.0.0.1:*port* with *key*, trusting only *known_hosts*, no pty option."""
    return [
        ssh, "-F", "/dev/null",
        "-i", str(key.private_path),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
        "-p", str(port), "admin@127.0.0.1",
    ]  # fmt: skip


def ssh_console(ssh: str, port: int, key: ClientKey, known_hosts: Path) -> ConsoleProcess:
    """Start ``ssh -tt`` into the console on 127.0.0.1:*port*."""
    base = ssh_console_argv(ssh, port, key, known_hosts)
    argv = [base[0], "-tt", *base[1:]]
    process = ConsoleProcess(argv)
    get_reactor().spawnProcess(process, ssh, argv, env=child_env())
    return process


def pin_host_key(data_dir: Path, port: int, path: Path) -> Path:
    """Write a known_hosts file trusting the host key stored in *data_dir* for *port*."""
    public = (data_dir / (HOST_KEY_NAME + ".pub")).read_text().split()
    path.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    return path


def _keys(tmp_path: Path) -> tuple[ClientKey, Path]:
    key = make_client_key(tmp_path)
    keys_path = tmp_path / "authorized_keys"
    keys_path.write_text(key.public_line + "\n")
    return key, keys_path


def _first_row(table: str) -> str:
    lines = table.splitlines()
    return lines[1] if len(lines) > 1 and lines[0].startswith("id") else ""


@pytest_twisted.async_yield_fixture
async def console_port(tmp_path: Path) -> AsyncIterator[tuple[int, ClientKey, Path]]:
    """The console of an idle server on 127.0.0.1: (port, client key, known_hosts)."""
    reactor = get_reactor()
    factory = RTMPServerFactory(ServerConfig(), reactor=reactor)
    key, keys_path = _keys(tmp_path)
    host_key, _, _ = load_or_create_host_key(tmp_path / "data")
    keys_file = AuthorizedKeysFile(keys_path)
    keys_file.load()
    listening = reactor.listenTCP(
        0, console_factory(factory, keys_file, host_key, reactor=reactor), interface="127.0.0.1"
    )
    port = listening.getHost().port
    try:
        yield port, key, pin_host_key(tmp_path / "data", port, tmp_path / "known_hosts")
    finally:
        await defer.maybeDeferred(listening.stopListening)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_openssh_opens_the_console_and_exits_cleanly(
    console_port: tuple[int, ClientKey, Path], interop: Interop
) -> None:
    """``ssh -tt`` with a listed key gets a prompt, runs helpers and leaves with status 0."""
    ssh = interop.tools("ssh")["ssh"]
    port, key, known_hosts = console_port
    console = ssh_console(ssh, port, key, known_hosts)
    try:
        banner = await console.prompt()
        assert "logged in as admin" in banner
        assert await console.run("sum(range(10))") == "45"
        assert "no bytes queued in 0 connections" in await console.run("buffers()")
        chain = await console.run("chain()")
        assert "admit_frame" in chain and "BackpressureMixin" in chain
        result = await console.leave()
    finally:
        if console.running:
            await console.stop("KILL", grace=1.0)
    assert result.exit_code == 0, result.describe()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_openssh_without_a_terminal_or_with_a_command_is_told_why(
    console_port: tuple[int, ClientKey, Path], interop: Interop
) -> None:
    """``ssh -T`` and ``ssh HOST command`` get a one-line reason and exit status 1."""
    ssh = interop.tools("ssh")["ssh"]
    port, key, known_hosts = console_port
    base = ssh_console_argv(ssh, port, key, known_hosts)
    no_tty = await run([base[0], "-T", *base[1:]], 20)
    assert no_tty.exit_code == 1, no_tty.describe()
    assert b"needs a terminal" in no_tty.stdout, no_tty.describe()
    command = await run([*base, "ls"], 20)
    assert command.exit_code == 1, command.describe()
    assert b"runs no commands" in command.stdout, command.describe()


# --- twistd end to end ---------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_twistd_console_names_the_slow_viewer_and_kicks_it(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """twistd --manhole: OpenSSH gets in, buffers() names the stopped viewer, kick() ends it."""
    ssh = interop.tools("ssh")["ssh"]
    twistd = Path(sys.executable).parent / "twistd"
    if not twistd.exists():
        interop.unavailable(f"no twistd next to {sys.executable}")
    listing = await run([str(twistd), "--help"], 60, cwd=tmp_path)
    if b"streamserver" not in listing.stdout:
        interop.unavailable("twistd does not list the streamserver plugin (see README)")

    key, keys_path = _keys(tmp_path)
    data_dir = tmp_path / "data"
    rtmp_port, ssh_port = free_port(), free_port()
    argv = [
        str(twistd), "-n", "--pidfile=", "--logfile=-", "streamserver",
        "--rtmp", f"tcp:{rtmp_port}:interface=127.0.0.1", "--no-http",
        "--manhole", f"tcp:{ssh_port}:interface=127.0.0.1",
        "--manhole-keys", str(keys_path),
        "--data-dir", str(data_dir),
        # keep the stopped viewer around long enough to look at it
        "--stall-timeout", "60",
    ]  # fmt: skip
    server = processes.spawn(argv, cwd=tmp_path)
    reactor = get_reactor()
    for port in (rtmp_port, ssh_port):
        deadline = reactor.seconds() + 20
        while not await accepts_connections(port):
            assert server.running, server.result.describe() if server.result else ""
            assert reactor.seconds() < deadline, f"twistd never listened on {port}"
            await sleep(0.1)
    host_key = data_dir / HOST_KEY_NAME
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    clients: list[RTMPClientProtocol] = []
    console: ConsoleProcess | None = None
    try:
        publisher = await within(
            connect_client(reactor, f"rtmp://127.0.0.1:{rtmp_port}/live"), 10, "connect publisher"
        )
        clients.append(publisher)
        publish_id = await within(publisher.create_stream(), 10, "createStream")
        await within(publisher.publish("heavy", publish_id), 10, "publish")
        pace_tags(reactor, publisher, heavy_tags(10.0), publish_id, loops=6)
        normal = await heavy_viewer(rtmp_port)
        stopped = await heavy_viewer(rtmp_port)
        clients += [normal, stopped]
        stopped.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stopped.transport.pauseProducing()  # stop reading
        stopped_address = f"127.0.0.1:{stopped.transport.getHost().port}"

        known_hosts = pin_host_key(data_dir, ssh_port, tmp_path / "known_hosts")
        console = ssh_console(ssh, ssh_port, key, known_hosts)
        await console.prompt()
        deadline = reactor.seconds() + 20
        while stopped_address not in _first_row(buffers := await console.run("buffers()")):
            assert reactor.seconds() < deadline, (
                f"buffers() never named {stopped_address}:\n{buffers}"
            )
            await sleep(0.5)
        conn_id = int(_first_row(buffers).split()[0])
        assert "play live/heavy" in _first_row(buffers)

        # the stopped viewer's transport passes 64 KiB and pauses us: "congested"
        while True:
            viewers = await console.run("viewers()")
            row = next(line for line in viewers.splitlines() if stopped_address in line)
            if row.split()[-1] == "congested":
                break
            assert reactor.seconds() < deadline, viewers
            await sleep(0.5)
        assert (
            await console.run(f"kick({conn_id})")
            == f"kicked connection {conn_id} ({stopped_address})"
        )
        assert stopped_address not in await console.run("viewers()")
        result = await console.leave()
        assert result.exit_code == 0, result.describe()
    finally:
        for client in clients:
            client.close()
        if console is not None and console.running:
            await console.stop("KILL", grace=1.0)
    ended = await server.stop("TERM", grace=10.0)
    log = ended.stdout.decode(errors="replace")
    from twisted.conch.ssh import keys

    key_fingerprint = fingerprint(keys.Key.fromString(key.public_line.encode()))
    assert f"console login: admin with ssh-ed25519 key {key_fingerprint}" in log, log[-3000:]
    assert f"console admin ({key_fingerprint}): kick(conn_id={conn_id}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
