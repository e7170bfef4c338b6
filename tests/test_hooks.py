"""Hooks over a Clock and a fake HTTP agent: the bodies, the retries, the bounds, the commands."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.python import usage
from twisted.python.failure import Failure

from streamserver import hooks, tap
from streamserver.auth import AccessRequest
from streamserver.config import ConfigError, ServerConfig
from streamserver.events import RecordingDone
from streamserver.factory import RTMPServerFactory
from streamserver.hooks import BACKOFF, MAX_ATTEMPTS, HookTarget, Notifier
from streamserver.testing import FakePeer
from tests.http.support import SiteClient


class _Consumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _Response:
    def __init__(self, code: int) -> None:
        self.code = code
        self.delivered = False

    def deliverBody(self, protocol: Any) -> None:
        self.delivered = True


@dataclass
class Sent:
    """One request the fake agent was asked to make."""

    at: float
    url: str
    content_type: str
    body: bytes
    deferred: defer.Deferred[Any]

    def form(self) -> dict[str, str]:
        assert self.content_type == "application/x-www-form-urlencoded"
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        assert self.content_type == "application/json"
        return json.loads(self.body)

    def answer(self, code: int) -> _Response:
        response = _Response(code)
        self.deferred.callback(response)
        return response


class FakeAgent:
    """Records each request; the test answers or fails its Deferred."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.sent: list[Sent] = []

    def request(self, method: bytes, uri: bytes, headers: Any, body: Any) -> defer.Deferred[Any]:
        assert method == b"POST"
        consumer = _Consumer()
        body.startProducing(consumer)
        (content_type,) = headers.getRawHeaders(b"content-type")
        deferred: defer.Deferred[Any] = defer.Deferred()
        self.sent.append(
            Sent(self.clock.seconds(), uri.decode(), content_type.decode(), consumer.data, deferred)
        )
        return deferred


class BrokenAgent:
    def request(self, *args: Any) -> defer.Deferred[Any]:
        raise RuntimeError("agent bug")


def _factory(clock: task.Clock, **settings: Any) -> RTMPServerFactory:
    return RTMPServerFactory(ServerConfig(**settings), reactor=clock)


def _record(**changes: Any) -> RecordingDone:
    access = AccessRequest(
        "publish",
        "live",
        "cam",
        {"key": "k1"},
        IPv4Address("TCP", "198.51.100.7", 4000),
        9,
        {"tcUrl": "rtmp://h/live"},
    )
    values: dict[str, Any] = {
        "app": "live",
        "name": "cam",
        "path": Path("/rec/live/cam/cam-20261201T120000Z.mp4"),
        "format": "fmp4",
        "size": 123456,
        "duration": 12.0416,
        "start": 1_764_590_400.0,
        "end": 1_764_590_412.5,
        "reason": "unpublish",
        "access": access,
        **changes,
    }
    return RecordingDone(**values)


def test_rtmp_publish_and_play_done_carry_the_on_publish_fields(clock: task.Clock) -> None:
    """publish_done and play_done POST the --on-publish form with their call, once each."""
    factory = _factory(clock, on_publish_done="http://h/pub", on_play_done="http://h/play")
    agent = FakeAgent(clock)
    notifier = hooks.install(factory, agent=agent)
    assert notifier is not None
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam?key=k1", publisher.create_stream())
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("cam?t=x", viewer.create_stream())
    assert agent.sent == []  # nothing at the start
    clock.advance(3)
    viewer.transport.loseConnection()
    publisher.transport.loseConnection()
    play, publish = agent.sent
    assert play.url == "http://h/play" and publish.url == "http://h/pub"
    assert play.form() == {
        "call": "play_done",
        "app": "live",
        "name": "cam",
        "addr": viewer.transport.getPeer().host,
        "clientid": str(viewer.protocol.conn_id),
        "tcurl": "rtmp://127.0.0.1/live",
        "flashver": "FMLE/3.0",
        "args": "t=x",
        "t": "x",
    }
    form = publish.form()
    assert (form["call"], form["app"], form["name"]) == ("publish_done", "live", "cam")
    assert form["tcurl"] == "rtmp://127.0.0.1/live"
    assert form["clientid"] == str(publisher.protocol.conn_id)
    assert (form["args"], form["key"]) == ("key=k1", "k1")
    publish.answer(204)
    play.answer(200)
    assert (notifier.delivered, notifier.failed, len(notifier.pending)) == (2, 0, 0)


def test_http_flv_play_done_carries_the_request(clock: task.Clock) -> None:
    """An HTTP-FLV play's play_done has its URL as tcurl and its query arguments."""
    factory = _factory(clock, on_play_done="http://h/play")
    agent = FakeAgent(clock)
    hooks.install(factory, agent=agent)
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    transport = SiteClient(factory, clock).play("/live/cam.flv?token=abc")
    clock.advance(1)
    transport.loseConnection()
    (sent,) = agent.sent
    form = sent.form()
    assert (form["call"], form["app"], form["name"]) == ("play_done", "live", "cam")
    assert (form["tcurl"], form["args"], form["token"]) == (
        "/live/cam.flv?token=abc",
        "token=abc",
        "abc",
    )
    assert form["addr"] == transport.getPeer().host


def test_record_done_form_and_json(clock: task.Clock) -> None:
    """record_done adds path, format, size, duration, start, end, reason, error; json: is JSON."""
    agent = FakeAgent(clock)
    notifier = Notifier(clock, on_record_done="http://h/rec", agent=agent)
    notifier.record_done(_record())
    notifier.on_record_done = HookTarget("http://h/json", json=True)
    notifier.record_done(_record(reason="error", error="disk full", access=None))
    form, as_json = agent.sent
    assert form.form() == {
        "call": "record_done",
        "app": "live",
        "name": "cam",
        "addr": "198.51.100.7",
        "clientid": "9",
        "tcurl": "rtmp://h/live",
        "flashver": "",
        "args": "key=k1",
        "key": "k1",
        "path": "/rec/live/cam/cam-20261201T120000Z.mp4",
        "format": "fmp4",
        "size": "123456",
        "duration": "12.042",
        "start": "1764590400.000",
        "end": "1764590412.500",
        "reason": "unpublish",
        "error": "",
    }
    assert as_json.url == "http://h/json"
    body = as_json.json()
    assert body["call"] == "record_done" and body["size"] == 123456
    assert body["duration"] == 12.042 and body["end"] == 1764590412.5
    assert (body["reason"], body["error"], body["addr"]) == ("error", "disk full", "")
    notifier.record_done(_record())
    assert agent.sent[2].json()["error"] is None


def test_json_prefix_reaches_the_session_hooks(clock: task.Clock) -> None:
    """--on-publish-done json:URL posts the same fields as a JSON object."""
    factory = _factory(clock, on_publish_done="json:http://h/pub")
    agent = FakeAgent(clock)
    hooks.install(factory, agent=agent)
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    publisher.transport.loseConnection()
    (sent,) = agent.sent
    assert sent.url == "http://h/pub"
    body = sent.json()
    assert body["call"] == "publish_done" and body["clientid"] == publisher.protocol.conn_id


def _next_call(clock: task.Clock) -> bool:
    """Advance *clock* to its next delayed call; ``False`` when there is none."""
    calls = clock.getDelayedCalls()
    if not calls:
        return False
    clock.advance(min(call.getTime() for call in calls) - clock.seconds())
    return True


@pytest.mark.parametrize(
    ("fail", "starts"),
    [
        (lambda sent: sent.answer(503), [0.0, 1.0, 3.0, 7.0, 15.0]),
        (
            lambda sent: sent.deferred.errback(Failure(error.ConnectionRefusedError())),
            [0.0, 1.0, 3.0, 7.0, 15.0],
        ),
        # no answer: each attempt times out after ATTEMPT_TIMEOUT, then the backoff
        (None, [0.0, 11.0, 23.0, 37.0, 55.0]),
    ],
    ids=["5xx", "connection-refused", "timeout"],
)
def test_failures_are_retried_with_backoff_and_stop(
    clock: task.Clock, fail: Any, starts: list[float], log_events: list[dict[str, Any]]
) -> None:
    """A 5xx, a connection error or a timeout is retried after 1, 2, 4, 8 s, 5 attempts in all."""
    assert (MAX_ATTEMPTS, BACKOFF) == (5, (1.0, 2.0, 4.0, 8.0))
    agent = FakeAgent(clock)
    notifier = Notifier(clock, on_record_done="http://h/rec", agent=agent)
    notifier.record_done(_record())
    answered = 0
    while True:
        if fail is not None and answered < len(agent.sent):
            fail(agent.sent[answered])
            answered += 1
        elif not _next_call(clock):
            break
    assert [sent.at for sent in agent.sent] == starts
    assert len({sent.body for sent in agent.sent}) == 1
    assert (notifier.delivered, notifier.failed, len(notifier.pending)) == (0, 1, 0)
    assert sum("given up" in e.get("log_format", "") for e in log_events) == 1


def test_a_late_success_ends_the_retries(clock: task.Clock) -> None:
    """A 2xx on the third attempt delivers it; a 4xx is not retried."""
    agent = FakeAgent(clock)
    notifier = Notifier(clock, agent=agent)
    notifier.notify(HookTarget("http://h/a"), {"call": "play_done"})
    agent.sent[0].answer(500)
    clock.advance(1)
    agent.sent[1].answer(502)
    clock.advance(2)
    response = agent.sent[2].answer(201)
    clock.advance(60)
    assert len(agent.sent) == 3 and response.delivered
    notifier.notify(HookTarget("http://h/b"), {"call": "play_done"})
    agent.sent[3].answer(404)
    clock.advance(60)
    assert len(agent.sent) == 4
    assert (notifier.delivered, notifier.failed) == (1, 1)


def test_pending_notifications_are_bounded(
    clock: task.Clock, monkeypatch: pytest.MonkeyPatch, log_events: list[dict[str, Any]]
) -> None:
    """Past MAX_PENDING in flight or waiting, a new notification is dropped and logged."""
    monkeypatch.setattr(hooks, "MAX_PENDING", 3)
    agent = FakeAgent(clock)
    notifier = Notifier(clock, agent=agent)
    for index in range(5):
        notifier.notify(HookTarget("http://h/"), {"call": "play_done", "name": str(index)})
    assert len(agent.sent) == 3 and notifier.dropped == 2
    assert sum("dropped" in e.get("log_format", "") for e in log_events) == 2
    agent.sent[0].answer(204)
    notifier.notify(HookTarget("http://h/"), {"call": "play_done"})
    assert len(agent.sent) == 4 and notifier.dropped == 2


def test_a_broken_agent_never_reaches_the_publish(
    clock: task.Clock, log_events: list[dict[str, Any]]
) -> None:
    """An agent that raises costs retries and log lines, never the publish or the play."""
    factory = _factory(clock, on_publish_done="http://h/", on_play_done="http://h/")
    notifier = hooks.install(factory, agent=BrokenAgent())
    assert notifier is not None
    publisher = FakePeer(factory)
    publisher.connect("live")
    publisher.publish("cam", publisher.create_stream())
    viewer = FakePeer(factory)
    viewer.connect("live")
    viewer.play("cam", viewer.create_stream())
    viewer.transport.loseConnection()
    publisher.transport.loseConnection()
    assert factory.connections == {}
    while _next_call(clock):
        pass
    assert (notifier.failed, len(notifier.pending)) == (2, 0)
    assert not [e for e in log_events if "session observer" in e.get("log_format", "")]


def test_a_hook_that_fails_to_build_its_body_is_logged(
    clock: task.Clock, log_events: list[dict[str, Any]]
) -> None:
    """Even a bug in the notifier itself is caught and logged inside it."""
    notifier = Notifier(clock, on_record_done="http://h/", agent=FakeAgent(clock))
    notifier.record_done(_record(size=float("nan")))  # str(nan) works; json would not
    notifier.on_record_done = HookTarget("http://h/", json=True)
    notifier.record_done(_record(duration=float("nan")))
    assert any("a hook for" in e.get("log_format", "") for e in log_events)


def test_install_adds_nothing_without_hooks(clock: task.Clock) -> None:
    """Without a hook option there is no notifier and no observer."""
    factory = _factory(clock)
    assert hooks.install(factory) is None
    assert factory.events.observers == [] and factory.recordings.listeners == []


def test_make_service_installs_the_hooks() -> None:
    """twistd's service tree has the notifier observing the factory."""
    options = tap.Options()
    options.parseOptions(["--no-http", "--on-publish-done", "http://127.0.0.1:9/"])
    service = tap.makeService(options)
    factory = service.factory  # type: ignore[attr-defined]
    assert [type(o) for o in factory.events.observers] == [Notifier]
    assert len(factory.recordings.listeners) == 1


# --- options


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_hook_options_reach_the_config() -> None:
    """The four options set their fields; the command is split into an argument list."""
    true = shutil.which("true")
    assert true is not None
    config = _parse(
        "--on-publish-done", "http://h/a", "--on-play-done", "json:https://h/b",
        "--on-record-done", "http://h/c", "--exec-record-done", "true --file {path} 'a b'",
    ).config()  # fmt: skip
    assert (config.on_publish_done, config.on_play_done) == ("http://h/a", "json:https://h/b")
    assert config.on_record_done == "http://h/c"
    assert config.exec_record_done == (true, "--file", "{path}", "a b")
    assert ServerConfig().exec_record_done == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--on-publish-done", "ftp://h/"], "--on-publish-done"),
        (["--on-record-done", "json:h/"], "--on-record-done"),
        (["--exec-record-done", "true {nope}"], "unknown field"),
        (["--exec-record-done", "no-such-program-here {path}"], "no program"),
        (["--exec-record-done", "'unbalanced"], "--exec-record-done"),
        (["--exec-record-done", ""], "empty"),
    ],
)
def test_bad_hook_options_are_usage_errors(argv: list[str], message: str) -> None:
    """A URL that is no http(s) URL, or a command that cannot run, stops the server at start."""
    with pytest.raises(usage.UsageError, match=message):
        _parse(*argv)


def test_config_checks_the_hooks() -> None:
    """ServerConfig refuses a bad URL or a command that is not an absolute argument list."""
    with pytest.raises(ConfigError) as caught:
        ServerConfig(on_play_done="mailto:x")
    assert caught.value.fields == ("on_play_done",)
    with pytest.raises(ConfigError):
        ServerConfig(exec_record_done=("true", "{path}"))
    with pytest.raises(ConfigError):
        ServerConfig(exec_record_done=("/bin/true", "{what}"))


# --- commands


def test_command_arguments_are_substituted_one_by_one() -> None:
    """Each {field} is replaced inside its argument; a path with spaces stays one argument."""
    argv = hooks.command_argv(
        ("/bin/up", "--to=s3://b/{app}/{name}", "{path}", "{unknown}", "{{path}}"),
        {"app": "live", "name": "c m", "path": "/r/a b;rm -rf.mp4"},
    )
    assert argv == [
        "/bin/up",
        "--to=s3://b/live/c m",
        "/r/a b;rm -rf.mp4",
        "{unknown}",
        "{/r/a b;rm -rf.mp4}",
    ]


class ProcessClock(task.Clock):
    """A Clock that records spawnProcess calls instead of forking."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, str, list[str]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kw: Any) -> Any:
        transport = _ProcessTransport()
        protocol.makeConnection(transport)
        self.spawned.append((protocol, executable, args))
        return transport


class _ProcessTransport:
    def __init__(self) -> None:
        self.signals: list[str] = []
        self.stdin_closed = False

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


def test_exec_record_done_runs_the_argument_list_with_a_timeout(
    log_events: list[dict[str, Any]],
) -> None:
    """The command gets the fields, its exit is logged, and one running too long is killed."""
    clock = ProcessClock()
    notifier = Notifier(clock, exec_record_done=("/bin/up", "{path}", "{size}"), agent=object())
    notifier.record_done(_record())
    ((protocol, executable, args),) = clock.spawned
    assert executable == "/bin/up"
    assert args == ["/bin/up", "/rec/live/cam/cam-20261201T120000Z.mp4", "123456"]
    assert protocol.transport.stdin_closed
    protocol.errReceived(b"upload failed: 403\n")
    protocol.processEnded(Failure(error.ProcessTerminated(exitCode=3)))
    assert notifier.exits == [3] and notifier.commands == set()
    assert any("exited" in e.get("log_format", "") and e.get("code") == 3 for e in log_events)

    notifier.record_done(_record())
    hung = clock.spawned[1][0]
    clock.advance(hooks.EXEC_TIMEOUT)
    assert hung.transport.signals == ["TERM"]
    clock.advance(hooks.EXEC_KILL_GRACE)
    assert hung.transport.signals == ["TERM", "KILL"]
    hung.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert notifier.exits == [3, None] and clock.getDelayedCalls() == []


def test_commands_running_at_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_COMMANDS running, a recording's command is dropped."""
    monkeypatch.setattr(hooks, "MAX_COMMANDS", 2)
    clock = ProcessClock()
    notifier = Notifier(clock, exec_record_done=("/bin/up", "{path}"), agent=object())
    for _ in range(3):
        notifier.record_done(_record())
    assert len(clock.spawned) == 2 and notifier.dropped == 1
    clock.spawned[0][0].processEnded(Failure(error.ProcessDone(0)))
    notifier.record_done(_record())
    assert len(clock.spawned) == 3 and notifier.exits == [0]
