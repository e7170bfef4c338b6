"""The supervisor: children's arguments, listeners, restarts with backoff, shutdown."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure

from streamserver import tap
from streamserver.workers.reuseport import parse_tcp
from streamserver.workers.supervisor import (
    CRASH_THRESHOLD,
    MAX_RESTART_DELAY,
    MIN_RESTART_DELAY,
    WorkerSupervisor,
    child_arguments,
    make_directory,
    resolve_listeners,
    twistd_command,
)


class FakeProcess:
    """A spawned child: records signals; exits when the test says so."""

    def __init__(self, reactor: ProcessReactor, protocol: Any, args: list[str],
                 env: dict[str, str]) -> None:  # fmt: skip
        self.reactor = reactor
        self.protocol = protocol
        self.args = args
        self.env = env
        self.signals: list[str] = []
        self.pid: int | None = 1000 + len(reactor.spawned)
        protocol.makeConnection(self)

    def signalProcess(self, name: str) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def exit(self, status: int | None = 0, signal: int | None = None) -> None:
        """The child ends (0: ProcessDone, else ProcessTerminated)."""
        self.pid = None
        reason = ProcessDone(0) if status == 0 else ProcessTerminated(status, signal)
        self.protocol.processEnded(Failure(reason))

    def closeStdin(self) -> None:
        pass


class ProcessReactor(Clock):
    """A clock that spawns :class:`FakeProcess` children."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                     env: dict[str, str], path: str | None = None, uid: Any = None,
                     gid: Any = None, usePTY: bool = False, childFDs: Any = None,  # noqa: N803
                     ) -> FakeProcess:  # fmt: skip
        process = FakeProcess(self, protocol, args, env)
        self.spawned.append(process)
        return process

    def running(self, name: str) -> FakeProcess:
        """The live child started last for the process *name*."""
        found = [p for p in self.spawned if p.pid is not None and _name(p) == name]
        assert len(found) == 1, (name, [(_name(p), p.pid) for p in self.spawned])
        return found[0]


def _name(process: FakeProcess) -> str:
    env = process.env
    if env["STREAMSERVER_ROLE"] == "origin":
        return "origin"
    return f"worker-{env['STREAMSERVER_WORKER_INDEX']}"


def _supervisor(
    tmp_path: Path, workers: int = 2, **kw: Any
) -> tuple[WorkerSupervisor, ProcessReactor]:
    reactor = ProcessReactor()
    supervisor = WorkerSupervisor(
        reactor, ["python", "twistd"], tmp_path, workers, grace=3.0, environ={"PATH": "/bin"}, **kw
    )
    return supervisor, reactor


def test_children_are_the_origin_and_each_worker(tmp_path: Path) -> None:
    """Starting spawns the origin and N workers with the same argv, each told its role."""
    supervisor, reactor = _supervisor(tmp_path, workers=3)
    supervisor.startService()
    assert [_name(p) for p in reactor.spawned] == ["origin", "worker-0", "worker-1", "worker-2"]
    for process in reactor.spawned:
        assert process.args == ["python", "twistd"]
        assert process.env["STREAMSERVER_WORKERS_DIR"] == str(tmp_path)
        assert process.env["STREAMSERVER_SUPERVISOR_PID"] == str(os.getpid())
        assert process.env["PATH"] == "/bin"


def test_a_worker_that_ran_long_is_restarted_at_once(tmp_path: Path) -> None:
    """A worker killed after running a while is started again at once; the others stay."""
    supervisor, reactor = _supervisor(tmp_path)
    supervisor.startService()
    reactor.advance(60)
    first = reactor.running("worker-1")
    first.exit(None, 9)
    reactor.advance(0)
    second = reactor.running("worker-1")
    assert second is not first
    assert len(reactor.spawned) == 4
    assert reactor.running("worker-0").signals == []


def test_a_crash_loop_backs_off(tmp_path: Path) -> None:
    """A child dying within CRASH_THRESHOLD of its start waits 1, 2, 4... s, at most 30."""
    supervisor, reactor = _supervisor(tmp_path)
    supervisor.startService()
    delays = []
    for _ in range(8):
        reactor.running("worker-0").exit(1)
        before = len(reactor.spawned)
        waited = 0.0
        while len(reactor.spawned) == before:
            reactor.advance(0.5)
            waited += 0.5
        delays.append(waited)
    assert delays[0] == MIN_RESTART_DELAY
    assert delays[:5] == [1, 2, 4, 8, 16]
    assert max(delays) == MAX_RESTART_DELAY
    # A run longer than the threshold resets the delay.
    reactor.advance(CRASH_THRESHOLD + 1)
    reactor.running("worker-0").exit(1)
    reactor.advance(0)
    reactor.running("worker-0")


def test_stop_terminates_then_kills_and_waits(tmp_path: Path) -> None:
    """Stopping sends SIGTERM to every child, SIGKILL to one still there after the
    grace, and fires only when all have exited; nothing is restarted."""
    supervisor, reactor = _supervisor(tmp_path)
    supervisor.startService()
    children = list(reactor.spawned)
    stopped = supervisor.stopService()
    assert [p.signals for p in children] == [["TERM"]] * 3
    children[0].exit(0)
    children[1].exit(0)
    reactor.advance(supervisor.killTime)
    assert children[2].signals == ["TERM", "KILL"]
    assert not stopped.called
    children[2].exit(None, 9)
    assert stopped.called
    reactor.advance(100)
    assert len(reactor.spawned) == 3
    assert supervisor.killTime >= 3.0


def test_stop_removes_a_directory_it_made(tmp_path: Path) -> None:
    """The temp directory the supervisor made is removed once the children are gone."""
    directory = tmp_path / "made"
    directory.mkdir()
    supervisor, reactor = _supervisor(directory, remove_directory=True)
    supervisor.startService()
    supervisor.stopService()
    for process in list(reactor.spawned):
        process.exit(0)
    assert not directory.exists()


def test_child_arguments_replace_the_listeners() -> None:
    """Every form of a listener option is dropped and the resolved ones appended."""
    argv = ["--rtmp", "tcp:0", "--http=tcp:0", "--workers", "2", "--irc", "tcp:6667",
            "--chunk-size", "8192", "--no-http-foo"]  # fmt: skip
    listeners = {"rtmp": ["tcp:4000"], "http": ["tcp:4001"], "irc": []}
    assert child_arguments(argv, listeners) == [
        "--workers", "2", "--chunk-size", "8192", "--no-http-foo",
        "--rtmp", "tcp:4000", "--http", "tcp:4001",
    ]  # fmt: skip


def test_resolve_listeners() -> None:
    """Port 0 becomes one port for every worker; unshareable listeners are refused."""
    resolved = resolve_listeners({"rtmp": ["tcp:0:interface=127.0.0.1", "tcp:1935"]})
    first = parse_tcp(resolved["rtmp"][0])
    assert first is not None and first.port != 0
    assert resolved["rtmp"][1] == "tcp:1935"
    for endpoint in ("unix:/tmp/s.sock", "ssl:1936:privateKey=k.pem:certKey=c.pem"):
        with pytest.raises(usage.UsageError, match="shares only tcp"):
            resolve_listeners({"http": [endpoint]})


def test_twistd_command() -> None:
    """Children run twistd in the foreground with this Python, logging to stdout."""
    command = twistd_command(["--workers", "2"])
    assert command[0] == sys.executable
    assert command[-4:] == ["--logfile=-", "streamserver", "--workers", "2"]
    assert "-n" in command


def test_make_directory(tmp_path: Path) -> None:
    """The directory is made (or made) mode 0700; without a path a fresh one is made."""
    path = tmp_path / "run" / "workers"
    directory, made = make_directory(str(path))
    assert (directory, made) == (path, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    fresh, made = make_directory(None)
    try:
        assert made and stat.S_IMODE(fresh.stat().st_mode) == 0o700
    finally:
        fresh.rmdir()


def test_make_service_builds_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers 2 makes the supervisor service (nothing listens in it), its children
    started with the same options and the resolved listeners."""
    monkeypatch.delenv("STREAMSERVER_ROLE", raising=False)
    options = tap.Options()
    rtmp = "tcp:0:interface=127.0.0.1"
    options.parseOptions(
        ["--workers", "2", "--workers-dir", str(tmp_path), "--rtmp", rtmp, "--chunk-size", "8192"]
    )
    top = tap.makeService(options)
    supervisor = top.getServiceNamed("workers")  # type: ignore[attr-defined]
    assert isinstance(supervisor, WorkerSupervisor)
    assert sorted(supervisor.roles) == ["origin", "worker-0", "worker-1"]
    args = supervisor._processes["worker-0"].args
    assert args[args.index("--chunk-size") + 1] == "8192"
    listener = parse_tcp(args[args.index("--rtmp") + 1])
    assert listener is not None and listener.port != 0
    assert args[args.index("--http") + 1].startswith("tcp:")


def test_workers_option() -> None:
    """--workers takes a count or auto (the CPU count); 0 is refused."""
    options = tap.Options()
    options.parseOptions(["--workers", "auto"])
    assert options.config().workers >= 1
    with pytest.raises(usage.UsageError, match="--workers"):
        tap.Options().parseOptions(["--workers", "0"])


def test_sighup_reaches_every_running_child(tmp_path: Path) -> None:
    """SIGHUP at the supervisor (systemctl reload) is sent to the origin and every
    worker that runs; a child that exited meanwhile is skipped; the handler is the
    previous one again after stop."""
    import signal

    before = signal.getsignal(signal.SIGHUP)
    supervisor, reactor = _supervisor(tmp_path)
    supervisor.startService()
    try:
        assert signal.getsignal(signal.SIGHUP) == supervisor._hangup
        children = list(reactor.spawned)
        children[1].pid = None  # gone, its restart not yet spawned
        assert supervisor.forward_hangup() == ["origin", "worker-1"]
        assert [p.signals for p in children] == [["HUP"], [], ["HUP"]]
    finally:
        supervisor.stopService()
    assert signal.getsignal(signal.SIGHUP) == before


def test_a_childs_good_reload_signals_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reload_everywhere (POST /api/reload, the console's reload()) in a --workers child
    sends SIGHUP to the supervisor after a good reload, never after a refused one."""
    import signal

    from twisted.internet import task

    from streamserver.factory import RTMPServerFactory
    from streamserver.reload import Reloader

    path = tmp_path / "streamserver.toml"
    path.write_text("[server]\nmax-streams = 10\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    assert options.effective is not None
    factory = RTMPServerFactory(options.config(), reactor=task.Clock())
    reloader = Reloader(
        factory, options.effective, options.command_line(), str(path), supervisor=4242
    )
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    path.write_text("[server]\nmax-streams = 20\n")
    result = reloader.reload_everywhere()
    assert result.ok and result.spread and factory.config.max_streams == 20
    assert kills == [(4242, signal.SIGHUP)]
    assert "every --workers process" in result.text()
    path.write_text("[server]\nmax-streams = 'many'\n")
    result = reloader.reload_everywhere()
    assert not result.ok and kills == [(4242, signal.SIGHUP)]
    assert factory.config.max_streams == 20
