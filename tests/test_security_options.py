"""The hardening options of ``twistd streamserver``: defaults, validation, wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.python import usage
from zope.interface import implementer

from streamserver import tap
from streamserver.auth import AccessRequest, AddressAuthorizer, HTTPCallbackAuthorizer, IAuthorizer
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.security import StreamServerService, read_secret
from streamserver.testing import FakePeer


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_documented_defaults() -> None:
    """Every limit and timeout has the default docs/security.md states."""
    config = _parse().config()
    assert config.max_message_bytes == 16 * 1024 * 1024
    assert (config.min_peer_chunk_size, config.max_peer_chunk_size) == (128, 16 * 1024 * 1024)
    assert config.max_chunk_streams == 64
    assert config.max_command_bytes == 64 * 1024
    assert (config.handshake_timeout, config.connect_timeout) == (10.0, 10.0)
    assert config.publisher_idle_timeout == 30.0
    assert (config.ping_interval, config.ping_timeout) == (30.0, 30.0)
    assert config.shutdown_grace == 3.0
    assert (config.max_connections, config.max_connections_per_ip) == (10_000, 100)
    assert config.max_streams == 1000
    assert config.access.describe() == ("from loopback only (127.0.0.0/8, ::1)", "from anywhere")


def test_options_reach_the_config(tmp_path: Path) -> None:
    """Each option sets its ServerConfig field."""
    keys = tmp_path / "keys"
    keys.write_text("cam secret\n")
    config = _parse(
        "--max-message-bytes", "1000000",
        "--min-peer-chunk-size", "256",
        "--max-peer-chunk-size", "65536",
        "--max-chunk-streams", "16",
        "--max-command-bytes", "8192",
        "--handshake-timeout", "5",
        "--connect-timeout", "6",
        "--publisher-idle-timeout", "7",
        "--ping-interval", "8",
        "--ping-timeout", "9",
        "--shutdown-grace", "1.5",
        "--max-connections", "50",
        "--max-connections-per-ip", "5",
        "--max-streams", "20",
        "--publish-keys", str(keys),
        "--publish-token-secret", "pub",
        "--play-token-secret", "play",
        "--on-publish", "http://127.0.0.1:8080/publish",
        "--on-play", "http://127.0.0.1:8080/play",
        "--callback-timeout", "2",
        "--publish-from", "10.0.0.0/8",
        "--publish-from", "192.168.0.0/16",
    ).config()  # fmt: skip
    assert config.max_message_bytes == 1_000_000
    assert (config.min_peer_chunk_size, config.max_peer_chunk_size) == (256, 65536)
    assert (config.max_chunk_streams, config.max_command_bytes) == (16, 8192)
    assert (config.handshake_timeout, config.connect_timeout) == (5, 6)
    assert (config.publisher_idle_timeout, config.ping_interval, config.ping_timeout) == (7, 8, 9)
    assert config.shutdown_grace == 1.5
    assert (config.max_connections, config.max_connections_per_ip, config.max_streams) == (
        50,
        5,
        20,
    )
    access = config.access
    assert access.publish_keys_file == str(keys)
    assert (access.publish_token_secret, access.play_token_secret) == ("pub", "play")
    assert access.on_publish == "http://127.0.0.1:8080/publish"
    assert access.on_play == "http://127.0.0.1:8080/play"
    assert access.callback_timeout == 2
    assert access.publish_from == ("10.0.0.0/8", "192.168.0.0/16")
    factory = RTMPServerFactory(config, reactor=task.Clock())
    names = [a.name for a in factory.authorizer.authorizers]  # type: ignore[attr-defined]
    assert names == [
        "publish-from",
        "publish-keys",
        "publish-token",
        "play-token",
        "on-publish",
        "on-play",
    ]
    assert isinstance(factory.authorizer.authorizers[-1], HTTPCallbackAuthorizer)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-message-bytes", "0"],
        ["--max-message-bytes", str(16 * 1024 * 1024 + 1)],
        ["--min-peer-chunk-size", "0"],
        ["--min-peer-chunk-size", "5000", "--max-peer-chunk-size", "4096"],
        ["--max-chunk-streams", "0"],
        ["--handshake-timeout", "-1"],
        ["--max-connections", "-5"],
        ["--publish-keys", "/nonexistent/keys"],
        ["--publish-from", "10.0.0.0/33"],
        ["--on-publish", "ftp://example.com/"],
        ["--publish-token-secret", "env:STREAMSERVER_TEST_UNSET_VARIABLE"],
        ["--authorizer", "streamserver.nothing.here"],
        ["--authorizer", "streamserver.auth.LOOPBACK_NETWORKS"],
    ],
)
def test_bad_values_are_usage_errors(argv: list[str]) -> None:
    """Out-of-range values, unreadable files and bad names are refused at start."""
    with pytest.raises(usage.UsageError):
        _parse(*argv)


def test_a_malformed_keys_file_is_a_usage_error(tmp_path: Path) -> None:
    """A keys file line without NAME SECRET stops the server from starting."""
    keys = tmp_path / "keys"
    keys.write_text("only-a-name\n")
    with pytest.raises(usage.UsageError, match="keys:1"):
        _parse("--publish-keys", str(keys))


def test_secrets_can_stay_out_of_the_process_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env:NAME and file:PATH read a token secret from the environment or a file."""
    monkeypatch.setenv("STREAMSERVER_TEST_SECRET", "from-env")
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\nignored\n")
    assert read_secret("env:STREAMSERVER_TEST_SECRET") == "from-env"
    assert read_secret(f"file:{secret_file}") == "from-file"
    assert read_secret("plain") == "plain"
    options = _parse("--play-token-secret", f"file:{secret_file}")
    assert options.config().access.play_token_secret == "from-file"


@implementer(IAuthorizer)
class OnlyCams:
    """A plug-in authorizer for the test: only names starting with "cam"."""

    name = "only-cams"

    def authorize_publish(self, request: AccessRequest) -> bool:
        return request.name.startswith("cam")

    def authorize_play(self, request: AccessRequest) -> bool:
        return request.name.startswith("cam")


def test_authorizer_plugins_are_loaded_and_asked() -> None:
    """--authorizer NAME loads a class (instantiated) or an instance and asks it."""
    config = _parse("--authorizer", f"{__name__}.OnlyCams").config()
    factory = RTMPServerFactory(config, reactor=task.Clock())
    chain = factory.authorizer.authorizers  # type: ignore[attr-defined]
    assert isinstance(chain[0], AddressAuthorizer) and isinstance(chain[1], OnlyCams)
    viewer = FakePeer(factory)
    viewer.connect("live")
    sid = viewer.create_stream()
    viewer.play("dog", sid)
    assert viewer.statuses(new=False)[-1] == "NetStream.Play.Unauthorized"
    viewer.play("cam1", sid)
    assert "NetStream.Play.Start" in viewer.statuses(new=False)


def test_help_documents_the_hardening_options() -> None:
    """--help lists every hardening option."""
    text = str(tap.Options())
    for option in (
        "--max-message-bytes", "--min-peer-chunk-size", "--max-peer-chunk-size",
        "--max-chunk-streams", "--max-command-bytes", "--handshake-timeout",
        "--connect-timeout", "--publisher-idle-timeout", "--ping-interval", "--ping-timeout",
        "--shutdown-grace", "--max-connections", "--max-connections-per-ip", "--max-streams",
        "--publish-keys", "--publish-token-secret", "--play-token-secret", "--on-publish",
        "--on-play", "--callback-timeout", "--publish-from", "--authorizer",
    ):  # fmt: skip
        assert option in text, option


def test_stopping_the_service_waits_for_the_shutdown() -> None:
    """stopService fires only once every connection closed (or the grace ran out)."""
    clock = task.Clock()
    factory = RTMPServerFactory(ServerConfig(shutdown_grace=2.0), reactor=clock)
    service = StreamServerService(factory)
    service.startService()
    viewer = FakePeer(factory, clock=clock)
    viewer.connect("live")
    viewer.transport.loseConnection = lambda: None  # type: ignore[method-assign]
    results: list[Any] = []
    stopped: defer.Deferred[Any] = service.stopService()
    stopped.addBoth(results.append)
    clock.advance(1.0)
    assert results == []
    clock.advance(1.5)
    assert len(results) == 1 and not isinstance(results[0], Exception)
    assert viewer.transport.aborted


def test_make_service_builds_the_stopping_tree() -> None:
    """makeService returns the StreamServerService holding the factory."""
    service = tap.makeService(_parse("--rtmp", "tcp:0:interface=127.0.0.1"))
    assert isinstance(service, StreamServerService)
    assert isinstance(service.factory, RTMPServerFactory)
