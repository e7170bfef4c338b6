"""ServerConfig: every setting of a server, with its default and its range.

One field per setting, one :meth:`ServerConfig.validate` (the shape of
mediamtx's ``internal/conf/conf.go``).  A ``ServerConfig`` checks itself when it
is built, so ``ServerConfig(chunk_size=64)`` and ``dataclasses.replace(config,
chunk_size=64)`` raise :class:`ConfigError` naming ``chunk_size``; a field
assigned afterwards (tests and the console tune a live factory's config this
way) is checked only by an explicit :meth:`~ServerConfig.validate`.

The defaults stated here are the only ones: the twistd options read them, and
so do ``--help`` and the README's options table.  The nested settings are
:class:`~streamserver.policy.PolicyLimits` (which validates itself) and
:class:`~streamserver.auth.AccessConfig`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from streamserver.auth import AccessConfig
from streamserver.codec.chunk import (
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_STREAMS,
    MAX_ENCODABLE_CHUNK_SIZE,
)
from streamserver.errors import StreamServerError
from streamserver.media.hls import MIN_PART_MS, HlsSettings
from streamserver.media.rooms import DEFAULT_CHAT_HISTORY, DEFAULT_CHAT_HISTORY_BYTES
from streamserver.media.stream import DEFAULT_GOP_CACHE_BYTES
from streamserver.policy import PolicyLimits

__all__ = [
    "HLS_MODES",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_BYTES",
    "MAX_WORKERS",
    "MIN_CHUNK_SIZE",
    "MIN_HLS_PART_MS",
    "ConfigError",
    "ServerConfig",
]

#: The most ``--workers``: far above any core count this server runs on, low
#: enough that a typo (``--workers 1000``) is refused instead of forking.
MAX_WORKERS = 256

#: Outgoing chunk sizes we accept: the spec's minimum 128, and the largest value
#: every common player handles (ffmpeg, librtmp and Flash take up to 65536).
MIN_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 65536

#: A largest message above 16 MiB would mean nothing: the 24-bit length field of
#: a chunk header carries at most 16 MiB - 1.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: ``--hls``: a segmenter per stream on its first HLS request, for every published
#: stream, or none (``docs/hls.md``).
HLS_MODES = ("on-demand", "always", "off")

#: The shortest LL-HLS part accepted (the segmenter's own bound): shorter parts
#: multiply playlist requests and break players (hls.js on 20 ms parts, mediamtx #938).
MIN_HLS_PART_MS = MIN_PART_MS

#: The longest ``--merge-ms``: a frame held a second is no longer live.
MAX_MERGE_MS = 1000

#: What ``--record-format`` takes.
RECORD_FORMATS = ("fmp4", "flv")

#: The segmenter's defaults, which the ``hls_*`` fields take.
_HLS = HlsSettings()

#: Counts and durations where 0 means "none" or "no limit"; only a negative
#: value (or NaN) is wrong.
_NON_NEGATIVE = (
    "gop_cache_bytes",
    "max_command_bytes",
    "handshake_timeout",
    "connect_timeout",
    "publisher_idle_timeout",
    "ping_interval",
    "ping_timeout",
    "shutdown_grace",
    "max_connections",
    "max_connections_per_ip",
    "max_streams",
    "notsent_lowat",
    "send_buffer",
    "chat_history",
    "chat_history_bytes",
    "http_play_wait",
    "hls_idle_timeout",
    "hls_max_waiting",
    "hls_max_waiting_per_ip",
)

#: Settings where 0 would make the server useless rather than unlimited: no
#: chunk stream, no chat character, no chat message, a window never acknowledged.
_AT_LEAST_ONE = (
    "window_ack_size",
    "peer_bandwidth",
    "max_chunk_streams",
    "chat_max_length",
    "chat_rate",
)


class ConfigError(StreamServerError, ValueError):
    """A setting is out of its range.

    The message names the fields by their names (``chunk_size``, ``drop_low``),
    so :mod:`streamserver.options` can say which ``--flag`` is wrong.

    :ivar fields: the offending fields as paths from :class:`ServerConfig`
        (``"chunk_size"``, ``"limits.drop_low"``); several when the rule relates them.
    """

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass
class ServerConfig:
    """Settings of a server; :mod:`streamserver.options` maps the twistd options onto them.

    Every limit and timeout is explained in ``docs/security.md``; 0 disables a
    timeout or a connection/stream limit.

    :ivar chunk_size: outgoing chunk size announced with Set Chunk Size.  4096
        (as nginx-rtmp) cuts per-chunk header overhead to 0.03% and keeps a
        typical inter frame in one chunk.
    :ivar gop_cache_bytes: per-stream GOP cache bound, 0 disables it.
    :ivar window_ack_size: the Window Acknowledgement Size we announce; peers
        acknowledge every this many bytes (2.5 MB, as FMS, nginx-rtmp and ffmpeg).
    :ivar peer_bandwidth: the Set Peer Bandwidth value we announce.
    :ivar max_message_bytes: largest inbound message accepted.  16 MiB lets 4K
        keyframes through; nginx-rtmp's 1 MiB default breaks them.
    :ivar min_peer_chunk_size: smallest Set Chunk Size accepted from a peer.
    :ivar max_peer_chunk_size: largest Set Chunk Size accepted from a peer.
    :ivar max_chunk_streams: chunk streams one peer may open.
    :ivar max_command_bytes: largest command message (AMF) decoded.
    :ivar handshake_timeout: seconds a connection has to complete the handshake.
    :ivar connect_timeout: seconds after the handshake to send ``connect``.
    :ivar publisher_idle_timeout: seconds a publisher may send no media.
    :ivar ping_interval: seconds of silence from a peer before we ping it.
    :ivar ping_timeout: seconds after a ping with neither a byte from the peer
        nor progress in what we send it before it is dropped.
    :ivar shutdown_grace: seconds connections get to close on shutdown.
    :ivar max_connections: connections the server holds at once.
    :ivar max_connections_per_ip: connections one remote address may hold
        (loopback is exempt: a local proxy or load generator shares one address).
    :ivar max_streams: streams (published or played names) the server holds.
    :ivar access: who may publish and play (:class:`~streamserver.auth.AccessConfig`).
    :ivar limits: the drop-frames policy's watermarks.
    :ivar notsent_lowat: ``TCP_NOTSENT_LOWAT`` for every connection's socket (0:
        leave the kernel default).  16 KiB makes a stalled viewer show up in user
        space after ~200 KB instead of ~3 MB (TWISTED-FACTS §4).
    :ivar send_buffer: ``SO_SNDBUF`` for every socket (0: kernel default).
    :ivar watchdog_interval: seconds between stall checks of every viewer.
    :ivar eager_writes: send media straight to a plain TCP socket when its
        transport holds nothing (see ``BackpressureMixin.write_media``).
    :ivar merge_ms: how long a viewer's frames may be held to go out together in
        one ``sendmsg`` (0: flushed at the end of each publisher read).
    :ivar chat_max_length: longest chat message accepted, in characters (after
        control characters are stripped).
    :ivar chat_rate: chat messages one connection may send per
        :attr:`chat_rate_window` seconds.
    :ivar chat_rate_window: the sliding window of the chat rate limit, seconds.
    :ivar chat_history: messages a room keeps for late joiners (0: none).
    :ivar chat_history_bytes: bound on the encoded size of a room's history.
    :ivar http_cors_origin: the ``Access-Control-Allow-Origin`` of every HTTP
        media and API response, so a player page on another origin can play
        (``docs/http.md``); empty sends none.
    :ivar http_play_wait: seconds an HTTP-FLV or WebSocket-FLV request for a
        stream nobody publishes waits for its publisher before the 404.
    :ivar hls: ``on-demand`` (a stream's segmenter starts on its first HLS
        request), ``always`` (on every published stream) or ``off`` (no HLS).
    :ivar hls_segment_seconds: an HLS segment is cut at the first keyframe once
        this long has passed (the encoder's keyframe interval decides the rest).
    :ivar hls_part_ms: the duration of an LL-HLS part, at least
        :data:`MIN_HLS_PART_MS`.
    :ivar hls_window: segments a playlist lists.
    :ivar hls_max_bytes: what one stream's segmenter may hold, in bytes.
    :ivar hls_idle_timeout: seconds without an HLS request after which a
        stream's segmenter stops (with ``always``: once its stream is no longer
        published); 0 never stops it.
    :ivar hls_max_waiting: requests parked (blocking reload, a part not finished)
        on one stream at most; past it 503; 0 no limit.
    :ivar hls_max_waiting_per_ip: requests one address may have parked over every
        stream (loopback exempt); past it 503; 0 no limit.
    :ivar http_access_log: the file each HTTP request is logged to (combined log
        format); ``None`` logs none (a line per request was 20% of the server's CPU
        under 500 LL-HLS players, ``docs/benchmarks.md``).
    :ivar record_dir: the directory streams are recorded to (``--record``);
        ``None`` records nothing.
    :ivar http_max_header_bytes: the most bytes an HTTP request's line and
        headers may take (past it: 431 and the connection closed).
    :ivar http_max_headers: the most header lines of an HTTP request (431).
    :ivar http_header_timeout: seconds from a request's first byte to the end of
        its headers (408 and closed past it); 0 disables it.
    :ivar http_max_body_bytes: the largest HTTP request body (413 and closed).
    :ivar record_format: ``fmp4`` or ``flv`` (:data:`RECORD_FORMATS`).
    :ivar record_apps: ``fnmatch`` patterns on ``APP/NAME`` (each may be a comma
        list); a stream is recorded if one matches, every stream when empty.
    :ivar record_segment_seconds: a file is cut at the first keyframe after this.
    :ivar record_max_bytes: a file is cut at the first keyframe once it holds
        this many bytes; 0 for no limit.
    :ivar record_flush_seconds: media is written (an fMP4 fragment, FLV tags)
        and flushed at least this often: what a crash may lose.
    :ivar record_reconnect_grace: a publisher back within this many seconds
        continues the same file.
    :ivar record_delete_after: finished recordings older than this many seconds
        are deleted; 0 keeps them.
    :ivar on_publish_done: URL (``json:URL`` for a JSON body) POSTed to when a
        publish ends (``--on-publish-done``, :mod:`streamserver.hooks`).
    :ivar on_play_done: URL POSTed to when a play ends.
    :ivar on_record_done: URL POSTed to when a recording file is done.
    :ivar exec_record_done: the argument list run when a recording file is done,
        ``{path}`` and the other fields substituted; empty runs nothing.
    :ivar cluster: ``redis://HOST:PORT/DB`` of a cluster's Redis, or ``None``.
    :ivar cluster_node_id: this node's id in the cluster (``None``: HOSTNAME-PID).
    :ivar cluster_advertise: ``rtmp://HOST:PORT`` other nodes pull from (``None``:
        the first RTMP listener's).
    :ivar cluster_prefix: the prefix of every Redis key and channel.
    :ivar cluster_lease_seconds: a node's lease TTL (refreshed every third of it).
    :ivar api_token: the bearer token of the JSON API's write endpoints (kick,
        chat moderation); without one the API is read-only and they are absent.
    :ivar push: ``--push`` rules (``URL`` or ``PATTERN=URL``): every local publish
        matching one is published to its ``rtmp://HOST/APP[/NAME]`` too.
    :ivar pull: ``--pull`` rules (``URL`` or ``PATTERN=URL``, URL
        ``rtmp://HOST/APP``): a play of a matching stream nobody publishes here
        pulls it from there; several matching: failover in order.
    :ivar pull_static: ``rtmp://HOST/APP/NAME`` pulls kept up from the start,
        as the local stream ``APP/NAME``, viewers or not.
    :ivar relay_reconnect_seconds: the first wait before a relay reconnects
        (doubling to 30 s while the upstream stays down).
    :ivar pull_idle_seconds: a pull ends this long after its last viewer left.
    :ivar workers: worker processes sharing the listeners (1: this process serves
        alone; docs/scaling.md).
    :ivar workers_dir: the directory of the origin's and the workers' Unix sockets
        (mode 0700); ``None``: a fresh one under the temp dir.
    """

    chunk_size: int = 4096
    gop_cache_bytes: int = DEFAULT_GOP_CACHE_BYTES
    window_ack_size: int = 2_500_000
    peer_bandwidth: int = 2_500_000
    max_message_bytes: int = 16 * 1024 * 1024
    # 128: the spec's initial size and the least any encoder sets; smaller sizes
    # only multiply our per-chunk work (codec/chunk.py DEFAULT_MIN_CHUNK_SIZE).
    min_peer_chunk_size: int = 128
    max_peer_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE
    max_chunk_streams: int = DEFAULT_MAX_CHUNK_STREAMS
    # A connect object is a few hundred bytes; 64 KiB bounds what one AMF decode
    # can allocate (decoded values take ~10-50x their encoded size).
    max_command_bytes: int = 64 * 1024
    # A real client handshakes and connects within a round trip or two; 10 s
    # covers a slow mobile link and frees a port scanner's socket soon.
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    # Encoders send audio or video many times a second; 30 s of nothing is a hung
    # encoder holding the stream name (nginx-rtmp drop_idle_publisher).
    publisher_idle_timeout: float = 30.0
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    shutdown_grace: float = 3.0
    max_connections: int = 10_000
    max_connections_per_ip: int = 100
    max_streams: int = 1000
    access: AccessConfig = field(default_factory=AccessConfig)
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    notsent_lowat: int = 16 * 1024
    send_buffer: int = 0
    watchdog_interval: float = 1.0
    eager_writes: bool = True
    # --- fan-out merged writes (issue 16, docs/benchmarks.md): a viewer's frames
    # wait up to merge_ms to leave in one sendmsg, fewer syscalls for a bounded
    # latency (SRS mw_latency); past a second it is no longer live video.
    merge_ms: int = 0
    # 500 characters: a chat line, not a document; 5 per 10 s: a fast typist
    # keeps up, a script flooding a room of 200 viewers does not.
    chat_max_length: int = 500
    chat_rate: int = 5
    chat_rate_window: float = 10.0
    chat_history: int = DEFAULT_CHAT_HISTORY
    chat_history_bytes: int = DEFAULT_CHAT_HISTORY_BYTES
    http_cors_origin: str = "*"
    # An encoder restarting takes a few seconds; 10 s keeps a player waiting
    # through it (RTMP waits without limit: its viewer gets PublishNotify).
    http_play_wait: float = 10.0
    api_token: str | None = None
    http_access_log: str | None = None
    # HTTP request limits (docs/security.md): 16 KiB of request line and headers is
    # Twisted's bound and twice what a browser sends with a few cookies (nginx reads
    # 1 KiB, then up to 4 x 8 KiB); 100 headers is five times a browser's; a request's
    # headers arriving over more than 10 s is slowloris, not a slow phone (nginx's
    # client_header_timeout is 60 s, lighttpd's 5 s...); the only bodies are the API's
    # small JSON objects, so 64 KiB is generous.
    http_max_header_bytes: int = 16 * 1024
    http_max_headers: int = 100
    http_header_timeout: float = 10.0
    http_max_body_bytes: int = 64 * 1024
    hls: str = "on-demand"
    # 2 s segments with 200 ms parts: what hls.js and Apple's LL-HLS guidance use;
    # 7 segments: the LL-HLS minimum gohlslib enforces (a 14 s window), and 64 MiB
    # holds 7 + the retained segments of a 10 Mbit/s stream with room to spare.
    hls_segment_seconds: float = _HLS.segment_seconds
    hls_part_ms: int = _HLS.part_ms
    hls_window: int = _HLS.window
    hls_max_bytes: int = _HLS.max_bytes
    # 30 s: a player that stopped is gone, one reloading its playlist every
    # part (200 ms) or segment (2 s) is not; MediaMTX keeps a muxer 60 s.
    hls_idle_timeout: float = 30.0
    # A player parks one request at a time (hls.js: the playlist or the next part),
    # so 10,000 on a stream is thousands of players; 50 from one address is a
    # household or a small office, and far below what one script could hold open.
    hls_max_waiting: int = 10_000
    hls_max_waiting_per_ip: int = 50
    # --- recording (docs/recording.md) ---
    record_dir: str | None = None
    # fMP4 by default: it survives a crash up to its last fragment, FLV up to its
    # last tag but without its duration until it is patched at close.
    record_format: str = "fmp4"
    record_apps: tuple[str, ...] = ()
    # One hour, as MediaMTX: a file per show, small enough to upload.
    record_segment_seconds: float = 3600.0
    record_max_bytes: int = 0
    # 1 s: a kill -9 loses at most about this (plus the GOP in progress).
    record_flush_seconds: float = 1.0
    # 10 s: an encoder restarting or a mobile link switching comes back within it.
    record_reconnect_grace: float = 10.0
    record_delete_after: float = 0.0
    # --- hooks (docs/recording.md, "Hooks"): all off by default; a URL may be
    # json:URL for a JSON body; the command is an argument list, never a shell ---
    on_publish_done: str | None = None
    on_play_done: str | None = None
    on_record_done: str | None = None
    exec_record_done: tuple[str, ...] = ()
    # --- relays (docs/scaling.md, "Relays"): rtmp://HOST[:PORT]/APP[/NAME] URLs,
    # each maybe behind PATTERN= (fnmatch on APP/NAME; an app alone is APP/*) ---
    push: tuple[str, ...] = ()
    pull: tuple[str, ...] = ()
    pull_static: tuple[str, ...] = ()
    # 3 s, as the issue asks and close to nginx-rtmp's 5 s: an upstream restarting
    # is found again within seconds; the backoff doubles it up to 30 s when it stays down.
    relay_reconnect_seconds: float = 3.0
    # 10 s: a viewer reloading the page or switching players finds the pull still
    # up; an abandoned pull costs the origin one viewer for 10 s more.
    pull_idle_seconds: float = 10.0
    # --- cluster on Redis (docs/scaling.md, "A cluster on Redis"): off by default;
    # a single node needs nothing.  The node id defaults to HOSTNAME-PID at start
    # (unique per process), the advertised URL to the first --rtmp listener.
    cluster: str | None = None
    cluster_node_id: str | None = None
    cluster_advertise: str | None = None
    cluster_prefix: str = "streamserver:"
    # 10 s, as the origin key's EX 10: a dead node's lease and its origins go
    # within the same 10 s, and a refresh every 10/3 s survives two lost ones.
    cluster_lease_seconds: float = 10.0
    # --- workers (docs/scaling.md, "Every core: --workers"): 1 is one process, as
    # before; N > 1 a supervisor, one origin and N workers sharing the ports with
    # SO_REUSEPORT.  The Unix sockets between them live in workers_dir (None: a
    # fresh private directory under the system's temp dir, made by the supervisor).
    workers: int = 1
    workers_dir: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ServerConfig:
        """The default configuration with *settings* applied, validated.

        :param settings: values by field path: ``"chunk_size"`` for a field of
            this class, ``"limits.drop_low"`` for a field of a nested one.
        :raises ConfigError: a value is out of its range.
        :raises TypeError: a path names no field.
        """
        return cls().derived(settings)

    def derived(self, settings: Mapping[str, Any]) -> ServerConfig:
        """A copy of this configuration with *settings* applied, validated.

        An application's effective settings are the server's derived with its
        own (:mod:`streamserver.apps`).

        :param settings: values by field path, as for :meth:`from_settings`.
        :raises ConfigError: a value is out of its range.
        :raises TypeError: a path names no field.
        """
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for path, value in settings.items():
            head, dot, rest = path.partition(".")
            if dot:
                nested.setdefault(head, {})[rest] = value
            else:
                top[head] = value
        for head, changes in nested.items():
            current = getattr(self, head)
            try:
                top[head] = replace(current, **changes)
            except ValueError as error:
                raise nested_error(head, current, error) from error
        return replace(self, **top)

    def validate(self) -> None:
        """Check every setting against its range, the nested ones included.

        :raises ConfigError: naming the offending field(s).
        """
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(
                f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}", "chunk_size"
            )
        if not 0 < self.max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"max_message_bytes must be 1..{MAX_MESSAGE_BYTES}", "max_message_bytes"
            )
        if (
            not 1
            <= self.min_peer_chunk_size
            <= self.max_peer_chunk_size
            <= MAX_ENCODABLE_CHUNK_SIZE
        ):
            raise ConfigError(
                "need 1 <= min_peer_chunk_size <= max_peer_chunk_size <= "
                f"{MAX_ENCODABLE_CHUNK_SIZE}",
                "min_peer_chunk_size",
                "max_peer_chunk_size",
            )
        for name in _AT_LEAST_ONE:
            if not getattr(self, name) >= 1:
                raise ConfigError(f"{name} must be at least 1", name)
        for name in _NON_NEGATIVE:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must not be negative", name)
        # fan-out merged writes: 0 (off) up to MAX_MERGE_MS
        if not 0 <= self.merge_ms <= MAX_MERGE_MS:
            raise ConfigError(f"merge_ms must be 0..{MAX_MERGE_MS}", "merge_ms")
        for name in ("chat_rate_window", "watchdog_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive", name)
        if any(c in self.http_cors_origin for c in "\r\n"):
            raise ConfigError("http_cors_origin must be one line", "http_cors_origin")
        if not self.http_max_header_bytes >= 1024:
            raise ConfigError(
                "http_max_header_bytes must be at least 1024", "http_max_header_bytes"
            )
        if not self.http_max_headers >= 8:
            raise ConfigError("http_max_headers must be at least 8", "http_max_headers")
        if not self.http_max_body_bytes >= 0:
            raise ConfigError("http_max_body_bytes must not be negative", "http_max_body_bytes")
        if not self.http_header_timeout >= 0:
            raise ConfigError("http_header_timeout must not be negative", "http_header_timeout")
        if self.hls not in HLS_MODES:
            raise ConfigError(f"hls must be one of {', '.join(HLS_MODES)}", "hls")
        if not 0 < self.hls_segment_seconds <= 60:
            raise ConfigError(
                "hls_segment_seconds must be above 0 and at most 60", "hls_segment_seconds"
            )
        if not MIN_HLS_PART_MS <= self.hls_part_ms <= self.hls_segment_seconds * 1000:
            raise ConfigError(
                f"hls_part_ms must be at least {MIN_HLS_PART_MS} and at most hls_segment_seconds",
                "hls_part_ms",
                "hls_segment_seconds",
            )
        if not self.hls_window >= 3:
            raise ConfigError(
                "hls_window must be at least 3 (RFC 8216: 3 target durations)", "hls_window"
            )
        if not self.hls_max_bytes >= 1024 * 1024:
            raise ConfigError("hls_max_bytes must be at least 1 MiB", "hls_max_bytes")
        self._validate_recording()
        if not self.access.callback_timeout >= 0:
            raise ConfigError("callback_timeout must not be negative", "access.callback_timeout")
        self._validate_hooks()
        self._validate_relays()
        self._validate_cluster()
        self._validate_workers()
        try:
            self.limits.validate()
        except ValueError as error:
            raise nested_error("limits", self.limits, error) from error

    def _validate_recording(self) -> None:
        """The ``record_*`` ranges (recording, docs/recording.md)."""
        if self.record_format not in RECORD_FORMATS:
            raise ConfigError(
                f"record_format must be one of {', '.join(RECORD_FORMATS)}", "record_format"
            )
        for pattern in self.record_apps:
            if not all(part.strip() for part in pattern.split(",")):
                raise ConfigError("record_apps has an empty pattern", "record_apps")
        # A segment shorter than a GOP or two would cut at every keyframe.
        if not 1 <= self.record_segment_seconds <= 7 * 86400:
            raise ConfigError("record_segment_seconds must be 1..604800", "record_segment_seconds")
        # Below 64 KiB a file would hold less than one keyframe of most streams.
        if self.record_max_bytes != 0 and not self.record_max_bytes >= 64 * 1024:
            raise ConfigError(
                "record_max_bytes must be 0 (no limit) or at least 65536", "record_max_bytes"
            )
        # Under 0.1 s a fragment per flush costs more in boxes than it saves.
        if not 0.1 <= self.record_flush_seconds <= 60:
            raise ConfigError("record_flush_seconds must be 0.1..60", "record_flush_seconds")
        if not 0 <= self.record_reconnect_grace <= 3600:
            raise ConfigError("record_reconnect_grace must be 0..3600", "record_reconnect_grace")
        if not self.record_delete_after >= 0:
            raise ConfigError("record_delete_after must not be negative", "record_delete_after")

    def record_patterns(self) -> tuple[str, ...]:
        """The ``record_apps`` patterns, comma lists split; empty: every stream."""
        return tuple(part.strip() for pattern in self.record_apps for part in pattern.split(","))

    def _validate_relays(self) -> None:
        """The relay URLs and timings (docs/scaling.md, "Relays")."""
        _check_relay_urls(self)
        # Under 0.1 s a dead upstream would be hammered; over an hour it is forgotten.
        if not 0.1 <= self.relay_reconnect_seconds <= 3600:
            raise ConfigError(
                "relay_reconnect_seconds must be 0.1..3600", "relay_reconnect_seconds"
            )
        if not 0 <= self.pull_idle_seconds <= 86400:
            raise ConfigError("pull_idle_seconds must be 0..86400", "pull_idle_seconds")

    def _validate_cluster(self) -> None:
        """The ``cluster_*`` settings (docs/scaling.md, "A cluster on Redis")."""
        from urllib.parse import urlsplit

        if self.cluster is not None:
            parts = urlsplit(self.cluster)
            db = parts.path.strip("/")
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            if (
                parts.scheme != "redis"
                or not parts.hostname
                or not port_ok
                or not (db == "" or db.isdigit())
            ):
                raise ConfigError("cluster must be redis://HOST[:PORT][/DB]", "cluster")
        if self.cluster_node_id is not None and not re.fullmatch(
            r"[A-Za-z0-9._-]{1,64}", self.cluster_node_id
        ):
            raise ConfigError(
                "cluster_node_id must be 1..64 of letters, digits, '.', '_', '-'",
                "cluster_node_id",
            )
        if self.cluster_advertise is not None:
            parts = urlsplit(self.cluster_advertise)
            if parts.scheme != "rtmp" or not parts.hostname or parts.path.strip("/"):
                raise ConfigError(
                    "cluster_advertise must be rtmp://HOST[:PORT]", "cluster_advertise"
                )
        if not re.fullmatch(r"[A-Za-z0-9._:-]{0,64}", self.cluster_prefix):
            raise ConfigError(
                "cluster_prefix must be up to 64 of letters, digits, '.', '_', '-', ':'",
                "cluster_prefix",
            )
        # Under 3 s the refreshes (a third of it) race the Redis round trips of a
        # loaded node; over 5 minutes a dead node's streams stay unreachable long.
        if not 3 <= self.cluster_lease_seconds <= 300:
            raise ConfigError("cluster_lease_seconds must be 3..300", "cluster_lease_seconds")

    def _validate_workers(self) -> None:
        """The ``workers`` range (docs/scaling.md, "Every core: --workers")."""
        # Past MAX_WORKERS processes each holds its own copy of every stream's GOP
        # and the sockets' accept queues: more workers than cores only costs memory.
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be 1..{MAX_WORKERS}", "workers")
        if self.workers_dir is not None and not self.workers_dir:
            raise ConfigError("workers_dir must not be empty", "workers_dir")

    def _validate_hooks(self) -> None:
        from streamserver.hooks import COMMAND_FIELDS, parse_hook_url

        for name in ("on_publish_done", "on_play_done", "on_record_done"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_hook_url(value)
                except ValueError as error:
                    raise ConfigError(f"{name}: {error}", name) from error
        command = self.exec_record_done
        if command and not (isinstance(command, tuple) and os.path.isabs(command[0])):
            raise ConfigError(
                "exec_record_done must be an argument list starting with an absolute path",
                "exec_record_done",
            )
        for found in re.finditer(r"\{([A-Za-z_]\w*)\}", " ".join(command)):
            if found[1] not in COMMAND_FIELDS:
                raise ConfigError(
                    f"exec_record_done: unknown field {{{found[1]}}}", "exec_record_done"
                )


def _check_relay_urls(config: ServerConfig) -> None:
    """Every relay URL parses (:func:`streamserver.relay.target.parse_rule`).

    :raises ConfigError: naming the field of the first that does not.
    """
    from streamserver.relay.target import parse_rule, parse_target

    checks: tuple[tuple[str, Any], ...] = (
        ("push", lambda value: parse_rule(value)),
        ("pull", lambda value: parse_rule(value, with_name=False)),
        ("pull_static", lambda value: parse_target(value, with_name=True)),
    )
    for name, parse in checks:
        for value in getattr(config, name):
            try:
                parse(value)
            except ValueError as error:
                raise ConfigError(f"{name}: {error}", name) from error


def nested_error(prefix: str, settings: Any, error: ValueError) -> ConfigError:
    """The :class:`ConfigError` for *error*, raised by the nested *settings* at *prefix*.

    A nested dataclass (:class:`~streamserver.policy.PolicyLimits`) raises a plain
    ``ValueError`` that names its fields in words; the fields named are the
    offending ones, or all of them when it names none.
    """
    names = [f.name for f in fields(settings)]
    named = [name for name in names if re.search(rf"\b{name}\b", str(error))]
    return ConfigError(str(error), *(f"{prefix}.{name}" for name in named or names))
