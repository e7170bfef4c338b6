"""``GET /recordings/APP/NAME/FILE``: a finished recording, with range requests, if play is allowed.

The path's segments (percent-decoded by Twisted) are ``APP`` (one or more, as
for ``/APP/NAME.flv``, :func:`~streamserver.http.flv.stream_names`), ``NAME``
and ``FILE``; the file is
:func:`~streamserver.recording.paths.resolve_recording`'s, or the answer is a
404: a file being written, another extension, a separator, NUL, ``..``, a
leading dot, a symlink leading out of the stream's directory, a name over 255
bytes, and everything when the server runs without ``--record``.

A file that resolves is served only once ``factory.authorizer`` allows playing
``APP/NAME`` with the request's query arguments (:class:`~streamserver.http.hls.PlayAccess`,
decisions kept 10 s per player, as for HLS: a ``<video>`` makes a range request
per seek); a refusal is a 403.  Serving is twisted.web's ``static.File`` on the
resolved path, which implements ``Range`` (206 with ``Content-Range``, 416, and
multipart byte ranges), ``HEAD`` and ``If-Modified-Since``, with the
``Content-Type`` of the recording's format.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamserver.errors import UnauthorizedError
from streamserver.http.cors import allow_origin, preflight
from streamserver.http.flv import stream_names
from streamserver.http.hls import PlayAccess
from streamserver.recording.paths import resolve_recording

with warnings.catch_warnings():
    # twisted.web.static builds its default error pages at import with classes
    # deprecated since Twisted 22.10; they are served only for a file that
    # vanishes between resolve_recording and serving, and the warnings would be
    # noise in the server's log.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.static import File

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory

_log = Logger()

__all__ = ["CONTENT_TYPES", "RecordingsResource"]

#: The ``Content-Type`` of a recording, by extension.
CONTENT_TYPES = {"mp4": "video/mp4", "flv": "video/x-flv"}


def _text(request: Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    body = message.encode("utf-8") + b"\n"
    request.setHeader(b"content-length", b"%d" % len(body))
    return b"" if request.method == b"HEAD" else body


def _args(request: Request) -> dict[str, str]:
    """The query arguments an authorizer sees: the first value of each."""
    return {
        key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for key, values in (request.args or {}).items()
        if values
    }


class RecordingsResource(Resource):
    """``/recordings/APP/NAME/FILE``, the finished recordings under ``--record``."""

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory
        root = factory.config.record_dir
        self.root = Path(root) if root is not None else None
        self.access = PlayAccess(factory, protocol="recording")

    def render_OPTIONS(self, request: Request) -> bytes:
        """A CORS preflight: GET (with Range) is allowed from the configured origin."""
        return preflight(request, self.factory.config.http_cors_origin)

    def render_GET(self, request: Request) -> bytes | int:
        """Serve the file, or 404/403; the file's bytes follow later when authorization waits."""
        allow_origin(request, self.factory.config.http_cors_origin)
        request.setHeader(b"x-content-type-options", b"nosniff")
        path = self._resolve(list(request.postpath or []))
        if path is None:
            return _text(request, 404, "no such recording")
        app, name, file = path
        decision = self.access.check(
            app, name, _args(request), request.getClientAddress(), request.uri
        )
        answer: list[bytes | int] = []
        decision.addCallbacks(
            lambda _: answer.append(self._serve(request, file)),
            lambda failure: answer.append(self._refused(request, failure)),
        )
        if answer:  # decided at once
            return answer[0]
        decision.addCallback(lambda _: self._finish_later(request, answer))
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _resolve(self, segments: list[bytes]) -> tuple[str, str, Path] | None:
        if self.root is None or len(segments) < 3:
            return None
        names = stream_names(segments[:-1])
        if names is None:
            return None
        try:
            filename = segments[-1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        found = resolve_recording(self.root, names[0], names[1], filename)
        return None if found is None else (names[0], names[1], found)

    def _serve(self, request: Request, path: Path) -> bytes | int:
        if request.finished or request._disconnected:
            return NOT_DONE_YET
        file = File(str(path))
        file.type = CONTENT_TYPES[path.suffix[1:]]
        file.encoding = None
        request.setHeader(b"cache-control", b"no-cache")
        try:
            result: bytes | int = file.render(request)
        except Exception:
            _log.failure("serving the recording {path} failed", Failure(), path=str(path))
            return _text(request, 500, "could not read the recording")
        return result

    def _refused(self, request: Request, failure: Failure) -> bytes:
        if not failure.check(UnauthorizedError):
            _log.failure("authorizing a recording's request failed", failure)
            return _text(request, 500, "could not authorize the play")
        return _text(request, 403, "play refused")

    def _finish_later(self, request: Request, answer: list[Any]) -> None:
        """A decision that came later: a body returned at once is written and finished."""
        if not answer or answer[0] is NOT_DONE_YET:
            return
        if request.finished or request._disconnected:
            return
        request.write(answer[0])
        request.finish()
