"""twistd integration: the ``streamserver`` command-line options and service.

``twistd -n streamserver`` listens for RTMP on ``tcp:1935``.  Every listener is
a Twisted endpoint string, so ``tcp6:``, ``unix:`` and ``ssl:`` (RTMPS) work
without code.  All logic lives here; the plugin in ``twistd_plugins/`` only
points at this module.
"""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.python import usage

from streamserver.config import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ServerConfig
from streamserver.factory import RTMPServerFactory
from streamserver.media.stream import DEFAULT_GOP_CACHE_BYTES
from streamserver.policy import PolicyLimits
from streamserver.security import SecurityOptions, StreamServerService

_LIMITS = PolicyLimits()
_CONFIG = ServerConfig()

DEFAULT_RTMP_ENDPOINT = "tcp:1935"


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def parse_chat_rate(value: str) -> tuple[int, float]:
    """Parse ``--chat-rate`` ``N/S`` (N messages per S seconds) into ``(N, S)``.

    :raises ValueError: not two numbers, or N < 1, or S <= 0.
    """
    count, slash, window = value.partition("/")
    if not slash:
        raise ValueError(f"expected N/SECONDS, got {value!r}")
    rate, seconds = int(count), float(window)
    if rate < 1 or not seconds > 0:
        raise ValueError(f"need N >= 1 and SECONDS > 0, got {value!r}")
    return rate, seconds


class Options(SecurityOptions):
    """``twistd streamserver`` options."""

    synopsis = "[--rtmp ENDPOINT ...] [options]"
    longdesc = (
        "A live-streaming RTMP relay: encoders publish rtmp://HOST/APP/NAME, any number "
        "of viewers play it.  Listens on tcp:1935 unless --rtmp is given."
    )

    optParameters: list[list[Any]] = [
        [
            "manhole",
            None,
            None,
            "Serve the SSH Python console (docs/console.md) on ENDPOINT, e.g. "
            "tcp:2222:interface=127.0.0.1 (a bare port means loopback).  Off unless given; "
            "needs --manhole-keys.",
        ],
        [
            "manhole-keys",
            None,
            None,
            "OpenSSH authorized_keys FILE: the public keys allowed into the console "
            "(no passwords; re-read when it changes).",
        ],
        [
            "data-dir",
            None,
            None,
            "Directory for the console's SSH host key (Ed25519, created mode 0600 on first "
            "start).  Default: $XDG_DATA_HOME/streamserver, i.e. ~/.local/share/streamserver.",
        ],
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
        [
            "drop-low",
            None,
            _LIMITS.drop_low,
            "Bytes queued for a viewer above which its inter frames are dropped "
            "(video resumes at a keyframe).",
            int,
        ],
        [
            "drop-high",
            None,
            _LIMITS.drop_high,
            "Bytes queued for a viewer above which its audio and keyframes are dropped too.",
            int,
        ],
        [
            "max-queue",
            None,
            _LIMITS.max_queue,
            "Hard limit: a viewer with more bytes queued is disconnected.",
            int,
        ],
        [
            "stall-timeout",
            None,
            _LIMITS.stall_timeout,
            "Seconds without write progress (with bytes queued) before a viewer is disconnected.",
            float,
        ],
        [
            "max-lag-ms",
            None,
            _LIMITS.max_lag_ms,
            "Lag behind live the policy keeps viewers under; inter frames are dropped "
            "above a sixth of it queued, audio and keyframes above a third.",
            int,
        ],
        [
            "notsent-lowat",
            None,
            16 * 1024,
            "TCP_NOTSENT_LOWAT in bytes for every socket, so a stalled viewer shows up in "
            "user space early; 0 leaves the kernel default.",
            _positive_int,
        ],
        [
            "send-buffer",
            None,
            0,
            "SO_SNDBUF in bytes for every socket; 0 leaves the kernel default.",
            _positive_int,
        ],
        [
            "chat-max-length",
            None,
            _CONFIG.chat_max_length,
            "Longest chat message accepted, in characters (Chat.TooLong above).",
            int,
        ],
        [
            "chat-rate",
            None,
            f"{_CONFIG.chat_rate}/{_CONFIG.chat_rate_window:g}",
            "Chat messages one connection may send, as N/SECONDS (Chat.RateLimited above).",
            str,
        ],
        [
            "chat-history",
            None,
            _CONFIG.chat_history,
            "Chat messages a room keeps for late joiners; 0 keeps none.",
            _positive_int,
        ],
    ]

    optFlags: list[list[str | None]] = [
        [
            "no-drop",
            None,
            "Disable the drop-frames policy (never drop, never disconnect slow viewers). "
            "Memory then grows without bound with slow viewers: for demonstrating the "
            "failure only.",
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

    def _check_manhole(self) -> None:
        """--manhole needs a keys file with a usable key; default the data directory."""
        from streamserver.console import ConsoleError, check_keys_file, default_data_dir

        if not self["manhole-keys"]:
            raise usage.UsageError(
                "--manhole needs --manhole-keys FILE, an OpenSSH authorized_keys file listing "
                "the public keys allowed into the console (it has no passwords)"
            )
        try:
            check_keys_file(self["manhole-keys"])
        except ConsoleError as error:
            raise usage.UsageError(str(error)) from error
        if not self["data-dir"]:
            self["data-dir"] = str(default_data_dir())
        if self["manhole"].isdigit():
            self["manhole"] = f"tcp:{self['manhole']}:interface=127.0.0.1"

    def postOptions(self) -> None:
        if not self["rtmp"]:
            self["rtmp"] = [DEFAULT_RTMP_ENDPOINT]
        self.check_security()
        if self["manhole"]:
            self._check_manhole()
        if not MIN_CHUNK_SIZE <= self["chunk-size"] <= MAX_CHUNK_SIZE:
            raise usage.UsageError(
                f"--chunk-size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
            )
        try:
            self["limits"] = PolicyLimits(
                drop_low=self["drop-low"],
                drop_high=self["drop-high"],
                max_queue=self["max-queue"],
                stall_timeout=self["stall-timeout"],
                max_lag_ms=self["max-lag-ms"],
                enabled=not self["no-drop"],
            )
        except ValueError as error:
            raise usage.UsageError(f"policy limits: {error}") from error
        if self["chat-max-length"] < 1:
            raise usage.UsageError("--chat-max-length must be at least 1")
        try:
            self["chat-rate"], self["chat-rate-window"] = parse_chat_rate(self["chat-rate"])
        except ValueError as error:
            raise usage.UsageError(f"--chat-rate: {error}") from error

    def config(self) -> ServerConfig:
        """The :class:`ServerConfig` these options describe."""
        return ServerConfig(
            chunk_size=self["chunk-size"],
            gop_cache_bytes=self["gop-cache-bytes"],
            limits=self["limits"],
            notsent_lowat=self["notsent-lowat"],
            send_buffer=self["send-buffer"],
            **self.security_config(),
            chat_max_length=self["chat-max-length"],
            chat_rate=self["chat-rate"],
            chat_rate_window=self["chat-rate-window"],
            chat_history=self["chat-history"],
        )


def makeService(options: Options) -> IService:
    """Build the service tree: one RTMP listener per ``--rtmp`` endpoint, and the
    SSH console (``manhole``) when ``--manhole`` is given."""
    from twisted.internet import reactor

    factory = RTMPServerFactory(options.config(), reactor=reactor)
    top = StreamServerService(factory)
    for endpoint in options["rtmp"]:
        service = strports.service(endpoint, factory)
        service.setName(f"rtmp:{endpoint}")
        service.setServiceParent(top)
    if options["manhole"]:
        from streamserver.console import ConsoleService

        console = ConsoleService(
            options["manhole"],
            factory,
            options["manhole-keys"],
            options["data-dir"],
            reactor=reactor,
        )
        console.setName("manhole")
        console.setServiceParent(top)
    return top
