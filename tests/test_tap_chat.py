"""The chat options of twistd streamserver."""

from __future__ import annotations

import pytest
from twisted.python import usage

from streamserver import tap


def _config(*argv: str):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options.config()


def test_chat_defaults() -> None:
    """500 characters, 5 messages per 10 s, 50 messages of history."""
    config = _config()
    assert config.chat_max_length == 500
    assert (config.chat_rate, config.chat_rate_window) == (5, 10.0)
    assert config.chat_history == 50


def test_chat_options_reach_the_config() -> None:
    """--chat-max-length, --chat-rate N/S and --chat-history configure the server."""
    config = _config("--chat-max-length", "80", "--chat-rate", "3/2.5", "--chat-history", "0")
    assert config.chat_max_length == 80
    assert (config.chat_rate, config.chat_rate_window) == (3, 2.5)
    assert config.chat_history == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--chat-rate", "5"],
        ["--chat-rate", "0/10"],
        ["--chat-rate", "5/0"],
        ["--chat-rate", "a/b"],
        ["--chat-max-length", "0"],
        ["--chat-history", "-1"],
    ],
)
def test_bad_chat_values_are_refused(argv: list[str]) -> None:
    """Malformed or out-of-range chat options are usage errors."""
    with pytest.raises(usage.UsageError):
        _config(*argv)


def test_help_documents_the_chat_options() -> None:
    """--help names every chat option."""
    text = str(tap.Options())
    for option in ("--chat-max-length", "--chat-rate", "--chat-history"):
        assert option in text
