"""The helpers of a console session: what the server holds, and the moderation calls.

:class:`Console` is bound to the server's factory and to who is logged in; its
helpers are the session's namespace.  Read-only helpers (``streams()``,
``viewers()``, ``buffers()``, ``memory()``, ``chain()``, ``policy()``) return a
:class:`~streamserver.console.tables.Table` or
:class:`~streamserver.console.tables.Report`.  State-changing helpers
(``kick()``, ``mute()``, ``unmute()``, ``clear_history()``, ``set_policy()``)
are each logged with the login's user name and key fingerprint before they act
(:meth:`Console.audit`), as is every line typed (:meth:`Console.input_received`).

The helpers read typed snapshots (:mod:`streamserver.stats`): the factory's
``connection_stats()`` and ``stream_stats()``, each made by the object that owns
the numbers.  :class:`RateSampler` turns their cumulative byte counters into bit
rates.

Everything runs in the reactor thread: while a helper runs, nothing else does.
``memory()`` walks every gc-tracked object and takes about 0.2 s per million.
"""

from __future__ import annotations

import builtins
import gc
import inspect
import platform
import sys
import types
from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import Any

import twisted
from twisted.logger import Logger

from streamserver.console.errors import ConsoleError
from streamserver.console.keys import ConsoleLogin
from streamserver.console.tables import (
    Column,
    Report,
    Table,
    Text,
    plural,
    show_bytes,
    show_duration,
    show_value,
)
from streamserver.policy import DropReason
from streamserver.protocol.base import ProtocolRoot, chain_problem, hook_path
from streamserver.stats import ConnectionStats, StreamStats, ViewerStats

_log = Logger()

#: Seconds between samples of the byte counters the bit rates are computed from.
RATE_SAMPLE_INTERVAL = 2.0

#: Shortest interval a rate is computed over: shorter ones are mostly noise.
MIN_RATE_WINDOW = 1.0


# --- bit rates -------------------------------------------------------------------------


class RateSampler:
    """Bit rates from the server's cumulative byte counters, sampled periodically.

    :meth:`sample` records each stream's bytes in and out and each connection's
    bytes sent; :meth:`rate` turns the newest sample at least
    :data:`MIN_RATE_WINDOW` old into bits per second.  Counters are kept by key
    (:func:`stream_in`, :func:`stream_out`, :func:`connection_out`) and forgotten
    once their stream or connection is gone.
    """

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._samples: dict[Hashable, deque[tuple[float, int]]] = {}

    def sample(self) -> None:
        """Record the counters now (every :data:`RATE_SAMPLE_INTERVAL` s in a server)."""
        now = self._factory.seconds()
        seen: set[Hashable] = set()
        for stream in self._factory.stream_stats():
            seen.add(self._record(stream_in(stream), now, stream.bytes_in))
            seen.add(self._record(stream_out(stream), now, stream.bytes_out))
        for connection in self._factory.connection_stats():
            seen.add(self._record(connection_out(connection), now, connection.bytes_sent))
        for key in [key for key in self._samples if key not in seen]:
            del self._samples[key]

    def _record(self, key: Hashable, now: float, count: int) -> Hashable:
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = deque(maxlen=2)
        samples.append((now, count))
        return key

    def rate(self, key: Hashable, count: int, now: float) -> float | None:
        """Bits per second of the counter *key*, now at *count*; ``None`` if unknown yet."""
        for taken, previous in reversed(self._samples.get(key, ())):
            if now - taken >= MIN_RATE_WINDOW:
                return max(0, count - previous) * 8 / (now - taken)
        return None


def stream_in(stream: StreamStats) -> Hashable:
    """The rate key of a stream's bytes in."""
    return ("in", stream.key)


def stream_out(stream: StreamStats) -> Hashable:
    """The rate key of a stream's bytes out."""
    return ("out", stream.key)


def connection_out(connection: ConnectionStats) -> Hashable:
    """The rate key of a connection's bytes sent."""
    return ("connection", connection.conn_id)


def _kbits(rate: float | None) -> float | None:
    return None if rate is None else rate / 1000


# --- the console -----------------------------------------------------------------------


class Console:
    """The helpers of one console session, bound to the server's factory.

    Read-only helpers: :meth:`streams`, :meth:`viewers`, :meth:`buffers`,
    :meth:`memory`, :meth:`chain`, :meth:`policy`.  State-changing helpers,
    each logged with the login's key fingerprint: :meth:`kick`, :meth:`mute`,
    :meth:`unmute`, :meth:`clear_history`, :meth:`set_policy`.

    :ivar factory: the :class:`~streamserver.factory.RTMPServerFactory`.
    :ivar login: who is logged in.
    :ivar sampler: the shared :class:`RateSampler`.
    """

    #: The helpers put in the namespace, in the order ``help()`` lists them.
    HELPERS = (
        "streams",
        "viewers",
        "buffers",
        "memory",
        "chain",
        "policy",
        "set_policy",
        "kick",
        "mute",
        "unmute",
        "clear_history",
        "reload",
    )

    def __init__(
        self,
        factory: Any,
        login: ConsoleLogin,
        *,
        sampler: RateSampler | None = None,
        reactor: Any = None,
    ) -> None:
        self.factory = factory
        self.login = login
        self.sampler = sampler or RateSampler(factory)
        self.reactor = reactor if reactor is not None else getattr(factory, "reactor", None)

    # --- namespace ----------------------------------------------------------------

    def namespace(self, close: Callable[[], None] | None = None) -> dict[str, Any]:
        """The console's globals: the helpers, ``factory``, ``registry``, ``reactor``.

        :param close: ends the session; ``exit()`` and ``quit()`` call it (the
            built-in ones would raise ``SystemExit`` into the reactor).
        """
        namespace: dict[str, Any] = {name: getattr(self, name) for name in self.HELPERS}
        namespace.update(
            factory=self.factory,
            registry=self.factory.registries,
            reactor=self.reactor,
            help=self.help,
            __name__="__console__",
            __doc__=None,
        )
        leave = _Leave(close)
        namespace.update(exit=leave, quit=leave)
        return namespace

    def help(self, topic: Any = None) -> None:
        """``help()`` lists the helpers; ``help(obj)`` shows obj's documentation."""
        if topic is not None:
            builtins.help(topic)
            return
        calls = {name: _call_form(name, getattr(self, name)) for name in self.HELPERS}
        width = max(len(call) for call in calls.values())
        lines = ["Helpers (help(name) shows one in full):"]
        for name, call in calls.items():
            doc = (getattr(self, name).__doc__ or "").strip().splitlines()[0]
            lines.append(f"  {call:<{width}}  {doc}")
        lines += [
            "Objects: factory (RTMPServerFactory), registry (app -> StreamRegistry), reactor.",
            "Helpers return their rows: buffers()[0]['id'] is the connection holding the most.",
            "Code runs in the reactor thread: a long loop stalls every stream.",
            "Ctrl-D or exit() leaves.",
        ]
        sys.stdout.write("\n".join(lines) + "\n")

    def banner(self) -> str:
        """What a new session shows above its first prompt."""
        return (
            f"streamserver console on Python {platform.python_version()}, "
            f"Twisted {twisted.__version__}; logged in as {self.login.username} "
            f"({self.login.fingerprint}).\n"
            "help() lists the helpers: streams() viewers() buffers() memory() chain() "
            "policy() ...\n"
        )

    # --- logging ------------------------------------------------------------------

    def audit(self, action: str, **fields: Any) -> None:
        """Log a state-changing *action* with who did it."""
        details = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        _log.info(
            "console {user} ({fingerprint}): {action}({details})",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            action=action,
            details=details,
            console_action=action,
            **{f"console_{key}": value for key, value in fields.items()},
        )

    def input_received(self, source: str) -> None:
        """Log a line typed at the prompt."""
        _log.info(
            "console {user} ({fingerprint}) >>> {source}",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            source=source,
        )

    # --- read-only helpers -------------------------------------------------------

    def _now(self) -> float:
        return float(self.factory.seconds())

    def streams(self) -> Table:
        """Every stream: app, name, publisher address, viewers, bit rates in/out, uptime.

        Bit rates (kbit/s) are measured over the last 1-4 s; ``-`` until two
        samples exist.  Uptime counts from the current publisher's publish.
        Returns the rows; each is a dict with the keys shown.
        """
        now = self._now()
        rows = []
        for stream in self.factory.stream_stats():
            published_at = stream.published_at
            rows.append(
                {
                    "app": stream.app,
                    "name": stream.name,
                    "publisher": stream.publisher,
                    "viewers": stream.viewers,
                    "kbit_in": _kbits(self.sampler.rate(stream_in(stream), stream.bytes_in, now)),
                    "kbit_out": _kbits(
                        self.sampler.rate(stream_out(stream), stream.bytes_out, now)
                    ),
                    "uptime": None if published_at is None else now - published_at,
                    "gop_bytes": stream.gop_bytes,
                }
            )
        columns = [
            Column("app", "app"),
            Column("name", "name"),
            Column("publisher", "publisher"),
            Column("viewers", "viewers"),
            Column("kbit_in", "kbit/s in"),
            Column("kbit_out", "kbit/s out"),
            Column("uptime", "uptime", show_duration),
        ]
        viewers = sum(row["viewers"] for row in rows)
        return Table(
            columns,
            rows,
            footer=[f"{plural(len(rows), 'stream')}, {plural(viewers, 'viewer')}"],
            empty="(no streams)",
        )

    def _viewer_row(
        self, connection: ConnectionStats, viewer: ViewerStats, now: float
    ) -> dict[str, Any]:
        dropped = dict(viewer.dropped)
        return {
            "id": connection.conn_id,
            "address": connection.peer,
            "protocol": viewer.protocol,
            "stream": viewer.stream,
            "queued": viewer.queued,
            "kernel": viewer.kernel_queued,
            "peak": max(viewer.queued, viewer.peak_queued),
            "kbit_out": _kbits(
                self.sampler.rate(connection_out(connection), connection.bytes_sent, now)
            ),
            "frames_sent": viewer.frames_sent,
            "dropped": dropped,
            "drop_inter": dropped.get(DropReason.INTER, 0),
            "drop_keyframe": dropped.get(DropReason.KEYFRAME, 0),
            "drop_audio": dropped.get(DropReason.AUDIO, 0),
            "drop_catch_up": dropped.get(DropReason.CATCH_UP, 0),
            "lag_ms": viewer.lag_ms,
            "state": viewer.state,
        }

    def viewers(self, name: str | None = None) -> Table:
        """Every viewer, or those of stream *name* ("app/name" or "name"): queues, drops, lag.

        Per viewer: connection id, address, wire protocol (``rtmp``, ``http-flv``,
        ``ws-flv``), stream, bytes queued in its transport
        now, held by the kernel unacknowledged, and queued at peak, kbit/s sent,
        frames sent, frames dropped by reason
        (inter, keyframe, audio, catch-up: inter frames dropped while waiting
        for a keyframe), lag behind live in ms, and state: ``ok``,
        ``awaiting-keyframe``, ``congested`` (the transport paused us or the
        policy is dropping) or ``closing``.  Returns the rows.
        """
        now = self._now()
        rows = []
        for connection in self.factory.connection_stats():
            viewer = connection.viewer
            if viewer is None:
                continue
            if name is not None and name not in (viewer.stream, viewer.stream.partition("/")[2]):
                continue
            rows.append(self._viewer_row(connection, viewer, now))
        columns = [
            Column("id", "id"),
            Column("address", "address"),
            Column("protocol", "proto"),
            Column("stream", "stream"),
            Column("queued", "queued"),
            Column("kernel", "kernel"),
            Column("peak", "peak"),
            Column("kbit_out", "kbit/s"),
            Column("frames_sent", "sent"),
            Column("drop_inter", "inter"),
            Column("drop_keyframe", "keyframe"),
            Column("drop_audio", "audio"),
            Column("drop_catch_up", "catch-up"),
            Column("lag_ms", "lag ms"),
            Column("state", "state"),
        ]
        return Table(
            columns,
            rows,
            title="bytes queued now, in the kernel, at peak; frames sent; frames dropped "
            "by reason (inter keyframe audio catch-up)",
            footer=[plural(len(rows), "viewer")],
            empty="(no viewers)" if name is None else f"(no viewers of {name})",
        )

    def buffers(self, top: int = 10) -> Table:
        """The *top* connections holding the most bytes queued, largest first, and the total.

        Columns: id, address, role (``play app/name``, ``publish app/name``),
        bytes queued now and at peak, lag ms, state; then the total over every
        connection.  Only connections with bytes queued are listed.  Returns
        the rows.
        """
        connections = self.factory.connection_stats()
        holding = sorted(
            (c for c in connections if c.queued > 0), key=lambda c: (-c.queued, c.conn_id)
        )
        total = sum(c.queued for c in holding)
        rows = []
        for connection in holding[: max(0, top)]:
            viewer = connection.viewer
            rows.append(
                {
                    "id": connection.conn_id,
                    "address": connection.peer,
                    "role": connection.role,
                    "queued": connection.queued,
                    "peak": max(connection.queued, viewer.peak_queued) if viewer else None,
                    "lag_ms": viewer.lag_ms if viewer else None,
                    "state": viewer.state if viewer else "-",
                }
            )
        columns = [
            Column("id", "id"),
            Column("address", "address"),
            Column("role", "role"),
            Column("queued", "queued"),
            Column("peak", "peak"),
            Column("lag_ms", "lag ms"),
            Column("state", "state"),
        ]
        shown = f"; top {len(rows)} shown" if len(holding) > len(rows) else ""
        return Table(
            columns,
            rows,
            footer=[
                f"total queued: {show_bytes(total)} in {len(holding)} of "
                f"{plural(len(connections), 'connection')}{shown}"
            ],
            empty=f"(no bytes queued in {plural(len(connections), 'connection')})",
        )

    def memory(self) -> Report:
        """Where memory goes: RSS, queued bytes, GOP caches, chat histories, gc objects by type.

        Bytes queued in the transports of every connection, the GOP caches of
        every stream, the chat rooms' histories, and the 10 most numerous types
        of gc-tracked object.  The gc counts walk every container object (bytes and str are not
        gc-tracked, so queued frames show up as the ``Frame`` objects holding
        them).  Returns the numbers as a dict.
        """
        rss, rss_peak, rss_source = _resident_memory()
        connections = self.factory.connection_stats()
        queued = [c.queued for c in connections]
        streams = self.factory.stream_stats()
        gop_bytes = sum(s.gop_bytes for s in streams)
        gop_frames = sum(s.gop_frames for s in streams)
        chat_rooms = len(streams)
        chat_messages = sum(s.chat_messages for s in streams)
        chat_bytes = sum(s.chat_bytes for s in streams)
        by_type: Counter[str] = Counter()
        for obj in gc.get_objects():
            kind = type(obj)
            module = kind.__module__
            by_type[
                kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
            ] += 1
        data = {
            "rss": rss,
            "rss_peak": rss_peak,
            "rss_source": rss_source,
            "queued": sum(queued),
            "queued_connections": sum(1 for q in queued if q),
            "connections": len(connections),
            "gop_bytes": gop_bytes,
            "gop_frames": gop_frames,
            "streams": len(streams),
            "chat_bytes": chat_bytes,
            "chat_messages": chat_messages,
            "chat_rooms": chat_rooms,
            "gc_objects": sum(by_type.values()),
            "gc_top": by_type.most_common(10),
        }

        def amount(count: int | None) -> str:
            return "-" if count is None else show_bytes(count)

        lines = [
            ["RSS", amount(rss), f"peak {amount(rss_peak)}, from {rss_source}"],
            [
                "queued in transports",
                amount(data["queued"]),
                f"in {data['queued_connections']} of {plural(len(connections), 'connection')}",
            ],
            [
                "GOP caches",
                amount(gop_bytes),
                f"{plural(gop_frames, 'frame')} in {plural(len(streams), 'stream')}",
            ],
            [
                "chat histories",
                amount(chat_bytes),
                f"{plural(chat_messages, 'message')} in {plural(chat_rooms, 'room')}",
            ],
        ]
        label = max(len(line[0]) for line in lines)
        value = max(len(line[1]) for line in lines)
        text = [f"{a:<{label}}  {b:>{value}}  {c}" for a, b, c in lines]
        text.append(f"gc-tracked objects: {data['gc_objects']:,}; top 10 by type:")
        top = data["gc_top"]
        name_width = max((len(name) for name, _ in top), default=0)
        text.extend(f"  {name:<{name_width}}  {count:>10,}" for name, count in top)
        return Report(data, "\n".join(text))

    def chain(self, cls: type | None = None) -> Report:
        """The composed protocol's MRO, and the path of every chained hook through it.

        For each hook of ``CHAINED_HOOKS`` the mixins that override it, in the
        order a call runs through them, ending at ProtocolRoot.  An override
        that does not call ``super()`` exactly once, unconditionally, is marked
        ``BROKEN`` and the mixins after it are listed as never reached: that is
        how a lost ``super().admit_frame()`` silences the drop policy.  *cls*
        defaults to the protocol class the factory builds.  Returns the data.
        """
        from streamserver.protocol.base import CHAINED_HOOKS

        if cls is None:
            cls = getattr(self.factory, "protocol_class", None)
        if cls is None:
            from streamserver.protocol.server import RTMPServerProtocol

            cls = RTMPServerProtocol
        mro = [(klass.__qualname__, klass.__module__) for klass in cls.__mro__]
        by_name: dict[str, type] = {}
        for klass in cls.__mro__:
            by_name.setdefault(klass.__qualname__, klass)
        hooks: dict[str, list[str]] = {}
        broken: dict[str, tuple[str, str]] = {}
        lines = [f"{cls.__qualname__} ({cls.__module__}), MRO:"]
        width = max(len(name) for name, _ in mro)
        lines += [f"  {i:2d} {name:<{width}}  {module}" for i, (name, module) in enumerate(mro)]
        lines.append("chained hooks, in call order (each override must call super() once):")
        hook_width = max(len(hook) for hook in CHAINED_HOOKS)
        for hook in CHAINED_HOOKS:
            path = hook_path(cls, hook)
            hooks[hook] = path
            steps: list[str] = []
            for index, name in enumerate(path):
                owner = by_name.get(name)
                function = vars(owner).get(hook) if owner is not None else None
                problem = None
                if owner is not ProtocolRoot and isinstance(function, types.FunctionType):
                    problem = chain_problem(function, hook)
                if problem is None:
                    steps.append(name)
                    continue
                steps.append(f"{name} [BROKEN: {problem}]")
                broken[hook] = (name, problem)
                rest = path[index + 1 :]
                if rest:
                    steps.append(f"never reached: {', '.join(rest)}")
                break
            lines.append(f"  {hook:<{hook_width}}  {' -> '.join(steps)}")
        if broken:
            lines.append(f"BROKEN CHAINS: {', '.join(sorted(broken))}")
        data = {"class": cls.__qualname__, "mro": [name for name, _ in mro], "hooks": hooks}
        data["broken"] = broken
        return Report(data, "\n".join(lines))

    def policy(self) -> Report:
        """The drop policy's current watermarks, and the viewers it disconnected so far.

        Change them with ``set_policy(name=value, ...)``.  Returns the limits as a dict.
        """
        limits = self.factory.policy.limits
        data = limits.as_dict()
        rows = [
            ("drop_low", limits.drop_low, "bytes queued above which inter frames are dropped"),
            ("drop_high", limits.drop_high, "... above which audio and keyframes are too"),
            ("max_queue", limits.max_queue, "a viewer with more queued is disconnected"),
            ("stall_timeout", limits.stall_timeout, "seconds without write progress: disconnect"),
            ("max_lag_ms", limits.max_lag_ms, "lag kept under (sixth/third: drop levels)"),
            ("enabled", limits.enabled, "False: never drop nor disconnect (--no-drop)"),
        ]
        width = max(len(show_value(value)) for _, value, _ in rows)
        lines = [
            f"{name:<13}  {show_value(value):>{width}}  {meaning}" for name, value, meaning in rows
        ]
        disconnects = {str(k): v for k, v in self.factory.disconnects.items()}
        lines.append(
            "disconnected by the policy: "
            + (", ".join(f"{k} {v}" for k, v in sorted(disconnects.items())) or "none")
        )
        return Report({**data, "disconnects": disconnects}, "\n".join(lines))

    # --- state-changing helpers --------------------------------------------------

    def set_policy(self, **limits: Any) -> Report:
        """Change drop-policy limits for every viewer at once.  Logged with your key.

        Example: ``set_policy(drop_low=256 * 1024, stall_timeout=5)``.

        Names: drop_low, drop_high, max_queue, stall_timeout, max_lag_ms,
        enabled.  Every viewer's next frame is judged by the new limits.
        Returns ``policy()``.

        :raises ValueError: an unknown name or an inconsistent combination
            (nothing is changed then).
        """
        if not limits:
            raise ConsoleError("name the limits to change, e.g. set_policy(drop_low=256 * 1024)")
        old = self.factory.policy.limits.as_dict()
        try:
            new = self.factory.set_policy(**limits)
        except ValueError:
            self.audit("set_policy", refused=limits)
            raise
        changes = {name: (old[name], getattr(new, name)) for name in limits}
        self.audit("set_policy", changes=changes)
        return self.policy()

    def reload(self) -> Text:
        """Re-read ``--config``'s file and apply it (as ``SIGHUP``); what changed.

        A bad file changes nothing: the text says why.  Logged with your key.
        """
        reloader = getattr(self.factory, "reloader", None)
        if reloader is None:
            raise ConsoleError("this server was started without --config: nothing to reload")
        result = reloader.reload_everywhere()
        self.audit("reload", ok=result.ok, error=result.error)
        return Text(result.text())

    def kick(self, conn_id: int) -> Text:
        """Disconnect connection *conn_id* now.  Logged with your key.

        The id is the one ``viewers()`` and ``buffers()`` show; the connection's
        queued bytes are discarded.
        """
        found = [c for c in self.factory.connection_stats() if c.conn_id == conn_id]
        if not found:
            raise ConsoleError(f"no connection {conn_id!r}; buffers() and viewers() list the ids")
        peer = found[0].peer
        self.audit("kick", conn_id=conn_id, peer=peer, role=found[0].role)
        self.factory.kick(
            conn_id,
            reason=f"kicked from the console by {self.login.username} ({self.login.fingerprint})",
        )
        return Text(f"kicked connection {conn_id} ({peer})")

    def _moderation(self, name: str) -> Callable[..., Any]:
        method = getattr(self.factory, name, None)
        if not callable(method):
            raise ConsoleError(
                f"this server has no chat moderation: {type(self.factory).__name__}.{name}() "
                "does not exist"
            )
        return method

    @staticmethod
    def _check_stream(stream: Any) -> None:
        if not isinstance(stream, str) or "/" not in stream.strip("/"):
            raise ConsoleError(f"stream must be 'app/name', e.g. 'live/cam', not {stream!r}")

    def mute(self, stream: str, nick: str) -> Text:
        """Mute *nick* in the chat of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("mute")
        result = method(stream, nick)
        self.audit("mute", stream=stream, nick=nick, result=result)
        if result:
            return Text(f"{nick} muted in {stream}")
        return Text(f"{nick} not muted in {stream}: no such stream, or muted already")

    def unmute(self, stream: str, nick: str) -> Text:
        """Unmute *nick* in the chat of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("unmute")
        result = method(stream, nick)
        self.audit("unmute", stream=stream, nick=nick, result=result)
        if result:
            return Text(f"{nick} unmuted in {stream}")
        return Text(f"{nick} not unmuted in {stream}: no such stream, or not muted")

    def clear_history(self, stream: str) -> Text:
        """Forget the chat history of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("clear_history")
        result = method(stream)
        self.audit("clear_history", stream=stream, result=result)
        return Text(f"cleared the chat history of {stream}: {result!r}")


def _call_form(name: str, function: Callable[..., Any]) -> str:
    """``buffers(top=10)``: how to call *function*, without annotations."""
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        text = parameter.name
        if parameter.kind is parameter.VAR_KEYWORD:
            text = "**" + text
        elif parameter.default is not parameter.empty:
            text += f"={parameter.default!r}"
        parameters.append(text)
    return f"{name}({', '.join(parameters)})"


class _Leave:
    """``exit``/``quit`` in the console: end the session, not the server."""

    def __init__(self, close: Callable[[], None] | None) -> None:
        self._close = close

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to leave the console."

    def __call__(self, code: Any = None) -> None:
        if self._close is None:
            raise ConsoleError("this console cannot be closed from inside")
        self._close()


def _resident_memory() -> tuple[int | None, int | None, str]:
    """(RSS now, peak RSS, where from) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        now = int(fields["VmRSS"].split()[0]) * 1024
        peak = int(fields["VmHWM"].split()[0]) * 1024 if "VmHWM" in fields else None
        return now, peak, "/proc/self/status"
    except (OSError, KeyError, ValueError):
        pass
    try:
        import resource
    except ImportError:
        return None, None, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    return None, peak if sys.platform == "darwin" else peak * 1024, "getrusage"
