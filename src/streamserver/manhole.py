"""The Manhole console: a Python prompt inside the running server, over SSH.

``--manhole ENDPOINT`` (off unless given) serves an SSH server whose only
service is an interactive Python console running in the reactor thread, with a
curated namespace for finding where memory goes (:class:`Console`):
``streams()``, ``viewers()``, ``buffers()``, ``memory()``, ``chain()``, the
moderation helpers ``kick()``, ``mute()``, ``unmute()``, ``clear_history()``,
``policy()``/``set_policy()``, and the objects ``factory``, ``registry`` and
``reactor``.

Security contract:

- Public-key authentication only.  The portal has one checker, for
  ``ISSHPrivateKey``, so the SSH server offers no ``password`` nor
  ``keyboard-interactive`` method at all.
- The keys are the ones listed in ``--manhole-keys``, an OpenSSH
  ``authorized_keys`` file, re-read when it changes (removing a line revokes
  that key for the next login).  Lines with options (``from=``, ``command=``,
  ``restrict``...) are skipped with a warning: the console cannot honour them,
  and accepting such a key without its restrictions would grant more than the
  file says.  The key decides; any user name is accepted with a listed key and
  logged.
- The host key is Ed25519, generated on first start in ``--data-dir`` with
  mode 0600 (the directory 0700) and reused after; an existing key readable by
  others is refused, as sshd does.
- Every login, every line typed and every state-changing helper call is logged
  with the user name and the key's SHA256 fingerprint (as ``ssh-keygen -l``
  prints it), so the log says who did what.

Built from conch's pieces (``../shared/TWISTED-FACTS.md`` §3), not from
``manhole_tap``, whose host key is world-readable and whose only
authentication is a password file.

Helpers return their data and show it as a table: each returns a
:class:`Table` (a list of row dicts) or a :class:`Report` (a dict) whose
``repr`` is the rendered text, so typing ``buffers()`` at the prompt shows the
table and ``buffers()[0]["id"]`` is scriptable.

The console runs code in the reactor thread: while a line runs, nothing else
does.  ``memory()`` walks every gc-tracked object and takes about 0.2 s per million.
"""

from __future__ import annotations

import base64
import builtins
import gc
import hashlib
import inspect
import os
import platform
import stat
import struct
import sys
import types
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.conch import manhole
from twisted.conch.error import ValidPublicKey
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.manhole_ssh import TerminalSession, TerminalUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.factory import SSHFactory
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.components import Componentized
from typing_extensions import override
from zope.interface import implementer

from streamserver.errors import StreamServerError
from streamserver.policy import Level
from streamserver.protocol.base import ProtocolRoot, chain_problem, hook_path

#: File name of the host key inside the data directory (the public half gets ``.pub``).
HOST_KEY_NAME = "ssh_host_ed25519_key"

#: Seconds between samples of the byte counters the bit rates are computed from.
RATE_SAMPLE_INTERVAL = 2.0

#: Shortest interval a rate is computed over: shorter ones are mostly noise.
MIN_RATE_WINDOW = 1.0

#: Key types whose first field names them; any other first field is an options list.
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


class ConsoleError(StreamServerError):
    """The console cannot do what was asked (bad set-up, unknown id, missing feature)."""


# --- where things live -------------------------------------------------------------


def default_data_dir() -> Path:
    """The per-user data directory: ``$XDG_DATA_HOME/streamserver`` on Linux.

    Uses ``appdirs`` (a dependency of ``twisted[conch]``) where installed, so
    macOS and Windows get their platform's place; ``~/.local/share/streamserver``
    when ``XDG_DATA_HOME`` is unset.
    """
    try:
        import appdirs
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return Path(base) / "streamserver"
    return Path(appdirs.user_data_dir("streamserver"))


def fingerprint(key: keys.Key) -> str:
    """The key's fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(key.blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_or_create_host_key(data_dir: Path) -> tuple[keys.Key, Path, bool]:
    """The console's host key from *data_dir*, generated there on first use.

    A new key is Ed25519, written in OpenSSH format with mode 0600 (created with
    ``O_CREAT | O_EXCL``, so it is never readable by others, not even for a
    moment); its public half goes next to it as ``.pub``.  *data_dir* is created
    with mode 0700 if missing.

    :returns: the private key, its path, and whether it was created now.
    :raises ConsoleError: the key exists but others may read it, or cannot be loaded.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / HOST_KEY_NAME
    created = False
    if not path.exists():
        private = ed25519.Ed25519PrivateKey.generate()
        data = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass  # another process won the race: use its key
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            public = keys.Key(private.public_key()).toString("openssh") + b" streamserver\n"
            path.with_name(HOST_KEY_NAME + ".pub").write_bytes(public)
            created = True
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConsoleError(
            f"the console's host key {path} may be read by others (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = keys.Key.fromFile(str(path))
    except (keys.BadKeyError, keys.EncryptedKeyError, ValueError) as error:
        raise ConsoleError(f"cannot load the console's host key {path}: {error}") from error
    return key, path, created


# --- authorized keys ---------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizedKey:
    """One usable line of an ``authorized_keys`` file.

    :ivar key: the public key.
    :ivar fingerprint: its ``SHA256:`` fingerprint.
    :ivar comment: the line's comment (often ``user@host``), may be empty.
    :ivar line: the line number, from 1.
    """

    key: keys.Key
    fingerprint: str
    comment: str
    line: int

    @property
    def key_type(self) -> str:
        """The SSH key type, e.g. ``ssh-ed25519``."""
        return self.key.sshType().decode("ascii")


def parse_authorized_keys(text: str) -> tuple[list[AuthorizedKey], list[str]]:
    """Parse OpenSSH ``authorized_keys`` *text*.

    Blank lines and ``#`` comments are ignored.  A line is ``TYPE BASE64
    [COMMENT]``; a line that starts with options instead of a key type is
    skipped (see the module docstring), as is a key Twisted cannot read.

    :returns: the usable keys, and one message per skipped line.
    """
    found: list[AuthorizedKey] = []
    skipped: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if not fields[0].startswith(_KEY_TYPE_PREFIXES):
            skipped.append(f"line {number}: key options are not supported ({fields[0][:40]})")
            continue
        if len(fields) < 2:
            skipped.append(f"line {number}: no key after {fields[0]}")
            continue
        try:
            key = keys.Key.fromString(f"{fields[0]} {fields[1]}".encode("ascii"))
        except (keys.BadKeyError, UnicodeEncodeError, ValueError, IndexError) as error:
            skipped.append(f"line {number}: unreadable {fields[0]} key ({error})")
            continue
        if not key.isPublic():
            skipped.append(f"line {number}: not a public key")
            continue
        comment = fields[2] if len(fields) > 2 else ""
        found.append(AuthorizedKey(key, fingerprint(key), comment, number))
    return found, skipped


class AuthorizedKeysFile:
    """The keys of an ``authorized_keys`` file, re-read whenever the file changes.

    :ivar path: the file.
    """

    log = Logger()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[bytes, AuthorizedKey] = {}

    def load(self) -> tuple[list[AuthorizedKey], list[str]]:
        """Read and parse the file now.

        :raises OSError: it cannot be read.
        """
        status = self.path.stat()
        found, skipped = parse_authorized_keys(self.path.read_text(errors="replace"))
        self._stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        self._keys = {entry.key.blob(): entry for entry in found}
        return found, skipped

    def find(self, blob: bytes) -> AuthorizedKey | None:
        """The listed key whose SSH blob is *blob*, or ``None``.

        Re-reads the file first if its modification time, size or inode changed;
        if it cannot be read any more, no key is accepted.
        """
        try:
            status = self.path.stat()
            if (status.st_mtime_ns, status.st_size, status.st_ino) != self._stamp:
                found, skipped = self.load()
                self.log.info(
                    "console keys reloaded from {path}: {count} usable",
                    path=str(self.path),
                    count=len(found),
                )
                for message in skipped:
                    self.log.warn("{path} {message}", path=str(self.path), message=message)
        except OSError as error:
            self.log.error(
                "console keys file {path} unreadable, refusing every key: {error}",
                path=str(self.path),
                error=str(error),
            )
            self._stamp = None
            self._keys = {}
            return None
        return self._keys.get(blob)


@dataclass(frozen=True)
class ConsoleLogin:
    """Who is logged in: the avatar id the checker hands the realm.

    :ivar username: the SSH user name the client sent (not checked: the key decides).
    :ivar fingerprint: the fingerprint of the key that was accepted.
    :ivar key_type: its type, e.g. ``ssh-ed25519``.
    :ivar comment: its comment in the keys file.
    """

    username: str
    fingerprint: str
    key_type: str = ""
    comment: str = ""


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """Accepts a signed public-key login whose key is listed in the keys file."""

    log = Logger()
    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, keys_file: AuthorizedKeysFile) -> None:
        self._keys_file = keys_file

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        """Check *credentials* (an ``ISSHPrivateKey``); fire with a :class:`ConsoleLogin`."""
        return defer.maybeDeferred(self._check, credentials)

    def _check(self, credentials: Any) -> ConsoleLogin:
        username = credentials.username.decode("utf-8", "replace")
        entry = self._keys_file.find(credentials.blob)
        if entry is None:
            self.log.info(
                "console refused an unlisted key for {user}: {fingerprint}",
                user=username,
                fingerprint=_blob_fingerprint(credentials.blob),
            )
            raise UnauthorizedLogin("key not listed")
        if not credentials.signature:
            # The client asks whether this key would do; it signs next.
            raise ValidPublicKey()
        if not entry.key.verify(credentials.signature, credentials.sigData):
            self.log.warn(
                "console refused a bad signature for {user} with {fingerprint}",
                user=username,
                fingerprint=entry.fingerprint,
            )
            raise UnauthorizedLogin("bad signature")
        return ConsoleLogin(username, entry.fingerprint, entry.key_type, entry.comment)


def _blob_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --- tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a :class:`Table`: the row key, its header, how to show a value."""

    key: str
    header: str
    show: Callable[[Any], str] | None = None


def show_value(value: Any) -> str:
    """A cell: ``-`` for None, thousands separators for ints, one decimal for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def show_duration(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def show_size(count: int) -> str:
    """A byte count for people: ``1.9 MiB``."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(count: int, noun: str) -> str:
    """``1 viewer``, ``2 viewers``, ``1,024 frames``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def show_bytes(count: int) -> str:
    """``1,974,272 bytes (1.9 MiB)``: exact, and for people when over 1 KiB."""
    exact = f"{count:,} bytes"
    return exact if count < 1024 else f"{exact} ({show_size(count)})"


def render_table(columns: Sequence[Column], rows: Iterable[dict[str, Any]]) -> list[str]:
    """Aligned lines: a header, then one line per row; numbers align right."""
    rows = list(rows)
    cells = [[(c.show or show_value)(row.get(c.key)) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c.key), int | float) or row.get(c.key) is None for row in rows)
        for c in columns
    ]
    widths = [
        max([len(c.header), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[i]) if numeric[i] else value.ljust(widths[i])
            for i, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return [line([c.header for c in columns]), *(line(values) for values in cells)]


class Table(list[dict[str, Any]]):
    """Rows (dicts) that show themselves as an aligned table.

    :ivar columns: the columns shown.
    :ivar title: a line above the table.
    :ivar footer: lines below it (totals).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Iterable[dict[str, Any]],
        *,
        title: str = "",
        footer: Sequence[str] = (),
        empty: str = "(none)",
    ) -> None:
        super().__init__(rows)
        self.columns = list(columns)
        self.title = title
        self.footer = list(footer)
        self.empty = empty

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        lines.extend(render_table(self.columns, self) if self else [self.empty])
        lines.extend(self.footer)
        return "\n".join(lines)

    __str__ = __repr__


class Report(dict[str, Any]):
    """Data (a dict) that shows itself as the text it was rendered to."""

    def __init__(self, data: dict[str, Any], text: str) -> None:
        super().__init__(data)
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


class Text(str):
    """A message shown without quotes at the prompt."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


# --- bit rates -------------------------------------------------------------------------


class RateSampler:
    """Bit rates from the server's cumulative byte counters, sampled periodically.

    :meth:`sample` records each stream's ``bytes_in`` and each connection's
    ``bytes_sent``; :meth:`rate` turns the newest sample at least
    :data:`MIN_RATE_WINDOW` old into bits per second.  Objects are held weakly.
    """

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._samples: WeakKeyDictionary[Any, deque[tuple[float, int]]] = WeakKeyDictionary()

    def sample(self) -> None:
        """Record the counters now (every :data:`RATE_SAMPLE_INTERVAL` s in a server)."""
        now = self._factory.seconds()
        for stream in self._factory.streams():
            self._record(stream, now, stream.bytes_in)
        for protocol in list(self._factory.connections.values()):
            self._record(protocol, now, getattr(protocol, "bytes_sent", 0))

    def _record(self, target: Any, now: float, count: int) -> None:
        samples = self._samples.get(target)
        if samples is None:
            samples = self._samples[target] = deque(maxlen=2)
        samples.append((now, count))

    def rate(self, target: Any, count: int, now: float) -> float | None:
        """Bits per second of *target*'s counter, now at *count*; ``None`` if unknown yet."""
        for taken, previous in reversed(self._samples.get(target, ())):
            if now - taken >= MIN_RATE_WINDOW:
                return max(0, count - previous) * 8 / (now - taken)
        return None


def _kbits(rate: float | None) -> float | None:
    return None if rate is None else rate / 1000


# --- the console -----------------------------------------------------------------------


def _stream_key(stream: Any) -> str:
    return f"{stream.app}/{stream.name}"


def viewer_state(protocol: Any) -> str:
    """``closing``, ``congested`` (transport paused us, or the policy is dropping),
    ``awaiting-keyframe`` or ``ok``."""
    if getattr(protocol, "closing", False):
        return "closing"
    viewer = getattr(protocol, "viewer", None)
    level = getattr(viewer, "level", Level.NORMAL)
    if getattr(protocol, "congested", False) or level is not Level.NORMAL:
        return "congested"
    if getattr(viewer, "awaiting_keyframe", False):
        return "awaiting-keyframe"
    return "ok"


def _role(protocol: Any) -> str:
    stream = getattr(protocol, "play_stream", None)
    if stream is not None:
        return f"play {_stream_key(stream)}"
    publishing = getattr(protocol, "publishing", None) or {}
    if publishing:
        return "publish " + ",".join(_stream_key(s) for s in publishing.values())
    app = getattr(protocol, "app", None)
    return f"connected {app}" if app else "handshake"


class Console:
    """The helpers of one console session, bound to the server's factory.

    Read-only helpers: :meth:`streams`, :meth:`viewers`, :meth:`buffers`,
    :meth:`memory`, :meth:`chain`, :meth:`policy`.  State-changing helpers,
    each logged with the login's key fingerprint: :meth:`kick`, :meth:`mute`,
    :meth:`unmute`, :meth:`clear_history`, :meth:`set_policy`.

    :ivar factory: the :class:`~streamserver.factory.RTMPServerFactory`.
    :ivar login: who is logged in.
    :ivar sampler: the shared :class:`RateSampler`.
    """

    log = Logger()

    #: The helpers put in the namespace, in the order ``help()`` lists them.
    HELPERS = (
        "streams",
        "viewers",
        "buffers",
        "memory",
        "chain",
        "policy",
        "set_policy",
        "kick",
        "mute",
        "unmute",
        "clear_history",
    )

    def __init__(
        self,
        factory: Any,
        login: ConsoleLogin,
        *,
        sampler: RateSampler | None = None,
        reactor: Any = None,
    ) -> None:
        self.factory = factory
        self.login = login
        self.sampler = sampler or RateSampler(factory)
        self.reactor = reactor if reactor is not None else getattr(factory, "reactor", None)

    # --- namespace ----------------------------------------------------------------

    def namespace(self, close: Callable[[], None] | None = None) -> dict[str, Any]:
        """The console's globals: the helpers, ``factory``, ``registry``, ``reactor``.

        :param close: ends the session; ``exit()`` and ``quit()`` call it (the
            built-in ones would raise ``SystemExit`` into the reactor).
        """
        namespace: dict[str, Any] = {name: getattr(self, name) for name in self.HELPERS}
        namespace.update(
            factory=self.factory,
            registry=self.factory.registries,
            reactor=self.reactor,
            help=self.help,
            __name__="__console__",
            __doc__=None,
        )
        leave = _Leave(close)
        namespace.update(exit=leave, quit=leave)
        return namespace

    def help(self, topic: Any = None) -> None:
        """``help()`` lists the helpers; ``help(obj)`` shows obj's documentation."""
        if topic is not None:
            builtins.help(topic)
            return
        calls = {name: _call_form(name, getattr(self, name)) for name in self.HELPERS}
        width = max(len(call) for call in calls.values())
        lines = ["Helpers (help(name) shows one in full):"]
        for name, call in calls.items():
            doc = (getattr(self, name).__doc__ or "").strip().splitlines()[0]
            lines.append(f"  {call:<{width}}  {doc}")
        lines += [
            "Objects: factory (RTMPServerFactory), registry (app -> StreamRegistry), reactor.",
            "Helpers return their rows: buffers()[0]['id'] is the connection holding the most.",
            "Code runs in the reactor thread: a long loop stalls every stream.",
            "Ctrl-D or exit() leaves.",
        ]
        sys.stdout.write("\n".join(lines) + "\n")

    def banner(self) -> str:
        """What a new session shows above its first prompt."""
        return (
            f"streamserver console on Python {platform.python_version()}, "
            f"Twisted {twisted.__version__}; logged in as {self.login.username} "
            f"({self.login.fingerprint}).\n"
            "help() lists the helpers: streams() viewers() buffers() memory() chain() "
            "policy() ...\n"
        )

    # --- logging ------------------------------------------------------------------

    def audit(self, action: str, **fields: Any) -> None:
        """Log a state-changing *action* with who did it."""
        details = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        self.log.info(
            "console {user} ({fingerprint}): {action}({details})",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            action=action,
            details=details,
            console_action=action,
            **{f"console_{key}": value for key, value in fields.items()},
        )

    def input_received(self, source: str) -> None:
        """Log a line typed at the prompt."""
        self.log.info(
            "console {user} ({fingerprint}) >>> {source}",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            source=source,
        )

    # --- read-only helpers -------------------------------------------------------

    def _now(self) -> float:
        return float(self.factory.seconds())

    def streams(self) -> Table:
        """Every stream: app, name, publisher address, viewers, bit rates in/out, uptime.

        Bit rates (kbit/s) are measured over the last 1-4 s; ``-`` until two
        samples exist.  Uptime counts from the current publisher's publish.
        Returns the rows; each is a dict with the keys shown.
        """
        now = self._now()
        rows = []
        for stream in sorted(self.factory.streams(), key=_stream_key):
            subscribers = list(stream.subscribers)
            rates = [
                self.sampler.rate(sub, getattr(sub, "bytes_sent", 0), now) for sub in subscribers
            ]
            known = [rate for rate in rates if rate is not None]
            out_rate = sum(known) if known or not subscribers else None
            publisher = stream.publisher
            published_at = stream.published_at
            rows.append(
                {
                    "app": stream.app,
                    "name": stream.name,
                    "publisher": getattr(publisher, "peer", None) if publisher else None,
                    "viewers": len(subscribers),
                    "kbit_in": _kbits(self.sampler.rate(stream, stream.bytes_in, now)),
                    "kbit_out": _kbits(out_rate),
                    "uptime": None if published_at is None else now - published_at,
                    "gop_bytes": stream.gop_bytes,
                }
            )
        columns = [
            Column("app", "app"),
            Column("name", "name"),
            Column("publisher", "publisher"),
            Column("viewers", "viewers"),
            Column("kbit_in", "kbit/s in"),
            Column("kbit_out", "kbit/s out"),
            Column("uptime", "uptime", show_duration),
        ]
        viewers = sum(row["viewers"] for row in rows)
        return Table(
            columns,
            rows,
            footer=[f"{plural(len(rows), 'stream')}, {plural(viewers, 'viewer')}"],
            empty="(no streams)",
        )

    def _viewer_row(self, protocol: Any, now: float) -> dict[str, Any]:
        viewer = protocol.viewer
        stream = protocol.play_stream
        dropped = dict(getattr(viewer, "dropped", {}))
        lag = getattr(protocol, "lag_ms", None)
        queued = protocol.link.queued()
        return {
            "id": protocol.conn_id,
            "address": protocol.peer,
            "stream": _stream_key(stream) if stream is not None else None,
            "queued": queued,
            "peak": max(queued, getattr(protocol, "peak_queued", 0)),
            "kbit_out": _kbits(
                self.sampler.rate(protocol, getattr(protocol, "bytes_sent", 0), now)
            ),
            "frames_sent": getattr(protocol, "frames_sent", 0),
            "dropped": dropped,
            "drop_inter": dropped.get("inter", 0),
            "drop_keyframe": dropped.get("keyframe", 0),
            "drop_audio": dropped.get("audio", 0),
            "drop_catch_up": dropped.get("catch-up", 0),
            "lag_ms": lag() if callable(lag) else None,
            "state": viewer_state(protocol),
        }

    def viewers(self, name: str | None = None) -> Table:
        """Every viewer, or those of stream *name* ("app/name" or "name"): queues, drops, lag.

        Per viewer: connection id, address, stream, bytes queued in its transport
        now and at peak, kbit/s sent, frames sent, frames dropped by reason
        (inter, keyframe, audio, catch-up: inter frames dropped while waiting
        for a keyframe), lag behind live in ms, and state: ``ok``,
        ``awaiting-keyframe``, ``congested`` (the transport paused us or the
        policy is dropping) or ``closing``.  Returns the rows.
        """
        now = self._now()
        rows = []
        for protocol in sorted(self.factory.connections.values(), key=lambda p: p.conn_id):
            stream = getattr(protocol, "play_stream", None)
            if stream is None:
                continue
            if name is not None and name not in (_stream_key(stream), stream.name):
                continue
            rows.append(self._viewer_row(protocol, now))
        columns = [
            Column("id", "id"),
            Column("address", "address"),
            Column("stream", "stream"),
            Column("queued", "queued"),
            Column("peak", "peak"),
            Column("kbit_out", "kbit/s"),
            Column("frames_sent", "sent"),
            Column("drop_inter", "inter"),
            Column("drop_keyframe", "keyframe"),
            Column("drop_audio", "audio"),
            Column("drop_catch_up", "catch-up"),
            Column("lag_ms", "lag ms"),
            Column("state", "state"),
        ]
        return Table(
            columns,
            rows,
            title="bytes queued now/peak; frames sent; frames dropped by reason "
            "(inter keyframe audio catch-up)",
            footer=[plural(len(rows), "viewer")],
            empty="(no viewers)" if name is None else f"(no viewers of {name})",
        )

    def buffers(self, top: int = 10) -> Table:
        """The *top* connections holding the most bytes queued, largest first, and the total.

        Columns: id, address, role (``play app/name``, ``publish app/name``),
        bytes queued now and at peak, lag ms, state; then the total over every
        connection.  Only connections with bytes queued are listed.  Returns
        the rows.
        """
        connections = list(self.factory.connections.values())
        queued = [(p.link.queued(), p) for p in connections]
        holding = sorted(
            ((count, p) for count, p in queued if count > 0),
            key=lambda item: (-item[0], item[1].conn_id),
        )
        total = sum(count for count, _ in holding)
        rows = []
        for count, protocol in holding[: max(0, top)]:
            viewer = getattr(protocol, "play_stream", None) is not None
            lag = getattr(protocol, "lag_ms", None)
            rows.append(
                {
                    "id": protocol.conn_id,
                    "address": protocol.peer,
                    "role": _role(protocol),
                    "queued": count,
                    "peak": max(count, getattr(protocol, "peak_queued", 0)) if viewer else None,
                    "lag_ms": lag() if viewer and callable(lag) else None,
                    "state": viewer_state(protocol) if viewer else "-",
                }
            )
        columns = [
            Column("id", "id"),
            Column("address", "address"),
            Column("role", "role"),
            Column("queued", "queued"),
            Column("peak", "peak"),
            Column("lag_ms", "lag ms"),
            Column("state", "state"),
        ]
        shown = f"; top {len(rows)} shown" if len(holding) > len(rows) else ""
        return Table(
            columns,
            rows,
            footer=[
                f"total queued: {show_bytes(total)} in {len(holding)} of "
                f"{plural(len(connections), 'connection')}{shown}"
            ],
            empty=f"(no bytes queued in {plural(len(connections), 'connection')})",
        )

    def memory(self) -> Report:
        """Where memory goes: RSS, queued bytes, GOP caches, chat histories, gc objects by type.

        Bytes queued in the transports of every connection, the GOP caches of
        every stream, the chat rooms' histories, and the 10 most numerous types
        of gc-tracked object.  The gc counts walk every container object (bytes and str are not
        gc-tracked, so queued frames show up as the ``Frame`` objects holding
        them).  Returns the numbers as a dict.
        """
        rss, rss_peak, rss_source = _resident_memory()
        connections = list(self.factory.connections.values())
        queued = [p.link.queued() for p in connections]
        streams = self.factory.streams()
        gop_bytes = sum(s.gop_bytes for s in streams)
        gop_frames = sum(len(s.gop) for s in streams)
        chat_rooms = chat_messages = 0
        chat_bytes = 0
        for stream in streams:
            room = getattr(stream, "chat", None)
            history = getattr(room, "history", None)
            if history is None:
                continue
            chat_rooms += 1
            chat_messages += len(history)
            size = getattr(room, "history_bytes", None)
            chat_bytes += size if isinstance(size, int) else sum(_approx_size(m) for m in history)
        by_type: Counter[str] = Counter()
        for obj in gc.get_objects():
            kind = type(obj)
            module = kind.__module__
            by_type[
                kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
            ] += 1
        data = {
            "rss": rss,
            "rss_peak": rss_peak,
            "rss_source": rss_source,
            "queued": sum(queued),
            "queued_connections": sum(1 for q in queued if q),
            "connections": len(connections),
            "gop_bytes": gop_bytes,
            "gop_frames": gop_frames,
            "streams": len(streams),
            "chat_bytes": chat_bytes,
            "chat_messages": chat_messages,
            "chat_rooms": chat_rooms,
            "gc_objects": sum(by_type.values()),
            "gc_top": by_type.most_common(10),
        }

        def amount(count: int | None) -> str:
            return "-" if count is None else show_bytes(count)

        lines = [
            ["RSS", amount(rss), f"peak {amount(rss_peak)}, from {rss_source}"],
            [
                "queued in transports",
                amount(data["queued"]),
                f"in {data['queued_connections']} of {plural(len(connections), 'connection')}",
            ],
            [
                "GOP caches",
                amount(gop_bytes),
                f"{plural(gop_frames, 'frame')} in {plural(len(streams), 'stream')}",
            ],
            [
                "chat histories",
                amount(chat_bytes),
                f"{plural(chat_messages, 'message')} in {plural(chat_rooms, 'room')}",
            ],
        ]
        label = max(len(line[0]) for line in lines)
        value = max(len(line[1]) for line in lines)
        text = [f"{a:<{label}}  {b:>{value}}  {c}" for a, b, c in lines]
        text.append(f"gc-tracked objects: {data['gc_objects']:,}; top 10 by type:")
        top = data["gc_top"]
        name_width = max((len(name) for name, _ in top), default=0)
        text.extend(f"  {name:<{name_width}}  {count:>10,}" for name, count in top)
        return Report(data, "\n".join(text))

    def chain(self, cls: type | None = None) -> Report:
        """The composed protocol's MRO, and the path of every chained hook through it.

        For each hook of ``CHAINED_HOOKS`` the mixins that override it, in the
        order a call runs through them, ending at ProtocolRoot.  An override
        that does not call ``super()`` exactly once, unconditionally, is marked
        ``BROKEN`` and the mixins after it are listed as never reached: that is
        how a lost ``super().admit_frame()`` silences the drop policy.  *cls*
        defaults to the protocol class the factory builds.  Returns the data.
        """
        from streamserver.protocol.base import CHAINED_HOOKS

        if cls is None:
            cls = getattr(self.factory, "protocol_class", None)
        if cls is None:
            from streamserver.protocol.server import RTMPServerProtocol

            cls = RTMPServerProtocol
        mro = [(klass.__qualname__, klass.__module__) for klass in cls.__mro__]
        by_name: dict[str, type] = {}
        for klass in cls.__mro__:
            by_name.setdefault(klass.__qualname__, klass)
        hooks: dict[str, list[str]] = {}
        broken: dict[str, tuple[str, str]] = {}
        lines = [f"{cls.__qualname__} ({cls.__module__}), MRO:"]
        width = max(len(name) for name, _ in mro)
        lines += [f"  {i:2d} {name:<{width}}  {module}" for i, (name, module) in enumerate(mro)]
        lines.append("chained hooks, in call order (each override must call super() once):")
        hook_width = max(len(hook) for hook in CHAINED_HOOKS)
        for hook in CHAINED_HOOKS:
            path = hook_path(cls, hook)
            hooks[hook] = path
            steps: list[str] = []
            for index, name in enumerate(path):
                owner = by_name.get(name)
                function = vars(owner).get(hook) if owner is not None else None
                problem = None
                if owner is not ProtocolRoot and isinstance(function, types.FunctionType):
                    problem = chain_problem(function, hook)
                if problem is None:
                    steps.append(name)
                    continue
                steps.append(f"{name} [BROKEN: {problem}]")
                broken[hook] = (name, problem)
                rest = path[index + 1 :]
                if rest:
                    steps.append(f"never reached: {', '.join(rest)}")
                break
            lines.append(f"  {hook:<{hook_width}}  {' -> '.join(steps)}")
        if broken:
            lines.append(f"BROKEN CHAINS: {', '.join(sorted(broken))}")
        data = {"class": cls.__qualname__, "mro": [name for name, _ in mro], "hooks": hooks}
        data["broken"] = broken
        return Report(data, "\n".join(lines))

    def policy(self) -> Report:
        """The drop policy's current watermarks, and the viewers it disconnected so far.

        Change them with ``set_policy(name=value, ...)``.  Returns the limits as a dict.
        """
        limits = self.factory.policy.limits
        data = limits.as_dict()
        rows = [
            ("drop_low", limits.drop_low, "bytes queued above which inter frames are dropped"),
            ("drop_high", limits.drop_high, "... above which audio and keyframes are too"),
            ("max_queue", limits.max_queue, "a viewer with more queued is disconnected"),
            ("stall_timeout", limits.stall_timeout, "seconds without write progress: disconnect"),
            ("max_lag_ms", limits.max_lag_ms, "lag kept under (sixth/third: drop levels)"),
            ("enabled", limits.enabled, "False: never drop nor disconnect (--no-drop)"),
        ]
        width = max(len(show_value(value)) for _, value, _ in rows)
        lines = [
            f"{name:<13}  {show_value(value):>{width}}  {meaning}" for name, value, meaning in rows
        ]
        disconnects = dict(getattr(self.factory, "disconnects", {}))
        lines.append(
            "disconnected by the policy: "
            + (", ".join(f"{k} {v}" for k, v in sorted(disconnects.items())) or "none")
        )
        return Report({**data, "disconnects": disconnects}, "\n".join(lines))

    # --- state-changing helpers --------------------------------------------------

    def set_policy(self, **limits: Any) -> Report:
        """Change drop-policy limits for every viewer at once.  Logged with your key.

        Example: ``set_policy(drop_low=256 * 1024, stall_timeout=5)``.

        Names: drop_low, drop_high, max_queue, stall_timeout, max_lag_ms,
        enabled.  Every viewer's next frame is judged by the new limits.
        Returns ``policy()``.

        :raises ValueError: an unknown name or an inconsistent combination
            (nothing is changed then).
        """
        if not limits:
            raise ConsoleError("name the limits to change, e.g. set_policy(drop_low=256 * 1024)")
        old = self.factory.policy.limits.as_dict()
        try:
            new = self.factory.set_policy(**limits)
        except ValueError:
            self.audit("set_policy", refused=limits)
            raise
        changes = {name: (old[name], getattr(new, name)) for name in limits}
        self.audit("set_policy", changes=changes)
        return self.policy()

    def kick(self, conn_id: int) -> Text:
        """Disconnect connection *conn_id* now.  Logged with your key.

        The id is the one ``viewers()`` and ``buffers()`` show; the connection's
        queued bytes are discarded.
        """
        protocol = self.factory.connections.get(conn_id)
        if protocol is None:
            raise ConsoleError(f"no connection {conn_id!r}; buffers() and viewers() list the ids")
        peer = protocol.peer
        self.audit("kick", conn_id=conn_id, peer=peer, role=_role(protocol))
        self.factory.kick(
            conn_id,
            reason=f"kicked from the console by {self.login.username} ({self.login.fingerprint})",
        )
        return Text(f"kicked connection {conn_id} ({peer})")

    def _moderation(self, name: str) -> Callable[..., Any]:
        method = getattr(self.factory, name, None)
        if not callable(method):
            raise ConsoleError(
                f"this server has no chat moderation: {type(self.factory).__name__}.{name}() "
                "does not exist"
            )
        return method

    @staticmethod
    def _check_stream(stream: Any) -> None:
        if not isinstance(stream, str) or "/" not in stream.strip("/"):
            raise ConsoleError(f"stream must be 'app/name', e.g. 'live/cam', not {stream!r}")

    def mute(self, stream: str, nick: str) -> Text:
        """Mute *nick* in the chat of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("mute")
        result = method(stream, nick)
        self.audit("mute", stream=stream, nick=nick, result=result)
        if result:
            return Text(f"{nick} muted in {stream}")
        return Text(f"{nick} not muted in {stream}: no such stream, or muted already")

    def unmute(self, stream: str, nick: str) -> Text:
        """Unmute *nick* in the chat of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("unmute")
        result = method(stream, nick)
        self.audit("unmute", stream=stream, nick=nick, result=result)
        if result:
            return Text(f"{nick} unmuted in {stream}")
        return Text(f"{nick} not unmuted in {stream}: no such stream, or not muted")

    def clear_history(self, stream: str) -> Text:
        """Forget the chat history of *stream* ("app/name").  Logged with your key."""
        self._check_stream(stream)
        method = self._moderation("clear_history")
        result = method(stream)
        self.audit("clear_history", stream=stream, result=result)
        return Text(f"cleared the chat history of {stream}: {result!r}")


def _call_form(name: str, function: Callable[..., Any]) -> str:
    """``buffers(top=10)``: how to call *function*, without annotations."""
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        text = parameter.name
        if parameter.kind is parameter.VAR_KEYWORD:
            text = "**" + text
        elif parameter.default is not parameter.empty:
            text += f"={parameter.default!r}"
        parameters.append(text)
    return f"{name}({', '.join(parameters)})"


class _Leave:
    """``exit``/``quit`` in the console: end the session, not the server."""

    def __init__(self, close: Callable[[], None] | None) -> None:
        self._close = close

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to leave the console."

    def __call__(self, code: Any = None) -> None:
        if self._close is None:
            raise ConsoleError("this console cannot be closed from inside")
        self._close()


def _resident_memory() -> tuple[int | None, int | None, str]:
    """(RSS now, peak RSS, where from) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        now = int(fields["VmRSS"].split()[0]) * 1024
        peak = int(fields["VmHWM"].split()[0]) * 1024 if "VmHWM" in fields else None
        return now, peak, "/proc/self/status"
    except (OSError, KeyError, ValueError):
        pass
    try:
        import resource
    except ImportError:
        return None, None, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    return None, peak if sys.platform == "darwin" else peak * 1024, "getrusage"


def _approx_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, str | bytes):
            size += sys.getsizeof(value)
    return size


# --- SSH glue -----------------------------------------------------------------------------


class ConsoleManhole(manhole.ColoredManhole):
    """The coloured Python prompt, with our banner, namespace and input log."""

    def __init__(self, console: Console) -> None:
        self.console = console
        super().__init__(console.namespace(close=self._leave))

    def _leave(self) -> None:
        self.terminal.loseConnection()

    @override
    def initializeScreen(self) -> None:
        self.terminal.reset()
        self.terminal.write(self.console.banner().encode("utf-8"))
        self.terminal.write(self.ps[self.pn])
        self.setInsertMode()

    @override
    def lineReceived(self, line: bytes) -> None:
        if line.strip():
            self.console.input_received(line.decode("utf-8", "replace"))
        try:
            super().lineReceived(line)
        except SystemExit:
            # sys.exit() or raise SystemExit: leave the console, not the server
            self._leave()


class _Pipe:
    """A minimal transport: where writes go and what closing does."""

    def __init__(self, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.write = write
        self.loseConnection = close

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))


class _ConsoleTerminal:
    """Connects an SSH session channel to the terminal protocol running the prompt.

    As conch's ``TerminalSessionTransport``, and leaving the prompt (Ctrl-D,
    ``exit()``) sends ``exit-status 0`` first, so ``ssh`` exits 0 instead of 255.
    """

    def __init__(self, process: Any, terminal: Any, width: int, height: int) -> None:
        self.process = process
        self.terminal = terminal
        self._closed = False
        channel = process.session
        process.makeConnection(
            _Pipe(terminal.dataReceived, lambda: channel.conn.sendClose(channel))
        )
        terminal.makeConnection(_Pipe(process.write, self.close))
        terminal.terminalProtocol.terminalSize(width, height)

    def resize(self, width: int, height: int) -> None:
        self.terminal.terminalProtocol.terminalSize(width, height)

    def close(self, status: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        channel = self.process.session
        channel.conn.sendRequest(channel, b"exit-status", struct.pack(">L", status))
        self.process.loseConnection()


class ConsoleSession(TerminalSession):
    """An SSH session that runs the console; shells only, with a pty.

    Unlike conch's ``TerminalSession`` it follows window size changes and
    closes on EOF instead of raising ``NotImplementedError``.
    """

    log = Logger()

    login: ConsoleLogin
    terminal_factory: Callable[[], Any]
    width = 0
    height = 0
    _pty = False
    _terminal: _ConsoleTerminal | None = None

    @override
    def getPty(self, term: bytes, windowSize: Any, attrs: Any) -> None:
        # ssh -tt without a local terminal asks for a 0x0 window
        self.height, self.width = (windowSize[0] or 24), (windowSize[1] or 80)
        self._pty = True

    @override
    def openShell(self, proto: Any) -> None:
        peer = _address(proto)
        if not self._pty:
            self.log.info("console shell refused to {peer}: no pty requested", peer=peer)
            _refuse(proto, "The console needs a terminal: connect with ssh -t.")
            return
        self._terminal = _ConsoleTerminal(proto, self.terminal_factory(), self.width, self.height)
        self.log.info(
            "console session for {user} ({fingerprint}) from {peer}",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            peer=peer,
        )

    @override
    def execCommand(self, proto: Any, cmd: bytes) -> None:
        self.log.info(
            "console command refused to {peer}: {command!r}", peer=_address(proto), command=cmd
        )
        _refuse(proto, "The console runs no commands: connect without one, with ssh -t.")

    @override
    def windowChanged(self, newWindowSize: Any) -> None:
        self.height, self.width = (newWindowSize[0] or 24), (newWindowSize[1] or 80)
        if self._terminal is not None:
            self._terminal.resize(self.width, self.height)

    @override
    def eofReceived(self) -> None:
        if self._terminal is not None:
            self._terminal.close()


def _refuse(proto: Any, message: str) -> None:
    """Tell the client *message*, exit with status 1, and close the channel.

    The session's process protocol gets a transport that discards input, so
    whatever the client sends meanwhile is not an error.
    """
    proto.makeConnection(_Pipe(lambda data: None, lambda: None))
    proto.write(message.encode() + b"\r\n")
    proto.session.conn.sendRequest(proto.session, b"exit-status", struct.pack(">L", 1))
    proto.loseConnection()


def _address(proto: Any) -> str:
    try:
        peer = proto.getPeer()
    except AttributeError:
        return "?"
    address = getattr(peer, "address", peer)
    return f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"


@implementer(IRealm)
class ConsoleRealm:
    """Gives each login an SSH user whose shell is a :class:`Console` session."""

    log = Logger()

    def __init__(self, factory: Any, sampler: RateSampler, reactor: Any = None) -> None:
        self.factory = factory
        self.sampler = sampler
        self.reactor = reactor

    def requestAvatar(self, avatar_id: Any, mind: object, *interfaces: Any) -> Any:
        """Build the avatar for *avatar_id*, a :class:`ConsoleLogin`."""
        if IConchUser not in interfaces:
            raise NotImplementedError("the console offers SSH users only")
        login: ConsoleLogin = avatar_id
        components = Componentized()
        user = TerminalUser(components, avatar_id)
        session = ConsoleSession(components)
        session.login = login
        session.terminal_factory = lambda: insults.ServerProtocol(
            ConsoleManhole,
            Console(self.factory, login, sampler=self.sampler, reactor=self.reactor),
        )
        components.setComponent(IConchUser, user)
        components.setComponent(ISession, session)
        self.log.info(
            "console login: {user} with {key_type} key {fingerprint} ({comment})",
            user=login.username,
            key_type=login.key_type,
            fingerprint=login.fingerprint,
            comment=login.comment or "no comment",
        )

        def logout() -> None:
            self.log.info(
                "console logout: {user} ({fingerprint})",
                user=login.username,
                fingerprint=login.fingerprint,
            )

        return IConchUser, user, logout


class ConsoleSSHFactory(SSHFactory):
    """The console's SSH server: one host key, public-key logins only."""

    def __init__(self, portal: Portal, host_key: keys.Key) -> None:
        self.portal = portal
        # per instance: conch's ConchFactory keeps these in class-level dicts
        self.publicKeys = {host_key.sshType(): host_key.public()}
        self.privateKeys = {host_key.sshType(): host_key}
        self.primes = None


def console_factory(
    server_factory: Any,
    keys_file: AuthorizedKeysFile,
    host_key: keys.Key,
    *,
    sampler: RateSampler | None = None,
    reactor: Any = None,
) -> ConsoleSSHFactory:
    """The SSH factory serving the console of *server_factory*."""
    realm = ConsoleRealm(server_factory, sampler or RateSampler(server_factory), reactor)
    portal = Portal(realm, [AuthorizedKeysChecker(keys_file)])
    return ConsoleSSHFactory(portal, host_key)


def check_keys_file(path: str) -> list[str]:
    """Check ``--manhole-keys`` *path* lists at least one usable key.

    :returns: the messages about skipped lines.
    :raises ConsoleError: it cannot be read or lists no usable key.
    """
    try:
        found, skipped = AuthorizedKeysFile(Path(path)).load()
    except OSError as error:
        raise ConsoleError(f"--manhole-keys {path}: {error.strerror or error}") from error
    if not found:
        detail = f" ({'; '.join(skipped)})" if skipped else ""
        raise ConsoleError(
            f"--manhole-keys {path} lists no usable public key{detail}; add a line such as "
            "the contents of ~/.ssh/id_ed25519.pub"
        )
    return skipped


def loopback_only(endpoint: str) -> bool:
    """Whether the endpoint string *endpoint* listens on loopback (or a UNIX socket) only."""
    kind, _, rest = endpoint.partition(":")
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for part in rest.replace("\\:", "%3A").split(":"):
        name, equals, value = part.partition("=")
        if equals and name == "interface":
            host = value.replace("%3A", ":")
            return host in ("::1", "localhost") or host.startswith("127.")
    return False


class ConsoleService(MultiService):
    """The console: its SSH listener and the bit-rate sampler.

    :ivar host_key_path: where the host key is.
    :ivar ssh_factory: the :class:`ConsoleSSHFactory`.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        server_factory: Any,
        keys_path: str,
        data_dir: str,
        *,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.keys_file = AuthorizedKeysFile(Path(keys_path))
        self.keys_file.load()
        key, self.host_key_path, created = load_or_create_host_key(Path(data_dir))
        self.host_key = key
        self.host_key_created = created
        sampler = RateSampler(server_factory)
        self.ssh_factory = console_factory(
            server_factory, self.keys_file, key, sampler=sampler, reactor=reactor
        )
        listener = strports.service(endpoint, self.ssh_factory)
        listener.setName("ssh")
        listener.setServiceParent(self)
        timer = TimerService(RATE_SAMPLE_INTERVAL, sampler.sample)
        if reactor is not None:
            timer.clock = reactor
        timer.setName("rates")
        timer.setServiceParent(self)

    @override
    def startService(self) -> None:
        if not loopback_only(self.endpoint):
            self.log.warn(
                "the console listens beyond loopback ({endpoint}): anyone who can reach it "
                "may try keys; prefer tcp:PORT:interface=127.0.0.1 and an SSH tunnel",
                endpoint=self.endpoint,
            )
        found, skipped = self.keys_file.load()
        for message in skipped:
            self.log.warn("{path} {message}", path=str(self.keys_file.path), message=message)
        self.log.info(
            "console on {endpoint}: {count} authorized keys in {keys}; host key {fingerprint} "
            "({state} {path})",
            endpoint=self.endpoint,
            count=len(found),
            keys=str(self.keys_file.path),
            fingerprint=fingerprint(self.host_key),
            state="created" if self.host_key_created else "loaded from",
            path=str(self.host_key_path),
        )
        super().startService()
