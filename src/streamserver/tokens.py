"""Signed, expiring stream URLs: ``?expires=UNIX&token=HMAC``.

The token authorizes one action (``publish`` or ``play``) on one stream
(``app/name``) until a moment in Unix time.  It is the lowercase hex
HMAC-SHA256, keyed with the server's secret (UTF-8), of the UTF-8 string::

    "{action}:{app}/{name}:{expires}"

for example ``publish:live/cam:1767225600``.  The action is part of the signed
text, so a play token never authorizes a publish even when both secrets are the
same.  ``expires`` is a decimal integer; a token is valid while the server's
clock is at or before it.

Sign from the command line::

    python -m streamserver.tokens sign --secret S --app live --name cam --expires-in 3600
    python -m streamserver.tokens sign --secret S --action play --url rtmp://host/live/cam

or from Python with :func:`sign` / :func:`signed_query`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode, urlsplit

ACTIONS = ("publish", "play")


def signed_text(action: str, app: str, name: str, expires: int) -> bytes:
    """The exact bytes a token signs: ``"{action}:{app}/{name}:{expires}"`` in UTF-8."""
    return f"{action}:{app}/{name}:{expires}".encode()


def sign(secret: str, action: str, app: str, name: str, expires: int) -> str:
    """The token for *action* on *app*/*name* until *expires* (Unix seconds), as hex.

    :raises ValueError: *action* is not ``publish`` or ``play``.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    digest = hmac.new(secret.encode(), signed_text(action, app, name, expires), hashlib.sha256)
    return digest.hexdigest()


def signed_query(secret: str, action: str, app: str, name: str, expires: int) -> str:
    """The query string to append to the stream name: ``expires=...&token=...``."""
    token = sign(secret, action, app, name, expires)
    return urlencode({"expires": str(expires), "token": token})


def check(
    secret: str,
    action: str,
    app: str,
    name: str,
    args: Mapping[str, str],
    now: float,
) -> str | None:
    """Check the ``expires`` and ``token`` query parameters in *args*.

    The comparison is constant-time (:func:`hmac.compare_digest`).

    :returns: ``None`` if the token is valid, otherwise why it is not.
    """
    expires_text = args.get("expires")
    token = args.get("token")
    if not expires_text or not token:
        return "a signed URL (expires and token) is required"
    if not expires_text.isdigit() or len(expires_text) > 12:
        return "expires is not a Unix time"
    expires = int(expires_text)
    expected = sign(secret, action, app, name, expires)
    if not hmac.compare_digest(token.lower().encode(), expected.encode()):
        return "token does not match"
    if now > expires:
        return "token expired"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamserver.tokens sign ...``: print a signed query or URL."""
    parser = argparse.ArgumentParser(
        prog="python -m streamserver.tokens",
        description="Sign a stream URL for --publish-token-secret / --play-token-secret.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    signing = commands.add_parser("sign", help="print the signed query string or URL")
    signing.add_argument("--secret", required=True, help="the server's token secret")
    signing.add_argument("--action", choices=ACTIONS, default="publish")
    signing.add_argument("--url", help="rtmp://host[:port]/app/name: print the signed URL")
    signing.add_argument("--app", help="application name (or give --url)")
    signing.add_argument("--name", help="stream name (or give --url)")
    when = signing.add_mutually_exclusive_group()
    when.add_argument("--expires", type=int, help="Unix time the token expires at")
    when.add_argument(
        "--expires-in", type=int, default=3600, help="seconds from now (default 3600)"
    )
    options = parser.parse_args(argv)
    app, name = options.app, options.name
    if options.url:
        path = urlsplit(options.url).path.lstrip("/")
        app, _, name = path.partition("/")
    if not app or not name:
        parser.error("give --url rtmp://host/app/name, or --app and --name")
    expires = options.expires if options.expires is not None else int(time.time())
    if options.expires is None:
        expires += options.expires_in
    query = signed_query(options.secret, options.action, app, name, expires)
    sys.stdout.write(f"{options.url.split('?')[0]}?{query}\n" if options.url else f"{query}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
