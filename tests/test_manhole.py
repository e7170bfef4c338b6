"""The SSH console: keys, host key, options, the helpers, and real SSH logins (paramiko).

The helpers are tested directly on a factory with fake peers; the SSH tests run
the console on the real reactor at 127.0.0.1 port 0 and log in with paramiko in
a thread.  ``tests/integration/test_console.py`` does the same with OpenSSH and
twistd.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads
from twisted.logger import globalLogPublisher
from twisted.python import usage

from streamserver import tap
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.manhole import (
    HOST_KEY_NAME,
    AuthorizedKeysFile,
    Console,
    ConsoleError,
    ConsoleLogin,
    ConsoleService,
    RateSampler,
    console_factory,
    fingerprint,
    load_or_create_host_key,
    loopback_only,
    parse_authorized_keys,
)
from streamserver.policy import PolicyLimits
from streamserver.protocol.base import ProtocolRoot, hook_path
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.testing import FakePeer
from tests.console_support import ClientKey, make_client_key, paramiko_session, password_attempt
from tests.protocol import media

LOGIN = ConsoleLogin("admin", "SHA256:test-fingerprint", "ssh-ed25519", "tester@example")


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def _console_events(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("console_action") == action]


# --- authorized_keys and keys ------------------------------------------------------------


def test_authorized_keys_accepts_common_types_and_skips_options_and_junk(tmp_path: Path) -> None:
    """Ed25519, RSA and ECDSA lines are read; comments, option-prefixed and bad lines are not."""
    ed = make_client_key(tmp_path, "ed", "ed25519")
    rsa = make_client_key(tmp_path, "rsa", "rsa")
    ecdsa = make_client_key(tmp_path, "ec", "ecdsa")
    restricted = make_client_key(tmp_path, "restricted")
    text = "\n".join(
        [
            "# console keys",
            "",
            ed.public_line,
            f'from="10.0.0.0/8",no-pty {restricted.public_line}',
            "   " + rsa.public_line,
            "ssh-ed25519 AAAAnot-base64",
            "ssh-ed25519",
            ecdsa.public_line,
        ]
    )
    found, skipped = parse_authorized_keys(text)
    assert [(k.key_type, k.comment, k.line) for k in found] == [
        ("ssh-ed25519", "ed@test", 3),
        ("ssh-rsa", "rsa@test", 5),
        ("ecdsa-sha2-nistp256", "ec@test", 8),
    ]
    assert [message.split(":")[0] for message in skipped] == ["line 4", "line 6", "line 7"]
    assert "options are not supported" in skipped[0]


def test_fingerprint_is_the_one_openssh_and_paramiko_print(tmp_path: Path) -> None:
    """``fingerprint()`` gives ``SHA256:`` and unpadded base64, as ``ssh-keygen -l``."""
    import paramiko

    key = make_client_key(tmp_path)
    found, _ = parse_authorized_keys(key.public_line)
    expected = paramiko.Ed25519Key.from_private_key_file(str(key.private_path)).fingerprint
    assert found[0].fingerprint == expected
    assert fingerprint(found[0].key) == expected


def test_host_key_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    """The first start makes an Ed25519 key, mode 0600 in a 0700 directory; later ones reuse it."""
    data_dir = tmp_path / "state" / "streamserver"
    key, path, created = load_or_create_host_key(data_dir)
    assert created
    assert path == data_dir / HOST_KEY_NAME
    assert key.type() == "Ed25519"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert (data_dir / (HOST_KEY_NAME + ".pub")).read_text().startswith("ssh-ed25519 ")
    again, _, created_again = load_or_create_host_key(data_dir)
    assert not created_again
    assert fingerprint(again) == fingerprint(key)


def test_host_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """An existing host key with group or other permissions is refused, as sshd does."""
    _, path, _ = load_or_create_host_key(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConsoleError, match="chmod 600"):
        load_or_create_host_key(tmp_path)


# --- options and service ------------------------------------------------------------------


def _keys_file(tmp_path: Path) -> tuple[ClientKey, Path]:
    key = make_client_key(tmp_path)
    path = tmp_path / "authorized_keys"
    path.write_text(f"# admins\n{key.public_line}\n")
    return key, path


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
    _, keys = _keys_file(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    options = tap.Options()
    options.parseOptions(["--manhole", "tcp:0", "--manhole-keys", str(keys)])
    assert Path(options["data-dir"]) == tmp_path / "xdg" / "streamserver"


def test_a_bare_port_means_loopback(tmp_path: Path) -> None:
    """--manhole 2222 listens on 127.0.0.1 only."""
    _, keys = _keys_file(tmp_path)
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
    _, keys = _keys_file(tmp_path)
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


# --- the helpers, on fake peers --------------------------------------------------------------


@dataclass
class Scenario:
    """A publisher of live/cam, viewers that read everything, and one that stopped reading."""

    factory: RTMPServerFactory
    clock: task.Clock
    publisher: FakePeer
    stream_id: int
    normal: list[FakePeer]
    stopped: FakePeer
    timestamp: int = 0

    def publish(self, gops: int = 1, size: int = 200) -> None:
        """Send *gops* two-second GOPs of 30 fps video with audio."""
        for _ in range(gops):
            for index in range(60):
                ts = self.timestamp + index * 1000 // 30
                self.publisher.send(media.video(self.stream_id, ts, key=index == 0, size=size))
                self.publisher.send(media.audio(self.stream_id, ts))
            self.timestamp += 2000


def _viewer(factory: RTMPServerFactory, *, auto_drain: bool) -> FakePeer:
    viewer = FakePeer(factory, auto_drain=auto_drain)
    viewer.connect("live")
    viewer.play("cam", viewer.create_stream())
    return viewer


def _scenario(factory: RTMPServerFactory, clock: task.Clock) -> Scenario:
    publisher = FakePeer(factory)
    publisher.connect("live")
    stream_id = publisher.create_stream()
    publisher.publish("cam", stream_id)
    for message in media.headers(stream_id):
        publisher.send(message)
    normal = [_viewer(factory, auto_drain=True) for _ in range(2)]
    stopped = _viewer(factory, auto_drain=False)
    normal.append(_viewer(factory, auto_drain=True))  # a later id than the stopped one
    return Scenario(factory, clock, publisher, stream_id, normal, stopped)


@pytest.fixture
def scenario(factory: RTMPServerFactory, clock: task.Clock) -> Scenario:
    return _scenario(factory, clock)


def test_buffers_names_the_viewer_that_stopped_reading_first(scenario: Scenario) -> None:
    """buffers() lists the stopped viewer first, with the total over every connection."""
    scenario.publish(gops=3)
    console = Console(scenario.factory, LOGIN)
    rows = console.buffers()
    stopped = scenario.stopped.protocol
    assert rows[0]["id"] == stopped.conn_id
    assert rows[0]["queued"] == scenario.stopped.transport.queued > 50_000
    assert rows[0]["role"] == "play live/cam"
    assert all(row["id"] != peer.protocol.conn_id for peer in scenario.normal for row in rows)
    text = repr(rows)
    header, first = text.splitlines()[:2]
    assert header.split() == ["id", "address", "role", "queued", "peak", "lag", "ms", "state"]
    assert first.split()[:2] == [str(stopped.conn_id), stopped.peer]
    assert f"total queued: {scenario.factory.bytes_queued_total():,} bytes" in text


def test_buffers_orders_largest_first_and_keeps_the_top(factory: RTMPServerFactory) -> None:
    """With several viewers holding bytes, buffers(top=n) gives the n largest, largest first."""
    scenario = _scenario(factory, task.Clock())
    small = _viewer(factory, auto_drain=False)  # stops reading later, so holds less
    scenario.publish(gops=2)
    small.transport.drain()
    scenario.publish(gops=1)
    rows = Console(factory, LOGIN).buffers(top=1)
    assert [row["id"] for row in rows] == [scenario.stopped.protocol.conn_id]
    assert "top 1 shown" in repr(rows)
    both = Console(factory, LOGIN).buffers()
    assert [row["id"] for row in both] == [
        scenario.stopped.protocol.conn_id,
        small.protocol.conn_id,
    ]


def test_viewers_shows_queue_drops_lag_and_state(clock: task.Clock) -> None:
    """viewers() gives queued/peak bytes, frames sent, drops by reason, lag and state per viewer."""
    limits = PolicyLimits(drop_low=8_000, drop_high=16_000, max_queue=1 << 24)
    factory = RTMPServerFactory(ServerConfig(limits=limits), reactor=clock)
    scenario = _scenario(factory, clock)
    scenario.publish(gops=4, size=1500)
    rows = {row["id"]: row for row in Console(factory, LOGIN).viewers()}
    stopped = rows[scenario.stopped.protocol.conn_id]
    assert stopped["stream"] == "live/cam"
    assert stopped["queued"] == scenario.stopped.transport.queued
    assert stopped["peak"] >= stopped["queued"] > limits.drop_high
    assert stopped["drop_inter"] > 0 and stopped["drop_keyframe"] > 0 and stopped["drop_audio"] > 0
    assert stopped["lag_ms"] > 0
    assert stopped["state"] == "congested"
    for peer in scenario.normal:
        row = rows[peer.protocol.conn_id]
        assert row["queued"] == 0
        assert sum(row["dropped"].values()) == 0
        assert row["frames_sent"] == peer.protocol.frames_sent > 0
        assert row["state"] == "ok"
    assert len(rows) == 4  # the publisher is not a viewer
    assert Console(factory, LOGIN).viewers("live/other") == []
    assert len(Console(factory, LOGIN).viewers("cam")) == 4


def test_streams_shows_publisher_viewers_bitrates_and_uptime(scenario: Scenario) -> None:
    """streams() gives the publisher's address, the viewer count, kbit/s in/out and uptime."""
    console = Console(scenario.factory, LOGIN, sampler=RateSampler(scenario.factory))
    first = console.streams()[0]
    assert first["kbit_in"] is None  # no sample yet
    console.sampler.sample()
    stream = scenario.factory.find_stream("live", "cam")
    assert stream is not None
    before_in = stream.bytes_in
    before_out = sum(p.protocol.bytes_sent for p in scenario.normal)
    scenario.clock.advance(2)
    scenario.publish(gops=1)
    row = console.streams()[0]
    assert (row["app"], row["name"], row["viewers"]) == ("live", "cam", 4)
    assert row["publisher"] == scenario.publisher.protocol.peer
    assert row["uptime"] == 2.0
    assert row["kbit_in"] == pytest.approx((stream.bytes_in - before_in) * 8 / 2 / 1000)
    sent_out = sum(p.protocol.bytes_sent for p in scenario.normal) - before_out
    assert row["kbit_out"] >= sent_out * 8 / 2 / 1000 > 0
    assert "0:00:02" in repr(console.streams())


def test_memory_reports_queued_bytes_gop_caches_and_gc_counts(scenario: Scenario) -> None:
    """memory() totals transport queues and GOP caches and counts gc objects by type."""
    scenario.publish(gops=1)
    report = Console(scenario.factory, LOGIN).memory()
    stream = scenario.factory.find_stream("live", "cam")
    assert stream is not None
    assert report["queued"] == scenario.factory.bytes_queued_total() > 0
    assert report["queued_connections"] == 1
    assert report["gop_bytes"] == stream.gop_bytes > 0
    assert report["gop_frames"] == len(stream.gop)
    assert len(report["gc_top"]) == 10
    assert report["gc_objects"] >= sum(count for _, count in report["gc_top"])
    if Path("/proc/self/status").exists():
        assert report["rss"] > 1_000_000
    text = repr(report)
    for label in ("RSS", "queued in transports", "GOP caches", "chat histories", "gc-tracked"):
        assert label in text


class _LeakyMixin(ProtocolRoot, unchecked_chain=True):
    """The story's bug: an admit_frame override that forgot super()."""

    def admit_frame(self, frame: Any, size: int) -> bool:
        return True


class _BrokenProtocol(_LeakyMixin, RTMPServerProtocol, unchecked_chain=True):
    """A composition the import-time check would have refused."""


def test_chain_shows_each_hook_path_and_marks_a_lost_super(factory: RTMPServerFactory) -> None:
    """chain() lists the MRO and every hook's path; a lost super() is marked BROKEN."""
    console = Console(factory, LOGIN)
    report = console.chain()
    assert report["class"] == "RTMPServerProtocol"
    assert report["mro"][-3:] == ["Protocol", "BaseProtocol", "object"]
    assert report["hooks"]["admit_frame"] == hook_path(RTMPServerProtocol, "admit_frame")
    assert report["broken"] == {}
    admit_line = next(line for line in repr(report).splitlines() if "admit_frame" in line)
    assert " -> ".join(hook_path(RTMPServerProtocol, "admit_frame")) in admit_line

    broken = console.chain(_BrokenProtocol)
    assert broken["broken"]["admit_frame"][0] == "_LeakyMixin"
    admit_line = next(line for line in repr(broken).splitlines() if "admit_frame" in line)
    assert "_LeakyMixin [BROKEN: never calls super().admit_frame()]" in admit_line
    assert "never reached: BackpressureMixin" in admit_line


def test_kick_disconnects_and_logs_the_key(scenario: Scenario, log_events: list[Any]) -> None:
    """kick(id) drops that connection at once and logs who did it with the key fingerprint."""
    scenario.publish(gops=1)
    stopped = scenario.stopped
    message = Console(scenario.factory, LOGIN).kick(stopped.protocol.conn_id)
    assert stopped.transport.aborted
    assert stopped.protocol.conn_id not in scenario.factory.connections
    assert (
        repr(message) == f"kicked connection {stopped.protocol.conn_id} ({stopped.protocol.peer})"
    )
    (event,) = _console_events(log_events, "kick")
    assert event["fingerprint"] == LOGIN.fingerprint
    assert event["user"] == "admin"
    assert event["console_conn_id"] == stopped.protocol.conn_id
    with pytest.raises(ConsoleError, match="no connection 999"):
        Console(scenario.factory, LOGIN).kick(999)


def test_set_policy_applies_to_existing_viewers_at_once(
    scenario: Scenario, log_events: list[Any]
) -> None:
    """set_policy() changes the limits every connected viewer is judged by, and is logged."""
    scenario.publish(gops=1)
    stopped = scenario.stopped.protocol
    queued = stopped.queued_bytes()
    assert queued < scenario.factory.policy.limits.drop_low
    assert stopped.viewer.dropped["inter"] == 0
    console = Console(scenario.factory, LOGIN)
    report = console.set_policy(drop_low=queued // 2, drop_high=queued * 4)
    assert report["drop_low"] == queued // 2
    scenario.publish(gops=1)
    assert stopped.viewer.dropped["inter"] > 0
    (event,) = _console_events(log_events, "set_policy")
    assert event["fingerprint"] == LOGIN.fingerprint
    assert event["console_changes"]["drop_low"] == (196608, queued // 2)
    with pytest.raises(ValueError, match="drop_low"):
        console.set_policy(drop_low=10**9)
    assert scenario.factory.policy.limits.drop_low == queued // 2


class _ModeratedFactory:
    """Just enough of a factory with chat moderation to see the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.reactor = task.Clock()

    def mute(self, stream: str, nick: str) -> bool:
        self.calls.append(("mute", stream, nick))
        return True

    def unmute(self, stream: str, nick: str) -> bool:
        self.calls.append(("unmute", stream, nick))
        return False

    def clear_history(self, stream: str) -> int:
        self.calls.append(("clear_history", stream))
        return 7


def test_moderation_calls_the_factory_and_is_logged(log_events: list[Any]) -> None:
    """mute/unmute/clear_history call the factory's methods and log the key."""
    factory = _ModeratedFactory()
    console = Console(factory, LOGIN)
    assert repr(console.mute("live/cam", "troll")) == "troll muted in live/cam"
    assert "not unmuted" in repr(console.unmute("live/cam", "troll"))
    assert "7" in repr(console.clear_history("live/cam"))
    assert factory.calls == [
        ("mute", "live/cam", "troll"),
        ("unmute", "live/cam", "troll"),
        ("clear_history", "live/cam"),
    ]
    for action in ("mute", "unmute", "clear_history"):
        (event,) = _console_events(log_events, action)
        assert event["fingerprint"] == LOGIN.fingerprint
    with pytest.raises(ConsoleError, match="'app/name'"):
        console.mute("cam", "troll")


def test_moderation_without_chat_is_a_clear_error() -> None:
    """On a factory without chat moderation, mute() says so instead of an AttributeError."""
    console = Console(object(), LOGIN, sampler=RateSampler(None))
    with pytest.raises(ConsoleError, match=r"no chat moderation: object\.mute\(\)"):
        console.mute("live/cam", "troll")


def test_namespace_has_the_helpers_and_a_safe_exit(factory: RTMPServerFactory) -> None:
    """The namespace holds every helper with a docstring, the objects, and an exit that closes."""
    closed: list[bool] = []
    console = Console(factory, LOGIN)
    namespace = console.namespace(close=lambda: closed.append(True))
    for name in Console.HELPERS:
        assert namespace[name].__doc__
    assert namespace["factory"] is factory
    assert namespace["registry"] is factory.registries
    assert namespace["reactor"] is factory.reactor
    namespace["exit"]()
    assert closed == [True]
    assert "exit()" in repr(namespace["quit"])


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
    key, keys_path = _keys_file(tmp_path)
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
    scenario = _scenario(console_server.factory, task.Clock())
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
