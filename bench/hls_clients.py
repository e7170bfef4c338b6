"""LL-HLS load generator: one publisher, N clients that play like hls.js, one JSON line.

Publishes ``fanout.py``'s synthetic H.264 + AAC stream over RTMP (``--url``,
``--bitrate`` kbit/s, a keyframe every 2 s) and runs ``--clients`` LL-HLS
players of it against the server's HTTP port (``--http-port``).  Each client
behaves as hls.js 1.x does in low-latency mode, at the live edge:

1. ``GET /APP/NAME/index.m3u8``, then the ``EXT-X-MAP`` init section and the last
   :data:`START_PARTS` parts it lists (hls.js starts PART-HOLD-BACK, three parts,
   behind the edge);
2. a blocking playlist reload for the next part, ``index.m3u8?_HLS_msn=M&_HLS_part=N``
   (``M``, ``N`` from the ``EXT-X-PRELOAD-HINT``, else the last ``EXT-X-PART`` + 1;
   with ``&_HLS_skip=YES`` unless ``--no-skip``, as hls.js asks for delta updates
   when the playlist has ``CAN-SKIP-UNTIL``), sent as soon as the previous one
   is answered;
3. each part the answer lists that it has not fetched yet, ``part-MSN-I.m4s?sid=…``
   (the URI as the playlist wrote it, query included), in order, on a second
   connection, while the playlist connection blocks on the next reload.

hls.js ignores ``EXT-X-PRELOAD-HINT`` (Safari uses it); ``--preload-hint`` makes
the clients also request the hinted part as soon as the playlist names it, which
the server holds until the part is finished, so the media connection is then
always one request ahead.

Each client has two HTTP/1.1 keep-alive connections (playlists, media), as a
browser's hls.js has; requests on one connection are sequential, never
pipelined.  Counted per run, in the measurement window: requests by kind, their
statuses (anything but 200 is an error), media bytes (init sections and parts:
response bodies) and every byte received (headers and playlists included), and
the *part delay*: from the moment a playlist listing the part was received to
the moment the part's last byte was (for a preload-hinted part: from the hint).
Server CPU (``utime + stime``) and RSS come from ``/proc/--server-pid`` every
second, as in ``fanout.py``; the generator's own CPU is reported too (near 1.0
CPU s/s it, not the server, is the limit).

Clients start spread over ``--ramp`` seconds after the stream is published and
the first playlist could be fetched (the server should run ``--hls always`` or
be warmed up, so every client starts on a stream that has segments).

Example (streamserver with ``--rtmp tcp:1935 --http tcp:8080 --hls always``, its
pid in $PID)::

    .venv/bin/python bench/hls_clients.py --url rtmp://127.0.0.1:1935/live/bench \\
        --http-port 8080 --clients 500 --duration 60 --warmup 15 --server-pid $PID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fanout import (
    BenchError,
    ProcessProbe,
    Publisher,
    SyntheticSource,
    log,
    machine_busy_s,
    own_cpu_s,
    percentiles,
)

from streamserver.client import parse_rtmp_url

#: Parts a new client fetches behind the live edge: PART-HOLD-BACK is three parts.
START_PARTS = 3
#: A playlist or part request unanswered this long is an error (the server answers a
#: blocking reload within three target durations, 6 s here, or says 503).
REQUEST_TIMEOUT_S = 15.0
#: After an error a client waits this long, then starts over with a plain playlist
#: (hls.js retries with a back-off of about this order).
RETRY_DELAY_S = 1.0
#: Largest response head accepted.
MAX_HEAD = 16 * 1024

_PART_RE = re.compile(rb'#EXT-X-PART:[^\n]*URI="(part-(\d+)-(\d+)\.m4s[^"]*)"')
_HINT_RE = re.compile(rb'#EXT-X-PRELOAD-HINT:[^\n]*URI="(part-(\d+)-(\d+)\.m4s[^"]*)"')
_MAP_RE = re.compile(rb'#EXT-X-MAP:URI="([^"]+)"')


class HttpError(Exception):
    """The server broke HTTP/1.1 or closed a connection with a request outstanding."""


class Response:
    """One response: status, body length, the body if asked for, when it was complete."""

    __slots__ = ("body", "done_at", "length", "status", "wire")

    def __init__(self, status: int) -> None:
        self.status = status
        self.length = 0
        self.wire = 0
        self.body: bytes | None = None
        self.done_at = 0.0


class HttpConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection: one request at a time.

    Parses ``Content-Length`` and ``chunked`` bodies; keeps a body only when asked
    (playlists), otherwise counts it and drops it.
    """

    transport: asyncio.Transport

    def __init__(self, host: str, stats: Stats) -> None:
        self.host = host
        self.stats = stats
        self._buf = bytearray()
        self._pending: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._keep = False
        self._body = bytearray()
        self._remaining = 0  # body bytes left (Content-Length) or in the current chunk
        self._chunked = False
        self._phase = "idle"  # idle | head | body | chunk-size | chunk | chunk-crlf | trailer
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(HttpError(f"connection lost: {exc!r}"))

    def request(self, path: str, keep_body: bool) -> asyncio.Future[Response]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        if self.closed:
            future.set_exception(HttpError("connection closed"))
            return future
        self._pending = future
        self._keep = keep_body
        self._phase = "head"
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: hls_clients\r\n"
            "Accept: */*\r\n\r\n".encode("ascii")
        )
        return future

    def data_received(self, data: bytes) -> None:
        self.stats.wire_bytes += len(data)
        if self._response is not None:
            self._response.wire += len(data)
        buf = self._buf
        buf += data
        try:
            self._parse()
        except HttpError as error:
            if self._pending is not None and not self._pending.done():
                self._pending.set_exception(error)
            self.transport.close()

    def _parse(self) -> None:
        buf = self._buf
        while buf:
            phase = self._phase
            if phase == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HttpError("response head too long")
                    return
                self._start_response(bytes(buf[:end]))
                del buf[: end + 4]
            elif phase == "body":
                take = min(self._remaining, len(buf))
                self._consume(take)
                self._remaining -= take
                if self._remaining == 0:
                    self._finish()
            elif phase == "chunk-size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(buf[:end]).split(b";")[0], 16)
                except ValueError as error:
                    raise HttpError("bad chunk size") from error
                del buf[: end + 2]
                self._remaining = size
                self._phase = "chunk" if size else "trailer"
            elif phase == "chunk":
                take = min(self._remaining, len(buf))
                self._consume(take)
                self._remaining -= take
                if self._remaining == 0:
                    self._phase = "chunk-crlf"
            elif phase == "chunk-crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self._phase = "chunk-size"
            elif phase == "trailer":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
            else:
                raise HttpError(f"{len(buf)} bytes without a request")

    def _start_response(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {lines[0][:80]!r}")
        response = Response(int(parts[1]))
        response.wire = len(head) + 4
        self._response = response
        self._body = bytearray()
        self._chunked = False
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        if self._chunked:
            self._phase = "chunk-size"
        elif length:
            self._remaining = length
            self._phase = "body"
        else:
            self._finish()

    def _consume(self, size: int) -> None:
        if self._keep:
            self._body += self._buf[:size]
        assert self._response is not None
        self._response.length += size
        del self._buf[:size]

    def _finish(self) -> None:
        response = self._response
        assert response is not None
        response.done_at = time.monotonic()
        if self._keep:
            response.body = bytes(self._body)
        self._response = None
        self._phase = "idle"
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_result(response)


class Stats:
    """Counters of all clients; ``recording`` is on during the measurement window."""

    def __init__(self) -> None:
        self.recording = False
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.media_bytes = 0
        self.playlist_bytes = 0
        self.wire_bytes = 0  # every byte received, always counted (windowed by snapshot)
        self.part_delays_ms: array[float] = array("d")
        self.blocking_wait_ms: array[float] = array("d")
        self.parts_fetched = 0
        self.client_restarts = 0

    def record(self, kind: str, response: Response) -> None:
        if not self.recording:
            return
        self.requests[kind] += 1
        self.statuses[f"{kind} {response.status}"] += 1
        if response.status != 200:
            self.errors[f"{kind} {response.status}"] += 1
        elif kind in ("part", "hint", "init"):
            self.media_bytes += response.length
        else:
            self.playlist_bytes += response.length

    def error(self, what: str) -> None:
        if self.recording:
            self.errors[what] += 1


def parse_playlist(
    body: bytes,
) -> tuple[list[tuple[int, int, str]], tuple[int, int, str] | None, str | None]:
    """The parts ``(msn, index, uri)`` a playlist lists, its preload hint, its map URI."""
    parts = [(int(m[2]), int(m[3]), m[1].decode("ascii")) for m in _PART_RE.finditer(body)]
    hint_match = _HINT_RE.search(body)
    hint = None
    if hint_match is not None:
        hint = (int(hint_match[2]), int(hint_match[3]), hint_match[1].decode("ascii"))
    map_match = _MAP_RE.search(body)
    return parts, hint, map_match[1].decode("ascii") if map_match else None


class LlHlsClient:
    """One player: a playlist connection blocking on the next part, a media connection."""

    def __init__(self, index: int, bench: HlsBench) -> None:
        self.index = index
        self.bench = bench
        self.stats = bench.stats
        self.playlist: HttpConnection | None = None
        self.media: HttpConnection | None = None
        self.queue: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        self.last: tuple[int, int] | None = None  # the newest part queued
        self.hinted: tuple[int, int] | None = None
        self.map_uri: str | None = None

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        bench = self.bench
        _, protocol = await loop.create_connection(
            lambda: HttpConnection(f"{bench.host}:{bench.http_port}", self.stats),
            bench.host,
            bench.http_port,
        )
        return protocol

    async def _get(self, conn: HttpConnection, kind: str, path: str) -> Response:
        response = await asyncio.wait_for(
            conn.request(path, kind in ("playlist", "blocking")), REQUEST_TIMEOUT_S
        )
        self.stats.record(kind, response)
        return response

    async def run(self) -> None:
        while not self.bench.stopping:
            try:
                self.playlist = await self._connect()
                self.media = await self._connect()
                await asyncio.gather(self._playlists(), self._parts())
            except (OSError, HttpError, TimeoutError, ValueError) as error:
                self.stats.error(f"{type(error).__name__}")
            finally:
                for conn in (self.playlist, self.media):
                    if conn is not None and not conn.closed:
                        conn.transport.close()
                while not self.queue.empty():
                    self.queue.get_nowait()
                self.last = self.hinted = None
            if self.bench.stopping:
                return
            self.stats.client_restarts += 1
            await asyncio.sleep(RETRY_DELAY_S)

    async def _playlists(self) -> None:
        bench = self.bench
        assert self.playlist is not None
        query = ""
        while not bench.stopping:
            kind = "blocking" if query else "playlist"
            sent = time.monotonic()
            response = await self._get(self.playlist, kind, bench.playlist_path + query)
            if response.status != 200 or response.body is None:
                await self.queue.put(("", "", 0.0))  # stops the media task
                raise HttpError(f"playlist {response.status}")
            if kind == "blocking" and self.stats.recording:
                self.stats.blocking_wait_ms.append((response.done_at - sent) * 1000)
            parts, hint, map_uri = parse_playlist(response.body)
            if not parts:
                raise HttpError("a playlist without parts")
            listed = response.done_at
            if self.last is None:
                if map_uri is not None:
                    await self.queue.put(("init", map_uri, listed))
                new = parts[-START_PARTS:]
            else:
                new = [p for p in parts if (p[0], p[1]) > self.last]
            for msn, i, uri in new:
                if self.hinted is not None and (msn, i) <= self.hinted:
                    continue  # already asked for through the hint
                await self.queue.put(("part", uri, listed))
            if new:
                self.last = (new[-1][0], new[-1][1])
            if hint is not None:
                msn, part = hint[0], hint[1]
                if bench.preload_hint and (msn, part) != self.hinted:
                    self.hinted = (msn, part)
                    await self.queue.put(("hint", hint[2], listed))
            else:
                msn, part = parts[-1][0], parts[-1][1] + 1
            query = f"?_HLS_msn={msn}&_HLS_part={part}" + ("&_HLS_skip=YES" if bench.skip else "")

    async def _parts(self) -> None:
        bench = self.bench
        assert self.media is not None
        while not bench.stopping:
            kind, uri, listed = await self.queue.get()
            if not kind:
                return
            response = await self._get(self.media, kind, bench.prefix + uri)
            if response.status != 200:
                raise HttpError(f"{kind} {response.status}")
            if kind != "init" and self.stats.recording:
                self.stats.part_delays_ms.append((response.done_at - listed) * 1000)
                self.stats.parts_fetched += 1


class HlsBench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.host, self.port, self.app, self.name = parse_rtmp_url(options.url)
        self.tc_url = f"rtmp://{self.host}:{self.port}/{self.app}"
        self.http_port: int = options.http_port
        self.prefix = f"/{self.app}/{self.name}/"
        self.playlist_path = self.prefix + "index.m3u8"
        self.skip = not options.no_skip
        self.preload_hint = options.preload_hint
        self.stats = Stats()
        self.stopping = False
        self.server = ProcessProbe(options.server_pid) if options.server_pid else None
        self.source = SyntheticSource(options.bitrate)
        self.publisher: Publisher | None = None

    async def start_publisher(self) -> Publisher:
        loop = asyncio.get_running_loop()
        publisher = Publisher(self.source, self.app, self.name, self.tc_url)
        await loop.create_connection(lambda: publisher, self.host, self.port)
        try:
            await asyncio.wait_for(publisher.started, 15)
        except (RuntimeError, TimeoutError) as error:
            raise BenchError(f"could not publish to {self.options.url}: {error!r}") from error
        return publisher

    async def wait_for_playlist(self) -> None:
        """Until the server answers the playlist with parts (its first two segments)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn: HttpConnection | None = None
            try:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(
                    lambda: HttpConnection(f"{self.host}:{self.http_port}", Stats()),
                    self.host,
                    self.http_port,
                )
                response = await asyncio.wait_for(conn.request(self.playlist_path, True), 30)
                if response.status == 200 and response.body and _PART_RE.search(response.body):
                    return
            except (OSError, HttpError, TimeoutError):
                pass
            finally:
                if conn is not None and not conn.closed:
                    conn.transport.close()
            await asyncio.sleep(0.5)
        raise BenchError("no playlist with parts within 60 s")

    def sample(self, t0: float) -> dict[str, Any]:
        server = self.server
        return {
            "t": round(time.monotonic() - t0, 2),
            "server_cpu_s": server.cpu_s() if server else None,
            "rss_mb": round(r, 2) if server and (r := server.rss_mb()) is not None else None,
            "gen_cpu_s": round(own_cpu_s(), 3),
            "requests": sum(self.stats.requests.values()),
        }

    async def run(self) -> dict[str, Any]:
        options = self.options
        stats = self.stats
        server = self.server
        rss_before = server.rss_mb() if server else None
        self.publisher = await self.start_publisher()
        log(f"publishing {self.source.describe()} to {options.url}")
        await self.wait_for_playlist()
        log(f"playlist ready; starting {options.clients} clients over {options.ramp} s")
        clients = [LlHlsClient(i, self) for i in range(options.clients)]
        tasks: list[asyncio.Task[None]] = []
        for client in clients:
            tasks.append(asyncio.create_task(client.run()))
            await asyncio.sleep(options.ramp / max(1, options.clients))
        await asyncio.sleep(options.warmup)
        t0 = time.monotonic()
        samples = []
        start_cpu = server.cpu_s() if server else None
        start_rss = server.rss_mb() if server else None
        start_gen = own_cpu_s()
        start_busy = machine_busy_s()
        start_wire = stats.wire_bytes
        stats.recording = True
        self.publisher.send_delays = array("d")
        self.publisher.record_delays = True
        log(f"measuring {options.duration} s")
        for _ in range(options.duration):
            await asyncio.sleep(1.0)
            samples.append(self.sample(t0))
        elapsed = time.monotonic() - t0
        stats.recording = False
        self.publisher.record_delays = False
        end_cpu = server.cpu_s() if server else None
        end_gen = own_cpu_s()
        end_busy = machine_busy_s()
        wire = stats.wire_bytes - start_wire
        self.stopping = True
        self.publisher.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.publisher.transport.close()

        server_cpu = (end_cpu - start_cpu) if end_cpu is not None and start_cpu else None
        gen_cpu = end_gen - start_gen
        other = None
        if start_busy is not None and end_busy is not None:
            other = (end_busy - start_busy - gen_cpu - (server_cpu or 0.0)) / elapsed
        rss_values = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
        requests = sum(stats.requests.values())
        media_mb = stats.media_bytes / 1e6
        return {
            "tool": "hls_clients",
            "label": options.label,
            "clients": options.clients,
            "bitrate_kbps": self.source.nominal_kbps(),
            "skip": self.skip,
            "preload_hint": self.preload_hint,
            "duration_s": round(elapsed, 2),
            "server_cpu_s_per_s": round(server_cpu / elapsed, 3) if server_cpu else None,
            "server_cpu_ms_per_mb": (
                round(server_cpu * 1000 / media_mb, 2) if server_cpu and media_mb else None
            ),
            "server_cpu_ms_per_wire_mb": (
                round(server_cpu * 1000 / (wire / 1e6), 2) if server_cpu and wire else None
            ),
            "server_cpu_us_per_request": (
                round(server_cpu * 1e6 / requests, 1) if server_cpu and requests else None
            ),
            "requests_per_s": round(requests / elapsed, 1),
            "requests_by_kind_per_s": {k: round(v / elapsed, 1) for k, v in stats.requests.items()},
            "statuses": dict(stats.statuses),
            "errors": dict(stats.errors),
            "error_count": sum(stats.errors.values()),
            "client_restarts": stats.client_restarts,
            "media_kbps_per_client": round(
                stats.media_bytes * 8 / 1000 / elapsed / max(1, options.clients), 1
            ),
            "media_mb": round(media_mb, 2),
            "playlist_mb": round(stats.playlist_bytes / 1e6, 2),
            "wire_mb": round(wire / 1e6, 2),
            "parts_per_s_per_client": round(
                stats.parts_fetched / elapsed / max(1, options.clients), 2
            ),
            "part_delay_ms": percentiles(stats.part_delays_ms),
            "blocking_wait_ms": percentiles(stats.blocking_wait_ms),
            "rss_mb": {
                "before": round(rss_before, 1) if rss_before is not None else None,
                "start": round(start_rss, 1) if start_rss is not None else None,
                "peak": round(max(rss_values), 1) if rss_values else None,
                "end": round(rss_values[-1], 1) if rss_values else None,
            },
            "published": {
                "source": self.source.describe(),
                "send_late_ms": percentiles(self.publisher.send_delays),
            },
            "generator": {"cpu_s_per_s": round(gen_cpu / elapsed, 3)},
            "machine": {"other_cpu_s_per_s": round(other, 3) if other is not None else None},
            "samples": samples,
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="rtmp://127.0.0.1:1935/live/bench", help="publish here")
    parser.add_argument("--http-port", type=int, required=True, help="the server's HTTP port")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--bitrate", type=float, default=1000.0, help="kbit/s published")
    parser.add_argument("--duration", type=int, default=60, help="seconds measured")
    parser.add_argument("--warmup", type=int, default=15, help="seconds after the ramp")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to start all clients")
    parser.add_argument("--no-skip", action="store_true", help="no _HLS_skip=YES")
    parser.add_argument(
        "--preload-hint", action="store_true", help="also fetch the preload-hinted part"
    )
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        summary = asyncio.run(HlsBench(options).run())
    except BenchError as error:
        log(f"error: {error}")
        return 1
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(summary, indent=1) + "\n")
    summary.pop("samples")
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
