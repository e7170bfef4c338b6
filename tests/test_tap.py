"""twistd options and service construction (no listening)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from streamserver import tap
from streamserver.media.stream import DEFAULT_GOP_CACHE_BYTES


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_listen_on_1935() -> None:
    """With no options the server listens on tcp:1935 with 4096-byte chunks."""
    options = _parse()
    assert options["rtmp"] == ["tcp:1935"]
    assert options["http"] == ["tcp:8080"]
    assert options["chunk-size"] == 4096
    assert options["gop-cache-bytes"] == DEFAULT_GOP_CACHE_BYTES


def test_rtmp_may_be_given_more_than_once() -> None:
    """Each --rtmp adds a listener."""
    options = _parse("--rtmp", "tcp:0:interface=127.0.0.1", "--rtmp", "tcp6:0", "--no-http")
    assert options["rtmp"] == ["tcp:0:interface=127.0.0.1", "tcp6:0"]
    service = tap.makeService(options)
    assert sorted(s.name for s in service) == ["rtmp:tcp6:0", "rtmp:tcp:0:interface=127.0.0.1"]


def test_http_listens_by_default_and_may_be_turned_off() -> None:
    """One HTTP listener per --http (tcp:8080 without any); --no-http turns HTTP off."""
    service = tap.makeService(_parse("--http", "tcp:0", "--http", "unix:/nonexistent/s"))
    assert sorted(s.name for s in service if s.name.startswith("http:")) == [
        "http:tcp:0",
        "http:unix:/nonexistent/s",
    ]
    assert not [s for s in tap.makeService(_parse("--no-http")) if s.name.startswith("http:")]
    with pytest.raises(usage.UsageError, match="--no-http"):
        _parse("--no-http", "--http", "tcp:0")


def test_options_reach_the_factory() -> None:
    """--chunk-size and --gop-cache-bytes configure the factory."""
    service = tap.makeService(_parse("--chunk-size", "8192", "--gop-cache-bytes", "0"))
    config = service.factory.config  # type: ignore[attr-defined]
    assert config.chunk_size == 8192
    assert config.gop_cache_bytes == 0


@pytest.mark.parametrize(
    "argv",
    [["--chunk-size", "64"], ["--chunk-size", "70000"], ["--gop-cache-bytes", "-1"]],
)
def test_bad_values_are_refused(argv: list[str]) -> None:
    """Out-of-range values are usage errors, not silently clamped."""
    with pytest.raises(usage.UsageError):
        _parse(*argv)


def test_help_documents_every_option() -> None:
    """--help names every option with a description."""
    text = str(tap.Options())
    for option in ("--rtmp", "--chunk-size", "--gop-cache-bytes"):
        assert option in text
    assert "endpoint" in text.lower()


def _twistd() -> str | None:
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else shutil.which("twistd")


def test_twistd_lists_the_plugin() -> None:
    """The installed plugin makes `twistd streamserver --help` work."""
    twistd = _twistd()
    if twistd is None:
        pytest.skip("twistd not found")
    listing = subprocess.run(
        [twistd, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if "streamserver" not in listing.stdout:
        pytest.skip("package not installed as a twistd plugin (see README)")
    result = subprocess.run(
        [twistd, "streamserver", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "--chunk-size" in result.stdout
    assert "--gop-cache-bytes" in result.stdout
    assert "--rtmp" in result.stdout


def test_irc_is_off_unless_given_and_repeatable() -> None:
    """No IRC listener by default; one per --irc, sharing one gateway of the factory."""
    assert not [s for s in tap.makeService(_parse()) if s.name.startswith("irc:")]
    service = tap.makeService(_parse("--irc", "tcp:0", "--irc", "tcp6:0"))
    listeners = [s for s in service if s.name.startswith("irc:")]
    assert sorted(s.name for s in listeners) == ["irc:tcp6:0", "irc:tcp:0"]
    gateways = {id(s.factory) for s in listeners}  # type: ignore[attr-defined]
    assert len(gateways) == 1
    assert listeners[0].factory.server is service.factory  # type: ignore[attr-defined]
