"""The one exception tree of streamserver.

- :class:`ProtocolError` and its subclasses: the *peer* broke RTMP, AMF or FLV.
  Codecs raise nothing else, whatever bytes arrive.  At the protocol boundary one
  place catches it, logs it with the peer and drops only that connection.
- :class:`UsageError`: our own misuse of an API (for example asking the AMF0
  encoder to encode an object it does not know).  A bug, never the peer's fault.
- :class:`StreamError` and its subclasses: a request that is well-formed but
  refused; each carries the RTMP status code sent back in ``onStatus``/``_error``.
  :class:`ChatError` and its subclasses carry the ``Chat.*`` codes of
  ``docs/chat.md``.
"""

from __future__ import annotations


class StreamServerError(Exception):
    """Root of every error raised by streamserver."""


class ProtocolError(StreamServerError):
    """The peer sent bytes that break the RTMP, AMF or FLV format."""


class HandshakeError(ProtocolError):
    """The RTMP handshake was malformed (wrong version, bad lengths)."""


class ChunkError(ProtocolError):
    """The chunk stream was malformed or exceeded a hard limit."""


class AMFError(ProtocolError):
    """An AMF0/AMF3 value could not be decoded."""


class FLVError(ProtocolError):
    """An FLV file or tag was malformed."""


class CodecError(ProtocolError):
    """A codec payload inside a media tag was malformed.

    For example an AVCDecoderConfigurationRecord, an hvcC, an
    AudioSpecificConfig or a coded frame whose NAL unit lengths overrun it.
    """


class UsageError(StreamServerError):
    """Our own code misused an API; never caused by the peer."""


class RelayUrlError(UsageError, ValueError):
    """A relay's ``rtmp://`` URL or ``PATTERN=URL`` rule is wrong (an option's argument)."""


class StreamError(StreamServerError):
    """A well-formed request that is refused, with the RTMP status code to send.

    :ivar code: the status code, for example ``NetStream.Publish.BadName``.
    :ivar description: a human-readable reason sent along with the code.
    :cvar transaction_reply: whether a command with a transaction id is answered
        with ``_error`` even when it came on a message stream.  ``publish`` and
        ``play`` arrive on a message stream with a transaction id and players
        wait for an ``onStatus`` there, so this is false except for chat.
    """

    code = "NetStream.Failed"
    transaction_reply = False

    def __init__(self, description: str = "", code: str | None = None) -> None:
        super().__init__(description or self.code)
        if code is not None:
            self.code = code
        self.description = description or self.code


class BadNameError(StreamError):
    """The stream name is already being published (or is not a valid name)."""

    code = "NetStream.Publish.BadName"


class StreamNotFoundError(StreamError):
    """The requested stream does not exist."""

    code = "NetStream.Play.StreamNotFound"


class UnauthorizedError(StreamError):
    """The peer may not publish or play this stream."""

    code = "NetStream.Publish.Unauthorized"


class ConnectRejectedError(StreamError):
    """The ``connect`` command was refused."""

    code = "NetConnection.Connect.Rejected"


class ChatError(StreamError):
    """A chat command was refused; answered with ``_error`` when it has a transaction id."""

    code = "Chat.Failed"
    transaction_reply = True


class ChatTooLongError(ChatError):
    """The message is longer than ``--chat-max-length`` characters."""

    code = "Chat.TooLong"


class ChatRateLimitedError(ChatError):
    """The connection sent more messages than ``--chat-rate`` allows."""

    code = "Chat.RateLimited"


class ChatMutedError(ChatError):
    """The sender's nick is muted in the room."""

    code = "Chat.Muted"


class ChatNotInRoomError(ChatError):
    """The command's message stream is in no chat room."""

    code = "Chat.NotInRoom"


class ChatEmptyError(ChatError):
    """No text: missing, not a string, or nothing left after stripping control characters."""

    code = "Chat.Empty"


class ChatBadNameError(ChatError):
    """``joinChat`` named no valid stream."""

    code = "Chat.BadName"


class ChatTooManyRoomsError(ChatError):
    """The connection already sits in as many rooms as one connection may join."""

    code = "Chat.TooManyRooms"


class ChatUnauthorizedError(ChatError):
    """``joinChat`` was refused by the play authorizers (a chat join is authorized as a play)."""

    code = "Chat.Unauthorized"


class ChatRejectedError(ChatError):
    """``joinChat`` would create a stream past the server's stream limit."""

    code = "Chat.Rejected"


class ChatBadRequestError(ChatError):
    """A chat WebSocket message that is not JSON, not an object, too big, or of no known type."""

    code = "Chat.BadRequest"


class ChatTimeoutError(ChatError):
    """A chat WebSocket that did not join within ``--connect-timeout`` seconds."""

    code = "Chat.Timeout"
