"""``/static/NAME``: the player JavaScript bundled with the package, its licences, and
the pages' own scripts and style (``index.js``, ``watch.js``, ``watch.css``).

Only the files listed in :data:`ASSETS` are served, read once from the package's
``http/static/`` directory: no path from a URL ever reaches the file system, so
``..``, encoded slashes or absolute names cannot name anything else (404).
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from twisted.web.resource import Resource

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = ["ASSETS", "AssetsResource"]

#: The files served, by name, with their content types.
ASSETS: dict[str, bytes] = {
    "mpegts.min.js": b"text/javascript; charset=utf-8",
    "LICENSE.mpegts.js.txt": b"text/plain; charset=utf-8",
    "mpegts.js.LICENSE.txt": b"text/plain; charset=utf-8",
    "hls.min.js": b"text/javascript; charset=utf-8",
    "LICENSE.hls.js.txt": b"text/plain; charset=utf-8",
    "index.js": b"text/javascript; charset=utf-8",
    "watch.js": b"text/javascript; charset=utf-8",
    "watch.css": b"text/css; charset=utf-8",
}

#: Seconds a browser may keep a file: they change only with the package.
MAX_AGE = 86400


class AssetsResource(Resource):
    """Serves :data:`ASSETS` from memory; anything else is a 404."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, bytes] = {}

    def _read(self, name: str) -> bytes:
        data = self._cache.get(name)
        if data is None:
            data = files("streamserver.http").joinpath("static", name).read_bytes()
            self._cache[name] = data
        return data

    def render_GET(self, request: Request) -> bytes:
        postpath = request.postpath or []
        name = postpath[0].decode("utf-8", "replace") if len(postpath) == 1 else ""
        content_type = ASSETS.get(name)
        if content_type is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"public, max-age=%d" % MAX_AGE)
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self._read(name)
