"""Per-application settings: access, policy limits, GOP cache, chat and HLS by app."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from twisted.internet import task

from streamserver import tap
from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer
from tests.protocol import media


def _factory(tmp_path: Path, text: str) -> RTMPServerFactory:
    path = tmp_path / "streamserver.toml"
    path.write_text(text)
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    factory = RTMPServerFactory(options.config(), reactor=task.Clock())
    factory.set_app_configs(options.app_configs())
    return factory


def _publish(factory: RTMPServerFactory, app: str, name: str) -> tuple[FakePeer, list[str]]:
    client = FakePeer(factory)
    client.connect(app)
    sid = client.create_stream()
    client.publish(name, sid)
    return client, client.statuses(new=False)


def test_each_app_has_its_own_access_rules(tmp_path: Path) -> None:
    """studio needs a publish key, test keeps the server's rules (loopback may publish)."""
    keys = tmp_path / "keys.txt"
    keys.write_text("cam sesame\n")
    factory = _factory(tmp_path, f"[app.studio]\npublish-keys = '{keys}'\n")
    _, refused = _publish(factory, "studio", "cam")
    assert "NetStream.Publish.Unauthorized" in refused
    _, allowed = _publish(factory, "studio", "cam?key=sesame")
    assert "NetStream.Publish.Start" in allowed
    _, open_app = _publish(factory, "test", "cam")
    assert "NetStream.Publish.Start" in open_app


def test_a_viewer_takes_its_apps_policy_limits(tmp_path: Path) -> None:
    """A viewer of an app with its own limits consults that app's policy; others the server's."""
    factory = _factory(
        tmp_path,
        '[app."*"]\nmax-queue = 9000000\n[app.studio]\nmax-queue = 5000000\n',
    )
    for app in ("studio", "test"):
        _publish(factory, app, "cam")
        viewer = FakePeer(factory)
        viewer.connect(app)
        viewer.play("cam", viewer.create_stream())
    studio = factory.find_stream("studio", "cam")
    test = factory.find_stream("test", "cam")
    assert studio is not None and test is not None
    (studio_viewer,) = studio.subscribers
    (test_viewer,) = test.subscribers
    assert studio_viewer._server.policy.limits.max_queue == 5_000_000
    assert test_viewer._server is factory
    assert factory.policy.limits.max_queue == 9_000_000


def test_gop_cache_and_chat_length_follow_the_app(tmp_path: Path) -> None:
    """A stream of an app caches GOPs by its app's bound; the chat length is the app's."""
    factory = _factory(tmp_path, "[app.nocache]\ngop-cache-bytes = 0\nchat-max-length = 20\n")
    for app in ("nocache", "live"):
        client, _ = _publish(factory, app, "cam")
        for message in media.headers(1) + media.gop_frames(1, 0, 10):
            client.send(message)
    nocache = factory.find_stream("nocache", "cam")
    live = factory.find_stream("live", "cam")
    assert nocache is not None and live is not None
    assert nocache.gop_bytes == 0 < live.gop_bytes
    assert factory.settings_for("nocache").chat_max_length == 20
    assert factory.settings_for("live").chat_max_length == 500


def test_hls_mode_is_per_app(tmp_path: Path) -> None:
    """hls = "off" for one app leaves the others on-demand."""
    factory = _factory(tmp_path, "[app.private]\nhls = 'off'\n")
    assert factory.hls.mode_for("private") == "off"
    assert factory.hls.mode_for("live") == "on-demand"


def test_set_policy_reaches_every_app(tmp_path: Path) -> None:
    """The console's set_policy changes the limit for the server and every named app."""
    factory = _factory(tmp_path, "[app.studio]\nmax-queue = 5000000\n")
    factory.set_policy(stall_timeout=3.0)
    assert factory.viewer_server("studio").policy.limits.stall_timeout == 3.0
    assert factory.policy.limits.stall_timeout == 3.0
    assert factory.settings_for("studio").limits.max_queue == 5_000_000


def test_a_websocket_chat_takes_its_apps_chat_length(tmp_path: Path) -> None:
    """A room of an app allowing 5,000-character lines takes a 4,500-character one over
    WebSocket (past the 4 KiB frame bound the server's 500 makes); another app refuses it."""
    from tests.http.chat_client import ChatClient
    from tests.http.conftest import publish
    from tests.http.support import SiteClient

    factory = _factory(tmp_path, "[app.long]\nchat-max-length = 5000\n")
    client = SiteClient(factory, cast("task.Clock", factory.reactor))
    for app in ("long", "live"):
        publish(factory, app)
    long_chat = ChatClient(client, "/long/cam/chat")
    long_chat.join("ann")
    long_chat.say("x" * 4500)
    assert [m["text"] for m in long_chat.messages()] == ["x" * 4500]
    live_chat = ChatClient(client, "/live/cam/chat")
    live_chat.join("bob")
    [answer] = live_chat.say("x" * 4500)
    assert answer["code"] in ("Chat.BadRequest", "Chat.TooLong")


def _targets(deferred: object) -> list[str]:
    results: list[list[object]] = []
    cast("Any", deferred).addCallback(results.append)
    return [cast("Any", target).url for target in results[0]]


def test_push_and_pull_rules_are_per_app(tmp_path: Path) -> None:
    """[app.live] push/pull apply to live's streams only; [app."*"] to the apps without a table."""
    factory = _factory(
        tmp_path,
        '[app.live]\npush = ["rtmp://127.0.0.1:1/backup"]\npull = "rtmp://127.0.0.1:2/origin"\n'
        '[app."*"]\npull = "rtmp://127.0.0.1:3/default"\n',
    )
    sources = factory.pushes.sources
    assert len(sources) == 1
    assert _targets(sources[0].targets("live", "cam")) == ["rtmp://127.0.0.1:1/backup"]
    assert _targets(sources[0].targets("other", "cam")) == []
    assert _targets(factory.pulls.route("live", "cam")) == ["rtmp://127.0.0.1:2/origin"]
    assert _targets(factory.pulls.route("other", "cam")) == ["rtmp://127.0.0.1:3/default"]


def test_an_app_without_relay_rules_adds_no_router(tmp_path: Path) -> None:
    """No push or pull anywhere: no source or router, so a waiting play starts no pull."""
    factory = _factory(tmp_path, "[app.live]\nmax-queue = 5000000\n")
    assert factory.pushes.sources == []
    assert factory.pulls.routers == []
    factory.set_app_configs(
        {"live": factory.config.derived({"pull": ("rtmp://127.0.0.1:2/origin",)})}
    )
    assert _targets(factory.pulls.route("live", "cam")) == ["rtmp://127.0.0.1:2/origin"]
