"""Live reload of --config's file over task.Clock: sessions kept, limits and rules applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import task

from streamserver import tap
from streamserver.console.helpers import Console
from streamserver.console.keys import ConsoleLogin
from streamserver.factory import RTMPServerFactory
from streamserver.media.stream import DEFAULT_GOP_CACHE_BYTES
from streamserver.reload import Reloader
from streamserver.testing import FakePeer
from tests.http.support import SiteClient
from tests.protocol import media

LOGIN = ConsoleLogin("admin", "SHA256:test-fingerprint", "ssh-ed25519", "tester@example")

BASE = """\
[server]
rtmp = "tcp:0:interface=127.0.0.1"
http = "tcp:0:interface=127.0.0.1"
api-token = "tok"

[app.studio]
publish-keys = "{keys}"
max-queue = 5000000
"""


class Server:
    """A factory built from a file as makeService builds it, with its reloader."""

    def __init__(self, tmp_path: Path, text: str, *argv: str) -> None:
        self.keys = tmp_path / "keys.txt"
        self.keys.write_text("cam sesame\ncam2 sesame\n")
        self.keys2 = tmp_path / "keys2.txt"
        self.keys2.write_text("cam2 opensesame\n")
        self.path = tmp_path / "streamserver.toml"
        self.write(text)
        options = tap.Options()
        options.parseOptions(["--config", str(self.path), *argv])
        self.clock = task.Clock()
        self.factory = RTMPServerFactory(options.config(), reactor=self.clock)
        self.factory.set_app_configs(options.app_configs())
        self.listeners = MultiService()
        for kind in ("rtmp", "http"):
            for endpoint in options[kind]:
                child = MultiService()
                child.setName(f"{kind}:{endpoint}")
                child.setServiceParent(self.listeners)
        assert options.effective is not None
        self.reloader = Reloader(
            self.factory,
            options.effective,
            options.command_line(),
            str(self.path),
            listeners=self.listeners,
            listener_factories={"rtmp": self.factory, "http": object()},
        )
        self.factory.reloader = self.reloader

    def write(self, text: str) -> None:
        self.path.write_text(text.format(keys=self.keys, keys2=self.keys2))

    def publish(self, app: str, name: str) -> tuple[FakePeer, list[str]]:
        client = FakePeer(self.factory)
        client.connect(app)
        sid = client.create_stream()
        client.publish(name, sid)
        return client, client.statuses(new=False)

    def play(self, app: str, name: str) -> FakePeer:
        viewer = FakePeer(self.factory)
        viewer.connect(app)
        viewer.play(name, viewer.create_stream())
        return viewer


def _media_timestamps(viewer: FakePeer) -> list[int]:
    return [m.timestamp for m in viewer.media() if m.type_id in (8, 9) and m.timestamp > 0]


def test_a_viewer_of_an_unchanged_app_keeps_every_frame(tmp_path: Path) -> None:
    """A reload changing studio's limits leaves a test viewer's session and frames alone."""
    server = Server(tmp_path, BASE)
    publisher, statuses = server.publish("test", "cam")
    assert "NetStream.Publish.Start" in statuses
    viewer = server.play("test", "cam")
    protocol = viewer.protocol
    sent = media.headers(1) + media.gop_frames(1, 0, 30)
    for message in sent[:32]:
        publisher.send(message)
    server.write(BASE.replace("max-queue = 5000000", "max-queue = 6000000"))
    result = server.reloader.reload()
    assert result.ok, result.error
    assert [c[:2] for c in result.changed] == [("app studio", "max-queue")]
    for message in sent[32:]:
        publisher.send(message)
    expected = [m.timestamp for m in sent if m.type_id in (8, 9) and m.timestamp > 0]
    assert _media_timestamps(viewer) == expected
    assert viewer.protocol is protocol and not viewer.transport.disconnecting
    assert server.factory.viewer_server("test") is server.factory


def test_a_viewer_of_a_changed_app_gets_the_new_limits(tmp_path: Path) -> None:
    """A current studio viewer's policy has the reloaded max-queue at once."""
    server = Server(tmp_path, BASE)
    server.publish("studio", "cam?key=sesame")
    viewer = server.play("studio", "cam")
    stream = server.factory.find_stream("studio", "cam")
    assert stream is not None
    (subscriber,) = stream.subscribers
    assert subscriber._server.policy.limits.max_queue == 5_000_000
    server.write(BASE.replace("max-queue = 5000000", "max-queue = 7000000"))
    assert server.reloader.reload().ok
    assert subscriber._server.policy.limits.max_queue == 7_000_000
    assert server.factory.settings_for("studio").limits.max_queue == 7_000_000
    assert not viewer.transport.disconnecting


def test_changed_access_rules_apply_to_new_sessions(tmp_path: Path) -> None:
    """After a reload pointing studio at another keys file, the new key works, the old not."""
    server = Server(tmp_path, BASE)
    old_publisher, statuses = server.publish("studio", "cam?key=sesame")
    assert "NetStream.Publish.Start" in statuses
    server.write(BASE.replace("{keys}", "{keys2}"))
    result = server.reloader.reload()
    assert result.ok and [c[:2] for c in result.changed] == [("app studio", "publish-keys")]
    _, refused = server.publish("studio", "cam2?key=sesame")
    assert "NetStream.Publish.Unauthorized" in refused
    _, allowed = server.publish("studio", "cam2?key=opensesame")
    assert "NetStream.Publish.Start" in allowed
    assert not old_publisher.transport.disconnecting


def test_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    """A reload of a bad file is refused with its line and key; the config in force stays."""
    server = Server(tmp_path, BASE)
    config, view = server.factory.config, server.factory.app_views["studio"]
    studio_config = view.config
    server.write(BASE + "drop-lo = 5\n")
    result = server.reloader.reload()
    assert not result.ok
    assert result.error is not None and "streamserver.toml:9: app.studio.drop-lo" in result.error
    assert "did you mean 'drop-low'" in result.error
    assert server.factory.config is config and view.config is studio_config
    assert sorted(s.name for s in server.listeners) == sorted(
        ["rtmp:tcp:0:interface=127.0.0.1", "http:tcp:0:interface=127.0.0.1"]
    )
    assert "nothing changed" in result.text()


def test_listeners_are_added_and_removed_and_unchanged_ones_kept(tmp_path: Path) -> None:
    """A new http endpoint gets a service, a removed rtmp one loses it, the rest stays."""
    server = Server(tmp_path, BASE)
    kept = server.listeners.getServiceNamed("http:tcp:0:interface=127.0.0.1")
    server.write(
        BASE.replace(
            'rtmp = "tcp:0:interface=127.0.0.1"', 'rtmp = "tcp:0:interface=127.0.0.2"'
        ).replace(
            'http = "tcp:0:interface=127.0.0.1"',
            'http = ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.3"]',
        )
    )
    result = server.reloader.reload()
    assert result.ok
    assert sorted(result.listeners) == [
        ("http", "tcp:0:interface=127.0.0.3", "added"),
        ("rtmp", "tcp:0:interface=127.0.0.1", "removed"),
        ("rtmp", "tcp:0:interface=127.0.0.2", "added"),
    ]
    assert server.listeners.getServiceNamed("http:tcp:0:interface=127.0.0.1") is kept
    assert sorted(s.name for s in server.listeners) == [
        "http:tcp:0:interface=127.0.0.1",
        "http:tcp:0:interface=127.0.0.3",
        "rtmp:tcp:0:interface=127.0.0.2",
    ]


def test_options_read_at_start_need_a_restart(tmp_path: Path) -> None:
    """A changed http-access-log is reported as needing a restart and keeps its value."""
    server = Server(tmp_path, BASE)
    server.write(BASE.replace("[server]\n", f"[server]\nhttp-access-log = '{tmp_path}/a.log'\n"))
    result = server.reloader.reload()
    assert result.ok and result.restart == ["http-access-log"]
    assert server.factory.config.http_access_log is None
    assert "http-access-log: changed, needs a restart" in result.text()


def test_the_command_line_still_wins_after_a_reload(tmp_path: Path) -> None:
    """A flag given at start keeps overriding the reloaded file."""
    server = Server(tmp_path, BASE + "[app.test]\ngop-cache-bytes = 5\n", "--max-streams", "9")
    server.write(BASE.replace("[server]\n", "[server]\nmax-streams = 100\n"))
    result = server.reloader.reload()
    assert result.ok
    assert server.factory.config.max_streams == 9
    assert ("app test", "gop-cache-bytes", "5", "(the default)") in result.changed
    assert server.factory.settings_for("test") is server.factory.config


def test_server_wide_changes_are_applied_and_reported(tmp_path: Path) -> None:
    """A changed [server] and [app."*"] key reaches the factory, the policy and the result."""
    server = Server(tmp_path, BASE)
    changed = BASE.replace("[server]\n", "[server]\nmax-streams = 3\n")
    server.write(changed + '[app."*"]\ndrop-low = 1000\n')
    result = server.reloader.reload()
    assert result.ok
    assert ("server", "max-streams", "1000", "3") in result.changed
    assert ('app "*"', "drop-low") in [c[:2] for c in result.changed]
    assert server.factory.config.max_streams == 3
    assert server.factory.policy.limits.drop_low == 1000


def test_post_api_reload_needs_the_token_and_reports(tmp_path: Path) -> None:
    """POST /api/reload: 401 without the token, 200 with what changed, 400 on a bad file."""
    server = Server(tmp_path, BASE)
    site = SiteClient(server.factory, server.clock)
    assert site.post("/api/reload").status == 401
    server.write(BASE.replace("max-queue = 5000000", "max-queue = 6000000"))
    answer = site.post("/api/reload", token="tok")
    assert answer.status == 200
    body: dict[str, Any] = answer.json()
    assert body["ok"] is True
    assert body["changed"] == [
        {"where": "app studio", "key": "max-queue", "old": "5000000", "new": "6000000"}
    ]
    server.write("[server]\nmax-streams = 'x'\n")
    bad = site.post("/api/reload", token="tok")
    assert bad.status == 400
    assert "streamserver.toml:2: server.max-streams" in bad.json()["error"]
    assert server.factory.settings_for("studio").limits.max_queue == 6_000_000


def test_the_console_reload_helper(tmp_path: Path) -> None:
    """reload() in the console applies the file and shows what changed, or why not."""
    server = Server(tmp_path, BASE)
    console = Console(server.factory, LOGIN)
    server.write(BASE.replace("max-queue = 5000000", "max-queue = 6000000"))
    assert console.reload() == "reloaded:\napp studio: max-queue: 5000000 -> 6000000"
    server.write("[nope]\n")
    assert console.reload().startswith("reload refused, nothing changed: ")


def test_make_service_wires_the_reloader(tmp_path: Path) -> None:
    """With --config, makeService gives the factory a reloader and a SIGHUP service."""
    path = tmp_path / "streamserver.toml"
    path.write_text('[server]\nrtmp = "tcp:0:interface=127.0.0.1"\nno-http = true\n')
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    top = tap.makeService(options)
    factory: Any = top.factory  # type: ignore[attr-defined]
    assert isinstance(factory.reloader, Reloader)
    assert top.getServiceNamed("reload") is not None  # type: ignore[attr-defined]
    assert sorted(s.name for s in top if s.name.startswith(("rtmp:", "http:"))) == [
        "rtmp:tcp:0:interface=127.0.0.1"
    ]


def test_no_http_in_a_reload_stops_the_http_listeners(tmp_path: Path) -> None:
    """no-http = true on reload removes every HTTP listener (a listener change, no restart)."""
    server = Server(tmp_path, BASE)
    server.write(BASE.replace('http = "tcp:0:interface=127.0.0.1"', "no-http = true"))
    result = server.reloader.reload()
    assert result.ok and not result.restart
    assert result.listeners == [("http", "tcp:0:interface=127.0.0.1", "removed")]
    assert [s.name for s in server.listeners] == ["rtmp:tcp:0:interface=127.0.0.1"]


def test_recording_settings_follow_a_reload_and_hooks_need_a_restart(tmp_path: Path) -> None:
    """A reloaded record-format reaches the next recording; a changed hook URL needs a restart."""
    from streamserver.recording.service import RecordingService

    text = BASE.replace("[server]\n", f"[server]\nrecord = '{tmp_path}/rec'\n")
    server = Server(tmp_path, text)
    recording = RecordingService(server.factory)
    assert recording.settings_for("test").format == "fmp4"
    server.write(
        text.replace("[server]\n", "[server]\non-publish-done = 'http://127.0.0.1:9/done'\n")
        + '[app."*"]\nrecord-format = "flv"\n'
    )
    result = server.reloader.reload()
    assert result.ok and result.restart == ["on-publish-done"]
    assert recording.settings_for("test").format == "flv"
    assert recording.settings_for("studio").format == "flv"
    assert server.factory.config.on_publish_done is None


def test_an_apps_next_streams_take_the_reloaded_gop_cache(tmp_path: Path) -> None:
    """After a reload, a new stream of an app with live streams has the new GOP cache bound;
    the stream already there keeps its own."""
    server = Server(tmp_path, BASE)
    server.publish("test", "one")
    server.write(BASE + '[app."*"]\ngop-cache-bytes = 12345\n')
    assert server.reloader.reload().ok
    server.publish("test", "two")
    one, two = server.factory.find_stream("test", "one"), server.factory.find_stream("test", "two")
    assert one is not None and two is not None
    assert (one.gop_cache_bytes, two.gop_cache_bytes) == (DEFAULT_GOP_CACHE_BYTES, 12345)
