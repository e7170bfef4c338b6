"""twistd options for the input limits, timeouts and access control; graceful shutdown.

:class:`SecurityOptions` is a base of :class:`streamserver.tap.Options`:
``usage.Options`` gathers ``optParameters`` from every class in the MRO, so
these options appear in ``twistd streamserver --help`` with the others, and
``tap.Options`` only calls :meth:`SecurityOptions.check_security` from its
``postOptions`` and passes :meth:`SecurityOptions.security_config` to
:class:`~streamserver.config.ServerConfig`.  ``docs/security.md`` explains
every option.

:class:`StreamServerService` is the top service; its ``stopService`` waits for
:meth:`~streamserver.factory.RTMPServerFactory.shutdown`: viewers get
``NetStream.Play.UnpublishNotify`` and a clean close before the reactor stops.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.python import reflect, usage

from streamserver.auth import (
    DEFAULT_CALLBACK_TIMEOUT,
    AccessConfig,
    AddressAuthorizer,
    IAuthorizer,
    load_publish_keys,
)
from streamserver.codec.chunk import MAX_ENCODABLE_CHUNK_SIZE
from streamserver.config import MAX_MESSAGE_BYTES, ServerConfig
from streamserver.factory import RTMPServerFactory

_DEFAULTS = ServerConfig()


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must not be negative")
    return number


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


class SecurityOptions(usage.Options):
    """The options of input limits, timeouts, connection limits and access control."""

    optParameters: list[list[Any]] = [
        # --- input limits
        [
            "max-message-bytes",
            None,
            _DEFAULTS.max_message_bytes,
            "Largest RTMP message accepted from a peer, in bytes (up to 16 MiB). "
            "The default lets 4K keyframes through.",
            _count,
        ],
        [
            "min-peer-chunk-size",
            None,
            _DEFAULTS.min_peer_chunk_size,
            "Smallest Set Chunk Size accepted from a peer; a smaller one drops the peer.",
            _count,
        ],
        [
            "max-peer-chunk-size",
            None,
            _DEFAULTS.max_peer_chunk_size,
            "Largest Set Chunk Size accepted from a peer; a larger one drops the peer.",
            _count,
        ],
        [
            "max-chunk-streams",
            None,
            _DEFAULTS.max_chunk_streams,
            "Chunk streams one peer may open.",
            _count,
        ],
        [
            "max-command-bytes",
            None,
            _DEFAULTS.max_command_bytes,
            "Largest AMF command message decoded, in bytes; a larger one drops the peer.",
            _count,
        ],
        # --- timeouts
        [
            "handshake-timeout",
            None,
            _DEFAULTS.handshake_timeout,
            "Seconds a connection has to complete the RTMP handshake (0: no limit).",
            _seconds,
        ],
        [
            "connect-timeout",
            None,
            _DEFAULTS.connect_timeout,
            "Seconds after the handshake a client has to send connect (0: no limit).",
            _seconds,
        ],
        [
            "publisher-idle-timeout",
            None,
            _DEFAULTS.publisher_idle_timeout,
            "Seconds a publisher may send no audio or video before it is disconnected "
            "(0: no limit).",
            _seconds,
        ],
        [
            "ping-interval",
            None,
            _DEFAULTS.ping_interval,
            "Seconds of silence from a peer before the server sends it a ping (0: never).",
            _seconds,
        ],
        [
            "ping-timeout",
            None,
            _DEFAULTS.ping_timeout,
            "Seconds after a ping within which a peer must send something or take the "
            "media sent to it; otherwise it is dropped (0: never).",
            _seconds,
        ],
        [
            "shutdown-grace",
            None,
            _DEFAULTS.shutdown_grace,
            "Seconds connections get to close cleanly when the server stops.",
            _seconds,
        ],
        # --- connections and streams
        [
            "max-connections",
            None,
            _DEFAULTS.max_connections,
            "Connections the server holds at once; more are closed at once (0: no limit).",
            _count,
        ],
        [
            "max-connections-per-ip",
            None,
            _DEFAULTS.max_connections_per_ip,
            "Connections one remote address may hold; loopback is exempt (0: no limit).",
            _count,
        ],
        [
            "max-streams",
            None,
            _DEFAULTS.max_streams,
            "Streams the server holds; publishing or playing a new name beyond it is "
            "refused (NetStream.Publish.Rejected / NetStream.Play.Rejected; 0: no limit).",
            _count,
        ],
        # --- access
        [
            "publish-keys",
            None,
            None,
            "File of 'NAME SECRET' lines: publishing NAME needs rtmp://host/app/NAME?key=SECRET.",
            str,
        ],
        [
            "publish-token-secret",
            None,
            None,
            "Secret of signed publish URLs (?expires=UNIX&token=HMAC); env:VAR or file:PATH "
            "read it from there.",
            str,
        ],
        [
            "play-token-secret",
            None,
            None,
            "Secret of signed play URLs; without it anyone may play.",
            str,
        ],
        [
            "on-publish",
            None,
            None,
            "URL POSTed to (app, name, addr, args...) before a publish; 2xx allows it.",
            str,
        ],
        ["on-play", None, None, "URL POSTed to before a play; 2xx allows it.", str],
        [
            "callback-timeout",
            None,
            DEFAULT_CALLBACK_TIMEOUT,
            "Seconds --on-publish / --on-play may take before the request is refused.",
            _seconds,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["publish-from"] = []
        self["authorizer"] = []

    def opt_publish_from(self, network: str) -> None:
        """Allow publishing from NETWORK (CIDR, e.g. 192.168.1.0/24, or an address);
        repeatable.  Default: loopback only, unless --publish-keys,
        --publish-token-secret or --on-publish is given."""
        self["publish-from"].append(network)

    def opt_authorizer(self, name: str) -> None:
        """Ask the IAuthorizer at NAME (a fully qualified Python name of an object
        or of a callable returning one) about every publish and play; repeatable.
        It does not lift the loopback-only publishing default."""
        self["authorizer"].append(name)

    def check_security(self) -> None:
        """Validate the options; load what they name.

        :raises usage.UsageError: a value is out of range or a file, secret,
            network, URL or authorizer is unusable.
        """
        if not 0 < self["max-message-bytes"] <= MAX_MESSAGE_BYTES:
            raise usage.UsageError(f"--max-message-bytes must be 1..{MAX_MESSAGE_BYTES}")
        low, high = self["min-peer-chunk-size"], self["max-peer-chunk-size"]
        if not 1 <= low <= high <= MAX_ENCODABLE_CHUNK_SIZE:
            raise usage.UsageError(
                "need 1 <= --min-peer-chunk-size <= --max-peer-chunk-size <= 2147483647"
            )
        if self["max-chunk-streams"] < 1:
            raise usage.UsageError("--max-chunk-streams must be at least 1")
        if self["publish-keys"]:
            try:
                load_publish_keys(self["publish-keys"])
            except (OSError, ValueError) as error:
                raise usage.UsageError(f"--publish-keys: {error}") from error
        for option in ("publish-token-secret", "play-token-secret"):
            if self[option] is not None:
                try:
                    self[option] = read_secret(self[option])
                except ValueError as error:
                    raise usage.UsageError(f"--{option}: {error}") from error
        try:
            AddressAuthorizer(self["publish-from"])
        except ValueError as error:
            raise usage.UsageError(f"--publish-from: {error}") from error
        for option in ("on-publish", "on-play"):
            url = self[option]
            if url is not None and not url.startswith(("http://", "https://")):
                raise usage.UsageError(f"--{option} must be an http:// or https:// URL")
        self["authorizers"] = [self._load_authorizer(name) for name in self["authorizer"]]

    @staticmethod
    def _load_authorizer(name: str) -> IAuthorizer:
        try:
            found = reflect.namedAny(name)
        except (ImportError, AttributeError, ValueError) as error:
            raise usage.UsageError(f"--authorizer {name}: {error}") from error
        if not IAuthorizer.providedBy(found) and callable(found):
            found = found()
        if not IAuthorizer.providedBy(found):
            raise usage.UsageError(f"--authorizer {name} does not provide IAuthorizer")
        return found

    def security_config(self) -> dict[str, Any]:
        """The :class:`~streamserver.config.ServerConfig` fields these options set."""
        return {
            "max_message_bytes": self["max-message-bytes"],
            "min_peer_chunk_size": self["min-peer-chunk-size"],
            "max_peer_chunk_size": self["max-peer-chunk-size"],
            "max_chunk_streams": self["max-chunk-streams"],
            "max_command_bytes": self["max-command-bytes"],
            "handshake_timeout": self["handshake-timeout"],
            "connect_timeout": self["connect-timeout"],
            "publisher_idle_timeout": self["publisher-idle-timeout"],
            "ping_interval": self["ping-interval"],
            "ping_timeout": self["ping-timeout"],
            "shutdown_grace": self["shutdown-grace"],
            "max_connections": self["max-connections"],
            "max_connections_per_ip": self["max-connections-per-ip"],
            "max_streams": self["max-streams"],
            "access": AccessConfig(
                publish_from=tuple(self["publish-from"]),
                publish_keys_file=self["publish-keys"],
                publish_token_secret=self["publish-token-secret"],
                play_token_secret=self["play-token-secret"],
                on_publish=self["on-publish"],
                on_play=self["on-play"],
                callback_timeout=self["callback-timeout"],
                authorizers=tuple(self.get("authorizers", ())),
            ),
        }


class StreamServerService(MultiService):
    """The server's service tree; stopping it shuts the factory down gently.

    ``stopService`` stops the children (the listeners first), then returns a
    Deferred that fires once :meth:`~streamserver.factory.RTMPServerFactory.shutdown`
    closed every connection.  twistd waits for it before the reactor stops, so
    viewers get ``NetStream.Play.UnpublishNotify`` and their queued bytes, and
    the process exits within ``shutdown_grace`` seconds.

    :ivar factory: the RTMP server factory every listener shares.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.factory = factory

    def stopService(self) -> defer.Deferred[Any]:
        stopped = defer.maybeDeferred(super().stopService)
        closed = self.factory.shutdown()
        return defer.gatherResults([stopped, closed], consumeErrors=True)
