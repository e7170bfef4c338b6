"""--config FILE: keys onto the option rows, their lines, precedence and --check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from streamserver import tap
from streamserver.config import ConfigError
from streamserver.configfile import ConfigFileError, effective, key_lines, load
from streamserver.factory import RTMPServerFactory
from streamserver.options import OPTIONS


def _write(tmp_path: Path, text: str, name: str = "streamserver.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_key_lines_finds_tables_dotted_and_quoted_keys() -> None:
    """Each key's line is found under its table, for dotted and quoted keys too."""
    text = (
        "# a comment\n"  # 1
        "[server]\n"  # 2
        "max-connections = 10\n"  # 3
        'text = """\n'  # 4
        "fake-key = 1\n"  # 5: inside a multi-line string
        '"""\n'  # 6
        '[app."*"]\n'  # 7
        "drop-low = 5\n"  # 8
        "[ app . 'studio' ]\n"  # 9
        '  "drop-high" = 6  # trailing\n'  # 10
        'app.test.hls = "off"\n'  # 11: a dotted key inside [app.studio]
    )
    lines = key_lines(text)
    assert lines[("server",)] == 2
    assert lines[("server", "max-connections")] == 3
    assert ("server", "fake-key") not in lines
    assert lines[("app", "*")] == 7
    assert lines[("app", "*", "drop-low")] == 8
    assert lines[("app", "studio")] == 9
    assert lines[("app", "studio", "drop-high")] == 10
    assert lines[("app", "studio", "app", "test", "hls")] == 11


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("[server]\nmax-conections = 5\n", 2, "server.max-conections", "mean 'max-connections'"),
        ("\n[app.studio]\ndrop-lo = 5\n", 3, "app.studio.drop-lo", "did you mean 'drop-low'"),
        ("[server]\ndrop-low = 5\n", 2, "server.drop-low", 'under [app."*"]'),
        ('[app."*"]\nmax-streams = 5\n', 2, 'app."*".max-streams', "under [server]"),
        ("[server]\nmax-streams = '5'\n", 2, "server.max-streams", "expected an integer"),
        ("[server]\nmax-streams = true\n", 2, "server.max-streams", "expected an integer"),
        ("[server]\nping-interval = 'x'\n", 2, "server.ping-interval", "expected a number"),
        ("[app.live]\nno-drop = 1\n", 2, "app.live.no-drop", "expected a boolean"),
        ("[server]\nmax-streams = -1\n", 2, "server.max-streams", "--max-streams must not be"),
        ("[server]\n\nchunk-size = 64\n", 3, "server.chunk-size", "--chunk-size must be between"),
        ("[app.x]\ndrop-low = 900000000\n", 2, "app.x.drop-low", "--drop-low"),
        ("[app.x]\nhls = 'sometimes'\n", 2, "app.x.hls", "must be one of"),
        ("[server]\nrtmp = ['tcp:notaport']\n", 2, "server.rtmp", "bad endpoint"),
        ("[server]\nhttp = 'nosuchtype:80'\n", 2, "server.http", "bad endpoint"),
        ("[app.x]\npublish-from = ['10.0.0.0/33']\n", 2, "app.x.publish-from", ""),
        ("[servers]\n", 1, "servers", "did you mean 'server'"),
        ("[server]\nconfig = 'other.toml'\n", 2, "server.config", "unknown key"),
        ("[app]\nstudio = 3\n", 2, "app.studio", "must be a table"),
        ('[app."a/b"]\n', 1, 'app."a/b"', "application name"),
        ("[server]\nmax-streams = \n", 2, "", "Invalid value"),
    ],
)
def test_mistakes_name_the_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    """Every mistake is refused at start with FILE:LINE: KEY: and what is wrong."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        effective({}, (), path)
    error = caught.value
    assert (error.path, error.line, error.key) == (path, line, key)
    assert str(error).startswith(f"{path}:{line}: {key + ': ' if key else ''}")
    assert message in str(error)
    with pytest.raises(usage.UsageError, match=re.escape(f"{path}:{line}")):
        _parse("--config", path)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A missing file is a usage error naming it."""
    with pytest.raises(usage.UsageError, match=r"missing\.toml: cannot read"):
        _parse("--config", str(tmp_path / "missing.toml"))


def test_values_go_through_the_options_parsers(tmp_path: Path) -> None:
    """Integers, floats, booleans, strings and arrays reach the same fields the flags set."""
    path = _write(
        tmp_path,
        "[server]\n"
        "rtmp = 'tcp:0:interface=127.0.0.1'\n"
        "http = ['tcp:0:interface=127.0.0.1', 'tcp6:0:interface=\\:\\:1']\n"
        "max-connections = 12\n"
        "ping-interval = 7\n"
        "api-token = 'tok'\n"
        "chat-rate = '3/5'\n"
        '[app."*"]\n'
        "no-drop = true\n"
        "publish-from = '10.0.0.0/8'\n",
    )
    options = _parse("--config", path)
    config = options.config()
    assert options["rtmp"] == ["tcp:0:interface=127.0.0.1"]
    assert len(options["http"]) == 2
    assert (config.max_connections, config.ping_interval, config.api_token) == (12, 7.0, "tok")
    assert (config.chat_rate, config.chat_rate_window) == (3, 5.0)
    assert config.limits.enabled is False
    assert list(config.access.publish_from) == ["10.0.0.0/8"]


def test_the_command_line_overrides_the_file(tmp_path: Path) -> None:
    """A flag given on the command line wins over [server], [app."*"] and [app.NAME]."""
    path = _write(
        tmp_path,
        "[server]\nmax-connections = 12\nmax-streams = 3\n"
        '[app."*"]\ndrop-low = 1000\n'
        "[app.studio]\ndrop-low = 2000\ngop-cache-bytes = 5\n",
    )
    options = _parse("--config", path, "--max-connections", "99", "--drop-low", "3000")
    config = options.config()
    assert (config.max_connections, config.max_streams) == (99, 3)
    assert config.limits.drop_low == 3000
    studio = options.app_configs()["studio"]
    assert studio.limits.drop_low == 3000
    assert studio.gop_cache_bytes == 5


def test_each_app_resolves_its_table_over_the_default_over_the_server(tmp_path: Path) -> None:
    """[app.NAME] > [app."*"] > [server] > defaults; an unnamed app takes the server's."""
    path = _write(
        tmp_path,
        "[server]\nmax-streams = 50\n"
        '[app."*"]\ngop-cache-bytes = 1000\nchat-max-length = 100\n'
        "[app.studio]\ngop-cache-bytes = 2000\npublish-token-secret = 's'\n",
    )
    options = _parse("--config", path)
    factory = RTMPServerFactory(options.config(), reactor=Clock())
    factory.set_app_configs(options.app_configs())
    studio, other = factory.settings_for("studio"), factory.settings_for("anything")
    assert (studio.gop_cache_bytes, other.gop_cache_bytes) == (2000, 1000)
    assert (studio.chat_max_length, other.chat_max_length) == (100, 100)
    assert (studio.max_streams, other.max_streams) == (50, 50)
    assert studio.access.publish_token_secret == "s"
    assert other.access.publish_token_secret is None
    assert other is factory.config
    assert factory.authorizer_for("anything") is factory.authorizer
    assert factory.authorizer_for("studio") is not factory.authorizer
    assert factory.registry("studio").gop_cache_bytes == 2000
    assert factory.viewer_server("anything") is factory
    assert factory.viewer_server("studio").policy is not factory.policy


def test_an_app_range_error_names_the_table_that_set_it(tmp_path: Path) -> None:
    """A value that is wrong only with the app's other values names the app's key."""
    path = _write(
        tmp_path,
        '[app."*"]\ndrop-low = 100000\n\n[app.studio]\ndrop-high = 50000\n',
    )
    with pytest.raises(ConfigFileError) as caught:
        effective({}, (), path)
    assert (caught.value.line, caught.value.key) == (5, "app.studio.drop-high")


def test_every_file_key_is_an_option_row() -> None:
    """Each row has a scope; --config and --check are no keys of the file."""
    assert {o.scope for o in OPTIONS} == {"server", "app"}
    assert [o.flag for o in OPTIONS if not o.in_file] == ["config", "check"]


def test_check_prints_the_effective_configuration_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check prints every key, secrets as ***, each app's own keys, and exits 0."""
    path = _write(
        tmp_path,
        "[server]\napi-token = 'hunter2'\nmax-streams = 7\n"
        "[app.studio]\npublish-token-secret = 'sesame'\ndrop-low = 1000\n",
    )
    with pytest.raises(SystemExit) as caught:
        _parse("--config", path, "--check")
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "sesame" not in out
    assert 'api-token = "***"' in out
    assert "max-streams = 7" in out
    assert '[app.studio]\npublish-token-secret = "***"\ndrop-low = 1000\n' in out
    assert load(path).apps["studio"]["drop-low"] == 1000


def test_check_exits_1_with_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check on a bad file prints FILE:LINE: KEY and exits 1."""
    path = _write(tmp_path, "[server]\n\nmax-streams = 'many'\n")
    with pytest.raises(SystemExit) as caught:
        _parse("--config", path, "--check")
    assert caught.value.code == 1
    assert f"{path}:3: server.max-streams: expected an integer" in capsys.readouterr().err


def test_a_command_line_error_still_names_the_flag() -> None:
    """Without a file, a range error is the usage error naming --flag, as before."""
    with pytest.raises(usage.UsageError, match="--chunk-size"):
        _parse("--chunk-size", "64")
    assert issubclass(ConfigFileError, ConfigError)


def test_the_chat_rate_is_server_wide(tmp_path: Path) -> None:
    """chat-rate belongs in [server]: a connection's limiter exists before its app is known."""
    path = _write(tmp_path, "[app.live]\nchat-rate = '3/5'\n")
    with pytest.raises(ConfigFileError, match="a server-wide key"):
        effective({}, (), path)
