"""ServerConfig checks its own ranges and names the field that is out of one."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from streamserver import factory
from streamserver.auth import AccessConfig
from streamserver.config import MAX_MESSAGE_BYTES, ConfigError, ServerConfig
from streamserver.policy import PolicyLimits


def test_the_defaults_are_valid() -> None:
    """The default configuration passes its own validation."""
    ServerConfig().validate()


def test_the_factory_module_still_exports_it() -> None:
    """ServerConfig stays importable from streamserver.factory."""
    assert factory.ServerConfig is ServerConfig


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"chunk_size": 127}, ("chunk_size",)),
        ({"chunk_size": 65537}, ("chunk_size",)),
        ({"gop_cache_bytes": -1}, ("gop_cache_bytes",)),
        ({"max_message_bytes": 0}, ("max_message_bytes",)),
        ({"max_message_bytes": MAX_MESSAGE_BYTES + 1}, ("max_message_bytes",)),
        ({"min_peer_chunk_size": 0}, ("min_peer_chunk_size", "max_peer_chunk_size")),
        (
            {"min_peer_chunk_size": 5000, "max_peer_chunk_size": 4096},
            ("min_peer_chunk_size", "max_peer_chunk_size"),
        ),
        ({"max_chunk_streams": 0}, ("max_chunk_streams",)),
        ({"handshake_timeout": -1.0}, ("handshake_timeout",)),
        ({"ping_timeout": float("nan")}, ("ping_timeout",)),
        ({"max_connections": -5}, ("max_connections",)),
        ({"send_buffer": -1}, ("send_buffer",)),
        ({"chat_max_length": 0}, ("chat_max_length",)),
        ({"chat_rate": 0}, ("chat_rate",)),
        ({"chat_rate_window": 0.0}, ("chat_rate_window",)),
        ({"chat_history": -1}, ("chat_history",)),
        ({"watchdog_interval": 0.0}, ("watchdog_interval",)),
        ({"access": AccessConfig(callback_timeout=-1.0)}, ("access.callback_timeout",)),
        ({"record_format": "mkv"}, ("record_format",)),
        ({"record_apps": ("live/*,",)}, ("record_apps",)),
        ({"record_segment_seconds": 0.5}, ("record_segment_seconds",)),
        ({"record_max_bytes": 1000}, ("record_max_bytes",)),
        ({"record_max_bytes": -1}, ("record_max_bytes",)),
        ({"record_flush_seconds": 0.0}, ("record_flush_seconds",)),
        ({"record_reconnect_grace": -1.0}, ("record_reconnect_grace",)),
        ({"record_delete_after": float("nan")}, ("record_delete_after",)),
    ],
)
def test_a_value_out_of_range_names_its_field(
    changes: dict[str, Any], fields: tuple[str, ...]
) -> None:
    """Building a config with a value out of range raises ConfigError naming the field."""
    with pytest.raises(ConfigError) as raised:
        ServerConfig(**changes)
    assert raised.value.fields == fields
    assert isinstance(raised.value, ValueError)


def test_replace_validates_too() -> None:
    """dataclasses.replace runs the same validation as the constructor."""
    with pytest.raises(ConfigError, match="max_chunk_streams"):
        dataclasses.replace(ServerConfig(), max_chunk_streams=0)


def test_validate_checks_fields_assigned_later() -> None:
    """A field assigned after construction is checked by an explicit validate()."""
    config = ServerConfig()
    config.chunk_size = 64
    with pytest.raises(ConfigError, match="chunk_size"):
        config.validate()


def test_inconsistent_policy_limits_are_named() -> None:
    """The policy's own error becomes a ConfigError naming the limits it mentions."""
    config = ServerConfig()
    config.limits.drop_low = 0
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert raised.value.fields == ("limits.drop_low", "limits.drop_high", "limits.max_queue")


def test_from_settings_applies_paths_to_the_defaults() -> None:
    """Settings by field path reach top-level and nested fields; the rest stay defaults."""
    config = ServerConfig.from_settings(
        {"chunk_size": 8192, "limits.max_lag_ms": 2000, "access.on_play": "http://h/play"}
    )
    assert config.chunk_size == 8192
    assert config.limits == dataclasses.replace(PolicyLimits(), max_lag_ms=2000)
    assert config.access.on_play == "http://h/play"
    assert config.max_streams == ServerConfig().max_streams


def test_from_settings_names_a_nested_field() -> None:
    """A nested value the nested class refuses is a ConfigError with its path."""
    with pytest.raises(ConfigError) as raised:
        ServerConfig.from_settings({"limits.stall_timeout": 0.0})
    assert raised.value.fields == ("limits.stall_timeout",)


def test_record_patterns_split_comma_lists() -> None:
    """--record-apps may be repeated and each value may be a comma list."""
    config = ServerConfig(record_apps=("live/*, show/a", "other/b"))
    assert config.record_patterns() == ("live/*", "show/a", "other/b")
    assert ServerConfig().record_patterns() == ()
