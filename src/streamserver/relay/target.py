"""Where a relay goes: :class:`RelayTarget`, ``rtmp://`` URLs and relay rules.

No Twisted here (:mod:`streamserver.config` validates with it).

A :class:`RelayTarget` names an upstream RTMP server by a Twisted *client
endpoint description* (``tcp:host=H:port=P``, ``unix:path=/p``), so the relay
code never assumes TCP: the workers' local origin is a Unix socket.

A :class:`RelayRule` is one ``--push`` / ``--pull`` argument: ``URL`` (every
stream) or ``PATTERN=URL``, the pattern an ``fnmatch`` pattern on the local
``APP/NAME``; a pattern without ``/`` names applications (``live`` is
``live/*``).  Examples: ``rtmp://cdn/live``, ``live=rtmp://cdn/live``,
``live/cam*=rtmp://cdn/ingest/backup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from streamserver.errors import RelayUrlError

__all__ = ["DEFAULT_PORT", "RelayRule", "RelayTarget", "parse_rule", "parse_target"]

#: RTMP's registered port.
DEFAULT_PORT = 1935


@dataclass(frozen=True)
class RelayTarget:
    """One upstream stream.

    :ivar endpoint: a Twisted client endpoint description (``clientFromString``).
    :ivar app: the upstream application (``connect``'s ``app``).
    :ivar name: the upstream stream name; ``None``: the local stream's name.
    :ivar tc_url: ``connect``'s ``tcUrl``.
    :ivar url: how logs and the API show it.
    """

    endpoint: str
    app: str
    name: str | None
    tc_url: str
    url: str

    def stream_name(self, local_name: str) -> str:
        """The upstream name for the local stream *local_name*."""
        return self.name if self.name is not None else local_name

    def for_name(self, local_name: str) -> str:
        """The URL of the upstream stream of *local_name*, for logs."""
        return f"{self.url.rstrip('/')}/{local_name}" if self.name is None else self.url


def _endpoint_host(host: str) -> str:
    """*host* escaped for an endpoint description (IPv6 colons)."""
    return host.replace(":", "\\:")


def parse_target(url: str, *, with_name: bool | None = None) -> RelayTarget:
    """The target of ``rtmp://HOST[:PORT]/APP[/NAME]``.

    :param with_name: ``True``: a NAME is required; ``False``: none is allowed;
        ``None``: either.
    :raises RelayUrlError: anything else (another scheme, no host, no app).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as error:
        raise RelayUrlError(
            f"not an rtmp://HOST[:PORT]/APP[/NAME] URL: {url!r} ({error})"
        ) from None
    if parts.scheme != "rtmp" or not parts.hostname:
        raise RelayUrlError(f"not an rtmp://HOST[:PORT]/APP[/NAME] URL: {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise RelayUrlError(f"an rtmp relay URL takes no query, fragment or user: {url!r}")
    app, _, name = parts.path.strip("/").partition("/")
    if not app:
        raise RelayUrlError(f"no application in {url!r}")
    if with_name is True and not name:
        raise RelayUrlError(f"no stream name in {url!r} (rtmp://HOST/APP/NAME)")
    if with_name is False and name:
        raise RelayUrlError(f"{url!r} names a stream; expected rtmp://HOST[:PORT]/APP")
    host = parts.hostname
    kind = "tcp6" if ":" in host else "tcp"
    shown_host = f"[{host}]" if ":" in host else host
    return RelayTarget(
        endpoint=f"{kind}:host={_endpoint_host(host)}:port={port}:timeout=10",
        app=app,
        name=name or None,
        tc_url=f"rtmp://{shown_host}:{port}/{app}",
        url=f"rtmp://{shown_host}:{port}/{app}" + (f"/{name}" if name else ""),
    )


@dataclass(frozen=True)
class RelayRule:
    """One ``--push`` / ``--pull`` argument: which local streams, and where.

    :ivar pattern: ``fnmatch`` pattern on ``APP/NAME``; ``None``: every stream.
    :ivar target: where they go (or come from).
    """

    pattern: str | None
    target: RelayTarget

    def matches(self, app: str, name: str) -> bool:
        """Whether the local stream *app*/*name* is this rule's."""
        return self.pattern is None or fnmatchcase(f"{app}/{name}", self.pattern)


def parse_rule(text: str, *, with_name: bool | None = None) -> RelayRule:
    """``URL`` or ``PATTERN=URL`` as a :class:`RelayRule`.

    :raises RelayUrlError: the URL or the pattern is wrong.
    """
    pattern: str | None = None
    url = text
    if "=" in text and not text.startswith("rtmp://"):
        pattern, _, url = text.partition("=")
        pattern = pattern.strip()
        if not pattern:
            raise RelayUrlError(f"empty pattern in {text!r} (PATTERN=rtmp://...)")
        if "/" not in pattern:
            pattern = f"{pattern}/*"
    return RelayRule(pattern, parse_target(url.strip(), with_name=with_name))
