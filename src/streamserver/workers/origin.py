"""A worker's links to the origin, through the relay (:mod:`streamserver.relay`).

A worker gives its factory one :class:`OriginRoute`, which is both a push
source (``factory.pushes.add_source``) and a pull router
(``factory.pulls.add_router``) answering the origin's Unix socket
(:attr:`Role.origin_rtmp_path <streamserver.workers.roles.Role.origin_rtmp_path>`)
for every stream:

- every publish on the worker is pushed to the origin (a keyframe-safe
  consumer of the stream that reconnects with backoff, never slowing the
  worker's own viewers);
- a play of a stream nobody publishes on the worker opens one pull from the
  origin, shared by every viewer of the worker (RTMP, HTTP-FLV, WebSocket-FLV,
  HLS), closed ``--pull-idle-seconds`` after the last; a local publish
  supersedes it.

The user's own relays run at the origin, which holds every stream once: it
pushes to the ``--push`` upstreams and pulls a stream nobody publishes from the
``--pull`` ones when a worker's pull asks it (:func:`streamserver.workers.prepare_child`
keeps those options from the workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from streamserver.relay.target import RelayTarget

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from streamserver.workers.roles import Role

__all__ = ["RELAY_PEER", "OriginRoute", "install_origin_link", "is_relay_peer"]

#: How a pulled stream's publisher shows (``Pull.peer``: ``relay URL``).
RELAY_PEER = "relay"

#: Seconds to connect to the origin's socket: it is on this machine, so a longer
#: wait means it is down (being restarted) and the relay's backoff applies.
CONNECT_TIMEOUT = 5


def is_relay_peer(address: str | None) -> bool:
    """Whether a stream's publisher *address* (the API's) is a relay's pull."""
    return address is not None and (address == RELAY_PEER or address.startswith(RELAY_PEER + " "))


class OriginRoute:
    """Every stream goes to and comes from the origin: a push source and a pull router.

    :ivar role: the worker's role (the origin's socket).
    """

    def __init__(self, role: Role) -> None:
        self.role = role

    def __repr__(self) -> str:
        return f"<OriginRoute {self.role.origin_rtmp_path}>"

    def target(self, app: str) -> RelayTarget:
        """The origin's application *app*."""
        path = str(self.role.origin_rtmp_path).replace(":", "\\:")
        return RelayTarget(
            endpoint=f"unix:path={path}:timeout={CONNECT_TIMEOUT}",
            app=app,
            name=None,
            tc_url=f"rtmp://localhost/{app}",
            url=f"rtmp://origin/{app}",
        )

    def targets(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """Where a local publish of *app*/*name* is pushed: the origin."""
        return defer.succeed([self.target(app)])

    def route(self, app: str, name: str) -> defer.Deferred[list[RelayTarget]]:
        """Where *app*/*name* is pulled from: the origin."""
        return defer.succeed([self.target(app)])


def install_origin_link(role: Role, factory: RTMPServerFactory) -> OriginRoute:
    """Push every publish of *factory* to *role*'s origin and pull from it, and join
    the chat room of every stream published here to the origin's
    (:mod:`streamserver.workers.chat`; a pull joins it itself)."""
    from streamserver.workers.chat import install_publisher_chats

    route = OriginRoute(role)
    factory.pushes.add_source(route)
    factory.pulls.add_router(route)
    install_publisher_chats(factory, route)
    return route
