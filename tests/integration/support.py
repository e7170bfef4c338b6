"""Helpers of the loopback integration tests: timeouts, polling, processes, synthetic media.

Nothing here blocks the reactor: processes run through ``reactor.spawnProcess``
and every wait is a Deferred bounded by ``addTimeout`` or a polled condition
with a deadline.  The fixtures built on these live in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer, error, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure

from streamserver.client import RTMPClientProtocol
from streamserver.codec import amf0, messages
from streamserver.codec.flv import FLVTag
from streamserver.codec.messages import MessageType

T = TypeVar("T")

#: A received or published frame as the tests compare them: (type, timestamp, payload).
FrameView = tuple[int, int, bytes]


def get_reactor() -> Any:
    """The running global reactor (pytest-twisted installed it before collection)."""
    from twisted.internet import reactor

    return reactor


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Await *awaitable*, cancelling it after *seconds* with a message naming *what*."""
    deferred: defer.Deferred[T] = defer.ensureDeferred(awaitable)
    deferred.addTimeout(seconds, get_reactor())
    try:
        return await deferred
    except defer.TimeoutError as exc:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from exc


async def sleep(seconds: float) -> None:
    """Let the reactor run for *seconds* (a polling interval, never a synchronisation)."""
    await task.deferLater(get_reactor(), seconds, lambda: None)


async def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll *condition* every *interval* seconds until it holds or *timeout* passes.

    :raises AssertionError: the deadline passed; the message names *what* and,
        when given, what *describe* says about the current state.
    """
    reactor = get_reactor()
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            detail = f" ({describe()})" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        await sleep(interval)


class SpedUpClock:
    """A clock that runs *factor* times faster than the reactor, for :func:`pace_tags`.

    Publishing 5 s of media at 30 fps then takes 5/*factor* s of wall time while
    keeping the pacing code path (timers between frames) of a real-time publish.
    """

    def __init__(self, reactor: Any, factor: float) -> None:
        self._reactor = reactor
        self._factor = factor

    def seconds(self) -> float:
        return self._reactor.seconds() * self._factor

    def callLater(self, delay: float, function: Callable[..., Any], *args: Any) -> IDelayedCall:
        return self._reactor.callLater(delay / self._factor, function, *args)


# --- processes -----------------------------------------------------------------------


@dataclass
class ProcessResult:
    """How a child process ended and what it printed."""

    argv: list[str]
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        """Exit status and the tail of both outputs, for assertion messages."""
        return (
            f"{Path(self.argv[0]).name} exit_code={self.exit_code} signal={self.signal}\n"
            f"--- stdout (tail) ---\n{self.stdout[-2000:].decode(errors='replace')}\n"
            f"--- stderr (tail) ---\n{self.stderr[-2000:].decode(errors='replace')}"
        )


class CollectingProcess(ProcessProtocol):
    """A child process whose outputs are collected; :attr:`ended` fires with the result.

    :ivar stdout: bytes the child wrote to stdout so far.
    :ivar stderr: bytes the child wrote to stderr so far.
    :ivar ended: fires with a :class:`ProcessResult` when the child has exited.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: defer.Deferred[ProcessResult] = defer.Deferred()
        self.result: ProcessResult | None = None

    @property
    def running(self) -> bool:
        """Whether the child has not exited yet."""
        return self.result is None

    def connectionMade(self) -> None:
        # No child reads stdin; closing it makes a forgotten -nostdin harmless.
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        exit_code = getattr(value, "exitCode", None)
        signal_number = getattr(value, "signal", None)
        if isinstance(value, error.ProcessDone):
            exit_code = 0
        self.result = ProcessResult(
            self.argv, exit_code, signal_number, bytes(self.stdout), bytes(self.stderr)
        )
        self.ended.callback(self.result)

    def send_signal(self, name: str) -> None:
        """Send signal *name* (``"INT"``, ``"TERM"``, ``"KILL"``) if the child still runs."""
        if self.running:
            with contextlib.suppress(error.ProcessExitedAlready):
                self.transport.signalProcess(name)

    async def stop(self, name: str = "TERM", grace: float = 5.0) -> ProcessResult:
        """Signal the child with *name*, SIGKILL it after *grace* s; return the result."""
        self.send_signal(name)
        ended: defer.Deferred[ProcessResult] = defer.Deferred()
        self.ended.addBoth(_pass_on_to(ended))
        reactor = get_reactor()
        killer = reactor.callLater(grace, self.send_signal, "KILL")
        try:
            return await within(ended, grace + 5.0, f"{Path(self.argv[0]).name} to exit")
        finally:
            if killer.active():
                killer.cancel()

    async def wait(self, seconds: float) -> ProcessResult:
        """Wait up to *seconds* for the child to exit by itself; SIGKILL it if it does not."""
        ended: defer.Deferred[ProcessResult] = defer.Deferred()
        self.ended.addBoth(_pass_on_to(ended))
        try:
            return await within(ended, seconds, f"{Path(self.argv[0]).name} to exit")
        except AssertionError:
            await self.stop("KILL", grace=1.0)
            raise


def _pass_on_to(target: defer.Deferred[T]) -> Callable[[T], T]:
    """A callback that copies a result into *target* and passes it on unchanged.

    Several waiters can then watch one ``ended`` Deferred, and cancelling one
    waiter (on timeout) leaves ``ended`` intact.
    """

    def copy(result: T) -> T:
        if not target.called:
            if isinstance(result, Failure):
                target.errback(result)
            else:
                target.callback(result)
        return result

    return copy


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment for a child, with relative ``PYTHONPATH`` entries made absolute.

    ``PYTHONPATH=src`` names the checkout's ``src`` only from the checkout; a
    child started in a temporary directory must get the absolute path.
    """
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(entry).resolve()) if entry else entry
            for entry in env["PYTHONPATH"].split(os.pathsep)
        )
    env.update(extra or {})
    return env


def spawn(argv: Sequence[str], *, cwd: Path | None = None) -> CollectingProcess:
    """Start *argv* (``argv[0]`` an absolute path) as a child of the reactor."""
    process = CollectingProcess(argv)
    get_reactor().spawnProcess(
        process,
        argv[0],
        list(argv),
        env=child_env(),
        path=str(cwd) if cwd is not None else None,
    )
    return process


async def run(argv: Sequence[str], timeout: float, *, cwd: Path | None = None) -> ProcessResult:
    """Run *argv* to completion, killing it after *timeout* seconds."""
    return await spawn(argv, cwd=cwd).wait(timeout)


async def ffprobe_codecs(ffprobe: str, path: Path) -> list[str]:
    """The codec names ffprobe finds in the streams of the file at *path*."""
    result = await run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv", str(path)],
        30,
    )
    assert result.exit_code == 0, result.describe()
    # csv lines look like "stream,h264".
    return [
        line.split(",")[-1].strip()
        for line in result.stdout.decode().splitlines()
        if line.startswith("stream,")
    ]


# --- synthetic media -----------------------------------------------------------------

#: AVC sequence header: FLV VideoTagHeader 0x17 0x00 (keyframe, AVC, sequence
#: header), composition time 0, then an AVCDecoderConfigurationRecord stub.
AVC_SEQUENCE_HEADER = bytes.fromhex("1700000000" + "0164001fffe1000467640015" + "01000468ee3cb0")

#: AAC sequence header: 0xAF (AAC, 44 kHz, 16 bit, stereo), 0x00, then the
#: AudioSpecificConfig 0x12 0x10 (AAC LC, 44.1 kHz, 2 channels).
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"

_AAC_FRAME_SAMPLES = 1024
_SAMPLE_RATE = 44100

#: A keyframe larger than the 4096-byte chunk size, so it crosses chunks.
_KEYFRAME_BYTES = 6000
_INTER_FRAME_BYTES = 400
_AUDIO_FRAME_BYTES = 120


def synthetic_tags(
    marker: bytes, *, seconds: float = 5.0, fps: int = 30, gop: int = 60
) -> list[FLVTag]:
    """FLV tags of a synthetic H.264 + AAC stream, each payload carrying *marker*.

    The list starts with ``onMetaData``, the AVC and AAC sequence headers (all
    at 0 ms), then video frames (a keyframe ``17 01`` every *gop* frames, inter
    frames ``27 01`` between) and AAC frames (``AF 01``, 1024 samples at 44.1
    kHz) merged by timestamp.  Every coded frame is unique: its payload holds
    *marker* and its index.
    """
    header_tags = [
        FLVTag(
            MessageType.DATA_AMF0,
            0,
            amf0.encode(
                "onMetaData",
                amf0.ECMAArray(
                    {
                        "width": 320.0,
                        "height": 240.0,
                        "framerate": float(fps),
                        "videocodecid": 7.0,
                        "audiocodecid": 10.0,
                        "audiosamplerate": float(_SAMPLE_RATE),
                        "marker": marker.decode("latin-1"),
                    }
                ),
            ),
        ),
        FLVTag(MessageType.VIDEO, 0, AVC_SEQUENCE_HEADER + marker),
        FLVTag(MessageType.AUDIO, 0, AAC_SEQUENCE_HEADER),
    ]
    coded: list[tuple[int, int, FLVTag]] = []
    for index in range(round(seconds * fps)):
        timestamp = index * 1000 // fps
        key = index % gop == 0
        head = b"\x17\x01" if key else b"\x27\x01"
        size = _KEYFRAME_BYTES if key else _INTER_FRAME_BYTES
        body = head + b"\x00\x00\x00" + marker + index.to_bytes(4, "big")
        body += bytes([index & 0xFF]) * (size - len(body))
        # Sort key: timestamp, then video before audio at the same millisecond.
        coded.append((timestamp, 0, FLVTag(MessageType.VIDEO, timestamp, body)))
    audio_frames = int(seconds * _SAMPLE_RATE / _AAC_FRAME_SAMPLES)
    for index in range(audio_frames):
        timestamp = index * _AAC_FRAME_SAMPLES * 1000 // _SAMPLE_RATE
        body = b"\xaf\x01" + marker + index.to_bytes(4, "big")
        body += b"\x21" * (_AUDIO_FRAME_BYTES - len(body))
        coded.append((timestamp, 1, FLVTag(MessageType.AUDIO, timestamp, body)))
    coded.sort(key=lambda item: (item[0], item[1]))
    return header_tags + [tag for _, _, tag in coded]


def tag_views(tags: Iterable[FLVTag]) -> list[FrameView]:
    """(type, timestamp, payload) of each tag, as a viewer should receive it."""
    return [(tag.tag_type, tag.timestamp, tag.payload) for tag in tags]


def _is_sample_access(message: messages.Message) -> bool:
    return message.type_id == MessageType.DATA_AMF0 and message.payload.startswith(
        b"\x02\x00\x11|RtmpSampleAccess"
    )


def received_views(client: RTMPClientProtocol) -> list[FrameView]:
    """(type, timestamp, payload) of the media a viewer received.

    ``|RtmpSampleAccess``, which the server sends on every ``play``, is not media
    of the stream and is left out.
    """
    return [
        (int(m.type_id), m.timestamp, m.payload) for m in client.media if not _is_sample_access(m)
    ]


def describe_difference(expected: list[FrameView], got: list[FrameView]) -> str:
    """Say which frames of *expected* are missing from *got*, which are extra, and the order.

    Frames are named by kind and timestamp; runs of the same kind are shown as
    ranges, so "23 audio 2020..2530 ms" reads at a glance.
    """
    got_set = set(got)
    expected_set = set(expected)
    missing = [view for view in expected if view not in got_set]
    extra = [view for view in got if view not in expected_set]
    lines = [f"expected {len(expected)} frames, got {len(got)}"]
    for label, views in (("missing", missing), ("unexpected", extra)):
        if views:
            lines.append(f"{label}: {_ranges(views)}")
    if not missing and not extra and got != expected:
        first = next(i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b)
        lines.append(
            f"same frames in another order, from index {first}: {_ranges(got[first : first + 6])}"
        )
    return "; ".join(lines)


_KIND_NAMES = {
    MessageType.AUDIO: "audio",
    MessageType.VIDEO: "video",
    MessageType.DATA_AMF0: "data",
}


def _ranges(views: list[FrameView]) -> str:
    runs: list[list[Any]] = []
    for kind, timestamp, _ in views:
        if runs and runs[-1][0] == kind:
            runs[-1][2] = timestamp
            runs[-1][3] += 1
        else:
            runs.append([kind, timestamp, timestamp, 1])
    return ", ".join(
        f"{count} {_KIND_NAMES.get(kind, kind)} {first}..{last} ms"
        for kind, first, last, count in runs
    )


def is_video_keyframe(view: FrameView) -> bool:
    """Whether *view* is an AVC coded keyframe (``17 01``)."""
    return view[0] == MessageType.VIDEO and view[2][:2] == b"\x17\x01"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def accepts_connections(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:*port* can be made now."""
    endpoint = TCP4ClientEndpoint(get_reactor(), "127.0.0.1", port, timeout=1)
    try:
        protocol = await connectProtocol(endpoint, Protocol())
    except ConnectError:
        return False
    protocol.transport.abortConnection()
    return True


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1/localhost and its key (PEM)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
