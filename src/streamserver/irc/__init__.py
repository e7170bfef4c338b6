"""The IRC gateway (``--irc ENDPOINT``): the streams' chat rooms as IRC channels.

:mod:`streamserver.irc.names` holds the naming rules (channels, nicks, topics,
message lines; no Twisted), :mod:`streamserver.irc.seat` a client's place in a
room, :mod:`streamserver.irc.server` the protocol and its factory.  The
contract is the "IRC" section of ``docs/watch.md``.
"""

from streamserver.irc.seat import IrcSeat
from streamserver.irc.server import IrcConnection, IrcFactory

__all__ = ["IrcConnection", "IrcFactory", "IrcSeat"]
