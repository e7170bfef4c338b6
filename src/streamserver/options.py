"""Every ``twistd streamserver`` option, declared once.

:data:`OPTIONS` is the table: one :class:`Option` row per option with its flag,
the :class:`~streamserver.config.ServerConfig` field it sets, its parser, its
placeholder and its help.  A row never states a default: it is the field's own
default in :class:`~streamserver.config.ServerConfig` (or in the nested
:class:`~streamserver.policy.PolicyLimits` and
:class:`~streamserver.auth.AccessConfig`); the row only says how to show it.
Options that are no ``ServerConfig`` field (the listeners and the console, which
:func:`streamserver.tap.makeService` reads itself) state their default as text.

From the table follow :class:`streamserver.tap.Options` (:func:`opt_parameters`,
:func:`opt_flags`, :func:`add_repeatable_handlers`, :func:`initial_values`), the
mapping from parsed options to a ``ServerConfig`` (:func:`config_from`, which
turns a :class:`~streamserver.config.ConfigError` into a ``usage.UsageError``
naming the ``--flag``), and the defaults ``--help`` shows (:meth:`Option.default_text`);
``tests/test_options.py`` holds ``--help`` and the README's options table to the rows.

A parser turns one argument into the field's value.  The parsers of options that
name something outside the process (a publish keys file, a secret given as
``env:NAME`` or ``file:PATH``, a Python name, a URL, a network) load or check it
here, at parse time, so that a server that cannot use it does not start; every
parser failure is a usage error naming the flag.  Ranges are not checked here:
:meth:`ServerConfig.validate <streamserver.config.ServerConfig.validate>` does.

A new option is a field (default, range and why) in ``config.py``, a row here,
and a row in the README's options table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeVar

from twisted.python import reflect, usage

from streamserver.auth import AddressAuthorizer, IAuthorizer, load_publish_keys
from streamserver.config import (
    HLS_MODES,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    MIN_HLS_PART_MS,
    RECORD_FORMATS,
    ConfigError,
    ServerConfig,
)

__all__ = [
    "DEFAULT_HTTP_ENDPOINT",
    "DEFAULT_RTMP_ENDPOINT",
    "OPTIONS",
    "Option",
    "add_repeatable_handlers",
    "config_from",
    "initial_values",
    "load_authorizer",
    "opt_flags",
    "opt_parameters",
    "parse_chat_rate",
    "parse_workers",
    "read_secret",
    "show_value",
    "usage_error",
]

#: The listener without ``--rtmp``: RTMP's registered port on every interface.
DEFAULT_RTMP_ENDPOINT = "tcp:1935"

#: The HTTP listener without ``--http`` (and without ``--no-http``): 8080, the
#: usual unprivileged HTTP port (SRS and Node-Media-Server default to 8080 and 8000).
DEFAULT_HTTP_ENDPOINT = "tcp:8080"

_DEFAULTS = ServerConfig()

#: Where an option may be set: for the process, or per application too.
SCOPES = ("server", "app")

_OptionsT = TypeVar("_OptionsT", bound=usage.Options)


def show_value(value: Any) -> str:
    """A default as ``--help`` and the README show it: ``off`` for none, ``10`` for 10.0."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "on"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show_rate(value: tuple[int, float]) -> str:
    rate, window = value
    return f"{rate}/{show_value(window)}"


@dataclass(frozen=True)
class Option:
    """One command-line option.

    :ivar flag: the long name, without ``--``.
    :ivar field: the :class:`~streamserver.config.ServerConfig` field it sets, as a
        path (``"chunk_size"``, ``"limits.drop_low"``); a tuple of paths for an
        option whose parser returns one value per field; ``None`` for an option
        that is no ``ServerConfig`` field.
    :ivar parse: turns the argument into the field's value (raising ``ValueError``
        or ``OSError``); ``None`` for a flag, which takes no argument.
    :ivar metavar: the argument's placeholder (``N``, ``BYTES``, ``SECONDS``), as the
        README's options table writes it; empty for a flag.
    :ivar help: the ``--help`` text, without the default.
    :ivar shown: how the default is shown: a function of the default, or the text
        itself when the default is no value (``"loopback only"``).
    :ivar repeatable: may be given more than once; the values are kept in order.
    :ivar negates: a flag that sets its boolean field to ``False`` (``--no-drop``).
    :ivar scope: ``"server"`` for a setting of the whole process, ``"app"`` for one
        an application may set for itself (a ``[app.NAME]`` table of ``--config``,
        :mod:`streamserver.configfile`).
    :ivar live: a reload (:mod:`streamserver.reload`) applies a change of it;
        ``False`` for what is read once at start (a change is reported as
        needing a restart).
    :ivar secret: its value is masked where the configuration is shown (``--check``).
    :ivar in_file: the option may be a key of the configuration file (not so
        ``--config`` and ``--check`` themselves).
    """

    flag: str
    field: str | tuple[str, ...] | None
    parse: Callable[[str], Any] | None
    metavar: str
    help: str
    shown: str | Callable[[Any], str] = show_value
    repeatable: bool = False
    negates: bool = False
    scope: str = "server"
    live: bool = True
    secret: bool = False
    in_file: bool = True

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"--{self.flag}: scope must be one of {', '.join(SCOPES)}")

    @property
    def paths(self) -> tuple[str, ...]:
        """The field paths this option sets (none for a console option)."""
        if self.field is None:
            return ()
        return self.field if isinstance(self.field, tuple) else (self.field,)

    @property
    def default(self) -> Any:
        """The parsed value before any argument, read from the config's defaults."""
        if self.field is None:
            return [] if self.repeatable else None
        values = tuple(reduce(getattr, path.split("."), _DEFAULTS) for path in self.paths)
        value: Any = values if isinstance(self.field, tuple) else values[0]
        if self.negates:
            value = not value
        if self.repeatable:
            value = list(value)
        return value

    def default_text(self) -> str:
        """The default as ``--help`` and the README's options table show it."""
        if isinstance(self.shown, str):
            return self.shown
        return self.shown(self.default)

    def help_text(self) -> str:
        """The ``--help`` text; with the default, except for a flag (always off)."""
        if self.parse is None:
            return self.help
        return f"{self.help} [default: {self.default_text()}]"

    def coerce(self, text: str) -> Any:
        """The parsed argument.

        :raises usage.UsageError: naming the flag, when the parser refuses *text*.
        """
        if self.parse is None:
            raise TypeError(f"--{self.flag} is a flag: it takes no argument")
        try:
            return self.parse(text)
        except (ValueError, OSError) as error:
            raise usage.UsageError(f"--{self.flag}: {error}") from error

    def settings(self, value: Any) -> dict[str, Any]:
        """The config settings, by field path, that the parsed *value* makes."""
        if self.negates:
            value = not value
        if self.repeatable:
            value = tuple(value)
        if isinstance(self.field, tuple):
            return dict(zip(self.field, value, strict=True))
        return {} if self.field is None else {self.field: value}


# --- parsers of values that name something outside the process


def parse_endpoint(value: str) -> str:
    """*value*, once it parses as a Twisted server endpoint string (nothing listens yet).

    :raises ValueError: it does not (unknown type, a port that is no number...).
    """
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, value)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"bad endpoint {value!r}: {error}") from error
    return value


def read_secret(value: str) -> str:
    """A secret given as ``env:NAME`` (environment), ``file:PATH`` (first line) or itself.

    A secret on the command line shows in ``ps`` to every local user; the two
    indirections keep it out of the process list.

    :raises ValueError: the variable is unset or the file unreadable or empty.
    """
    if value.startswith("env:"):
        secret = os.environ.get(value[4:], "")
        if not secret:
            raise ValueError(f"environment variable {value[4:]} is not set")
        return secret
    if value.startswith("file:"):
        try:
            with open(value[5:], encoding="utf-8") as secret_file:
                secret = secret_file.readline().strip()
        except OSError as error:
            raise ValueError(f"cannot read {value[5:]}: {error}") from error
        if not secret:
            raise ValueError(f"{value[5:]} is empty")
        return secret
    return value


def _console_endpoint(value: str) -> str:
    """*value*: a bare port (loopback, ``tap.Options`` completes it) or an endpoint.

    :raises ValueError: neither.
    """
    return value if value.isdigit() else parse_endpoint(value)


def _publish_keys_file(path: str) -> str:
    """*path*, once its keys load (the server re-reads the file when it changes).

    :raises OSError, ValueError: the file cannot be read or parsed.
    """
    load_publish_keys(path)
    return path


def _network(value: str) -> str:
    """*value*, once it parses as a network (CIDR) or an address.

    :raises ValueError: it does not.
    """
    AddressAuthorizer([value])
    return value


def _http_url(value: str) -> str:
    """*value*, if it is an ``http://`` or ``https://`` URL.

    :raises ValueError: it is not.
    """
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _hook_url(value: str) -> str:
    """*value*, if it is an ``http://``/``https://`` URL, maybe after ``json:``.

    :raises ValueError: it is not.
    """
    from streamserver.hooks import parse_hook_url

    parse_hook_url(value)
    return value


def _command(value: str) -> tuple[str, ...]:
    """*value* as an argument list (:func:`streamserver.hooks.parse_command`).

    :raises ValueError: empty, unknown ``{field}``, or no such program.
    """
    from streamserver.hooks import parse_command

    return parse_command(value)


def _push_rule(value: str) -> str:
    """*value*, if it is a ``--push`` rule: ``rtmp://HOST[:PORT]/APP[/NAME]``, maybe
    behind ``PATTERN=``.

    :raises ValueError: it is not.
    """
    from streamserver.relay.target import parse_rule

    parse_rule(value)
    return value


def _pull_rule(value: str) -> str:
    """*value*, if it is a ``--pull`` rule: ``rtmp://HOST[:PORT]/APP``, maybe behind ``PATTERN=``.

    :raises ValueError: it is not.
    """
    from streamserver.relay.target import parse_rule

    parse_rule(value, with_name=False)
    return value


def _pull_static(value: str) -> str:
    """*value*, if it is ``rtmp://HOST[:PORT]/APP/NAME``.

    :raises ValueError: it is not.
    """
    from streamserver.relay.target import parse_target

    parse_target(value, with_name=True)
    return value


def _hls_mode(value: str) -> str:
    """*value*, if it is one of :data:`~streamserver.config.HLS_MODES`.

    :raises ValueError: it is not.
    """
    if value not in HLS_MODES:
        raise ValueError(f"must be one of {', '.join(HLS_MODES)}")
    return value


def _record_format(value: str) -> str:
    if value not in RECORD_FORMATS:
        raise ValueError(f"{value!r} is none of {', '.join(RECORD_FORMATS)}")
    return value


def load_authorizer(name: str) -> IAuthorizer:
    """The :class:`~streamserver.auth.IAuthorizer` at the Python *name*: an object
    providing it, or a callable returning one (a class is instantiated).

    :raises ValueError: nothing importable is there, or it does not provide IAuthorizer.
    """
    try:
        found = reflect.namedAny(name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"cannot load {name}: {error}") from error
    if not IAuthorizer.providedBy(found) and callable(found):
        found = found()
    if not IAuthorizer.providedBy(found):
        raise ValueError(f"{name} does not provide IAuthorizer")
    return found


def parse_workers(value: str) -> int:
    """``--workers``: a count, or ``auto`` for this machine's CPU count.

    :raises ValueError: neither.
    """
    if value == "auto":
        return os.cpu_count() or 1
    return int(value)


def parse_chat_rate(value: str) -> tuple[int, float]:
    """``N/SECONDS`` (N messages per SECONDS seconds) as ``(N, SECONDS)``.

    :raises ValueError: not two numbers separated by a slash.
    """
    count, slash, window = value.partition("/")
    if not slash:
        raise ValueError(f"expected N/SECONDS, got {value!r}")
    return int(count), float(window)


#: Every option, in the order of the README's table.
OPTIONS: tuple[Option, ...] = (
    # --- the configuration file (docs/configuration.md): read by tap.Options
    Option(
        "config",
        None,
        str,
        "FILE",
        "Read settings from FILE (TOML: a [server] table and [app.NAME] tables; "
        "docs/configuration.md); options given on the command line override it.  "
        "Reloaded on SIGHUP.",
        shown="none",
        in_file=False,
    ),
    Option(
        "check",
        None,
        None,
        "",
        "Validate the options and --config FILE, print the effective configuration "
        "(secrets masked) and exit: 0 if valid, 1 with the errors.",
        in_file=False,
    ),
    # --- listeners and the console: read by makeService, not ServerConfig fields
    Option(
        "rtmp",
        None,
        parse_endpoint,
        "ENDPOINT",
        "Listen for RTMP on ENDPOINT, a Twisted endpoint string (e.g. "
        "tcp:1935:interface=127.0.0.1, tcp6:1935, ssl:1936:privateKey=k.pem:certKey=c.pem).  "
        "May be given more than once.",
        shown=DEFAULT_RTMP_ENDPOINT,
        repeatable=True,
    ),
    Option(
        "http",
        None,
        parse_endpoint,
        "ENDPOINT",
        "Serve HTTP (the page at /, HTTP-FLV and WebSocket-FLV at /APP/NAME.flv, HLS at "
        "/APP/NAME/index.m3u8, the JSON API, /metrics; docs/http.md) on ENDPOINT, a Twisted "
        "endpoint string.  May be given more than once.",
        shown=DEFAULT_HTTP_ENDPOINT,
        repeatable=True,
    ),
    Option(
        "no-http",
        None,
        None,
        "",
        "Serve no HTTP at all (RTMP only).",
    ),
    # --- the IRC gateway (docs/watch.md, "IRC"): a listener, read by makeService
    Option(
        "irc",
        None,
        parse_endpoint,
        "ENDPOINT",
        "Serve the streams' chat rooms to IRC clients (channel #APP/NAME; docs/watch.md) on "
        "ENDPOINT, a Twisted endpoint string (e.g. tcp:6667:interface=127.0.0.1); off unless "
        "given.  May be given more than once.",
        shown="off",
        repeatable=True,
    ),
    Option(
        "manhole",
        None,
        _console_endpoint,
        "ENDPOINT",
        "Serve the SSH Python console (docs/console.md) on ENDPOINT, e.g. "
        "tcp:2222:interface=127.0.0.1 (a bare port means loopback); needs --manhole-keys.",
        shown="off",
        live=False,
    ),
    Option(
        "manhole-keys",
        None,
        str,
        "FILE",
        "OpenSSH authorized_keys FILE: the public keys allowed into the console "
        "(no passwords; re-read when it changes).  Required with --manhole.",
        shown="none",
        live=False,
    ),
    Option(
        "data-dir",
        None,
        str,
        "DIR",
        "Directory for the console's SSH host key (Ed25519, created mode 0600 on first "
        "start); $XDG_DATA_HOME/streamserver unless given.",
        shown="~/.local/share/streamserver",
        live=False,
    ),
    # --- the relay
    Option(
        "chunk-size",
        "chunk_size",
        int,
        "N",
        f"Outgoing RTMP chunk size in bytes ({MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}).",
    ),
    Option(
        "gop-cache-bytes",
        "gop_cache_bytes",
        int,
        "N",
        "Per-stream GOP cache bound in bytes, so new viewers start at the last "
        "keyframe at once; 0 disables the cache.",
        scope="app",
    ),
    # --- the drop-frames policy
    Option(
        "drop-low",
        "limits.drop_low",
        int,
        "BYTES",
        "Bytes queued for a viewer above which its inter frames are dropped "
        "(video resumes at a keyframe).",
        scope="app",
    ),
    Option(
        "drop-high",
        "limits.drop_high",
        int,
        "BYTES",
        "Bytes queued for a viewer above which its audio and keyframes are dropped too.",
        scope="app",
    ),
    Option(
        "max-queue",
        "limits.max_queue",
        int,
        "BYTES",
        "Hard limit: a viewer with more bytes queued is disconnected.",
        scope="app",
    ),
    Option(
        "stall-timeout",
        "limits.stall_timeout",
        float,
        "SECONDS",
        "Seconds without write progress (with bytes queued) before a viewer is disconnected.",
        scope="app",
    ),
    Option(
        "max-lag-ms",
        "limits.max_lag_ms",
        int,
        "MS",
        "Lag behind live the policy keeps viewers under; inter frames are dropped "
        "above a sixth of it queued, audio and keyframes above a third.",
        scope="app",
    ),
    Option(
        "no-drop",
        "limits.enabled",
        None,
        "",
        "Disable the drop-frames policy (never drop, never disconnect slow viewers). "
        "Memory then grows without bound with slow viewers: for demonstrating the "
        "failure only.",
        negates=True,
        scope="app",
    ),
    # --- sockets
    Option(
        "notsent-lowat",
        "notsent_lowat",
        int,
        "BYTES",
        "TCP_NOTSENT_LOWAT in bytes for every socket, so a stalled viewer shows up in "
        "user space early; 0 leaves the kernel default.",
    ),
    Option(
        "send-buffer",
        "send_buffer",
        int,
        "BYTES",
        "SO_SNDBUF in bytes for every socket; 0 leaves the kernel default.",
    ),
    # --- fan-out merged writes (issue 16)
    Option(
        "merge-ms",
        "merge_ms",
        int,
        "MS",
        "Hold a viewer's frames up to MS milliseconds to send them in one syscall "
        "(fewer syscalls, MS more latency); 0 sends each publisher read's frames at its end.",
        live=False,  # the factory's flush list takes it once, at start
    ),
    # --- chat
    Option(
        "chat-max-length",
        "chat_max_length",
        int,
        "N",
        "Longest chat message accepted, in characters (Chat.TooLong above).",
        scope="app",
    ),
    # server-wide, not per app: a connection's rate limit is made when it connects,
    # before an RTMP or WebSocket client names its application
    Option(
        "chat-rate",
        ("chat_rate", "chat_rate_window"),
        parse_chat_rate,
        "N/SECONDS",
        "Chat messages one connection may send, as N/SECONDS (Chat.RateLimited above).",
        shown=_show_rate,
    ),
    Option(
        "chat-history",
        "chat_history",
        int,
        "N",
        "Chat messages a room keeps for late joiners; 0 keeps none.",
        scope="app",
    ),
    # --- input limits (docs/security.md)
    Option(
        "max-message-bytes",
        "max_message_bytes",
        int,
        "N",
        "Largest RTMP message accepted from a peer, in bytes (up to 16 MiB). "
        "The default lets 4K keyframes through.",
    ),
    Option(
        "min-peer-chunk-size",
        "min_peer_chunk_size",
        int,
        "N",
        "Smallest Set Chunk Size accepted from a peer; a smaller one drops the peer.",
    ),
    Option(
        "max-peer-chunk-size",
        "max_peer_chunk_size",
        int,
        "N",
        "Largest Set Chunk Size accepted from a peer; a larger one drops the peer.",
    ),
    Option(
        "max-chunk-streams",
        "max_chunk_streams",
        int,
        "N",
        "Chunk streams one peer may open.",
    ),
    Option(
        "max-command-bytes",
        "max_command_bytes",
        int,
        "N",
        "Largest AMF command message decoded, in bytes; a larger one drops the peer.",
    ),
    # --- timeouts
    Option(
        "handshake-timeout",
        "handshake_timeout",
        float,
        "SECONDS",
        "Seconds a connection has to complete the RTMP handshake (0: no limit).",
    ),
    Option(
        "connect-timeout",
        "connect_timeout",
        float,
        "SECONDS",
        "Seconds after the handshake a client has to send connect (0: no limit).",
    ),
    Option(
        "publisher-idle-timeout",
        "publisher_idle_timeout",
        float,
        "SECONDS",
        "Seconds a publisher may send no audio or video before it is disconnected (0: no limit).",
    ),
    Option(
        "ping-interval",
        "ping_interval",
        float,
        "SECONDS",
        "Seconds of silence from a peer before the server sends it a ping (0: never).",
    ),
    Option(
        "ping-timeout",
        "ping_timeout",
        float,
        "SECONDS",
        "Seconds after a ping within which a peer must send something or take the "
        "media sent to it; otherwise it is dropped (0: never).",
    ),
    Option(
        "shutdown-grace",
        "shutdown_grace",
        float,
        "SECONDS",
        "Seconds connections get to close cleanly when the server stops.",
    ),
    # --- connections and streams
    Option(
        "max-connections",
        "max_connections",
        int,
        "N",
        "Connections the server holds at once; more are closed at once (0: no limit).",
    ),
    Option(
        "max-connections-per-ip",
        "max_connections_per_ip",
        int,
        "N",
        "Connections one remote address may hold; loopback is exempt (0: no limit).",
    ),
    Option(
        "max-streams",
        "max_streams",
        int,
        "N",
        "Streams the server holds; publishing or playing a new name beyond it is "
        "refused (NetStream.Publish.Rejected / NetStream.Play.Rejected; 0: no limit).",
    ),
    # --- access
    Option(
        "publish-from",
        "access.publish_from",
        _network,
        "CIDR",
        "Allow publishing from NETWORK (CIDR, e.g. 192.168.1.0/24, or an address); "
        "repeatable.  Without it only loopback may publish, unless --publish-keys, "
        "--publish-token-secret or --on-publish is given.",
        shown="loopback only",
        repeatable=True,
        scope="app",
    ),
    Option(
        "publish-keys",
        "access.publish_keys_file",
        _publish_keys_file,
        "FILE",
        "File of 'NAME SECRET' lines: publishing NAME needs rtmp://host/app/NAME?key=SECRET.",
        scope="app",
    ),
    Option(
        "publish-token-secret",
        "access.publish_token_secret",
        read_secret,
        "SECRET",
        "Secret of signed publish URLs (?expires=UNIX&token=HMAC); env:VAR or file:PATH "
        "read it from there.",
        scope="app",
        secret=True,
    ),
    Option(
        "play-token-secret",
        "access.play_token_secret",
        read_secret,
        "SECRET",
        "Secret of signed play URLs; without it anyone may play.",
        scope="app",
        secret=True,
    ),
    Option(
        "api-token",
        "api_token",
        read_secret,
        "SECRET",
        "Bearer token of the JSON API's write endpoints (kick, chat moderation); "
        "without it the API is read-only.",
        secret=True,
    ),
    Option(
        "http-cors-origin",
        "http_cors_origin",
        str,
        "ORIGIN",
        "Access-Control-Allow-Origin sent with HTTP media and API responses ('' for none).",
    ),
    Option(
        "http-access-log",
        "http_access_log",
        str,
        "FILE",
        "Log every HTTP request to FILE (combined log format); without it requests are "
        "not logged one by one.",
        live=False,
    ),
    Option(
        "http-max-header-bytes",
        "http_max_header_bytes",
        int,
        "BYTES",
        "The most bytes an HTTP request's line and headers may take (then 431).",
    ),
    Option(
        "http-max-headers",
        "http_max_headers",
        int,
        "N",
        "The most header lines an HTTP request may have (then 431).",
    ),
    Option(
        "http-header-timeout",
        "http_header_timeout",
        float,
        "SECONDS",
        "Seconds from an HTTP request's first byte to the end of its headers (then 408 "
        "and closed: slowloris); 0 disables it.",
    ),
    Option(
        "http-max-body-bytes",
        "http_max_body_bytes",
        int,
        "BYTES",
        "The largest HTTP request body accepted (then 413).",
    ),
    Option(
        "http-play-wait",
        "http_play_wait",
        float,
        "SECONDS",
        "Seconds an HTTP-FLV request for an unpublished stream waits for the publisher, "
        "and an HLS playlist request for the stream's first segment, before answering 404.",
    ),
    # --- HLS (docs/hls.md)
    Option(
        "hls",
        "hls",
        _hls_mode,
        "MODE",
        "HLS and LL-HLS at /APP/NAME/index.m3u8 and /APP/NAME/ts.m3u8: on-demand (a "
        "stream's segmenter starts on its first HLS request), always (on every published "
        "stream) or off.",
        scope="app",
    ),
    Option(
        "hls-segment-seconds",
        "hls_segment_seconds",
        float,
        "SECONDS",
        "An HLS segment is cut at the first keyframe after this long; set the encoder's "
        "keyframe interval to at most this.",
        scope="app",
    ),
    Option(
        "hls-part-ms",
        "hls_part_ms",
        int,
        "MS",
        f"Duration of an LL-HLS part in milliseconds (at least {MIN_HLS_PART_MS}).",
        scope="app",
    ),
    Option(
        "hls-window",
        "hls_window",
        int,
        "N",
        "Segments an HLS playlist lists (at least 3).",
        scope="app",
    ),
    Option(
        "hls-max-bytes",
        "hls_max_bytes",
        int,
        "BYTES",
        "Bytes one stream's HLS segments and parts may hold in memory.",
        scope="app",
    ),
    Option(
        "hls-idle-timeout",
        "hls_idle_timeout",
        float,
        "SECONDS",
        "Seconds without an HLS request after which a stream's segmenter stops (with "
        "--hls always: once the stream is unpublished); 0 never stops it.",
        scope="app",
    ),
    Option(
        "hls-max-waiting",
        "hls_max_waiting",
        int,
        "N",
        "Requests that may wait on one stream (LL-HLS blocking reload, a part not "
        "finished); then 503; 0 no limit.",
        scope="app",
    ),
    Option(
        "hls-max-waiting-per-ip",
        "hls_max_waiting_per_ip",
        int,
        "N",
        "Waiting HLS requests one address may have over every stream (loopback exempt); "
        "then 503; 0 no limit.",
    ),
    # --- recording ---
    Option(
        "record",
        "record_dir",
        str,
        "DIR",
        "Record every published stream to files under DIR (DIR/APP/NAME/NAME-START.mp4); "
        "off by default.",
        live=False,
    ),
    Option(
        "record-format",
        "record_format",
        _record_format,
        "FORMAT",
        "Recording file format: fmp4 (.mp4, fragments flushed as it goes) or flv.",
        scope="app",
    ),
    Option(
        "record-apps",
        "record_apps",
        str,
        "PATTERN",
        "Record only streams whose APP/NAME matches one of these fnmatch patterns "
        "(repeatable or a comma list); default: every stream.",
        shown="all",
        repeatable=True,
        live=False,
    ),
    Option(
        "record-segment-seconds",
        "record_segment_seconds",
        float,
        "SECONDS",
        "A recording is cut into a new file at the first keyframe after this long.",
        scope="app",
    ),
    Option(
        "record-max-bytes",
        "record_max_bytes",
        int,
        "BYTES",
        "A recording is cut into a new file at the first keyframe once it holds this "
        "many bytes; 0 for no limit.",
        scope="app",
    ),
    Option(
        "record-flush-seconds",
        "record_flush_seconds",
        float,
        "SECONDS",
        "Recorded media is written and flushed at least this often (what a crash may lose).",
        scope="app",
    ),
    Option(
        "record-reconnect-grace",
        "record_reconnect_grace",
        float,
        "SECONDS",
        "A publisher back within this long continues the same recording file.",
        scope="app",
    ),
    Option(
        "record-delete-after",
        "record_delete_after",
        float,
        "SECONDS",
        "Finished recordings older than this are deleted (checked periodically); 0 keeps them.",
        live=False,
    ),
    Option(
        "on-publish",
        "access.on_publish",
        _http_url,
        "URL",
        "URL POSTed to (app, name, addr, args...) before a publish; 2xx allows it.",
        scope="app",
    ),
    Option(
        "on-play",
        "access.on_play",
        _http_url,
        "URL",
        "URL POSTed to before a play; 2xx allows it.",
        scope="app",
    ),
    Option(
        "callback-timeout",
        "access.callback_timeout",
        float,
        "SECONDS",
        "Seconds --on-publish / --on-play may take before the request is refused.",
        scope="app",
    ),
    Option(
        "authorizer",
        "access.authorizers",
        load_authorizer,
        "NAME",
        "Ask the IAuthorizer at NAME (a fully qualified Python name of an object or of "
        "a callable returning one) about every publish and play; repeatable.  It does "
        "not lift the loopback-only publishing default.",
        shown="none",
        repeatable=True,
        scope="app",
    ),
    # --- hooks: told when a session or a recording ended (docs/recording.md, "Hooks")
    Option(
        "on-publish-done",
        "on_publish_done",
        _hook_url,
        "URL",
        "URL POSTed to (call=publish_done, app, name, addr, args...) when a publish ends; "
        "json:URL posts JSON.  Retried on failure.",
        live=False,
    ),
    Option(
        "on-play-done",
        "on_play_done",
        _hook_url,
        "URL",
        "URL POSTed to (call=play_done...) when a play ends; json:URL posts JSON.",
        live=False,
    ),
    Option(
        "on-record-done",
        "on_record_done",
        _hook_url,
        "URL",
        "URL POSTed to (call=record_done, path, size, duration, start, end, reason...) "
        "when a recording file is done; json:URL posts JSON.",
        live=False,
    ),
    Option(
        "exec-record-done",
        "exec_record_done",
        _command,
        "CMD",
        "Run CMD (an argument list, no shell; {path}, {app}, {name}, {size}... replaced) "
        "when a recording file is done.",
        shown="off",
        live=False,
    ),
    # --- relays to and from other RTMP servers (docs/scaling.md, "Relays")
    Option(
        "push",
        "push",
        _push_rule,
        "URL",
        "Publish every stream published here to rtmp://HOST[:PORT]/APP[/NAME] too (NAME: "
        "the local name), reconnecting with backoff; PATTERN=URL for the streams whose "
        "APP/NAME match the fnmatch PATTERN (an app alone: APP/*).  Repeatable.",
        shown="off",
        repeatable=True,
        scope="app",
    ),
    Option(
        "pull",
        "pull",
        _pull_rule,
        "URL",
        "A play of a stream nobody publishes here pulls it from rtmp://HOST[:PORT]/APP "
        "(one upstream play shared by every viewer); PATTERN=URL as for --push.  "
        "Repeatable: several matching are failover, in order.",
        shown="off",
        repeatable=True,
        scope="app",
    ),
    Option(
        "pull-static",
        "pull_static",
        _pull_static,
        "URL",
        "Keep a pull of rtmp://HOST[:PORT]/APP/NAME up from the start, as the local "
        "stream APP/NAME, viewers or not.  Repeatable.",
        shown="off",
        repeatable=True,
        live=False,
    ),
    Option(
        "relay-reconnect-seconds",
        "relay_reconnect_seconds",
        float,
        "SECONDS",
        "A push or pull whose upstream fails tries again after this long, doubling up "
        "to 30 s while it keeps failing.",
    ),
    Option(
        "pull-idle-seconds",
        "pull_idle_seconds",
        float,
        "SECONDS",
        "A pull ends this long after its last viewer left.",
    ),
    # --- cluster on Redis (docs/scaling.md, "A cluster on Redis")
    Option(
        "cluster",
        "cluster",
        str,
        "URL",
        "Join the cluster whose Redis is redis://HOST:PORT/DB: streams' origins, "
        "pulls between nodes, cluster-wide API and chat (needs the cluster extra).",
        live=False,
    ),
    Option(
        "cluster-node-id",
        "cluster_node_id",
        str,
        "ID",
        "This node's id in the cluster.",
        shown="HOSTNAME-PID",
        live=False,
    ),
    Option(
        "cluster-advertise",
        "cluster_advertise",
        str,
        "URL",
        "rtmp://HOST:PORT other nodes pull this node's streams from.",
        shown="the first --rtmp listener",
        live=False,
    ),
    Option(
        "cluster-prefix",
        "cluster_prefix",
        str,
        "PREFIX",
        "Prefix of every Redis key and channel of the cluster.",
        live=False,
    ),
    Option(
        "cluster-lease-seconds",
        "cluster_lease_seconds",
        float,
        "SECONDS",
        "A node's lease in Redis lives this long unless refreshed (every third of it).",
        live=False,
    ),
    # --- workers: every core of one machine (docs/scaling.md, "Every core: --workers")
    Option(
        "workers",
        "workers",
        parse_workers,
        "N",
        "Serve with N worker processes sharing the RTMP and HTTP ports (SO_REUSEPORT), "
        "a local origin every publish reaches and every worker plays from, and a "
        "supervisor restarting them; auto: one per CPU.  1: this process serves alone.",
        live=False,
    ),
    Option(
        "workers-dir",
        "workers_dir",
        str,
        "DIR",
        "Directory of the origin's and the workers' Unix sockets (made mode 0700).",
        shown="a new private directory in the temp dir",
        live=False,
    ),
)


# --- what follows from the table


def opt_parameters() -> list[list[Any]]:
    """``usage.Options.optParameters``: every option taking one argument.

    The default is left ``None`` here, so that Twisted does not print it as
    ``str(value)`` (``10.0``); :meth:`Option.help_text` states it as the README
    does, and :func:`initial_values` sets the value.
    """
    return [
        [option.flag, None, None, option.help_text(), option.coerce]
        for option in OPTIONS
        if option.parse is not None and not option.repeatable
    ]


def opt_flags() -> list[list[str | None]]:
    """``usage.Options.optFlags``: every option without an argument."""
    return [[option.flag, None, option.help_text()] for option in OPTIONS if option.parse is None]


def _appender(option: Option) -> Callable[[usage.Options, str], None]:
    def handler(self: usage.Options, value: str) -> None:
        self[option.flag].append(option.coerce(value))
        given = getattr(self, "given", None)
        if given is not None:
            given.add(option.flag)

    handler.__name__ = "opt_" + option.flag.replace("-", "_")
    handler.__doc__ = option.help_text()
    return handler


def add_repeatable_handlers(cls: type[_OptionsT]) -> type[_OptionsT]:
    """Give *cls* an ``opt_<name>`` method per repeatable option, appending each value.

    ``usage.Options`` keeps only the last value of a parameter; a handler method
    is its way to collect them (its docstring is the help).
    """
    for option in OPTIONS:
        if option.repeatable:
            handler = _appender(option)
            setattr(cls, handler.__name__, handler)
    return cls


def initial_values() -> dict[str, Any]:
    """The parsed options before any argument: each option's default."""
    return {option.flag: option.default for option in OPTIONS}


def _options_setting(path: str) -> list[Option]:
    """The options that set the field at *path*, or a field nested in it."""
    return [o for o in OPTIONS if any(p == path or p.startswith(path + ".") for p in o.paths)]


def usage_error(error: ConfigError) -> usage.UsageError:
    """*error* as a usage error that names the ``--flag`` of every offending field.

    Field names in the message become their flags (``chunk_size must be ...`` reads
    ``--chunk-size must be ...``); a flag the message does not mention is put in front.
    """
    message = str(error)
    named: list[Option] = []
    for path in error.fields:
        leaf = path.rpartition(".")[2]
        for option in _options_setting(path):
            if path in option.paths:
                message = re.sub(rf"\b{re.escape(leaf)}\b", f"--{option.flag}", message)
            if option not in named:
                named.append(option)
    missing = [
        f"--{option.flag}"
        for option in named
        if not re.search(rf"--{re.escape(option.flag)}(?![\w-])", message)
    ]
    if missing:
        message = f"{', '.join(missing)}: {message}"
    return usage.UsageError(message)


def config_from(values: Mapping[str, Any]) -> ServerConfig:
    """The :class:`~streamserver.config.ServerConfig` that the parsed options describe.

    :param values: parsed options by flag (a :class:`streamserver.tap.Options`).
    :raises usage.UsageError: a value is out of its range; the message names the flag.
    """
    settings: dict[str, Any] = {}
    for option in OPTIONS:
        settings.update(option.settings(values[option.flag]))
    try:
        return ServerConfig.from_settings(settings)
    except ConfigError as error:
        raise usage_error(error) from error
