"""``/api`` and ``/metrics`` for every process of ``--workers N``, whichever answers.

Each child (the origin and every worker) serves its whole HTTP site a second
time on a private Unix socket (``worker-I.http.sock``, ``origin.http.sock``),
with one more path, ``/_process`` (:class:`ProcessResource`: role, pid, resident
memory, uptime).  The worker a public request lands on asks every sibling --
itself included, the same way -- over those sockets, at most
:data:`SIBLING_TIMEOUT` seconds each, and merges the answers:

``GET /api/server``
    the sums over the workers (connections by protocol, viewers, bytes queued,
    disconnects, refusals; ``streams`` and ``published`` count distinct
    ``APP/NAME``), and ``workers``: one row per process (``name``, ``role``,
    ``index``, ``pid``, ``rss_bytes``, ``uptime``, ``connections``, ``viewers``,
    ``up``), the origin's included; the origin's connections are the workers'
    relays, so they are not in the sums.  ``answered_by`` names the worker.
``GET /api/streams``
    each ``APP/NAME`` once: viewers by protocol, bytes out and drops summed over
    the workers, ``viewers_by_worker`` (worker index -> viewers), the publisher
    and ``publisher_worker`` (its index) from the worker where it publishes (a
    worker's pulled copy, whose publisher is ``relay ...``, is not one), the rest
    (media) from the first worker holding the stream.
``GET /metrics``
    every process's series with a ``worker`` label (``origin``, ``0``, ``1``...),
    ``process_resident_memory_bytes`` among them, and ``streamserver_worker_up``.

A sibling that does not answer (dead, being restarted) is a row with ``"up":
false`` and adds nothing.

``POST /api/streams/APP/NAME/chat/{mute,unmute,clear,kick}``
    a room's moderation acts in every process: each worker and the origin hold
    a part of the room (its participants there, its mutes, its history), so the
    answering worker acts on its own and sends the same request (token and body)
    to every other process's private site; the answer is its own.

Everything else under ``/api`` (one stream's viewers, the kicks by connection
id, whose ids are each process's own) is the answering worker's own.
"""

from __future__ import annotations

import io
import json
import os
import resource
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from typing_extensions import override
from zope.interface import implementer

from streamserver.workers.origin import is_relay_peer
from streamserver.workers.roles import ORIGIN, Role

if TYPE_CHECKING:
    from twisted.web.server import Request, Site

    from streamserver.factory import RTMPServerFactory

__all__ = [
    "SIBLING_TIMEOUT",
    "ProcessResource",
    "Siblings",
    "install_aggregation",
    "merge_metrics",
    "merge_server",
    "merge_streams",
    "rss_bytes",
]

_log = Logger()

#: Seconds a sibling has to answer.  Its site answers from memory in
#: milliseconds; a sibling slower than this is stuck or gone, and one stuck
#: sibling must not hold every API request.
SIBLING_TIMEOUT = 2.0

#: The fields of a stream's entry that :func:`merge_streams` sums or collects.
_MERGED = ("viewers", "bytes_out", "dropped", "viewers_by_worker")

#: The summed integer fields of ``/api/server``.
_SUMMED = ("viewers", "bytes_queued", "hls_bytes_held")


def rss_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``; the peak where
    there is no ``/proc``)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ProcessResource(Resource):
    """``/_process`` of a private site: which process this is and its memory."""

    isLeaf = True

    def __init__(self, role: Role, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.role = role
        self.factory = factory

    def render_GET(self, request: Request) -> bytes:
        """The process as JSON."""
        request.setHeader(b"content-type", b"application/json")
        factory = self.factory
        return json.dumps(
            {
                "name": self.role.name,
                "role": self.role.kind,
                "index": self.role.index,
                "pid": os.getpid(),
                "rss_bytes": rss_bytes(),
                "uptime": round(factory.seconds() - factory.started_at, 3),
            }
        ).encode("ascii")


class _Body(Protocol):
    """Collects a response's body (``readBody`` warns about Unix transports)."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self._done = done
        self._parts: list[bytes] = []

    @override
    def dataReceived(self, data: bytes) -> None:
        self._parts.append(data)

    @override
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(reason)


def _read_body(response: Any) -> defer.Deferred[bytes | None]:
    """The body of a 200 *response*; ``None`` for any other status."""
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Body(done))
    if response.code != 200:
        return done.addCallback(lambda _: None)
    return done.addCallback(lambda body: body)


@implementer(IAgentEndpointFactory)
class _SiblingEndpoints:
    """Every ``http://NAME/...`` URI goes to the private socket of the sibling NAME."""

    def __init__(self, reactor: Any, role: Role) -> None:
        self._reactor = reactor
        self._role = role

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        name = uri.host.decode("ascii")
        return UNIXClientEndpoint(self._reactor, str(self._role.http_path(name)), timeout=2)


class Siblings:
    """Asks every child's private site for a path.

    :ivar role: this process's role (it names the siblings and their sockets).
    """

    def __init__(self, reactor: Any, role: Role) -> None:
        self.role = role
        self._reactor = reactor
        self._agent = Agent.usingEndpointFactory(reactor, _SiblingEndpoints(reactor, role))

    def fetch(self, name: str, path: str) -> defer.Deferred[bytes | None]:
        """The body of GET *path* at sibling *name*, or ``None`` if it did not answer."""
        url = f"http://{name}{path}".encode("ascii")
        d = self._agent.request(b"GET", url)
        d.addCallback(_read_body)
        d.addTimeout(SIBLING_TIMEOUT, self._reactor)

        def unanswered(failure: Failure) -> None:
            _log.debug("{name} did not answer {path}: {failure}", name=name, path=path,
                       failure=failure.getErrorMessage())  # fmt: skip
            return None

        d.addErrback(unanswered)
        return d

    def post_others(self, path: str, headers: Mapping[bytes, list[bytes]], body: bytes) -> None:
        """POST *body* to *path* at every sibling but this process, not waiting: a
        sibling that does not answer in time is logged."""
        from twisted.web.client import FileBodyProducer
        from twisted.web.http_headers import Headers

        for name in self.role.siblings():
            if name == self.role.name:
                continue
            url = f"http://{name}{path}".encode("ascii")
            producer = FileBodyProducer(io.BytesIO(body))
            d = self._agent.request(b"POST", url, Headers(dict(headers)), producer)
            d.addCallback(_read_body)
            d.addTimeout(SIBLING_TIMEOUT, self._reactor)
            d.addErrback(
                lambda failure, name=name: _log.warn(
                    "{name} did not take {path}: {error}",
                    name=name,
                    path=path,
                    error=failure.getErrorMessage(),
                )
            )

    async def gather(self, path: str) -> dict[str, bytes | None]:
        """GET *path* at every sibling, at once: the bodies by name."""
        names = self.role.siblings()
        bodies = await defer.gatherResults([self.fetch(name, path) for name in names])
        return dict(zip(names, bodies, strict=True))

    async def gather_json(self, path: str) -> dict[str, Any]:
        """:meth:`gather`, each body decoded as JSON (``None`` if none or not JSON)."""
        decoded: dict[str, Any] = {}
        for name, body in (await self.gather(path)).items():
            try:
                decoded[name] = json.loads(body) if body is not None else None
            except ValueError:
                decoded[name] = None
        return decoded


def _sum_into(total: dict[str, Any], part: Mapping[str, Any]) -> None:
    """Add *part*'s numbers into *total*, key by key (nested dicts too)."""
    for key, value in part.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, Mapping):
            _sum_into(total.setdefault(key, {}), value)


def merge_streams(streams: Mapping[str, Any]) -> dict[str, Any]:
    """``/api/streams`` of every worker (by process name, ``None``: no answer) as one.

    The origin's answer is left out: its streams are the workers' relays.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for name, answer in streams.items():
        if answer is None or name == ORIGIN:
            continue
        index = name.rpartition("-")[2]
        for entry in answer.get("streams", []):
            key = (entry["app"], entry["name"])
            viewers = entry.get("viewers", {}).get("total", 0)
            publisher = entry.get("publisher")
            if publisher is not None and is_relay_peer(publisher.get("address")):
                publisher = None
            found = merged.get(key)
            if found is None:
                found = merged[key] = {**entry, "viewers": {}, "bytes_out": 0, "dropped": {}}
                found.update(viewers_by_worker={}, publisher=None, publisher_worker=None)
            if publisher is not None and found["publisher"] is None:
                sums = {
                    k: found[k] for k in ("viewers", "bytes_out", "dropped", "viewers_by_worker")
                }
                found.update(entry, **sums, publisher=publisher, publisher_worker=index)
            _sum_into(found["viewers"], entry.get("viewers", {}))
            found["bytes_out"] += entry.get("bytes_out", 0)
            _sum_into(found["dropped"], entry.get("dropped", {}))
            found["viewers_by_worker"][index] = viewers
    return {"streams": [merged[key] for key in sorted(merged)]}


def merge_server(
    servers: Mapping[str, Any],
    processes: Mapping[str, Any],
    streams: Mapping[str, Any],
    answered_by: str,
) -> dict[str, Any]:
    """``/api/server`` of every process (by name; ``None``: no answer) as one.

    :param processes: each one's ``/_process``.
    :param streams: each one's ``/api/streams`` (for the distinct stream count).
    :param answered_by: the name of the process answering.
    """
    merged: dict[str, Any] = {"answered_by": answered_by}
    rows = []
    for name, server in servers.items():
        process = processes.get(name) or {}
        up = server is not None and bool(process)
        rows.append(
            {
                "name": name,
                "role": ORIGIN if name == ORIGIN else "worker",
                "index": process.get("index"),
                "pid": process.get("pid"),
                "rss_bytes": process.get("rss_bytes"),
                "uptime": process.get("uptime"),
                "connections": server["connections"]["total"] if server else 0,
                "viewers": server["viewers"] if server else 0,
                "up": up,
            }
        )
        if server is None or name == ORIGIN:
            continue
        if "version" not in merged:
            merged["version"] = server["version"]
            merged["uptime"] = server["uptime"]
        for key in _SUMMED:
            merged[key] = merged.get(key, 0) + server.get(key, 0)
        for key in ("connections", "disconnects", "refusals"):
            _sum_into(merged.setdefault(key, {}), server.get(key, {}))
    combined = merge_streams(streams)["streams"]
    merged["streams"] = len(combined)
    merged["published"] = sum(1 for entry in combined if entry.get("publisher") is not None)
    merged["rss_bytes"] = sum(row["rss_bytes"] or 0 for row in rows)
    merged["workers"] = rows
    return merged


class _Families(Collector):
    """Yields the merged metric families once."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    @override
    def collect(self) -> Any:
        return iter(self._families)


def merge_metrics(texts: Mapping[str, str | None]) -> bytes:
    """Every process's ``/metrics`` text (by ``worker`` label; ``None``: no answer)
    as one exposition, each sample labelled with its ``worker``."""
    families: dict[str, Metric] = {}
    up = Metric("streamserver_worker_up", "1 if the process answered this scrape.", "gauge")
    for label, text in texts.items():
        up.add_sample("streamserver_worker_up", {"worker": label}, 0 if text is None else 1)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.add_sample(
                    sample.name, {**sample.labels, "worker": label}, sample.value, sample.timestamp
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([up, *families.values()]))
    return generate_latest(registry)


class _AggregateResource(Resource):
    """A path answered from every sibling; anything below it is the local resource's."""

    isLeaf = True

    def __init__(self, siblings: Siblings, local: Resource) -> None:
        super().__init__()
        self.siblings = siblings
        self.local = local

    async def merged(self) -> tuple[bytes, bytes]:
        """The content type and body of the merged answer."""
        raise NotImplementedError

    @override
    def render(self, request: Request) -> bytes | int:
        if request.method != b"GET" or request.postpath not in ([], [b""]):
            return self.local.render(request)
        started = time.monotonic()

        def answer(result: tuple[bytes, bytes]) -> None:
            content_type, body = result
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"cache-control", b"no-cache")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            _log.failure("aggregating {uri} failed", failure, uri=request.uri)
            request.setResponseCode(500)
            request.write(b'{"error": "internal error"}\n')
            request.finish()

        d = defer.ensureDeferred(self.merged())
        d.addCallbacks(answer, failed)
        d.addBoth(lambda _: _log.debug("{uri} merged in {ms} ms", uri=request.uri,
                                       ms=round((time.monotonic() - started) * 1000)))  # fmt: skip
        return NOT_DONE_YET


def _json(value: Any) -> tuple[bytes, bytes]:
    return b"application/json", json.dumps(value, indent=2).encode("ascii") + b"\n"


class _ServerAggregate(_AggregateResource):
    async def merged(self) -> tuple[bytes, bytes]:
        servers, processes, streams = await defer.gatherResults(
            [
                defer.ensureDeferred(self.siblings.gather_json(path))
                for path in ("/api/server", "/_process", "/api/streams")
            ]
        )
        return _json(merge_server(servers, processes, streams, self.siblings.role.name))


#: The moderation actions of a room (``.../chat/ACTION``) every process applies.
ROOM_ACTIONS = (b"mute", b"unmute", b"clear", b"kick")

#: The request headers a room action is forwarded with.
_FORWARDED = (b"authorization", b"content-type")


class _StreamsAggregate(_AggregateResource):
    async def merged(self) -> tuple[bytes, bytes]:
        return _json(merge_streams(await self.siblings.gather_json("/api/streams")))

    @override
    def render(self, request: Request) -> bytes | int:
        path = request.postpath or []
        if (
            request.method == b"POST"
            and len(path) >= 4
            and path[-2] == b"chat"
            and path[-1] in ROOM_ACTIONS
        ):
            content = request.content
            body = content.read() if content is not None else b""
            if content is not None:
                content.seek(0)
            headers = {
                name: list(values)
                for name in _FORWARDED
                if (values := request.requestHeaders.getRawHeaders(name))
            }
            self.siblings.post_others(request.path.decode("ascii"), headers, body)
        return super().render(request)


class _MetricsAggregate(_AggregateResource):
    async def merged(self) -> tuple[bytes, bytes]:
        bodies = await self.siblings.gather("/metrics")
        texts = {
            ORIGIN if name == ORIGIN else name.rpartition("-")[2]: (
                body.decode("utf-8") if body is not None else None
            )
            for name, body in bodies.items()
        }
        return CONTENT_TYPE_LATEST.encode("ascii"), merge_metrics(texts)


def install_aggregation(site: Site, siblings: Siblings) -> None:
    """Make *site*'s ``/api/server``, ``/api/streams`` and ``/metrics`` answer for
    every sibling (the paths below them stay local)."""
    root = site.resource
    api = root.children[b"api"]
    api.putChild(b"server", _ServerAggregate(siblings, api.children[b"server"]))
    api.putChild(b"streams", _StreamsAggregate(siblings, api.children[b"streams"]))
    root.putChild(b"metrics", _MetricsAggregate(siblings, root.children[b"metrics"]))
