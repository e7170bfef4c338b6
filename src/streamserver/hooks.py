"""Hooks: tell an operator's HTTP endpoint (or a local command) that a session or a recording ended.

nginx-rtmp's ``on_publish_done``, ``on_play_done`` and ``on_record_done``, and
its ``exec_record_done``.  A :class:`Notifier` is an observer of the factory's
:class:`~streamserver.events.SessionEvents` (a publish or a play ended) and a
listener of its :class:`~streamserver.events.RecordingEvents` (a recording file
is done); :func:`install` wires it from the configuration.

What is POSTed (``docs/recording.md``, "Hooks"):

- ``application/x-www-form-urlencoded`` by default: the fields ``--on-publish``
  sends (:func:`~streamserver.auth.callback_form`: ``app``, ``name``, ``addr``,
  ``clientid``, ``tcurl``, ``flashver``, ``args`` and each query argument) with
  ``call`` set to ``publish_done``, ``play_done`` or ``record_done``; a
  ``record_done`` adds ``path``, ``format``, ``size``, ``duration``, ``start``,
  ``end`` (Unix seconds), ``reason`` and ``error`` (empty without one);
- a JSON object with the same fields when the URL is given as ``json:URL``
  (``--on-record-done json:http://...``): a prefix rather than an option, so each
  hook chooses, and a URL cannot start with ``json:``.  In JSON, ``clientid``,
  ``size``, ``duration``, ``start`` and ``end`` are numbers and a missing
  ``error`` is ``null``.

Delivery never blocks the reactor (Twisted's HTTP client) and never reaches
back into the publish or play it reports: everything is caught and logged
here.  A connection error, a 5xx answer or no answer within
:data:`ATTEMPT_TIMEOUT` is retried after 1, 2, 4 then 8 s (:data:`BACKOFF`),
at most :data:`MAX_ATTEMPTS` times in all; any other answer ends it (2xx:
delivered; 3xx/4xx: the receiver does not want it, retrying would not change
that).  At most :data:`MAX_PENDING` notifications are in flight or waiting to
be retried; past that a new one is dropped and logged.

``--exec-record-done`` is an argument list (split with :mod:`shlex` when the
option is parsed, no shell ever), each ``{field}`` in an argument replaced by
that ``record_done`` field; it is run with ``reactor.spawnProcess``, killed
after :data:`EXEC_TIMEOUT`, and its exit status is logged.  At most
:data:`MAX_COMMANDS` run at once; past that a recording's command is dropped
and logged.

Why a module of its own, not in ``recording/``: two of its three hooks are
about sessions, which exist without any recording; it sits beside
:mod:`streamserver.auth` (whose form and HTTP client it reuses), above
:mod:`streamserver.events`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from streamserver.auth import DiscardBody, FormBody, callback_form, timed_out
from streamserver.events import PUBLISH

if TYPE_CHECKING:
    from twisted.web.iweb import IResponse

    from streamserver.auth import AccessRequest
    from streamserver.events import RecordingDone, SessionEvent

_log = Logger()

__all__ = [
    "ATTEMPT_TIMEOUT",
    "BACKOFF",
    "COMMAND_FIELDS",
    "EXEC_TIMEOUT",
    "JSON_PREFIX",
    "MAX_ATTEMPTS",
    "MAX_COMMANDS",
    "MAX_PENDING",
    "HookTarget",
    "Notifier",
    "command_argv",
    "install",
    "parse_command",
    "parse_hook_url",
    "record_fields",
    "session_fields",
]

#: The prefix of a hook URL whose body is JSON instead of a form.
JSON_PREFIX = "json:"

#: Attempts per notification, the first included.  With :data:`BACKOFF` a
#: receiver down for up to 15 s (a restart) still gets it; one down longer is
#: down, and an unbounded retry would only pile up notifications.
MAX_ATTEMPTS = 5

#: Seconds before each retry: doubling from 1 s, so a receiver that is only
#: overloaded is not hammered, and the last try comes 15 s after the first.
BACKOFF = (1.0, 2.0, 4.0, 8.0)

#: Seconds one attempt may take (connect, send, the response's headers): a
#: notification is told, not asked, so the receiver may be slower than an
#: ``--on-publish`` callback (5 s) without costing anyone anything.
ATTEMPT_TIMEOUT = 10.0

#: Notifications in flight or waiting for a retry.  Each is a few hundred bytes
#: and at most one connection; 1000 covers a server of 1000 viewers all leaving
#: at once while the receiver is down, and bounds what a dead receiver costs.
MAX_PENDING = 1000

#: Seconds an ``--exec-record-done`` command may run before it is killed: an
#: upload of an hour of video over a slow uplink takes minutes, a hung one forever.
EXEC_TIMEOUT = 600.0

#: Seconds between SIGTERM and SIGKILL of a command past :data:`EXEC_TIMEOUT`.
EXEC_KILL_GRACE = 5.0

#: ``--exec-record-done`` commands running at once: each is a process; a
#: restart that finalizes many recordings must not fork a hundred uploads.
MAX_COMMANDS = 16

#: Bytes of a command's stderr kept for the log line of its exit.
STDERR_TAIL = 2000

#: The ``{field}`` names an ``--exec-record-done`` argument may hold.
COMMAND_FIELDS = (
    "path",
    "app",
    "name",
    "format",
    "size",
    "duration",
    "start",
    "end",
    "reason",
    "error",
    "addr",
    "clientid",
    "tcurl",
)

#: The fields that are numbers in a JSON body.
_NUMBERS: Mapping[str, type] = {
    "clientid": int,
    "size": int,
    "duration": float,
    "start": float,
    "end": float,
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


@dataclass(frozen=True)
class HookTarget:
    """Where a hook POSTs, and how.

    :ivar url: the ``http://`` or ``https://`` URL.
    :ivar json: whether the body is JSON (the option's ``json:`` prefix).
    """

    url: str
    json: bool = False


def parse_hook_url(value: str) -> HookTarget:
    """The :class:`HookTarget` of an option's value: ``URL`` or ``json:URL``.

    :raises ValueError: not an ``http://``/``https://`` URL after the prefix.
    """
    as_json = value.startswith(JSON_PREFIX)
    url = value[len(JSON_PREFIX) :] if as_json else value
    if not url.startswith(("http://", "https://")) or any(c in url for c in "\r\n "):
        raise ValueError(
            f"a hook URL must be http://... or https://... (json: before it for JSON), "
            f"got {value!r}"
        )
    return HookTarget(url, as_json)


def parse_command(value: str) -> tuple[str, ...]:
    """An ``--exec-record-done`` value as its argument list (:mod:`shlex`, no shell).

    The program is looked up on ``PATH`` now, so a server that could not run it
    does not start; every ``{field}`` must be one of :data:`COMMAND_FIELDS`.

    :raises ValueError: empty, unbalanced quotes, an unknown field, or no such program.
    """
    argv = shlex.split(value)
    if not argv:
        raise ValueError("the command is empty")
    for argument in argv:
        for found in _PLACEHOLDER.finditer(argument):
            if found[1] not in COMMAND_FIELDS:
                raise ValueError(
                    f"unknown field {{{found[1]}}}; known: "
                    + ", ".join("{" + name + "}" for name in COMMAND_FIELDS)
                )
    program = shutil.which(argv[0])
    if program is None:
        raise ValueError(f"no program {argv[0]!r} (not executable, or not on PATH)")
    return (os.path.abspath(program), *argv[1:])


def command_argv(argv: Sequence[str], fields: Mapping[str, str]) -> list[str]:
    """*argv* with each ``{field}`` replaced by its value in *fields* (one argument stays one)."""
    return [_PLACEHOLDER.sub(lambda m: fields.get(m[1], m[0]), argument) for argument in argv]


def session_fields(event: SessionEvent) -> dict[str, str]:
    """The form of ``publish_done`` / ``play_done`` for *event*."""
    form = callback_form(event.access)
    form["call"] = "publish_done" if event.role == PUBLISH else "play_done"
    return form


def record_fields(record: RecordingDone) -> dict[str, str]:
    """The form of ``record_done`` for *record*."""
    access: AccessRequest | None = record.access
    if access is not None:
        form = callback_form(access)
    else:  # recovered after a crash: nobody's publish
        form = dict.fromkeys(("addr", "clientid", "tcurl", "flashver", "args"), "")
    form.update(
        call="record_done",
        app=record.app,
        name=record.name,
        path=str(record.path),
        format=record.format,
        size=str(record.size),
        duration=f"{record.duration:.3f}",
        start=f"{record.start:.3f}",
        end=f"{record.end:.3f}",
        reason=record.reason,
        error=record.error or "",
    )
    return form


def _json_body(fields: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = dict(fields)
    for name, kind in _NUMBERS.items():
        text = fields.get(name)
        if text:
            # a query argument of that name that is no number stays text
            with contextlib.suppress(ValueError):
                body[name] = kind(text)
    if "error" in body and body["error"] == "" and fields.get("call") == "record_done":
        body["error"] = None
    return body


class _Delivery:
    """One notification: its attempts, until delivered, refused or out of attempts."""

    def __init__(self, notifier: Notifier, target: HookTarget, fields: dict[str, str]) -> None:
        self.notifier = notifier
        self.target = target
        self.fields = fields
        self.attempts = 0
        if target.json:
            self.body = json.dumps(_json_body(fields), allow_nan=False).encode()
            self.content_type = b"application/json"
        else:
            self.body = urlencode(fields).encode()
            self.content_type = b"application/x-www-form-urlencoded"

    def describe(self) -> str:
        return f"{self.fields.get('call')} of {self.fields.get('app')}/{self.fields.get('name')}"

    def attempt(self) -> None:
        self.attempts += 1
        headers = Headers({b"Content-Type": [self.content_type], b"User-Agent": [b"streamserver"]})
        try:
            deferred: defer.Deferred[Any] = self.notifier.agent.request(
                b"POST", self.target.url.encode(), headers, FormBody(self.body)
            )
        except Exception:
            self._failed(Failure())
            return
        # Cancelling a request in flight fails it with ResponseNeverReceived, not
        # CancelledError: say "timeout" whatever the cancel produced.
        deferred.addTimeout(ATTEMPT_TIMEOUT, self.notifier.reactor, onTimeoutCancel=timed_out)
        deferred.addCallbacks(self._answered, self._failed)
        deferred.addErrback(self._bug)

    def _answered(self, response: IResponse) -> None:
        response.deliverBody(DiscardBody())
        code = response.code
        if 200 <= code < 300:
            self.notifier.finished(self, delivered=True)
        elif code >= 500:
            self._retry(f"answered {code}")
        else:
            _log.warn(
                "hook {call} to {url} for {stream} answered {code}: not retried",
                call=self.fields.get("call"),
                url=self.target.url,
                stream=self.describe(),
                code=code,
            )
            self.notifier.finished(self, delivered=False)

    def _failed(self, failure: Failure) -> None:
        if failure.check(defer.TimeoutError):
            self._retry(f"no answer within {ATTEMPT_TIMEOUT:g} s")
        else:
            self._retry(failure.getErrorMessage() or repr(failure.value))

    def _retry(self, reason: str) -> None:
        if self.attempts >= MAX_ATTEMPTS:
            _log.warn(
                "hook {call} to {url} for {stream} failed {attempts} times, given up: {reason}",
                call=self.fields.get("call"),
                url=self.target.url,
                stream=self.describe(),
                attempts=self.attempts,
                reason=reason,
            )
            self.notifier.finished(self, delivered=False)
            return
        delay = BACKOFF[min(self.attempts, len(BACKOFF)) - 1]
        _log.info(
            "hook {call} to {url} for {stream}: {reason}; attempt {next} in {delay} s",
            call=self.fields.get("call"),
            url=self.target.url,
            stream=self.describe(),
            reason=reason,
            next=self.attempts + 1,
            delay=delay,
        )
        self.notifier.reactor.callLater(delay, self.attempt)

    def _bug(self, failure: Failure) -> None:
        _log.failure("hook {stream} failed unexpectedly", failure, stream=self.describe())
        self.notifier.finished(self, delivered=False)


class _Command(ProcessProtocol):
    """One ``--exec-record-done`` process: its stderr's tail, its timeout, its exit logged."""

    def __init__(self, notifier: Notifier, argv: list[str]) -> None:
        self.notifier = notifier
        self.argv = argv
        self.stderr = b""
        self._timer: Any = None
        self._kill: Any = None

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.closeStdin()
        self._timer = self.notifier.reactor.callLater(EXEC_TIMEOUT, self._timed_out)

    def outReceived(self, data: bytes) -> None:
        """Ignored: a command's output is its own business."""

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-STDERR_TAIL:]

    def _signal(self, name: str) -> None:
        if self.transport is not None:
            with contextlib.suppress(error.ProcessExitedAlready):
                self.transport.signalProcess(name)

    def _timed_out(self) -> None:
        _log.warn(
            "--exec-record-done {argv} still running after {timeout} s: terminated",
            argv=self.argv,
            timeout=EXEC_TIMEOUT,
        )
        self._signal("TERM")
        self._kill = self.notifier.reactor.callLater(EXEC_KILL_GRACE, self._signal, "KILL")

    def processEnded(self, reason: Failure) -> None:
        for call in (self._timer, self._kill):
            if call is not None and call.active():
                call.cancel()
        value = reason.value
        code = 0 if isinstance(value, error.ProcessDone) else getattr(value, "exitCode", None)
        signal = getattr(value, "signal", None)
        if code == 0:
            _log.info("--exec-record-done {argv} exited 0", argv=self.argv)
        else:
            _log.warn(
                "--exec-record-done {argv} exited {code} (signal {signal}): {stderr}",
                argv=self.argv,
                code=code,
                signal=signal,
                stderr=self.stderr.decode("utf-8", "replace").strip(),
            )
        self.notifier.command_ended(self, code)


class Notifier:
    """POSTs the hooks' notifications and runs ``--exec-record-done``.

    A :class:`~streamserver.events.SessionObserver` (``session_ended``) and a
    recordings listener (:meth:`record_done`).  Nothing it does raises into
    its caller.

    :ivar reactor: times the attempts and retries, spawns the commands.
    :ivar agent: the HTTP client (``twisted.web.client.Agent``; a fake in tests).
    :ivar pending: notifications in flight or waiting for a retry.
    :ivar delivered: notifications a receiver answered 2xx.
    :ivar failed: notifications refused or out of attempts.
    :ivar dropped: notifications and commands dropped past the bounds.
    :ivar commands: ``--exec-record-done`` processes running.
    :ivar exits: exit codes of the commands that ended (``None``: killed by a signal).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        on_publish_done: str | None = None,
        on_play_done: str | None = None,
        on_record_done: str | None = None,
        exec_record_done: Sequence[str] = (),
        agent: Any = None,
    ) -> None:
        self.reactor = reactor
        if agent is None:
            from twisted.web.client import Agent

            agent = Agent(reactor, connectTimeout=ATTEMPT_TIMEOUT)
        self.agent = agent
        self.on_publish_done = parse_hook_url(on_publish_done) if on_publish_done else None
        self.on_play_done = parse_hook_url(on_play_done) if on_play_done else None
        self.on_record_done = parse_hook_url(on_record_done) if on_record_done else None
        self.exec_record_done = tuple(exec_record_done)
        self.pending: set[_Delivery] = set()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.commands: set[_Command] = set()
        self.exits: list[int | None] = []

    def __repr__(self) -> str:
        return f"<Notifier pending={len(self.pending)} commands={len(self.commands)}>"

    # --- what the factory tells

    def session_started(self, event: SessionEvent) -> None:
        """Nothing: ``--on-publish`` and ``--on-play`` are asked before a session starts."""

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        """POST ``publish_done`` or ``play_done`` when that hook is set."""
        target = self.on_publish_done if event.role == PUBLISH else self.on_play_done
        if target is None:
            return
        self._guarded(lambda: self.notify(target, session_fields(event)), event.access.stream)

    def record_done(self, record: RecordingDone) -> None:
        """POST ``record_done`` and run ``--exec-record-done`` when they are set."""
        stream = f"{record.app}/{record.name}"
        target = self.on_record_done
        if target is not None:
            self._guarded(lambda: self.notify(target, record_fields(record)), stream)
        if self.exec_record_done:
            self._guarded(lambda: self.run_command(record_fields(record)), stream)

    def _guarded(self, action: Callable[[], None], stream: str) -> None:
        try:
            action()
        except Exception:
            _log.failure("a hook for {stream} failed", Failure(), stream=stream)

    # --- doing it

    def notify(self, target: HookTarget, fields: dict[str, str]) -> None:
        """POST *fields* to *target*, retried as the module says.

        Dropped (and logged) when :data:`MAX_PENDING` are pending already.
        """
        if len(self.pending) >= MAX_PENDING:
            self.dropped += 1
            _log.warn(
                "hook {call} for {app}/{name} dropped: {pending} notifications pending "
                "(at most {limit}), {dropped} dropped so far",
                call=fields.get("call"),
                app=fields.get("app"),
                name=fields.get("name"),
                pending=len(self.pending),
                limit=MAX_PENDING,
                dropped=self.dropped,
            )
            return
        delivery = _Delivery(self, target, fields)
        self.pending.add(delivery)
        delivery.attempt()

    def finished(self, delivery: _Delivery, *, delivered: bool) -> None:
        """*delivery* is over (called by it)."""
        self.pending.discard(delivery)
        if delivered:
            self.delivered += 1
        else:
            self.failed += 1

    def run_command(self, fields: Mapping[str, str]) -> None:
        """Run ``--exec-record-done`` with *fields* substituted.

        Dropped (and logged) when :data:`MAX_COMMANDS` run already.
        """
        argv = command_argv(self.exec_record_done, fields)
        if len(self.commands) >= MAX_COMMANDS:
            self.dropped += 1
            _log.warn(
                "--exec-record-done {argv} not run: {running} commands running (at most {limit})",
                argv=argv,
                running=len(self.commands),
                limit=MAX_COMMANDS,
            )
            return
        command = _Command(self, argv)
        self.commands.add(command)
        try:
            self.reactor.spawnProcess(command, argv[0], argv, env=dict(os.environ))
        except Exception:
            self.commands.discard(command)
            raise

    def command_ended(self, command: _Command, code: int | None) -> None:
        """*command* exited (called by it)."""
        self.commands.discard(command)
        self.exits.append(code)


def install(factory: Any, *, agent: Any = None) -> Notifier | None:
    """A :class:`Notifier` for *factory*'s configured hooks, observing its events; ``None``
    when no hook is configured (nothing is added)."""
    config = factory.config
    if not (
        config.on_publish_done
        or config.on_play_done
        or config.on_record_done
        or config.exec_record_done
    ):
        return None
    notifier = Notifier(
        factory.reactor,
        on_publish_done=config.on_publish_done,
        on_play_done=config.on_play_done,
        on_record_done=config.on_record_done,
        exec_record_done=config.exec_record_done,
        agent=agent,
    )
    factory.events.add(notifier)
    factory.recordings.add(notifier.record_done)
    return notifier
