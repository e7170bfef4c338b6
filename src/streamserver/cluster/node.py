"""ClusterNode: one server's place in a cluster -- its lease, its origins, its router.

Every ``refresh_seconds`` (a third of the lease) a node:

- writes its lease ``node:ID`` (its advertised RTMP URL, JSON) for ``lease_seconds``;
- refreshes ``origin:APP/NAME`` of every stream published here, only while the
  key still holds its id (Lua compare-and-expire); a key found taken is lost;
- writes ``streams:ID``: its streams, each with its viewers and whether this
  node is its origin, for ``lease_seconds``;
- reads every node's ``streams:`` key into :attr:`ClusterNode.view`, the
  cluster-wide list the API shows (so the API answers without waiting on
  Redis, at most one tick old).

A publish (``factory.events``, role publisher) claims ``origin:APP/NAME`` with
``SET NX``.  When another node holds it: if that node's lease is gone (it died;
its key outlives it by at most ``origin_seconds``) the claim takes the key over
(compare-and-set on the dead node's id); if the node is alive, the publish is
refused: the publisher's connection is dropped and the refusal logged with the
holder.  An unpublish deletes the key only if it is still ours.

:meth:`ClusterNode.route` is the router of ``factory.pulls``: a play of a stream
nobody publishes here finds ``origin:APP/NAME``, then that node's lease, and
pulls from its advertised URL; nothing (``[]``) when no node, or this one, is
the origin.  Asked again on every upstream (re)connect, so after a node loss
the edges follow the stream to wherever its publisher comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamserver.cluster.store import DEFAULT_PREFIX, Keys, Store
from streamserver.events import PUBLISH, SessionEvent

__all__ = ["ClusterNode", "NodeSettings", "cluster_streams", "encode"]

_log = Logger()

T = TypeVar("T")


def encode(value: Any) -> str:
    """*value* as the compact JSON the cluster stores."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class NodeSettings:
    """What a node is and how often it speaks.

    :ivar node_id: unique in the cluster (``--cluster-node-id``).
    :ivar advertise: how other nodes reach this node's RTMP listener,
        ``rtmp://HOST:PORT`` (``--cluster-advertise``).
    :ivar prefix: of every key and channel (``--cluster-prefix``).
    :ivar lease_seconds: how long a lease and a node's stream list live unrefreshed.
    :ivar origin_seconds: how long an origin claim lives unrefreshed (``EX 10``).
    """

    node_id: str
    advertise: str
    prefix: str = DEFAULT_PREFIX
    lease_seconds: float = 10.0
    origin_seconds: float = 10.0

    @property
    def refresh_seconds(self) -> float:
        """A third of the shorter TTL: two refreshes may fail before a key expires."""
        return min(self.lease_seconds, self.origin_seconds) / 3


class ClusterNode(Generic[T]):
    """A server's lease, origin claims, router and cluster view.

    :param server: the factory (``streams()``, ``kick()``).
    :param make_target: the relay target of an ``rtmp://HOST:PORT/APP`` URL
        (``relay.target.parse_target``).
    :ivar origins: the streams this node is the origin of, ``(app, name)`` -> the
        publisher's connection id.
    :ivar view: every node's streams as last read (node id -> its JSON entry).
    """

    def __init__(
        self,
        server: Any,
        store: Store,
        settings: NodeSettings,
        clock: IReactorTime,
        make_target: Callable[[str], T],
    ) -> None:
        self.server = server
        self.store = store
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.clock = clock
        self.make_target = make_target
        self.origins: dict[tuple[str, str], int] = {}
        self.view: dict[str, dict[str, Any]] = {}
        self.view_at: float | None = None
        self.refused = 0
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._ticking: Deferred[None] | None = None
        self._streams_value: str | None = None
        #: the publishes here, (app, name) -> connection id, claimed or not
        self._publishing: dict[tuple[str, str], int] = {}

    @property
    def node_id(self) -> str:
        return self.settings.node_id

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Register now and every ``refresh_seconds``."""
        _log.info(
            "cluster node {node} ({url}) starting, keys under {prefix}",
            node=self.node_id,
            url=self.settings.advertise,
            prefix=self.settings.prefix,
        )
        self._loop.start(self.settings.refresh_seconds, now=True)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop refreshing; release our origins, lease and stream list (if still ours)."""
        if self._loop.running:
            self._loop.stop()
        lease = self._lease_value()
        releases = [
            self.store.release(self.keys.origin(app, name), self.node_id)
            for app, name in self.origins
        ]
        releases.append(self.store.release(self.keys.node(self.node_id), lease))
        if self._streams_value is not None:
            key = self.keys.streams(self.node_id)
            releases.append(self.store.release(key, self._streams_value))
        self.origins.clear()
        yield defer.DeferredList(releases, consumeErrors=True)

    def _lease_value(self) -> str:
        return encode({"node": self.node_id, "url": self.settings.advertise})

    def tick(self) -> Deferred[None] | None:
        """One refresh (skipped while the previous one still waits on the store)."""
        if self._ticking is not None:
            return None
        self._ticking = defer.ensureDeferred(self._tick())
        self._ticking.addErrback(self._tick_failed)
        self._ticking.addBoth(self._tick_done)
        return self._ticking

    def _tick_done(self, result: Any) -> Any:
        self._ticking = None
        return result

    def _tick_failed(self, failure: Failure) -> None:
        _log.warn(
            "cluster refresh of {node} failed: {error}",
            node=self.node_id,
            error=failure.getErrorMessage(),
        )

    async def _tick(self) -> None:
        store, keys, settings = self.store, self.keys, self.settings
        await store.set(keys.node(self.node_id), self._lease_value(), settings.lease_seconds)
        for (app, name), conn_id in list(self.origins.items()):
            if await store.refresh(keys.origin(app, name), self.node_id, settings.origin_seconds):
                continue
            if (app, name) not in self.origins:
                continue
            # Expired (Redis was away longer than the TTL) or taken: claim again.
            await self._claim(app, name, conn_id)
        self._streams_value = encode(self.local_streams())
        await store.set(keys.streams(self.node_id), self._streams_value, settings.lease_seconds)
        node_keys = await store.keys(keys.streams_prefix)
        values = await store.get_many(node_keys)
        view: dict[str, dict[str, Any]] = {}
        for key, value in zip(node_keys, values, strict=True):
            if value is None:
                continue
            try:
                view[key.removeprefix(keys.streams_prefix)] = json.loads(value)
            except ValueError:
                continue
        self.view = view
        self.view_at = self.clock.seconds()
        await self._nudge_waiting_pulls()

    async def _nudge_waiting_pulls(self) -> None:
        """Retry at once the pulls waiting out a backoff whose stream has an origin
        again somewhere else than where they last tried (its publisher came back on
        another node), instead of at their next attempt (up to 30 s later); a pull
        whose origin did not move keeps its backoff."""
        pulls = getattr(self.server, "pulls", None)
        if pulls is None:
            return
        for (app, name), pull in list(pulls.pulls.items()):
            upstream = pull.upstream
            if upstream.state != "waiting":
                continue
            targets = await self._route(app, name)
            if targets and upstream.target not in targets and upstream.state == "waiting":
                _log.info("cluster: {app}/{name} has an origin again; its pull retries now",
                          app=app, name=name)  # fmt: skip
                upstream.retry_now()

    def local_streams(self) -> dict[str, Any]:
        """This node's entry in ``streams:ID``."""
        streams = []
        for stream in self.server.streams():
            streams.append(
                {
                    "app": stream.app,
                    "name": stream.name,
                    "published": stream.publisher is not None,
                    "origin": (stream.app, stream.name) in self.origins,
                    "viewers": stream.subscriber_count,
                }
            )
        return {"node": self.node_id, "url": self.settings.advertise, "streams": streams}

    # --- origins (factory.events) --------------------------------------------------

    def session_started(self, event: SessionEvent) -> None:
        if event.role == PUBLISH and event.protocol != "relay":
            access = event.access
            self._publishing[(access.app, access.name)] = access.conn_id
            d = defer.ensureDeferred(self._claim(access.app, access.name, access.conn_id))
            d.addErrback(self._claim_failed, access.app, access.name)

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        if event.role == PUBLISH and event.protocol != "relay":
            access = event.access
            if self._publishing.get((access.app, access.name)) == access.conn_id:
                del self._publishing[(access.app, access.name)]
            if self.origins.get((access.app, access.name)) != access.conn_id:
                return  # not ours, or its claim still in flight (it releases itself)
            del self.origins[(access.app, access.name)]
            key = self.keys.origin(access.app, access.name)
            self.store.release(key, self.node_id).addErrback(
                self._claim_failed, access.app, access.name
            )

    def _claim_failed(self, failure: Failure, app: str, name: str) -> None:
        _log.warn(
            "cluster origin of {app}/{name} on {node}: {error}",
            app=app,
            name=name,
            node=self.node_id,
            error=failure.getErrorMessage(),
        )

    async def _claim(self, app: str, name: str, conn_id: int) -> bool:
        """Claim *app/name*'s origin for the publish on *conn_id*; refuse it if taken."""
        store, key, ttl = self.store, self.keys.origin(app, name), self.settings.origin_seconds
        won = await store.claim(key, self.node_id, ttl)
        holder: str | None = None
        if not won:
            holder = await store.get(key)
            if holder is None:
                won = await store.claim(key, self.node_id, ttl)
            elif holder == self.node_id:
                won = await store.refresh(key, self.node_id, ttl)
            elif await store.get(self.keys.node(holder)) is None:
                won = await store.replace(key, self.node_id, holder, ttl)
                if won:
                    _log.info(
                        "cluster origin of {app}/{name} taken over from {holder} (lease expired)",
                        app=app,
                        name=name,
                        holder=holder,
                    )
        if won and self._publishing.get((app, name)) != conn_id:
            # The publish ended while the claim was on its way: give the key back.
            await store.release(key, self.node_id)
            return False
        if won:
            self.origins[(app, name)] = conn_id
            return True
        if self._publishing.get((app, name)) != conn_id:
            return False
        self.origins.pop((app, name), None)
        self.refused += 1
        _log.warn(
            "cluster: {app}/{name} is published on node {holder}; refusing the publish of "
            "connection {conn_id} here",
            app=app,
            name=name,
            holder=holder,
            conn_id=conn_id,
        )
        self.server.kick(conn_id, f"{app}/{name} is published on cluster node {holder}")
        return False

    # --- the router of factory.pulls -----------------------------------------------

    def route(self, app: str, name: str) -> Deferred[list[T]]:
        """Where to pull *app/name* from: its origin node's URL, or ``[]``."""
        return defer.ensureDeferred(self._route(app, name))

    async def _route(self, app: str, name: str) -> list[T]:
        holder = await self.store.get(self.keys.origin(app, name))
        if holder is None or holder == self.node_id:
            return []
        lease = await self.store.get(self.keys.node(holder))
        if lease is None:
            return []
        try:
            url = str(json.loads(lease)["url"])
        except (ValueError, KeyError, TypeError):
            return []
        _log.debug(
            "cluster route {app}/{name}: {url} ({holder})",
            app=app,
            name=name,
            url=url,
            holder=holder,
        )
        return [self.make_target(f"{url.rstrip('/')}/{app}")]

    # --- the cluster view (the API) ------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The API's ``cluster`` field: nodes and streams across the cluster."""
        age = None if self.view_at is None else round(self.clock.seconds() - self.view_at, 3)
        return {
            "node": self.node_id,
            "nodes": sorted(self.view),
            "age": age,
            "streams": cluster_streams(self.view.values()),
        }


def cluster_streams(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streams across nodes: each with its origin node, nodes and viewers.

    Each edge pulling a stream plays it once at the origin; that play is no
    person, so ``viewers`` is the nodes' sum less one per pulling edge.
    """
    streams: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        node = str(entry.get("node"))
        for item in entry.get("streams", ()):
            key = (str(item["app"]), str(item["name"]))
            merged = streams.setdefault(
                key,
                {"app": key[0], "name": key[1], "origin": None, "viewers": 0, "nodes": {}},
            )
            viewers = int(item.get("viewers", 0))
            merged["nodes"][node] = viewers
            merged["viewers"] += viewers
            if item.get("origin"):
                merged["origin"] = node
    for merged in streams.values():
        if merged["origin"] is None:
            continue
        edges = [
            node
            for node in merged["nodes"]
            if node != merged["origin"] and _pulling(entries, node, merged)
        ]
        merged["viewers"] = max(0, merged["viewers"] - len(edges))
    return [streams[key] for key in sorted(streams)]


def _pulling(entries: Iterable[dict[str, Any]], node: str, merged: dict[str, Any]) -> bool:
    for entry in entries:
        if str(entry.get("node")) != node:
            continue
        for item in entry.get("streams", ()):
            if item["app"] == merged["app"] and item["name"] == merged["name"]:
                return bool(item.get("published"))
    return False
