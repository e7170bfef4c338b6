"""The options table: every option declared once, and what follows from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.python import usage

from streamserver import tap
from streamserver.config import ConfigError, ServerConfig
from streamserver.options import OPTIONS, Option, usage_error
from streamserver.policy import PolicyLimits

ROOT = Path(__file__).resolve().parent.parent


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_flags_are_unique() -> None:
    """No two rows declare the same flag or set the same field."""
    flags = [option.flag for option in OPTIONS]
    paths = [path for option in OPTIONS for path in option.paths]
    assert len(flags) == len(set(flags))
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flag)
def test_every_field_is_a_config_field(option: Option) -> None:
    """Each row's field path names a ServerConfig field (or a nested one)."""
    for path in option.paths:
        ServerConfig.from_settings({path: option.settings(option.default)[path]})


def test_no_arguments_describe_the_default_config() -> None:
    """With no arguments the options build exactly ServerConfig()'s defaults."""
    assert _parse().config() == ServerConfig()


def test_policy_options_reach_the_limits() -> None:
    """The drop-policy options and --no-drop set the fields of config.limits."""
    config = _parse(
        "--drop-low", "1000", "--drop-high", "2000", "--max-queue", "3000",
        "--stall-timeout", "2.5", "--max-lag-ms", "1200", "--no-drop",
    ).config()  # fmt: skip
    assert config.limits == PolicyLimits(
        drop_low=1000,
        drop_high=2000,
        max_queue=3000,
        stall_timeout=2.5,
        max_lag_ms=1200,
        enabled=False,
    )


def test_socket_options_reach_the_config() -> None:
    """--notsent-lowat and --send-buffer set their fields."""
    config = _parse("--notsent-lowat", "0", "--send-buffer", "65536").config()
    assert (config.notsent_lowat, config.send_buffer) == (0, 65536)


def test_hls_options_reach_the_config() -> None:
    """--hls and its tuning options set their fields; 100 ms parts are the shortest allowed."""
    config = _parse(
        "--hls", "always", "--hls-segment-seconds", "1", "--hls-part-ms", "100",
        "--hls-window", "5", "--hls-max-bytes", "8388608", "--hls-idle-timeout", "0",
    ).config()  # fmt: skip
    assert (config.hls, config.hls_segment_seconds, config.hls_part_ms) == ("always", 1.0, 100)
    assert (config.hls_window, config.hls_max_bytes, config.hls_idle_timeout) == (5, 8388608, 0)
    assert _parse("--hls", "off").config().hls == "off"
    assert ServerConfig().hls == "on-demand"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--chunk-size", "64"], "--chunk-size"),
        (["--gop-cache-bytes", "-1"], "--gop-cache-bytes"),
        (["--drop-low", "0"], "--drop-low"),
        (["--stall-timeout", "0"], "--stall-timeout"),
        (["--max-lag-ms", "-1"], "--max-lag-ms"),
        (["--chat-rate", "0/10"], "--chat-rate"),
        (["--chat-rate", "5/0"], "--chat-rate"),
        (["--max-message-bytes", "0"], "--max-message-bytes"),
        (["--min-peer-chunk-size", "0"], "--min-peer-chunk-size"),
        (["--max-connections-per-ip", "-1"], "--max-connections-per-ip"),
        (["--callback-timeout", "-1"], "--callback-timeout"),
        (["--ping-interval", "nan"], "--ping-interval"),
        (["--hls-part-ms", "99"], "--hls-part-ms"),
        (["--hls-part-ms", "3000"], "--hls-part-ms"),
        (["--hls-segment-seconds", "0"], "--hls-segment-seconds"),
        (["--hls-window", "2"], "--hls-window"),
        (["--hls-max-bytes", "1000"], "--hls-max-bytes"),
        (["--hls-idle-timeout", "-1"], "--hls-idle-timeout"),
    ],
)
def test_a_value_out_of_range_names_its_flag(argv: list[str], flag: str) -> None:
    """A value ServerConfig.validate refuses is a usage error that names the flag."""
    with pytest.raises(usage.UsageError) as raised:
        _parse(*argv)
    assert flag in str(raised.value)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--chunk-size", "big"], "--chunk-size"),
        (["--chat-rate", "a/b"], "--chat-rate"),
        (["--publish-from", "10.0.0.0/33"], "--publish-from"),
        (["--on-play", "ftp://example.com/"], "--on-play"),
        (["--play-token-secret", "file:/nonexistent/secret"], "--play-token-secret"),
        (["--hls", "sometimes"], "--hls"),
    ],
)
def test_an_unparsable_value_names_its_flag(argv: list[str], flag: str) -> None:
    """An argument its parser refuses is a usage error that names the flag."""
    with pytest.raises(usage.UsageError, match=f"^{flag}: "):
        _parse(*argv)


def test_an_error_on_a_nested_field_names_every_flag_under_it() -> None:
    """A ConfigError naming only a nested config names all the flags that set it."""
    message = str(usage_error(ConfigError("inconsistent", "limits")))
    for flag in ("--drop-low", "--drop-high", "--max-queue", "--stall-timeout", "--no-drop"):
        assert flag in message


def test_repeatable_options_keep_their_order() -> None:
    """Each --rtmp and --publish-from adds its value after the earlier ones."""
    options = _parse("--rtmp", "tcp:1", "--rtmp", "tcp:2", "--publish-from", "10.0.0.0/8")
    assert options["rtmp"] == ["tcp:1", "tcp:2"]
    assert options.config().access.publish_from == ("10.0.0.0/8",)


def test_options_do_not_share_their_lists() -> None:
    """A repeatable option given to one Options object does not leak into the next."""
    _parse("--rtmp", "tcp:1")
    assert tap.Options()["rtmp"] == []


# --- the help and the README's options table follow the rows


def _help_lines() -> dict[str, str]:
    """Each option's line of ``--help``, by flag (wide enough that none wraps)."""
    text = tap.Options().getUsage(width=10_000)
    lines = {}
    for line in text.splitlines():
        found = re.match(r"\s+(?:-\w, )?--([\w-]+)=?\s+(.*)$", line)
        if found:
            lines[found[1]] = found[2]
    return lines


def _readme_rows() -> dict[str, tuple[str, str]]:
    """The README's options table: flag -> (placeholder, default), backticks removed."""
    text = (ROOT / "README.md").read_text()
    table = text.split("| option | default | meaning |\n|---|---|---|\n", 1)[1]
    rows = {}
    for line in table.splitlines():
        if not line.startswith("|"):
            break
        names, default = line.split("|", 3)[1:3]
        for flag, placeholder in re.findall(r"`--([a-z0-9-]+) ?([^`]*)`", names):
            rows[flag] = (placeholder, default.replace("`", "").strip())
    return rows


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flag)
def test_help_shows_every_option_with_its_default(option: Option) -> None:
    """twistd streamserver --help lists every row, with the default the row shows."""
    line = _help_lines()[option.flag]
    shown = re.search(r"\[default: (.*)\]$", line)
    if option.parse is None:
        assert shown is None and option.default_text() == "off"
    else:
        assert shown is not None and shown[1] == option.default_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flag)
def test_the_readme_table_states_every_option_and_its_default(option: Option) -> None:
    """The README's options table has a row per option, with its placeholder and default."""
    assert _readme_rows()[option.flag] == (option.metavar, option.default_text())


def test_the_readme_table_names_no_other_option() -> None:
    """Every option in the README's table is a row of the options table."""
    assert set(_readme_rows()) <= {option.flag for option in OPTIONS}


def test_docs_security_names_only_declared_options() -> None:
    """The option tables of docs/security.md name only options that exist."""
    flags = {option.flag for option in OPTIONS}
    for line in (ROOT / "docs" / "security.md").read_text().splitlines():
        if line.startswith("| `--"):
            for flag in re.findall(r"`--([a-z0-9-]+)", line.split("|", 2)[1]):
                assert flag in flags, line
