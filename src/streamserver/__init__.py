"""streamserver: a live-streaming RTMP relay server on Twisted.

Encoders publish a live stream over RTMP; any number of viewers play it.  See
``docs/architecture.md`` for the shape of the code.
"""

__version__ = "0.1.0"
