"""A thin link: two network namespaces joined by a veth pair, shaped by ``tc tbf``.

::

    server namespace                          client namespace
    lo 127.0.0.1 (publisher, fast viewers)
    thin-srv 10.203.0.1/30  ==== veth ====  thin-cli 10.203.0.2/30 (slow viewer)
      root qdisc: tbf rate 300kbit burst 16kb latency 200ms

The veth pair is created inside the server namespace with its peer inside the
client namespace, so it never appears in the namespace the tests run in, and
nothing but the two namespaces (and their loopbacks) carries the traffic.  Only
the server side is shaped: that is where the server's bytes queue, in the qdisc
and in flight, out of sight of ``TCP_NOTSENT_LOWAT``.

Namespace names carry the process id and a counter (``ss-thin-PID-N-srv``), so
runs on one machine do not collide; a name left over by a dead process with the
same pid is removed first.  Deleting a namespace removes its end of the veth, and
with it the peer.  A process still running inside a deleted namespace keeps the
namespace alive (unnamed) until it exits.

Used by ``tests/integration/test_thin_link.py`` and ``bench/thin_link.py``.  The
``ip`` and ``tc`` commands (iproute2) run synchronously: a few milliseconds each,
before and after the measured run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

#: Each command is a few milliseconds; a hung one means a broken system.
_COMMAND_TIMEOUT = 15.0

_counter = itertools.count()


class LinkUnavailable(Exception):  # noqa: N818 - reads as a condition: "link unavailable"
    """The machine cannot build the link (not root, no iproute2, no veth/tbf support)."""


@dataclass(frozen=True)
class ThinLink:
    """The names, addresses and shape of one thin link; :func:`open_link` builds it.

    :ivar name: the prefix of both namespace names.
    :ivar rate: tbf rate (``tc`` syntax).
    :ivar burst: tbf bucket size.
    :ivar latency: the longest a packet may wait in the tbf queue (bounds its length).
    """

    name: str
    rate: str = "300kbit"
    burst: str = "16kb"
    latency: str = "200ms"
    server_device: str = field(default="thin-srv")
    client_device: str = field(default="thin-cli")
    #: A private /30: the namespaces are isolated, so any run may use the same one.
    server_address: str = "10.203.0.1"
    client_address: str = "10.203.0.2"
    prefix_length: int = 30

    @property
    def server_ns(self) -> str:
        return f"{self.name}-srv"

    @property
    def client_ns(self) -> str:
        return f"{self.name}-cli"

    def in_server(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside the server namespace (``ip netns exec`` execs in place: same pid)."""
        return [_ip(), "netns", "exec", self.server_ns, *argv]

    def in_client(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside the client namespace."""
        return [_ip(), "netns", "exec", self.client_ns, *argv]

    def setup_commands(self) -> list[list[str]]:
        """The ``ip``/``tc`` commands that build the link, in order."""
        ip, server, client = _ip(), self.server_ns, self.client_ns
        cidr = f"/{self.prefix_length}"
        return [
            [ip, "netns", "add", server],
            [ip, "netns", "add", client],
            [ip, "-n", server, "link", "add", self.server_device, "type", "veth",
             "peer", "name", self.client_device, "netns", client],
            [ip, "-n", server, "addr", "add", self.server_address + cidr,
             "dev", self.server_device],
            [ip, "-n", client, "addr", "add", self.client_address + cidr,
             "dev", self.client_device],
            [ip, "-n", server, "link", "set", "lo", "up"],
            [ip, "-n", client, "link", "set", "lo", "up"],
            [ip, "-n", server, "link", "set", self.server_device, "up"],
            [ip, "-n", client, "link", "set", self.client_device, "up"],
            self.in_server([_tc(), "qdisc", "add", "dev", self.server_device, "root", "tbf",
                            "rate", self.rate, "burst", self.burst, "latency", self.latency]),
        ]  # fmt: skip

    def teardown_commands(self) -> list[list[str]]:
        """Delete both namespaces (which deletes the veth pair)."""
        return [[_ip(), "netns", "delete", ns] for ns in (self.server_ns, self.client_ns)]

    def exists(self) -> list[str]:
        """Which of the two namespaces exist now."""
        listing = _run([_ip(), "netns", "list"], check=False).stdout
        present = {line.split()[0] for line in listing.splitlines() if line.strip()}
        return [ns for ns in (self.server_ns, self.client_ns) if ns in present]

    def qdisc_stats(self) -> str:
        """``tc -s qdisc show`` of the shaped device: bytes sent, drops, overlimits, backlog."""
        result = _run(self.in_server([_tc(), "-s", "qdisc", "show", "dev", self.server_device]))
        return " ".join(result.stdout.split())

    def sysctl(self, name: str) -> str:
        """A sysctl's value as the server namespace sees it (e.g. the TCP congestion control)."""
        path = "/proc/sys/" + name.replace(".", "/")
        return _run(self.in_server(["cat", path]), check=False).stdout.strip()

    def set_sysctl(self, name: str, value: str) -> None:
        """Set a per-namespace sysctl in the server namespace (e.g. the congestion control).

        Outside the initial namespace the kernel allows only the congestion controls
        in ``net.ipv4.tcp_allowed_congestion_control`` (often not cubic).

        :raises LinkUnavailable: the kernel refused it.
        """
        path = "/proc/sys/" + name.replace(".", "/")
        result = _run(
            self.in_server(["sh", "-c", f"echo {shlex.quote(value)} > {path}"]), check=False
        )
        if result.returncode != 0:
            raise LinkUnavailable(f"cannot set {name}={value}: {result.stderr.strip()}")

    def describe(self) -> str:
        return (
            f"{self.server_ns}:{self.server_device} {self.server_address} <-> "
            f"{self.client_ns}:{self.client_device} {self.client_address}, "
            f"tbf rate {self.rate} burst {self.burst} latency {self.latency} on the server side"
        )


def missing_prerequisites() -> str | None:
    """Why no link can be built here (not root, no ``ip``/``tc``), or ``None``."""
    if os.geteuid() != 0:
        return "network namespaces need root (the thin-link test runs as root in CI)"
    missing = [name for name in ("ip", "tc") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH (install iproute2)"
    return None


def new_link(rate: str = "300kbit", burst: str = "16kb", latency: str = "200ms") -> ThinLink:
    """A :class:`ThinLink` shaped so, with names unique to this process."""
    name = f"ss-thin-{os.getpid()}-{next(_counter)}"
    return ThinLink(name=name, rate=rate, burst=burst, latency=latency)


def bring_up(link: ThinLink) -> None:
    """Build *link*; on any failure remove what was built.

    :raises LinkUnavailable: a prerequisite is missing or a command failed (the
        message names the command and what it printed: a kernel without veth or
        sch_tbf fails here).
    """
    reason = missing_prerequisites()
    if reason is not None:
        raise LinkUnavailable(reason)
    # Left by a dead process that had our pid: nobody else can be using these names.
    tear_down(link)
    for argv in link.setup_commands():
        try:
            result = _run(argv, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            tear_down(link)
            raise LinkUnavailable(f"`{' '.join(argv)}` failed: {error}") from error
        if result.returncode != 0:
            tear_down(link)
            detail = (result.stderr or result.stdout).strip()
            raise LinkUnavailable(
                f"`{' '.join(argv)}` exited with {result.returncode}: {detail or 'no output'}"
            )


def tear_down(link: ThinLink) -> list[str]:
    """Delete both namespaces of *link*, whatever state they are in; return the errors."""
    errors = []
    for argv in link.teardown_commands():
        try:
            result = _run(argv, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            errors.append(f"{' '.join(argv)}: {error}")
            continue
        if result.returncode != 0 and "No such file" not in result.stderr:
            errors.append(f"{' '.join(argv)}: {result.stderr.strip()}")
    return errors


@contextlib.contextmanager
def open_link(
    rate: str = "300kbit", burst: str = "16kb", latency: str = "200ms"
) -> Iterator[ThinLink]:
    """Build a fresh link (see :func:`bring_up`) and tear it down on exit, even on error."""
    link = new_link(rate, burst, latency)
    bring_up(link)
    try:
        yield link
    finally:
        tear_down(link)


def _ip() -> str:
    return shutil.which("ip") or "ip"


def _tc() -> str:
    return shutil.which("tc") or "tc"


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=check
    )
