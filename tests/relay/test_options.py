"""The relay options: refused clearly when wrong, handed to the factory when right."""

from __future__ import annotations

import pytest
from twisted.python import usage

from streamserver import tap


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--push", "http://cdn/live"], "--push"),
        (["--pull", "rtmp://origin/live/cam"], "--pull"),
        (["--pull-static", "rtmp://origin/live"], "--pull-static"),
        (["--relay-reconnect-seconds", "0"], "--relay-reconnect-seconds"),
    ],
)
def test_bad_relay_options_are_usage_errors_naming_the_flag(argv: list[str], flag: str) -> None:
    """twistd refuses a bad relay URL or timing at start, naming the option."""
    options = tap.Options()
    with pytest.raises(usage.UsageError, match=flag):
        options.parseOptions(["--no-http", *argv])
        tap.makeService(options)


def test_relay_options_reach_the_factory() -> None:
    """--push / --pull / --pull-static become the factory's sources and routers."""
    options = tap.Options()
    options.parseOptions(
        [
            "--no-http",
            "--push",
            "live=rtmp://cdn.test/live",
            "--pull",
            "rtmp://a.test/live",
            "--pull",
            "rtmp://b.test:1936/live",
            "--relay-reconnect-seconds",
            "1.5",
        ]
    )
    factory = tap.makeService(options).factory  # type: ignore[attr-defined]
    assert factory.config.relay_reconnect_seconds == 1.5
    (source,) = factory.pushes.sources
    assert [r.target.url for r in source.rules_for("live")] == ["rtmp://cdn.test:1935/live"]
    (router,) = factory.pulls.routers
    assert [r.target.url for r in router.rules_for("live")] == [
        "rtmp://a.test:1935/live",
        "rtmp://b.test:1936/live",
    ]
