"""CORS for every HTTP answer: one place that writes the headers (``--http-cors-origin``).

Browsers let a page on another origin read a response only with
``Access-Control-Allow-Origin``; a request with headers beyond the simple ones
(the API's ``Authorization``) is first sent as an ``OPTIONS`` preflight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = ["allow_origin", "preflight"]

#: Seconds a browser may keep a preflight's answer.
PREFLIGHT_MAX_AGE = 86400


def allow_origin(request: Request, origin: str) -> None:
    """Let pages of *origin* read the answer (``*``: any; ``""``: send nothing)."""
    if origin:
        request.setHeader(b"access-control-allow-origin", origin.encode("utf-8"))


def preflight(
    request: Request, origin: str, methods: bytes = b"GET, HEAD, OPTIONS", headers: bytes = b"*"
) -> bytes:
    """Answer an ``OPTIONS`` preflight: 204, *methods* and *headers* allowed from *origin*."""
    allow_origin(request, origin)
    request.setResponseCode(204)
    request.setHeader(b"access-control-allow-methods", methods)
    request.setHeader(b"access-control-allow-headers", headers)
    request.setHeader(b"access-control-max-age", b"%d" % PREFLIGHT_MAX_AGE)
    return b""
