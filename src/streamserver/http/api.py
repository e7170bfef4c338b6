"""The JSON API under ``/api``: what the server holds, and moderation with a token.

Read (always):

``GET /api/streams``
    every stream: publisher, media info, bit rate in, viewers by wire protocol,
    bytes in and out, frames dropped by reason, chat; with ``--cluster`` also
    ``cluster``: this node's id, the nodes, and every stream of the cluster with
    its origin node, viewers per node and in all (as of the node's last refresh,
    ``age`` seconds ago; docs/scaling.md);
``GET /api/streams/APP/NAME``
    one stream, the same and each of its viewers (``APP`` may be several
    segments; ``NAME`` is the last);
``GET /api/server``
    version, uptime, connections by protocol, bytes held in transports,
    viewer disconnects by reason, refusals;
``GET /api/recordings``
    with ``--record``: per stream, the recording files finished (with their
    ``/recordings/...`` URL) and being written (``"recording": true``), each
    with its start, duration, size and format
    (:class:`~streamserver.recording.listing.RecordingIndex`); 404 without.

Write (only with ``--api-token``; without one these paths do not exist, 404),
each with ``Authorization: Bearer TOKEN`` (401 without it):

``POST /api/streams/APP/NAME/kick``
    disconnect the publisher (the stream ends);
``POST /api/streams/APP/NAME/viewers/ID/kick``
    disconnect viewer ``ID`` (its connection id);
``POST /api/streams/APP/NAME/chat/mute`` and ``.../chat/unmute``
    with the body ``{"nick": "..."}``;
``POST /api/streams/APP/NAME/chat/clear``
    forget the room's history;
``POST /api/streams/APP/NAME/chat/kick``
    with the body ``{"nick": "..."}``: disconnect every participant of the room
    with that nick (compared as mutes compare), whatever its protocol.
``POST /api/reload``
    with ``--config``: re-read the file and apply it (:mod:`streamserver.reload`);
    200 with what changed, 400 with the file's error (nothing changed), 409
    without ``--config``.

A ``GET`` always reads the stream its whole path names and a ``POST`` always
acts, so a stream called ``kick`` stays readable.  Every answer is JSON
(``Cache-Control: no-cache``, ``Access-Control-Allow-Origin`` from
``--http-cors-origin``), errors included: ``{"error": "message"}`` with 400 (bad
body), 401 (token), 404 (no such path, stream or viewer), 405 (method, with
``Allow``), 409 (nobody publishes the stream), 413 (body over
:data:`MAX_BODY_BYTES`), 429 (:data:`TOKEN_FAILURES` wrong tokens from that
address in :data:`TOKEN_FAILURE_WINDOW` seconds, with ``Retry-After``); a bug is
a 500 ``{"error": "internal error"}``, never a traceback.  Every action is logged
with the caller's address.

Numbers come from the typed snapshots (:mod:`streamserver.stats`), as the
console's do; actions go through the factory and the stream's chat room.
"""

from __future__ import annotations

import hmac
import json
import math
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from typing_extensions import override

from streamserver import __version__
from streamserver.http.cors import allow_origin, preflight
from streamserver.media.rooms import clean_nick
from streamserver.policy import DisconnectReason
from streamserver.recording.listing import RecordingIndex
from streamserver.stats import WIRE_PROTOCOLS

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory
    from streamserver.http.channel import StreamChannel
    from streamserver.media.stream import Stream
    from streamserver.stats import ConnectionStats, StreamStats, ViewerStats

_log = Logger()

__all__ = ["MAX_BODY_BYTES", "TOKEN_FAILURES", "TOKEN_FAILURE_WINDOW", "ApiResource"]

#: Largest request body accepted.  The biggest body the API reads is
#: ``{"nick": ...}`` with a 32-character nick; 4 KiB leaves room for any client's
#: formatting and bounds what one request makes us parse.
MAX_BODY_BYTES = 4 * 1024

#: Wrong tokens one address may send in :data:`TOKEN_FAILURE_WINDOW` seconds; past
#: that every write request from it is answered 429 until the oldest failure ages
#: out.  A person mistyping the token tries a few times; a guesser at 10 a minute
#: needs forever for a token of any length.
TOKEN_FAILURES = 10
TOKEN_FAILURE_WINDOW = 60.0

#: Addresses whose failures are remembered at most (the oldest go first), so a
#: flood from many addresses cannot grow the table without bound.
TOKEN_FAILURE_HOSTS = 10_000

_READ = (b"GET", b"HEAD", b"OPTIONS")
_WRITE = (b"POST", b"OPTIONS")

#: The chat moderation actions: ``.../chat/ACTION``.
_CHAT_ACTIONS = ("mute", "unmute", "clear", "kick")


class _ApiError(Exception):
    """An answer other than 200: its status, message and extra headers."""

    def __init__(self, code: int, message: str, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def _not_allowed(allowed: tuple[bytes, ...]) -> _ApiError:
    methods = b", ".join(allowed)
    return _ApiError(
        405, f"method not allowed here (allowed: {methods.decode()})", {b"allow": methods}
    )


def _by_protocol(counts: dict[str, int], total: int) -> dict[str, int]:
    """``{"total": ..., "rtmp": ..., "http-flv": ..., "ws-flv": ..., other...}``."""
    out = {"total": total, **dict.fromkeys(WIRE_PROTOCOLS, 0)}
    out.update(counts)
    return out


class TokenFailures:
    """Wrong API tokens by address, in a sliding window: who is refused for now."""

    def __init__(self) -> None:
        self._by_host: dict[str, deque[float]] = {}

    def retry_after(self, host: str, now: float) -> float | None:
        """Seconds until *host* may try again, or ``None`` if it may now."""
        times = self._by_host.get(host)
        if times is None:
            return None
        while times and times[0] <= now - TOKEN_FAILURE_WINDOW:
            times.popleft()
        if not times:
            del self._by_host[host]
            return None
        if len(times) < TOKEN_FAILURES:
            return None
        return times[0] + TOKEN_FAILURE_WINDOW - now

    def failed(self, host: str, now: float) -> None:
        """Count a wrong token from *host* at *now*."""
        times = self._by_host.pop(host, None)
        if times is None:
            times = deque()
            if len(self._by_host) >= TOKEN_FAILURE_HOSTS:
                del self._by_host[next(iter(self._by_host))]
        times.append(now)
        self._by_host[host] = times  # last: the most recent at the end


class _JsonResource(Resource):
    """A resource that answers JSON, errors included.

    Subclasses implement :meth:`answer`; this class adds the headers, answers
    ``HEAD`` as ``GET`` without the body and ``OPTIONS`` (the CORS preflight),
    and turns an :class:`_ApiError` -- or a bug -- into its JSON error.
    """

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        """The JSON value answering *method* on *path* (the segments after this resource).

        :raises _ApiError: anything but a 200.
        """
        raise NotImplementedError

    @override
    def render(self, request: Request) -> bytes:
        method = request.method
        code = 200
        headers: dict[bytes, bytes] = {}
        try:
            path = _segments(request.postpath or [])
            if method == b"OPTIONS":
                return self._preflight(request)
            payload = self.answer(request, b"GET" if method == b"HEAD" else method, path)
        except _ApiError as error:
            code, headers, payload = error.code, error.headers, {"error": error.message}
        except Exception:
            _log.failure(
                "answering {method} {uri} failed", Failure(), method=method, uri=request.uri
            )
            code, payload = 500, {"error": "internal error"}
        body = json.dumps(payload, indent=2, allow_nan=False).encode("ascii") + b"\n"
        request.setResponseCode(code)
        self._common_headers(request)
        request.setHeader(b"content-type", b"application/json")
        for name, value in headers.items():
            request.setHeader(name, value)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b"" if method == b"HEAD" else body

    def _common_headers(self, request: Request) -> None:
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        allow_origin(request, self.factory.config.http_cors_origin)

    def _preflight(self, request: Request) -> bytes:
        """A CORS preflight: the API's methods and the token's header are allowed."""
        self._common_headers(request)
        return preflight(
            request,
            self.factory.config.http_cors_origin,
            b"GET, HEAD, POST, OPTIONS",
            b"authorization, content-type",
        )


def _segments(postpath: list[bytes]) -> list[str]:
    """The path segments after the resource, decoded; a trailing slash is ignored.

    :raises _ApiError: a segment is not UTF-8 (no stream can be named so).
    """
    if postpath and postpath[-1] == b"":
        postpath = postpath[:-1]
    try:
        return [segment.decode("utf-8") for segment in postpath]
    except UnicodeDecodeError:
        raise _ApiError(404, "not found") from None


class _NotFound(_JsonResource):
    """Any path under ``/api`` that is none of the API's."""

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        raise _ApiError(404, "not found: see /api")


class ApiResource(_JsonResource):
    """``/api``: the index of the API, and the root of its paths."""

    isLeaf = False

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__(factory)
        streams = StreamsResource(factory)
        self.putChild(b"streams", streams)
        self.putChild(b"reload", ReloadResource(factory, streams))
        self.putChild(b"server", ServerResource(factory))
        self.putChild(b"recordings", RecordingsResource(factory))
        self._not_found = _NotFound(factory)

    @override
    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return self._not_found

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        if method not in _READ:
            raise _not_allowed(_READ)
        return {
            "streams": "/api/streams",
            "stream": "/api/streams/APP/NAME",
            "server": "/api/server",
            "recordings": "/api/recordings",
            "writable": self.factory.config.api_token is not None,
        }


class ReloadResource(_JsonResource):
    """``POST /api/reload``: re-read ``--config``'s file (the token as for the other writes)."""

    def __init__(self, factory: RTMPServerFactory, streams: StreamsResource) -> None:
        super().__init__(factory)
        self._streams = streams

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        if path or self.factory.config.api_token is None:
            raise _ApiError(404, "not found: see /api")
        if method != b"POST":
            raise _not_allowed(_WRITE)
        self._streams.check_token(request)
        reloader = self.factory.reloader
        if reloader is None:
            raise _ApiError(409, "this server was started without --config: nothing to reload")
        _log.info("API: {caller} reloads the configuration", caller=_caller(request))
        result = reloader.reload_everywhere()
        if not result.ok:
            raise _ApiError(400, f"reload refused, nothing changed: {result.error}")
        return result.as_dict()


class ServerResource(_JsonResource):
    """``/api/server``: the server as a whole."""

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        if path:
            raise _ApiError(404, "not found: see /api")
        if method not in _READ:
            raise _not_allowed(_READ)
        factory = self.factory
        connections = factory.connection_stats()
        counts: dict[str, int] = {}
        for connection in connections:
            counts[connection.protocol] = counts.get(connection.protocol, 0) + 1
        streams = factory.streams()
        return {
            "version": __version__,
            "uptime": round(factory.seconds() - factory.started_at, 3),
            "connections": _by_protocol(counts, len(connections)),
            "streams": len(streams),
            "published": sum(1 for stream in streams if stream.publisher is not None),
            "viewers": sum(stream.subscriber_count for stream in streams),
            "bytes_queued": factory.bytes_queued_total(),
            "hls_bytes_held": factory.hls.total_bytes_held(),
            "recording": None if factory.recorder is None else factory.recorder.snapshot(),
            "disconnects": {**dict.fromkeys(DisconnectReason, 0), **factory.disconnects},
            "refusals": dict(factory.refusals),
        }


class RecordingsResource(_JsonResource):
    """``/api/recordings``: the files under ``--record``, per stream (404 without it)."""

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__(factory)
        root = factory.config.record_dir
        self.index = RecordingIndex(Path(root)) if root is not None else None

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        if path:
            raise _ApiError(404, "not found: see /api")
        if method not in _READ:
            raise _not_allowed(_READ)
        if self.index is None:
            raise _ApiError(404, "this server records nothing (no --record)")
        return {"streams": self.index.streams()}


class StreamsResource(_JsonResource):
    """``/api/streams`` and everything under it: the streams, and the actions on them.

    :ivar token_failures: the wrong tokens sent, by address (:class:`TokenFailures`).
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__(factory)
        self.token_failures = TokenFailures()

    # --- routing -------------------------------------------------------------------

    def answer(self, request: Request, method: bytes, path: list[str]) -> Any:
        factory = self.factory
        writable = factory.config.api_token is not None
        if not path:
            if method not in _READ:
                raise _not_allowed(_READ)
            now = factory.seconds()
            conn_ids = self._conn_ids()
            streams = sorted(factory.streams(), key=lambda s: (s.app, s.name))
            answer = {"streams": [self._describe(s, s.stats(), now, conn_ids) for s in streams]}
            if factory.cluster is not None:
                answer["cluster"] = factory.cluster.snapshot()
            return answer
        action = _action(path) if writable else None
        if method == b"POST" and action is not None:
            target, verb, argument = action
            self._authorize(request)
            body = _read_body(request)
            return self._act(request, self._find(target), verb, argument, body)
        stream = self._lookup(path) if len(path) >= 2 else None
        if stream is not None:
            if method not in _READ:
                raise _not_allowed(_READ)
            return self._detail(stream)
        if action is not None:
            raise _not_allowed(_WRITE)
        raise _ApiError(404, _missing(path) if len(path) >= 2 else "not found: see /api")

    def _lookup(self, path: list[str]) -> Stream | None:
        """The stream ``APP.../NAME`` names, or ``None``."""
        return self.factory.find_stream("/".join(path[:-1]), path[-1])

    def _find(self, path: list[str]) -> Stream:
        """The stream ``APP.../NAME`` names, or :class:`_ApiError` 404."""
        stream = self._lookup(path)
        if stream is None:
            raise _ApiError(404, _missing(path))
        return stream

    # --- reading ---------------------------------------------------------------------

    def _conn_ids(self) -> dict[int, int]:
        """The connection id of each connection, by the connection object's identity."""
        return {id(connection): conn_id for conn_id, connection in self.factory.connections.items()}

    def _describe(
        self, stream: Stream, stats: StreamStats, now: float, conn_ids: dict[int, int]
    ) -> dict[str, Any]:
        """One stream's entry of ``/api/streams``."""
        publisher = None
        if stats.publisher is not None and stream.publisher is not None:
            published_at = stats.published_at if stats.published_at is not None else now
            publisher = {
                "id": conn_ids.get(id(stream.publisher)),
                "address": stats.publisher,
                "uptime": round(now - published_at, 3),
            }
        media = stats.media
        return {
            "app": stats.app,
            "name": stats.name,
            "title": stream.title,
            "publisher": publisher,
            "video": asdict(media.video) if media.video is not None else None,
            "audio": asdict(media.audio) if media.audio is not None else None,
            "bitrate_in": round(stats.bitrate_in) if stats.bitrate_in is not None else None,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "viewers": _by_protocol(dict(stats.viewers_by_protocol), stats.viewers),
            "dropped": {str(reason): count for reason, count in stats.dropped.items()},
            "chat": {
                "participants": stats.chat_participants,
                "messages": stats.chat_posted,
                "history": stats.chat_messages,
            },
            "hls": self._hls(stream),
            "relays": self._relays(stream),
            "recording": (
                None
                if self.factory.recorder is None
                else self.factory.recorder.stream_snapshot(stream)
            ),
        }

    def _relays(self, stream: Stream) -> dict[str, Any] | None:
        """The stream's pushes and pull (docs/scaling.md); ``None`` when it has neither."""
        pushes = self.factory.pushes.of(stream)
        pull = self.factory.pulls.of(stream)
        if not pushes and pull is None:
            return None
        return {
            "pushes": [push.stats() for push in pushes],
            "pull": pull.stats() if pull is not None else None,
        }

    def _hls(self, stream: Stream) -> dict[str, Any] | None:
        """The stream's HLS segmenter (``None`` while none runs): memory, segments, parked."""
        entry = self.factory.hls.get(stream)
        if entry is None:
            return None
        segmenter = entry.segmenter
        return {
            "bytes_held": segmenter.bytes_held,
            "segments": sum(1 for segment in segmenter.segments if segment.complete),
            "next_msn": segmenter.next_msn,
            "waiting_requests": entry.waiting,
            "ts": entry.ts_enabled,
        }

    def _detail(self, stream: Stream) -> dict[str, Any]:
        """``/api/streams/APP/NAME``: the stream's entry and each of its viewers."""
        factory = self.factory
        entry = self._describe(stream, stream.stats(), factory.seconds(), self._conn_ids())
        owners = {id(viewer.owner) for viewer in stream.subscribers}
        viewers = []
        for conn_id in sorted(factory.connections):
            connection = factory.connections[conn_id]
            if id(connection) not in owners:
                continue
            stats = connection.stats()
            if stats.viewer is not None:
                viewers.append(_viewer(stats, stats.viewer))
        entry["viewer_list"] = viewers
        return entry

    # --- acting ------------------------------------------------------------------------

    def check_token(self, request: Request) -> None:
        """:meth:`_authorize`, for the other write resources (one count of wrong tokens)."""
        self._authorize(request)

    def _authorize(self, request: Request) -> None:
        """The request carries the API's bearer token, or :class:`_ApiError` 401.

        Compared in constant time; an address that sent :data:`TOKEN_FAILURES`
        wrong tokens in :data:`TOKEN_FAILURE_WINDOW` seconds gets 429 for every
        write until the oldest ages out, right token or not.
        """
        factory = self.factory
        now = factory.seconds()
        host = str(getattr(request.getClientAddress(), "host", "unix"))
        wait = self.token_failures.retry_after(host, now)
        if wait is not None:
            raise _ApiError(
                429,
                f"too many wrong API tokens from {host}: try again in {math.ceil(wait)} s",
                {b"retry-after": b"%d" % math.ceil(wait)},
            )
        token = factory.config.api_token or ""
        scheme, _, credentials = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(), token.encode("utf-8")
        ):
            return
        challenge = b'Bearer realm="streamserver"'
        if scheme:
            challenge += b', error="invalid_token"'  # RFC 6750 3.1: one was sent, and is wrong
            self.token_failures.failed(host, now)
            factory.connection_refused(
                cast("StreamChannel", request.channel), "api-token", "a wrong API token"
            )
        raise _ApiError(
            401,
            "this needs the API token: Authorization: Bearer TOKEN",
            {b"www-authenticate": challenge},
        )

    def _act(
        self,
        request: Request,
        stream: Stream,
        verb: str,
        argument: str | None,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """Carry out *verb* on *stream*; the answer says what was done."""
        factory = self.factory
        key = f"{stream.app}/{stream.name}"
        caller = _caller(request)
        if verb == "kick":
            publisher = stream.publisher
            conn_id = self._conn_ids().get(id(publisher)) if publisher is not None else None
            if conn_id is None:
                raise _ApiError(409, f"nobody publishes {key}")
            _log.info("API: {caller} kicks the publisher of {stream}", caller=caller, stream=key)
            factory.kick(conn_id, f"kicked through the API by {caller}")
            return {"stream": key, "kicked": conn_id}
        if verb == "kick-viewer":
            conn_id = int(argument) if argument is not None and argument.isdecimal() else None
            connection = factory.connections.get(conn_id) if conn_id is not None else None
            if (
                conn_id is None
                or connection is None
                or not any(viewer.owner is connection for viewer in stream.subscribers)
            ):
                raise _ApiError(404, f"{key} has no viewer {argument}")
            _log.info(
                "API: {caller} kicks viewer {id} of {stream}", caller=caller, id=conn_id, stream=key
            )
            factory.kick(conn_id, f"kicked through the API by {caller}")
            return {"stream": key, "kicked": conn_id}
        room = stream.chat
        if verb == "clear":
            count = room.clear_history()
            _log.info(
                "API: {caller} cleared {count} chat messages of {stream}",
                caller=caller,
                count=count,
                stream=key,
            )
            return {"stream": key, "cleared": count}
        nick = clean_nick(body.get("nick"))
        if not nick:
            raise _ApiError(400, 'the body must be {"nick": "..."} with a non-empty nick')
        if verb == "kick-nick":
            return self._kick_nick(stream, nick, caller)
        changed = room.mute(nick) if verb == "mute" else room.unmute(nick)
        _log.info(
            "API: {caller} {verb}s {nick} in {stream}{unchanged}",
            caller=caller,
            verb=verb,
            nick=nick,
            stream=key,
            unchanged="" if changed else " (no change)",
        )
        return {"stream": key, "nick": nick, "muted": room.is_muted(nick), "changed": changed}

    def _kick_nick(self, stream: Stream, nick: str, caller: str) -> dict[str, Any]:
        """Disconnect every participant of *stream*'s room speaking as *nick*."""
        key = f"{stream.app}/{stream.name}"
        wanted = nick.casefold()
        conn_ids: set[int] = set()
        for participant in stream.chat.participants:
            # every participant has nick and conn_id (RTMP seats, WebSocket, IRC)
            conn_id = getattr(participant, "conn_id", None)
            if str(getattr(participant, "nick", "")).casefold() == wanted and isinstance(
                conn_id, int
            ):
                conn_ids.add(conn_id)
        for conn_id in sorted(conn_ids):
            self.factory.kick(conn_id, f"kicked from the chat of {key} through the API by {caller}")
        _log.info(
            "API: {caller} kicks {nick} from the chat of {stream}: {count} connections",
            caller=caller,
            nick=nick,
            stream=key,
            count=len(conn_ids),
        )
        return {"stream": key, "nick": nick, "kicked": sorted(conn_ids)}


def _viewer(connection: ConnectionStats, viewer: ViewerStats) -> dict[str, Any]:
    """One viewer of ``/api/streams/APP/NAME``."""
    return {
        "id": connection.conn_id,
        "protocol": viewer.protocol,
        "address": viewer.peer,
        "state": str(viewer.state),
        "queued": viewer.queued,
        "kernel_queued": viewer.kernel_queued,
        "peak_queued": max(viewer.queued, viewer.peak_queued),
        "lag_ms": viewer.lag_ms,
        "bytes_sent": viewer.bytes_sent,
        "frames_sent": viewer.frames_sent,
        "dropped": {str(reason): count for reason, count in viewer.dropped.items()},
        "catch_ups": viewer.catch_ups,
    }


def _action(path: list[str]) -> tuple[list[str], str, str | None] | None:
    """``(stream path, verb, argument)`` if *path* ends in an action, else ``None``.

    The verbs: ``kick`` (``.../kick``), ``kick-viewer`` (``.../viewers/ID/kick``,
    argument ``ID``), ``mute``, ``unmute``, ``clear`` (``.../chat/VERB``), ``kick-nick``
    (``.../chat/kick``).  The
    stream path before the action must have an application and a name.
    """
    if len(path) >= 5 and path[-3] == "viewers" and path[-1] == "kick":
        return path[:-3], "kick-viewer", path[-2]
    if len(path) >= 4 and path[-2] == "chat" and path[-1] in _CHAT_ACTIONS:
        return path[:-2], "kick-nick" if path[-1] == "kick" else path[-1], None
    if len(path) >= 3 and path[-1] == "kick":
        return path[:-1], "kick", None
    return None


def _missing(path: list[str]) -> str:
    return f"no stream {'/'.join(path)}"


def _caller(request: Request) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '')}" if host is not None else str(address)


def _read_body(request: Request) -> dict[str, Any]:
    """The request's body: empty (``{}``) or a JSON object of at most :data:`MAX_BODY_BYTES`.

    :raises _ApiError: 413 for a larger body, 400 for anything but a JSON object.
    """
    declared = request.getHeader(b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    content = request.content
    data = content.read(MAX_BODY_BYTES + 1) if content is not None else b""
    if len(data) > MAX_BODY_BYTES:
        raise _ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise _ApiError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise _ApiError(400, "the body must be a JSON object")
    return value
