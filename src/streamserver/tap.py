"""twistd integration: the ``streamserver`` command-line options and service.

``twistd -n streamserver`` listens for RTMP on ``tcp:1935``.  Every listener is
a Twisted endpoint string, so ``tcp6:``, ``unix:`` and ``ssl:`` (RTMPS) work
without code.  All logic lives here; the plugin in ``twistd_plugins/`` only
points at this module.
"""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.streams import DEFAULT_GOP_CACHE_BYTES

DEFAULT_RTMP_ENDPOINT = "tcp:1935"

#: Outgoing chunk sizes we accept: the spec's minimum 128, and the largest value
#: every common player handles (ffmpeg, librtmp and Flash take up to 65536).
MIN_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 65536


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Options(usage.Options):
    """``twistd streamserver`` options."""

    synopsis = "[--rtmp ENDPOINT ...] [--chunk-size N] [--gop-cache-bytes N]"
    longdesc = (
        "A live-streaming RTMP relay: encoders publish rtmp://HOST/APP/NAME, any number "
        "of viewers play it.  Listens on tcp:1935 unless --rtmp is given."
    )

    optParameters: list[list[Any]] = [
        [
            "chunk-size",
            None,
            4096,
            f"Outgoing RTMP chunk size in bytes ({MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}).",
            int,
        ],
        [
            "gop-cache-bytes",
            None,
            DEFAULT_GOP_CACHE_BYTES,
            "Per-stream GOP cache bound in bytes, so new viewers start at the last "
            "keyframe at once; 0 disables the cache.",
            _positive_int,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["rtmp"] = []

    def opt_rtmp(self, endpoint: str) -> None:
        """Listen for RTMP on ENDPOINT, a Twisted endpoint string (e.g.
        tcp:1935:interface=127.0.0.1, tcp6:1935, ssl:1936:privateKey=k.pem:certKey=c.pem).
        May be given more than once.  Default: tcp:1935."""
        self["rtmp"].append(endpoint)

    def postOptions(self) -> None:
        if not self["rtmp"]:
            self["rtmp"] = [DEFAULT_RTMP_ENDPOINT]
        if not MIN_CHUNK_SIZE <= self["chunk-size"] <= MAX_CHUNK_SIZE:
            raise usage.UsageError(
                f"--chunk-size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
            )

    def config(self) -> ServerConfig:
        """The :class:`ServerConfig` these options describe."""
        return ServerConfig(chunk_size=self["chunk-size"], gop_cache_bytes=self["gop-cache-bytes"])


def makeService(options: Options) -> IService:
    """Build the service tree: one RTMP listener per ``--rtmp`` endpoint."""
    from twisted.internet import reactor

    top = MultiService()
    factory = RTMPServerFactory(options.config(), reactor=reactor)
    for endpoint in options["rtmp"]:
        service = strports.service(endpoint, factory)
        service.setName(f"rtmp:{endpoint}")
        service.setServiceParent(top)
    top.factory = factory  # type: ignore[attr-defined]
    return top
