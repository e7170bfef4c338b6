"""ClusterService: a server joined to a cluster (``--cluster``), installed by tap.py.

At build time it connects the store (:class:`~streamserver.cluster.redis_store.RedisStore`),
sets the factory's ``chat_bridge`` (:class:`~streamserver.cluster.chat.ClusterChat`,
before any stream exists) and ``cluster`` (the node, for the API), observes
``factory.events`` (origin claims) and adds the node as a router of
``factory.pulls``.  Started, the node registers and refreshes; stopped, it
releases its origins and lease (only if still its own) and disconnects.

The defaults: the node id is ``HOSTNAME-PID`` (unique per process, so two
servers on one machine are two nodes); the advertised URL is the first
``--rtmp`` listener's ``rtmp://INTERFACE:PORT``, or the machine's host name when
that listener is on every interface.  A listener on port 0 or a Unix socket
cannot be advertised: ``--cluster-advertise`` is then required.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.logger import Logger
from typing_extensions import override

from streamserver.cluster.chat import ClusterChat
from streamserver.cluster.node import ClusterNode, NodeSettings
from streamserver.cluster.store import Keys, Store
from streamserver.errors import UsageError
from streamserver.relay.target import RelayTarget, parse_target

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory

__all__ = ["ClusterService", "advertise_url", "default_node_id"]

_log = Logger()


def default_node_id() -> str:
    """``HOSTNAME-PID``, reduced to the characters a node id may hold."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:50] or "node"
    return f"{host}-{os.getpid()}"


def advertise_url(rtmp_endpoint: str) -> str:
    """The ``rtmp://HOST:PORT`` of a ``tcp:PORT[:interface=H]`` listener description.

    :raises UsageError: another kind of listener, or port 0.
    """
    parts = re.split(r"(?<!\\):", rtmp_endpoint)
    kind, rest = parts[0], parts[1:]
    if kind not in ("tcp", "tcp6") or not rest or not rest[0].isdigit() or int(rest[0]) == 0:
        raise UsageError(
            f"cannot advertise the RTMP listener {rtmp_endpoint!r} to the cluster: "
            "give --cluster-advertise rtmp://HOST:PORT"
        )
    port = int(rest[0])
    host = ""
    for item in rest[1:]:
        name, _, value = item.partition("=")
        if name == "interface":
            host = value.replace("\\:", ":")
    if host in ("", "0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"rtmp://{host}:{port}"


class ClusterService(Service):
    """The cluster membership of one server (``factory.cluster`` is its node)."""

    def __init__(
        self, factory: RTMPServerFactory, rtmp_endpoints: list[str], store: Store | None = None
    ) -> None:
        config = factory.config
        if config.cluster is None:
            raise UsageError("a cluster service needs --cluster")
        if store is None:
            from streamserver.cluster.redis_store import RedisStore

            store = RedisStore.from_url(config.cluster)
        self.store = store
        node_id = config.cluster_node_id or default_node_id()
        advertise = config.cluster_advertise or advertise_url(rtmp_endpoints[0])
        settings = NodeSettings(
            node_id=node_id,
            advertise=advertise.rstrip("/"),
            prefix=config.cluster_prefix,
            lease_seconds=config.cluster_lease_seconds,
        )
        self.node: ClusterNode[RelayTarget] = ClusterNode(
            factory, store, settings, factory.reactor, parse_target
        )
        self.chat = ClusterChat(store, Keys(settings.prefix), node_id, config.chat_history)
        factory.chat_bridge = self.chat
        factory.cluster = self.node
        factory.events.add(self.node)
        factory.pulls.add_router(self.node)

    @override
    def startService(self) -> None:
        super().startService()
        self.node.start()

    @override
    def stopService(self) -> Any:
        super().stopService()
        d = self.node.stop()
        d.addBoth(lambda _: self.store.close())
        return d
