"""HLS and Low-Latency HLS: a stream's playlists, segments and parts over HTTP.

Under a stream's prefix ``/APP/NAME/`` (``rtmp://HOST/APP/NAME``):

``index.m3u8``
    the LL-HLS media playlist (fMP4: ``EXT-X-MAP``, parts, ``EXT-X-PRELOAD-HINT``),
    with blocking reload (``_HLS_msn``, ``_HLS_part``) and delta updates
    (``_HLS_skip=YES``);
``ts.m3u8``
    the classic MPEG-TS playlist, for players without fMP4 (asking for it turns
    TS segments on);
``init-N.mp4``, ``seg-MSN.m4s``, ``part-MSN-I.m4s``, ``seg-MSN.ts``
    what the playlists name: the fMP4 initialization section, a whole fMP4
    segment, one LL-HLS part, a TS segment.

The stream's :class:`~streamserver.http.hls_manager.HlsStream` (``factory.hls``)
holds the segmenter; a playlist request starts it if the stream has none
(``--hls on-demand``).  Everything served is bytes the segmenter made once: a
segment or part is never muxed per request.

A playlist asked for before the segmenter has made a whole segment waits for it
(at most ``--http-play-wait`` seconds, then 404: a playlist of parts alone has
nothing for players that ignore parts, ffmpeg's among them); a blocking reload waits
until the playlist holds the part it names (at most three target durations,
then 503), and the part a preload hint names waits until it is finished.  These
waits are parked on the stream (:meth:`HlsStream.park
<streamserver.http.hls_manager.HlsStream.park>`) and answered by the
segmenter's listener, together, as soon as what they wait for exists.

Access: every request is a ``play`` for the factory's authorizers (the query
arguments, ``?expires=...&token=...`` for ``--play-token-secret``, go to them),
and its query (but the ``_HLS_`` directives) goes on every URI of the playlists
it gets, so the segments are asked for with the same token; each decision is
kept :data:`ACCESS_CACHE_SECONDS` per stream, address and query, so the many
requests of one player cost one decision (:class:`PlayAccess`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamserver.auth import AccessRequest, AllOf, RelayRedirect, authorize
from streamserver.errors import StreamError, UnauthorizedError
from streamserver.factory import limited_host
from streamserver.http.cors import allow_origin, preflight
from streamserver.http.flv import stream_names
from streamserver.http.hls_manager import Condition, HlsStream, SegmenterLike, Wait

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory
    from streamserver.http.channel import StreamChannel

__all__ = [
    "ACCESS_CACHE_SECONDS",
    "Directives",
    "HlsResource",
    "HlsTarget",
    "PlayAccess",
    "is_hls_name",
    "parse_directives",
    "parse_hls_path",
]

_log = Logger()

#: The playlists of a stream, by file name, and the segmenter's name for each.
PLAYLISTS = {b"index.m3u8": "fmp4", b"ts.m3u8": "ts"}

_MEDIA_NAME = re.compile(
    rb"(?:init-(?P<init>\d{1,9})\.mp4"
    rb"|seg-(?P<seg>\d{1,15})\.(?P<ext>m4s|ts)"
    rb"|part-(?P<pmsn>\d{1,15})-(?P<part>\d{1,6})\.m4s)\Z"
)

#: Content types: what hls.js, Safari and ffmpeg accept (MediaMTX and Apple's
#: tools send the same).
PLAYLIST_TYPE = b"application/vnd.apple.mpegurl"
MP4_TYPE = b"video/mp4"
TS_TYPE = b"video/mp2t"

#: Segments, parts and init sections never change under their URI (the ``sid``
#: query names the segmenter session), so caches may keep them.
MEDIA_CACHE_CONTROL = b"public, max-age=3600, immutable"

#: A playlist without delivery directives changes with every part.
PLAYLIST_CACHE_CONTROL = b"no-cache"

#: The query argument naming a segmenter session on the URIs of its playlists.
SESSION_ARG = "sid"

#: Seconds an authorizer's decision on one player (stream, address, query) is
#: kept; a refusal is kept as long.
ACCESS_CACHE_SECONDS = 10.0

#: Decisions kept at most (one per player watching with its own token).
ACCESS_CACHE_LIMIT = 10_000

#: A blocking playlist reload waits at most this many target durations (then
#: 503, RFC 8216bis 6.2.5.2); so does a request for a part not finished yet.
BLOCK_TARGET_DURATIONS = 3

#: A part not finished yet is waited for if it is at most this many parts past
#: the one being made (a preload hint names the next one).
PART_LOOKAHEAD = 2


@dataclass(frozen=True)
class HlsTarget:
    """What an HLS path names.

    :ivar app: the application.
    :ivar name: the stream name.
    :ivar kind: ``playlist``, ``init``, ``segment`` or ``part``.
    :ivar variant: ``fmp4`` or ``ts``.
    :ivar number: the init section's number, or the segment's media sequence number.
    :ivar index: the part's index in its segment.
    """

    app: str
    name: str
    kind: str
    variant: str = "fmp4"
    number: int = 0
    index: int = 0


def is_hls_name(segment: bytes) -> bool:
    """Whether a path's last *segment* names an HLS resource (the site routes on it)."""
    return segment in PLAYLISTS or _MEDIA_NAME.match(segment) is not None


def parse_hls_path(segments: list[bytes]) -> HlsTarget | None:
    """The :class:`HlsTarget` of the path segments of ``/APP/NAME/FILE``, or ``None``.

    ``APP`` may be several segments, as for HTTP-FLV; they and ``NAME`` follow
    :func:`~streamserver.http.flv.stream_names`.
    """
    if len(segments) < 3:
        return None
    names = stream_names(segments[:-1])
    if names is None:
        return None
    app, name = names
    file = segments[-1]
    variant = PLAYLISTS.get(file)
    if variant is not None:
        return HlsTarget(app, name, "playlist", variant)
    found = _MEDIA_NAME.match(file)
    if found is None:
        return None
    if found["init"] is not None:
        return HlsTarget(app, name, "init", "fmp4", int(found["init"]))
    if found["seg"] is not None:
        variant = "ts" if found["ext"] == b"ts" else "fmp4"
        return HlsTarget(app, name, "segment", variant, int(found["seg"]))
    return HlsTarget(app, name, "part", "fmp4", int(found["pmsn"]), int(found["part"]))


class DirectiveError(ValueError):
    """A delivery directive the server must refuse with 400 (RFC 8216bis 6.2.5.2)."""


@dataclass(frozen=True)
class Directives:
    """A playlist request's delivery directives.

    :ivar msn: ``_HLS_msn``: block until the playlist holds this segment.
    :ivar part: ``_HLS_part``: ... and this part of it.
    :ivar skip: ``_HLS_skip=YES`` (or ``v2``): a delta update.
    """

    msn: int | None = None
    part: int | None = None
    skip: bool = False


def _number(args: dict[bytes, list[bytes]], name: bytes) -> int | None:
    values = args.get(name)
    if not values:
        return None
    value = values[0]
    if not value.isdigit() or len(value) > 15:
        raise DirectiveError(f"{name.decode()} must be a decimal integer")
    return int(value)


def parse_directives(args: dict[bytes, list[bytes]]) -> Directives:
    """The directives in a request's query arguments (Twisted's ``request.args``).

    :raises DirectiveError: ``_HLS_msn`` or ``_HLS_part`` is not a decimal
        integer, or ``_HLS_part`` comes without ``_HLS_msn``.
    """
    msn = _number(args, b"_HLS_msn")
    part = _number(args, b"_HLS_part")
    if part is not None and msn is None:
        raise DirectiveError("_HLS_part needs _HLS_msn")
    skip = (args.get(b"_HLS_skip") or [b""])[0] in (b"YES", b"v2")
    return Directives(msn, part, skip)


def advance_part_limit(part_target: float) -> float:
    """How many parts past the last one a blocking reload may ask for (RFC 8216bis 6.2.5.2)."""
    return 3 / part_target if 0 < part_target < 1 else 3


def reload_refusal(segmenter: SegmenterLike, msn: int, part: int | None) -> str | None:
    """Why a blocking reload for *msn*/*part* is refused at once (400), or ``None``.

    The last segment of the playlist is the one being made once it has a part
    (it is listed by its parts), else the last complete one.  A request more
    than two segments past it, or more than the Advance Part Limit past the
    last part, is refused.
    """
    next_msn, next_part = segmenter.next_msn, segmenter.next_part
    last = next_msn if next_part > 0 else next_msn - 1
    if msn > last + 2:
        return f"_HLS_msn={msn} is more than two segments past the last one ({last})"
    if part is not None:
        limit = advance_part_limit(segmenter.part_target)
        ahead = part - (next_part - 1) if msn == next_msn else part + 1
        if msn >= next_msn and ahead > limit:
            return f"_HLS_part={part} is more than {limit:g} parts past the last one"
    return None


def _play_args(args: dict[bytes, list[bytes]]) -> dict[str, str]:
    """The query arguments an authorizer sees: the first value of each but the directives."""
    out = {}
    for key, values in args.items():
        if not values or key.startswith(b"_HLS_") or key == SESSION_ARG.encode():
            continue
        out[key.decode("utf-8", "replace")] = values[0].decode("utf-8", "replace")
    return out


#: What a query may carry into a playlist's URIs unescaped (never a quote, which
#: would end a URI="..." attribute, nor a space or a line break).
_QUERY_SAFE = "=&%+-._~!$'()*,;:@/?"


def carried_query(uri: bytes) -> str:
    """The query of *uri* to carry onto a playlist's URIs: all but the directives and ``sid``.

    Arguments keep their order and bytes (a signed query stays valid);
    anything a playlist line could not hold is percent-encoded.
    """
    query = uri.partition(b"?")[2]
    kept = []
    for piece in query.split(b"&"):
        key = unquote_to_bytes(piece.partition(b"=")[0])
        if not piece or key.startswith(b"_HLS_") or key == SESSION_ARG.encode():
            continue
        kept.append(quote(piece, safe=_QUERY_SAFE))
    return "&".join(kept)


class PlayAccess:
    """The factory's authorizers, asked once per player every :data:`ACCESS_CACHE_SECONDS`.

    An HLS player makes several requests a second (playlist reloads, parts);
    asking ``--on-play`` or a custom authorizer each time would cost a callback
    per request.  A decision is kept per stream, peer address and query
    arguments (a token is part of them), allowed or refused; requests arriving
    while it is being made wait for the same one.  Without authorizers nothing
    is asked or kept.  *protocol* is the ``protocol`` of the requests' connect
    parameters (``hls``; ``recording`` for ``/recordings/...``).
    """

    def __init__(self, factory: RTMPServerFactory, protocol: str = "hls") -> None:
        self.factory = factory
        self.protocol = protocol
        self._decisions: dict[tuple[Any, ...], tuple[float, str | None, RelayRedirect | None]] = {}
        self._pending: dict[tuple[Any, ...], list[defer.Deferred[RelayRedirect | None]]] = {}

    def __len__(self) -> int:
        return len(self._decisions)

    def check(
        self, app: str, name: str, args: dict[str, str], peer: IAddress, uri: bytes
    ) -> defer.Deferred[RelayRedirect | None]:
        """Whether *peer* may play *app*/*name* with *args*.

        The Deferred has fired already when the decision is kept or the
        authorizers answer at once.

        :returns: a Deferred firing when allowed (with the
            :class:`~streamserver.auth.RelayRedirect` of an ``--on-play`` 3xx, else
            ``None``), failing with :class:`~streamserver.errors.UnauthorizedError`
            when refused.
        """
        authorizer = self.factory.authorizer_for(app)
        if isinstance(authorizer, AllOf) and not authorizer.authorizers:
            return defer.succeed(None)
        access = AccessRequest(
            "play",
            app,
            name,
            args,
            peer,
            0,
            {"tcUrl": uri.decode("utf-8", "replace"), "protocol": self.protocol},
        )
        key = (app, name, access.host, tuple(sorted(args.items())))
        now = self.factory.seconds()
        kept = self._decisions.get(key)
        if kept is not None and kept[0] > now:
            if kept[1] is None:
                return defer.succeed(kept[2])
            return defer.fail(UnauthorizedError(kept[1]))
        mine: defer.Deferred[RelayRedirect | None] = defer.Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(mine)
            return mine
        self._pending[key] = [mine]
        authorize(authorizer, access).addBoth(self._decided, key, access)
        return mine

    def _decided(
        self, result: Failure | RelayRedirect | None, key: tuple[Any, ...], access: AccessRequest
    ) -> None:
        waiting = self._pending.pop(key, [])
        if isinstance(result, Failure) and not result.check(UnauthorizedError):
            for deferred in waiting:  # not a decision (cancelled): nothing kept
                deferred.errback(result)
            return
        reason = result.getErrorMessage() if isinstance(result, Failure) else None
        if reason is not None:
            _log.info(
                "HLS play of {stream} by {peer} refused: {reason}",
                stream=access.stream,
                peer=access.host,
                reason=reason,
            )
        redirect = result if isinstance(result, RelayRedirect) else None
        self._keep(key, reason, redirect)
        for deferred in waiting:
            if reason is None:
                deferred.callback(redirect)
            else:
                deferred.errback(UnauthorizedError(reason))

    def _keep(
        self, key: tuple[Any, ...], reason: str | None, redirect: RelayRedirect | None = None
    ) -> None:
        now = self.factory.seconds()
        decisions = self._decisions
        if len(decisions) >= ACCESS_CACHE_LIMIT:
            for old in [k for k, (until, _, _) in decisions.items() if until <= now]:
                del decisions[old]
            while len(decisions) >= ACCESS_CACHE_LIMIT:
                del decisions[next(iter(decisions))]
        decisions.pop(key, None)
        decisions[key] = (now + ACCESS_CACHE_SECONDS, reason, redirect)


def _text(request: Request, code: int, message: str) -> None:
    """End *request* with *code* and a one-line text body, unless it is gone."""
    _send(request, code, message.encode("utf-8") + b"\n", b"text/plain; charset=utf-8", b"no-cache")


def _send(
    request: Request, code: int, body: bytes | list[bytes], content_type: bytes, cache: bytes
) -> None:
    """End *request* with *body* (bytes, or pieces written one after the other: a whole
    fMP4 segment is its parts, never joined), unless it is over already."""
    if request.finished or request._disconnected:
        return
    pieces = [body] if isinstance(body, bytes) else body
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % sum(len(piece) for piece in pieces))
    request.setHeader(b"cache-control", cache)
    for piece in pieces:
        request.write(piece)
    request.finish()


class _HlsRequest:
    """One HLS request being answered: authorized, then served or parked."""

    def __init__(
        self,
        factory: RTMPServerFactory,
        request: Request,
        target: HlsTarget,
        directives: Directives,
        query: str,
        session: str | None,
    ) -> None:
        self.factory = factory
        self.request = request
        self.target = target
        self.directives = directives
        self.query = query
        self.session = session
        self.wait: Wait | None = None
        self.gone = False
        self.redirect: RelayRedirect | None = None
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: Any) -> None:
        self.gone = True
        if self.wait is not None:
            self.wait.cancel()

    def start(self, decision: defer.Deferred[RelayRedirect | None]) -> None:
        decision.addCallbacks(self._allowed, self._refused)

    def _refused(self, failure: Failure) -> None:
        if self.gone:
            return
        if failure.check(UnauthorizedError):
            _text(self.request, 403, "play refused")
        else:
            _log.failure("authorizing an HLS request failed", failure)
            _text(self.request, 500, "could not authorize the play")

    def _allowed(self, redirect: RelayRedirect | None) -> None:
        if self.gone:
            return
        self.redirect = redirect
        if self.target.kind == "playlist":
            self.serve_playlist()
        else:
            self.serve_media()

    def _park(
        self,
        entry: HlsStream,
        key: tuple[Any, ...],
        condition: Condition,
        seconds: float,
        answer: Callable[[], None],
        give_up: Callable[[str], None],
    ) -> None:
        factory = self.factory
        config = factory.settings_for(entry.stream.app)
        host = limited_host(self.request.getClientAddress())
        by_host = factory.hls.waiting_by_host
        refusal = None
        if config.hls_max_waiting and entry.waiting >= config.hls_max_waiting:
            refusal = f"{config.hls_max_waiting} requests wait on this stream already"
        elif host and 0 < config.hls_max_waiting_per_ip <= by_host[host]:
            refusal = f"{config.hls_max_waiting_per_ip} requests from {host} wait already"
        if refusal is not None:
            channel = cast("StreamChannel", self.request.channel)  # the site's channels are
            factory.connection_refused(channel, "hls-waiting", refusal)
            _text(self.request, 503, refusal)
            return
        self.wait = Wait(factory.seconds() + seconds, answer, give_up)
        entry.park(key, condition, self.wait, ((by_host, host),) if host else ())

    def _block_seconds(self, entry: HlsStream) -> float:
        segment_seconds = self.factory.settings_for(entry.stream.app).hls_segment_seconds
        target = max(entry.segmenter.target_duration, math.ceil(segment_seconds))
        return float(BLOCK_TARGET_DURATIONS * target)

    # --- playlists --------------------------------------------------------------------

    def serve_playlist(self) -> None:
        """The playlist now, or once it has what the request waits for."""
        factory = self.factory
        target = self.target
        stream = factory.find_stream(target.app, target.name)
        entry = factory.hls.get(stream) if stream is not None else None
        if entry is None:
            try:
                stream = factory.open_stream(target.app, target.name, "NetStream.Play.Rejected")
            except StreamError as error:
                _text(self.request, 503, error.description)
                return
            entry = factory.hls.open(stream)
            factory.pulls.demand(stream, self.redirect.url if self.redirect is not None else None)
        entry.touch(factory.seconds())
        variant = target.variant
        if variant == "ts":
            entry.enable_ts()
        segmenter = entry.segmenter
        body = self._playlist(entry) if entry.ready(variant) else None
        if body is None:
            wait = factory.config.http_play_wait
            if not wait:
                self._no_playlist("timeout")
                return
            self._park(
                entry,
                ("first", variant),
                lambda s: entry.ready(variant),
                wait,
                self.serve_playlist,
                self._no_playlist,
            )
            return
        directives = self.directives
        msn = directives.msn if variant == "fmp4" else None
        if msn is not None:
            part = directives.part
            refusal = reload_refusal(segmenter, msn, part)
            if refusal is not None:
                _text(self.request, 400, refusal)
                return
            if not segmenter.has(msn, part):
                self._park(
                    entry,
                    ("reload", msn, part),
                    lambda s: s.has(msn, part),
                    self._block_seconds(entry),
                    lambda: self._send_playlist(entry, self._playlist(entry), blocking=True),
                    self._reload_failed,
                )
                return
        self._send_playlist(entry, body, blocking=msn is not None)

    def _playlist(self, entry: HlsStream) -> bytes | None:
        """The playlist this request asks for, its URIs carrying the session and query."""
        variant = self.target.variant
        skip = self.directives.skip and variant == "fmp4"
        query = f"?{SESSION_ARG}={entry.session}" + (f"&{self.query}" if self.query else "")
        return entry.playlist(variant, skip=skip, query=query)

    def _send_playlist(self, entry: HlsStream, body: bytes | None, *, blocking: bool) -> None:
        if body is None:  # cannot happen once there was one; answer as before the first
            self._no_playlist("gone")
            return
        cache = PLAYLIST_CACHE_CONTROL
        if blocking:
            # unique per update (RFC 8216bis 6.2.5.2): a shared cache may answer its
            # twins, so many players blocking on one part cost the origin one request
            target = max(1, entry.segmenter.target_duration)
            cache = b"public, max-age=%d" % target
        _send(self.request, 200, body, PLAYLIST_TYPE, cache)

    def _no_playlist(self, reason: str) -> None:
        target = self.target
        _text(self.request, 404, f"no HLS segment of {target.app}/{target.name} yet")

    def _reload_failed(self, reason: str) -> None:
        _text(self.request, 503, "the playlist did not reach the part asked for in time")

    # --- segments, parts, init sections -----------------------------------------------

    def serve_media(self) -> None:
        """The bytes of a segment, part or init section, or 404; a part still being made waits."""
        factory = self.factory
        target = self.target
        stream = factory.find_stream(target.app, target.name)
        entry = factory.hls.get(stream) if stream is not None else None
        if entry is None:
            _text(self.request, 404, f"no HLS session for {target.app}/{target.name}")
            return
        if self.session is not None and self.session != entry.session:
            _text(self.request, 404, "that HLS session has ended: reload the playlist")
            return
        entry.touch(factory.seconds())
        data = self._media(entry.segmenter)
        if data is not None:
            self._send_media(data)
            return
        condition = self._soon(entry.segmenter)
        if condition is None:
            _text(self.request, 404, f"no such HLS file of {target.app}/{target.name}")
            return
        self._park(
            entry,
            (target.kind, target.variant, target.number, target.index),
            condition,
            self._block_seconds(entry),
            lambda: self._media_ready(entry),
            self._media_failed,
        )

    def _media(self, segmenter: SegmenterLike) -> bytes | list[bytes] | None:
        target = self.target
        if target.kind == "init":
            return segmenter.init_segment(target.number)
        if target.kind == "part":
            part = segmenter.part(target.number, target.index)
            return part.data if part is not None else None
        segment = segmenter.segment(target.number)
        if segment is None:
            return None
        if target.variant == "ts":
            return segment.ts or None
        # the stored parts as they are: every request is served the same bytes, uncopied
        return [part.data for part in segment.parts] or None

    def _soon(self, segmenter: SegmenterLike) -> Condition | None:
        """The condition to wait on for what is asked, if it is being made now; else ``None``."""
        target = self.target
        msn, index = target.number, target.index
        next_msn, next_part = segmenter.next_msn, segmenter.next_part
        if target.kind == "part":
            coming = (msn == next_msn and next_part <= index <= next_part + PART_LOOKAHEAD) or (
                msn == next_msn + 1 and index == 0
            )
            if not coming:
                return None

            def part_ready(s: SegmenterLike) -> bool | None:
                if s.part(msn, index) is not None:
                    return True
                return None if s.has(msn, index) else False

            return part_ready
        if target.kind == "segment" and msn == next_msn:

            def segment_ready(s: SegmenterLike) -> bool | None:
                if s.segment(msn) is not None:
                    return True
                return None if s.next_msn > msn else False

            return segment_ready
        return None

    def _media_ready(self, entry: HlsStream) -> None:
        data = self._media(entry.segmenter)
        if data is None:
            self._media_failed("gone")
        else:
            self._send_media(data)

    def _media_failed(self, reason: str) -> None:
        target = self.target
        if reason == "timeout":
            _text(self.request, 503, "that part was not finished in time")
        else:
            _text(self.request, 404, f"no such HLS file of {target.app}/{target.name}")

    def _send_media(self, data: bytes | list[bytes]) -> None:
        content_type = TS_TYPE if self.target.variant == "ts" else MP4_TYPE
        _send(self.request, 200, data, content_type, MEDIA_CACHE_CONTROL)


class HlsResource(Resource):
    """``/APP/NAME/index.m3u8``, ``ts.m3u8`` and the files they name."""

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory
        self.access = PlayAccess(factory)

    def _cors(self, request: Request) -> None:
        allow_origin(request, self.factory.config.http_cors_origin)

    def render_OPTIONS(self, request: Request) -> bytes:
        """A CORS preflight: GET is allowed from the configured origin."""
        return preflight(request, self.factory.config.http_cors_origin)

    def render_GET(self, request: Request) -> int:
        """Serve, park or refuse the request (it is always answered later or now)."""
        self._cors(request)
        request.setHeader(b"x-content-type-options", b"nosniff")
        target = parse_hls_path([*(request.prepath or ()), *(request.postpath or ())])
        if target is None:
            _text(request, 404, "not found: HLS is at /APP/NAME/index.m3u8 and /APP/NAME/ts.m3u8")
            return NOT_DONE_YET
        if self.factory.hls.mode_for(target.app) == "off":
            _text(request, 404, "HLS is off on this server")
            return NOT_DONE_YET
        args = request.args or {}
        try:
            directives = parse_directives(args) if target.kind == "playlist" else Directives()
        except DirectiveError as error:
            _text(request, 400, str(error))
            return NOT_DONE_YET
        session = (args.get(SESSION_ARG.encode()) or [None])[0]
        handler = _HlsRequest(
            self.factory,
            request,
            target,
            directives,
            carried_query(request.uri),
            session.decode("ascii", "replace") if session is not None else None,
        )
        decision = self.access.check(
            target.app, target.name, _play_args(args), request.getClientAddress(), request.uri
        )
        handler.start(decision)
        return NOT_DONE_YET

    render_HEAD = render_GET
