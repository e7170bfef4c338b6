"""What a stream is, independent of any wire protocol.

- :mod:`streamserver.media.stream`: :class:`~streamserver.media.stream.Frame`,
  :class:`~streamserver.media.stream.Stream` (publisher, viewers, cached headers,
  GOP cache, fan-out, timestamp rebase) and
  :class:`~streamserver.media.stream.StreamRegistry`;
- :mod:`streamserver.media.rooms`: the chat room of a stream.

Nothing here imports Twisted.
"""
