"""``GET /metrics``: the Prometheus text exposition of what the server holds.

A custom collector (:class:`StreamServerCollector`) reads the server's live
state when Prometheus scrapes -- the typed snapshots the console and the API
read -- so nothing is counted per frame for metrics: the hot path keeps the
counters it has (bytes in and out, drops per viewer) and the collector sums
them.  Series are labelled per stream (``app``, ``name``) and by a bounded
enumeration (``protocol``, ``reason``), never per viewer or connection: a
thousand viewers are one series each, not a thousand.

Each site has its own :class:`~prometheus_client.registry.CollectorRegistry`
(the collector, and the process, platform and GC collectors of
``prometheus_client``), not the library's global one, so several servers (or
tests) in one process never share or clash.

The series (``docs/http.md`` has the list with examples): ``streamserver_info``,
``streamserver_connections`` by protocol, ``streamserver_streams``,
``streamserver_queued_bytes``, ``streamserver_hls_bytes`` and
``streamserver_hls_waiting_requests`` per stream with a segmenter,
``streamserver_recordings_active`` and the counters
``streamserver_recording_bytes_total`` and ``streamserver_recording_failures_total``, the counters
``streamserver_viewer_disconnects_total`` by reason and
``streamserver_connection_refusals_total`` by kind; per stream
``streamserver_stream_published``, ``streamserver_stream_viewers`` by protocol,
the counters ``streamserver_stream_received_bytes_total``,
``streamserver_stream_sent_bytes_total``, ``streamserver_stream_frames_dropped_total``
by reason (over every viewer the stream has had, so it only grows),
``streamserver_chat_messages_total``, and ``streamserver_chat_participants``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.web.resource import Resource
from typing_extensions import override

from streamserver import __version__
from streamserver.policy import DisconnectReason, DropReason
from streamserver.stats import WIRE_PROTOCOLS

if TYPE_CHECKING:
    from twisted.web.server import Request

    from streamserver.factory import RTMPServerFactory

__all__ = ["MetricsResource", "StreamServerCollector", "build_registry"]

_STREAM = ["app", "name"]


class StreamServerCollector(Collector):
    """The server's metrics, read from *factory* at each scrape.

    :ivar factory: the :class:`~streamserver.factory.RTMPServerFactory` read.
    """

    def __init__(self, factory: RTMPServerFactory) -> None:
        self.factory = factory

    @override
    def collect(self) -> Iterator[Metric]:
        factory = self.factory
        info = GaugeMetricFamily("streamserver_info", "The server's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        counts = dict.fromkeys(WIRE_PROTOCOLS, 0)
        for connection in factory.connection_stats():
            counts[connection.protocol] = counts.get(connection.protocol, 0) + 1
        connections = GaugeMetricFamily(
            "streamserver_connections", "Connections by wire protocol.", labels=["protocol"]
        )
        for protocol, count in counts.items():
            connections.add_metric([protocol], count)
        yield connections

        streams = factory.stream_stats()
        yield GaugeMetricFamily(
            "streamserver_streams", "Streams held, published or not.", value=len(streams)
        )
        yield GaugeMetricFamily(
            "streamserver_queued_bytes",
            "Bytes held in every connection's transport write buffer.",
            value=factory.bytes_queued_total(),
        )
        hls_bytes = GaugeMetricFamily(
            "streamserver_hls_bytes",
            "Bytes a stream's HLS segmenter holds (segments, parts, init segments).",
            labels=_STREAM,
        )
        hls_waiting = GaugeMetricFamily(
            "streamserver_hls_waiting_requests",
            "HLS requests parked on a stream (blocking playlist reloads, hinted parts).",
            labels=_STREAM,
        )
        for entry in factory.hls.streams:
            labels = [entry.stream.app, entry.stream.name]
            hls_bytes.add_metric(labels, entry.segmenter.bytes_held)
            hls_waiting.add_metric(labels, entry.waiting)
        yield from (hls_bytes, hls_waiting)
        yield from _recording(factory.recorder)
        disconnects = CounterMetricFamily(
            "streamserver_viewer_disconnects",
            "Viewers the drop policy disconnected, by reason.",
            labels=["reason"],
        )
        by_reason: dict[str, int] = dict.fromkeys(DisconnectReason, 0)
        by_reason.update(factory.disconnects)
        for reason, count in by_reason.items():
            disconnects.add_metric([str(reason)], count)
        yield disconnects
        refusals = CounterMetricFamily(
            "streamserver_connection_refusals",
            "Connections closed by a connection limit or a timeout, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(factory.refusals.items()):
            refusals.add_metric([kind], count)
        yield refusals

        published = GaugeMetricFamily(
            "streamserver_stream_published", "1 while the stream has a publisher.", labels=_STREAM
        )
        viewers = GaugeMetricFamily(
            "streamserver_stream_viewers",
            "Viewers of the stream, by wire protocol.",
            labels=[*_STREAM, "protocol"],
        )
        received = CounterMetricFamily(
            "streamserver_stream_received_bytes",
            "Payload bytes received from the stream's publishers.",
            labels=_STREAM,
        )
        sent = CounterMetricFamily(
            "streamserver_stream_sent_bytes",
            "Bytes written to the stream's viewers.",
            labels=_STREAM,
        )
        dropped = CounterMetricFamily(
            "streamserver_stream_frames_dropped",
            "Frames not sent to the stream's viewers, by reason, over every viewer it has had.",
            labels=[*_STREAM, "reason"],
        )
        participants = GaugeMetricFamily(
            "streamserver_chat_participants", "Seats in the stream's chat room.", labels=_STREAM
        )
        messages = CounterMetricFamily(
            "streamserver_chat_messages", "Chat messages posted to the stream.", labels=_STREAM
        )
        for stream in streams:
            labels = [stream.app, stream.name]
            published.add_metric(labels, 1 if stream.publisher is not None else 0)
            by_protocol = dict.fromkeys(WIRE_PROTOCOLS, 0)
            by_protocol.update(stream.viewers_by_protocol)
            for protocol, count in by_protocol.items():
                viewers.add_metric([*labels, protocol], count)
            received.add_metric(labels, stream.bytes_in)
            sent.add_metric(labels, stream.bytes_out)
            for reason in DropReason:
                dropped.add_metric([*labels, str(reason)], stream.dropped.get(reason, 0))
            participants.add_metric(labels, stream.chat_participants)
            messages.add_metric(labels, stream.chat_posted)
        yield from (published, viewers, received, sent, dropped, participants, messages)


def _recording(recorder: Any) -> Iterator[Metric]:
    """The recorder's series (0 without ``--record``)."""
    totals = recorder.snapshot() if recorder is not None else {}
    yield GaugeMetricFamily(
        "streamserver_recordings_active",
        "Streams being recorded (--record).",
        value=totals.get("active", 0),
    )
    yield CounterMetricFamily(
        "streamserver_recording_bytes",
        "Bytes handed to the disk for recordings.",
        value=totals.get("bytes_total", 0),
    )
    yield CounterMetricFamily(
        "streamserver_recording_failures",
        "Recordings dropped (a write failed, the writer's queue was full).",
        value=totals.get("failures_total", 0),
    )


def build_registry(factory: RTMPServerFactory) -> CollectorRegistry:
    """A registry of *factory*'s metrics and this process's (its own, not the global one)."""
    registry = CollectorRegistry()
    registry.register(StreamServerCollector(factory))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsResource(Resource):
    """``/metrics``: the Prometheus text exposition, made at each scrape.

    :ivar registry: the site's own registry (:func:`build_registry`).
    """

    isLeaf = True

    def __init__(self, factory: RTMPServerFactory) -> None:
        super().__init__()
        self.registry = build_registry(factory)

    def render_GET(self, request: Request) -> bytes:
        """Every series, read now."""
        if request.postpath and request.postpath != [b""]:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: the metrics are at /metrics\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-cache")
        return generate_latest(self.registry)
