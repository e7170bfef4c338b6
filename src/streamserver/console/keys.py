"""Who may log in to the console, and the key the console proves itself with.

- The host key is Ed25519, generated on first start in the data directory with
  mode 0600 (the directory 0700) and reused after; an existing key readable by
  others is refused, as sshd does (:func:`load_or_create_host_key`).
- The keys allowed in are the lines of an OpenSSH ``authorized_keys`` file,
  re-read when it changes, so removing a line revokes that key for the next
  login (:class:`AuthorizedKeysFile`).  Lines with options (``from=``,
  ``command=``, ``restrict``...) are skipped with a warning: the console cannot
  honour them, and accepting such a key without its restrictions would grant
  more than the file says.
- :class:`AuthorizedKeysChecker` is the portal's only checker, for
  ``ISSHPrivateKey``: the key decides, any user name is accepted with a listed
  key, and the avatar id it returns (:class:`ConsoleLogin`) carries the user
  name and the key's SHA256 fingerprint into every log line of the session.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from streamserver.console.errors import ConsoleError

_log = Logger()

#: File name of the host key inside the data directory (the public half gets ``.pub``).
HOST_KEY_NAME = "ssh_host_ed25519_key"

#: Key types whose first field names them; any other first field is an options list.
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


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
                _log.info(
                    "console keys reloaded from {path}: {count} usable",
                    path=str(self.path),
                    count=len(found),
                )
                for message in skipped:
                    _log.warn("{path} {message}", path=str(self.path), message=message)
        except OSError as error:
            _log.error(
                "console keys file {path} unreadable, refusing every key: {error}",
                path=str(self.path),
                error=str(error),
            )
            self._stamp = None
            self._keys = {}
            return None
        return self._keys.get(blob)


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
            _log.info(
                "console refused an unlisted key for {user}: {fingerprint}",
                user=username,
                fingerprint=_blob_fingerprint(credentials.blob),
            )
            raise UnauthorizedLogin("key not listed")
        if not credentials.signature:
            # The client asks whether this key would do; it signs next.
            raise ValidPublicKey()
        if not entry.key.verify(credentials.signature, credentials.sigData):
            _log.warn(
                "console refused a bad signature for {user} with {fingerprint}",
                user=username,
                fingerprint=entry.fingerprint,
            )
            raise UnauthorizedLogin("bad signature")
        return ConsoleLogin(username, entry.fingerprint, entry.key_type, entry.comment)


def _blob_fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
