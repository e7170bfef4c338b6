"""Sans-I/O codecs for RTMP: bytes in, values or messages out, bytes back.

Nothing in this package imports Twisted or touches a socket.  Every decoder
raises only :class:`streamserver.errors.ProtocolError` subclasses on bad input.
"""
