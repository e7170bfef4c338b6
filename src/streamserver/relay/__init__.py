"""Relays to and from other RTMP servers (docs/scaling.md, "Relays").

- :mod:`~streamserver.relay.target`: where a relay goes (:class:`RelayTarget`),
  ``rtmp://`` URLs and the ``PATTERN=URL`` rules of ``--push`` / ``--pull``; no Twisted.
- :mod:`~streamserver.relay.upstream`: one reconnecting RTMP client connection
  with backoff (:class:`Upstream`).
- :mod:`~streamserver.relay.push`: ``factory.pushes`` (:class:`PushManager`): every
  local publish published upstream too.
- :mod:`~streamserver.relay.pull`: ``factory.pulls`` (:class:`PullManager`): a play of
  a stream nobody publishes here pulls it from upstream.
"""
