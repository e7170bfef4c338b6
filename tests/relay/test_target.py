"""Relay URLs and rules: rtmp://HOST[:PORT]/APP[/NAME], PATTERN=URL."""

from __future__ import annotations

import pytest

from streamserver.config import ConfigError, ServerConfig
from streamserver.errors import RelayUrlError
from streamserver.relay.target import parse_rule, parse_target


def test_target_of_a_url_names_a_tcp_endpoint_app_and_name() -> None:
    """rtmp://HOST:PORT/APP/NAME is a TCP endpoint, the app, the name and a tcUrl."""
    target = parse_target("rtmp://origin.example:1936/live/cam")
    assert target.endpoint == "tcp:host=origin.example:port=1936:timeout=10"
    assert (target.app, target.name) == ("live", "cam")
    assert target.tc_url == "rtmp://origin.example:1936/live"
    assert target.url == "rtmp://origin.example:1936/live/cam"


def test_target_without_name_takes_the_local_name_and_the_default_port() -> None:
    """Without NAME the local stream's name is used upstream; the port defaults to 1935."""
    target = parse_target("rtmp://10.0.0.1/live")
    assert target.endpoint == "tcp:host=10.0.0.1:port=1935:timeout=10"
    assert target.name is None
    assert target.stream_name("cam") == "cam"
    assert target.for_name("cam") == "rtmp://10.0.0.1:1935/live/cam"


def test_ipv6_host_is_escaped_for_the_endpoint() -> None:
    """An IPv6 literal becomes a tcp6 endpoint with its colons escaped."""
    target = parse_target("rtmp://[::1]:1935/live")
    assert target.endpoint == "tcp6:host=\\:\\:1:port=1935:timeout=10"
    assert target.url == "rtmp://[::1]:1935/live"


@pytest.mark.parametrize(
    "url",
    [
        "http://host/live",
        "rtmp:///live",
        "rtmp://host",
        "rtmp://host/",
        "rtmp://host:notaport/live",
        "rtmp://host/live?key=1",
        "rtmp://user:pw@host/live",
        "live/cam",
    ],
)
def test_anything_else_is_a_relay_url_error(url: str) -> None:
    """Other schemes, no host, no app, a query or credentials are refused clearly."""
    with pytest.raises(RelayUrlError):
        parse_target(url)


def test_name_required_or_refused() -> None:
    """A static pull needs a NAME; a --pull URL must not have one."""
    with pytest.raises(RelayUrlError, match="no stream name"):
        parse_target("rtmp://host/live", with_name=True)
    with pytest.raises(RelayUrlError, match="names a stream"):
        parse_target("rtmp://host/live/cam", with_name=False)


def test_rules_match_every_stream_an_app_or_a_pattern() -> None:
    """URL matches every stream; APP=URL that app; PATTERN=URL fnmatch on APP/NAME."""
    every = parse_rule("rtmp://a/live")
    app = parse_rule("live=rtmp://a/live")
    pattern = parse_rule("live/cam*=rtmp://a/ingest/backup")
    assert every.matches("other", "x")
    assert app.matches("live", "x") and not app.matches("other", "x")
    assert pattern.matches("live", "cam2") and not pattern.matches("live", "tv")
    assert pattern.target.name == "backup"
    with pytest.raises(RelayUrlError, match="empty pattern"):
        parse_rule("=rtmp://a/live")


def test_config_refuses_bad_relay_urls_and_ranges() -> None:
    """ServerConfig names the field of a bad relay URL or timing."""
    with pytest.raises(ConfigError) as caught:
        ServerConfig(push=("ftp://x/live",))
    assert caught.value.fields == ("push",)
    with pytest.raises(ConfigError) as caught:
        ServerConfig(pull=("rtmp://x/live/cam",))
    assert caught.value.fields == ("pull",)
    with pytest.raises(ConfigError) as caught:
        ServerConfig(pull_static=("rtmp://x/live",))
    assert caught.value.fields == ("pull_static",)
    with pytest.raises(ConfigError):
        ServerConfig(relay_reconnect_seconds=0)
    with pytest.raises(ConfigError):
        ServerConfig(pull_idle_seconds=-1)
