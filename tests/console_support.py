"""Helpers of the console tests: client keys, a blocking paramiko session, ANSI stripping,
a keys file, and a stream with viewers on fake peers for the helpers to look at.

The paramiko session is blocking; tests run it with ``threads.deferToThread``
while the server runs on the reactor (TWISTED-FACTS §3).  Every socket
operation has a timeout, so a thread never outlives its test by long.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet import task

from streamserver.factory import RTMPServerFactory
from streamserver.testing import FakePeer
from tests.protocol import media

#: What a terminal session adds around text: CSI sequences, charset selection,
#: save/restore cursor, reset and the other two-byte escapes insults writes.
_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[78=>cDEHM])")

PROMPT = b"\r\n>>> "

#: Seconds any single network step of a test client may take.
STEP_TIMEOUT = 15.0


def strip_ansi(data: bytes) -> str:
    """*data* without terminal escapes, decoded, with ``\\n`` line ends."""
    return _ANSI.sub(b"", data).decode("utf-8", "replace").replace("\r\n", "\n")


def command_output(data: bytes) -> str:
    """What one command printed, from the bytes after it was sent up to the next prompt.

    The echo of the typed line (redrawn as it is coloured) ends at the first
    line break; the output runs from there to the last prompt.
    """
    text = strip_ansi(data)
    _, _, rest = text.partition("\n")
    return rest.rpartition(">>> ")[0].rstrip("\n")


@dataclass
class ClientKey:
    """A client key pair written to disk as OpenSSH files.

    :ivar private_path: the private key, mode 0600 (OpenSSH refuses anything looser).
    :ivar public_line: the ``authorized_keys`` line.
    """

    private_path: Path
    public_line: str


def make_client_key(directory: Path, name: str = "id_ed25519", kind: str = "ed25519") -> ClientKey:
    """Generate a client key of *kind* (``ed25519``, ``rsa``, ``ecdsa``) in *directory*."""
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ecdsa":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(kind)
    data = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return ClientKey(path, f"{public.decode()} {name}@test")


@dataclass
class SessionResult:
    """What a paramiko console session saw.

    :ivar banner: the text before the first prompt.
    :ivar outputs: each command's output, in order.
    :ivar exit_status: the exit status the server sent, ``None`` if none.
    """

    banner: str = ""
    outputs: list[str] = field(default_factory=list)
    exit_status: int | None = None


def paramiko_session(
    port: int, key_path: Path, commands: list[str], username: str = "admin"
) -> SessionResult:
    """Log in with *key_path*, run each of *commands* at the prompt, leave with Ctrl-D.

    Blocking: run it in a thread.

    :raises paramiko.AuthenticationException: the key was refused.
    """
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    result = SessionResult()
    try:
        client.connect(
            "127.0.0.1",
            port,
            username=username,
            key_filename=str(key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=STEP_TIMEOUT,
            banner_timeout=STEP_TIMEOUT,
            auth_timeout=STEP_TIMEOUT,
        )
        channel = client.invoke_shell(width=200, height=50)
        channel.settimeout(STEP_TIMEOUT)

        def read_until(marker: bytes) -> bytes:
            data = b""
            while marker not in data:
                chunk = channel.recv(65536)
                if not chunk:
                    raise EOFError(f"session closed before {marker!r}: {data!r}")
                data += chunk
            return data

        result.banner = strip_ansi(read_until(b">>> "))
        for command in commands:
            channel.sendall(command.encode() + b"\r")
            result.outputs.append(command_output(read_until(PROMPT)))
        channel.sendall(b"\x04")
        if channel.status_event.wait(STEP_TIMEOUT):
            result.exit_status = channel.recv_exit_status()
    finally:
        client.close()
    return result


def password_attempt(port: int, username: str = "admin", password: str = "secret") -> list[str]:
    """Try a password login; return the methods the server says are allowed.

    Blocking: run it in a thread.

    :raises AssertionError: the password was accepted.
    """
    import paramiko

    sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=STEP_TIMEOUT)
        try:
            transport.auth_password(username, password)
        except paramiko.BadAuthenticationType as refused:
            return list(refused.allowed_types)
        raise AssertionError("the console accepted a password")
    finally:
        transport.close()


def write_keys_file(tmp_path: Path) -> tuple[ClientKey, Path]:
    """A new client key and an ``authorized_keys`` file in *tmp_path* listing it."""
    key = make_client_key(tmp_path)
    path = tmp_path / "authorized_keys"
    path.write_text(f"# admins\n{key.public_line}\n")
    return key, path


# --- a stream with viewers, on fake peers ----------------------------------------------------


@dataclass
class Scenario:
    """A publisher of live/cam, viewers that read everything, and one that stopped reading."""

    factory: RTMPServerFactory
    clock: task.Clock
    publisher: FakePeer
    stream_id: int
    normal: list[FakePeer]
    stopped: FakePeer
    timestamp: int = 0

    def publish(self, gops: int = 1, size: int = 200) -> None:
        """Send *gops* two-second GOPs of 30 fps video with audio."""
        for _ in range(gops):
            for index in range(60):
                ts = self.timestamp + index * 1000 // 30
                self.publisher.send(media.video(self.stream_id, ts, key=index == 0, size=size))
                self.publisher.send(media.audio(self.stream_id, ts))
            self.timestamp += 2000


def play_viewer(factory: RTMPServerFactory, *, auto_drain: bool) -> FakePeer:
    """A fake peer playing live/cam on *factory*; it stops reading unless *auto_drain*."""
    viewer = FakePeer(factory, auto_drain=auto_drain)
    viewer.connect("live")
    viewer.play("cam", viewer.create_stream())
    return viewer


def make_scenario(factory: RTMPServerFactory, clock: task.Clock) -> Scenario:
    """The :class:`Scenario` on *factory*: a publisher, three reading viewers, one stopped."""
    publisher = FakePeer(factory)
    publisher.connect("live")
    stream_id = publisher.create_stream()
    publisher.publish("cam", stream_id)
    for message in media.headers(stream_id):
        publisher.send(message)
    normal = [play_viewer(factory, auto_drain=True) for _ in range(2)]
    stopped = play_viewer(factory, auto_drain=False)
    normal.append(play_viewer(factory, auto_drain=True))  # a later id than the stopped one
    return Scenario(factory, clock, publisher, stream_id, normal, stopped)
