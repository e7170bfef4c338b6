"""The console's one error, raised by the keys, the helpers and the service alike.

It lives apart from the modules that raise it so that each can import it
without importing the others.
"""

from __future__ import annotations

from streamserver.errors import StreamServerError


class ConsoleError(StreamServerError):
    """The console cannot do what was asked (bad set-up, unknown id, missing feature)."""
