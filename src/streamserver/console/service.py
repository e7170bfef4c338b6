"""The SSH glue: a server whose only service is the console's Python prompt.

Built from conch's pieces (``../shared/TWISTED-FACTS.md`` §3), not from
``manhole_tap``, whose host key is world-readable and whose only
authentication is a password file:

- :func:`console_factory` builds a portal with one checker,
  :class:`~streamserver.console.keys.AuthorizedKeysChecker` for
  ``ISSHPrivateKey``, so the SSH server offers no ``password`` nor
  ``keyboard-interactive`` method at all; the :class:`ConsoleSSHFactory` holds
  its host key per instance.
- :class:`ConsoleRealm` gives each login an SSH user whose shell is a
  :class:`ConsoleManhole` over a fresh
  :class:`~streamserver.console.helpers.Console`; logins and logouts are logged
  with the key's fingerprint.
- :class:`ConsoleSession` runs shells only, with a pty; commands and shells
  without a pty are refused with exit status 1.  Leaving the prompt (Ctrl-D,
  ``exit()``, ``SystemExit``) ends that session with exit status 0, never the
  server.
- :class:`ConsoleService` is the SSH listener and the bit-rate sampler; it
  warns when the endpoint listens beyond loopback (:func:`loopback_only`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.conch import manhole
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.manhole_ssh import TerminalSession, TerminalUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.factory import SSHFactory
from twisted.cred.portal import IRealm, Portal
from twisted.logger import Logger
from twisted.python.components import Componentized
from typing_extensions import override
from zope.interface import implementer

from streamserver.console.helpers import RATE_SAMPLE_INTERVAL, Console, RateSampler
from streamserver.console.keys import (
    AuthorizedKeysChecker,
    AuthorizedKeysFile,
    ConsoleLogin,
    fingerprint,
    load_or_create_host_key,
)
from streamserver.transport import address_text

_log = Logger()


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
            _log.info("console shell refused to {peer}: no pty requested", peer=peer)
            _refuse(proto, "The console needs a terminal: connect with ssh -t.")
            return
        self._terminal = _ConsoleTerminal(proto, self.terminal_factory(), self.width, self.height)
        _log.info(
            "console session for {user} ({fingerprint}) from {peer}",
            user=self.login.username,
            fingerprint=self.login.fingerprint,
            peer=peer,
        )

    @override
    def execCommand(self, proto: Any, cmd: bytes) -> None:
        _log.info(
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
    return address_text(getattr(peer, "address", peer))


@implementer(IRealm)
class ConsoleRealm:
    """Gives each login an SSH user whose shell is a :class:`Console` session."""

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
        _log.info(
            "console login: {user} with {key_type} key {fingerprint} ({comment})",
            user=login.username,
            key_type=login.key_type,
            fingerprint=login.fingerprint,
            comment=login.comment or "no comment",
        )

        def logout() -> None:
            _log.info(
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
            _log.warn(
                "the console listens beyond loopback ({endpoint}): anyone who can reach it "
                "may try keys; prefer tcp:PORT:interface=127.0.0.1 and an SSH tunnel",
                endpoint=self.endpoint,
            )
        found, skipped = self.keys_file.load()
        for message in skipped:
            _log.warn("{path} {message}", path=str(self.keys_file.path), message=message)
        _log.info(
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
