"""The IRC gateway: any IRC client in the chat rooms of the streams (``--irc ENDPOINT``).

:class:`IrcFactory` builds one :class:`IrcConnection` per client, on Twisted's
``twisted.words.protocols.irc.IRC`` (its ``irc_COMMAND`` dispatch and
``sendCommand`` with IRCv3 tags).  Each connection is one more
:class:`~streamserver.factory.Connection` of the server's factory (protocol
``irc``): the connection limits admit it, the console and the API list it,
``kick`` and the shutdown close it, the watchdog runs its timeouts.

Contract (``docs/watch.md``, "IRC"):

- Registration: ``NICK`` and ``USER`` (``CAP LS``/``REQ``/``END`` offer
  ``server-time``), then 001-005 and 422.  It must finish within
  ``connect_timeout`` seconds; at most :data:`MAX_UNREGISTERED` connections
  may be registering at once.  Before it, other commands get 451.
- Lines longer than :data:`~streamserver.irc.names.MAX_LINE_BYTES` (CR LF
  included, client tags counted apart) are refused with 417 and never
  buffered; invalid UTF-8 is replaced.
- ``JOIN #APP/NAME [KEY]`` is authorized as a ``play`` of the stream (the key
  is the play token), seats the client in the stream's room (a
  :class:`IrcSeat`), and answers the JOIN, the topic (title and status), the
  names of everyone in the room and the history as ``PRIVMSG``\\ s.
- ``PRIVMSG #APP/NAME :text`` goes through the same rules as RTMP
  ``sendChatMessage`` (:func:`~streamserver.media.rooms.accept_message`):
  refusals come back as ``NOTICE nick :Chat.TooLong: ...``.  Every other
  participant gets the message; IRC servers do not echo to the sender.
- The topic follows the stream: told again when it is published or
  unpublished (``factory.events``) and when its metadata brings a title
  (checked by the watchdog, every second).

Chat goes out like RTMP chat: never dropped, but a client whose queue would
pass ``--max-queue`` is disconnected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols import irc
from typing_extensions import override

from streamserver.auth import AccessRequest, authorize
from streamserver.errors import ChatError, ChatRejectedError, StreamError, UnauthorizedError
from streamserver.events import PUBLISH, SessionEvent
from streamserver.irc.names import (
    MAX_LINE_BYTES,
    MAX_TAGS_BYTES,
    SERVER_NAME,
    channel_name,
    channel_stream,
    chat_lines,
    display_nick,
    hostmask,
    nick_error,
    stream_topic,
)
from streamserver.irc.seat import IrcSeat
from streamserver.media.rooms import MAX_NICK_LENGTH, ChatRateLimit, accept_message
from streamserver.policy import DisconnectReason
from streamserver.protocol.chat import MAX_CHAT_ROOMS
from streamserver.stats import ConnectionStats
from streamserver.transport import TransportAdapter

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Stream

_log = Logger()

__all__ = ["CAPABILITIES", "MAX_UNREGISTERED", "IrcConnection", "IrcFactory"]

#: Connections that may be registering (no NICK and USER yet) at once.  A client
#: registers in one round trip; more than this many half-open clients at once is
#: a flood holding sockets for ``connect_timeout`` each, not people connecting.
MAX_UNREGISTERED = 64

#: The IRCv3 capabilities offered: message times on history and live lines.
CAPABILITIES = ("server-time",)

#: Commands allowed before registration (the rest get 451).
_BEFORE_REGISTRATION = frozenset({"CAP", "NICK", "USER", "PASS", "PING", "PONG", "QUIT"})

#: Parameters of a NAMES (353) line are cut to keep it within the line limit.
_NAMES_BYTES = 400


class IrcConnection(irc.IRC):
    """One IRC client: a factory :class:`~streamserver.factory.Connection` (protocol ``irc``).

    :ivar conn_id: its connection id (shared sequence with RTMP and HTTP).
    :ivar link: its transport adapter.
    :ivar peer: ``host:port``.
    :ivar nick: its nick (``""`` before ``NICK``).
    :ivar registered: ``NICK`` and ``USER`` are done.
    :ivar caps: the IRCv3 capabilities it enabled.
    :ivar seats: its rooms, by channel.
    :ivar closing: it is being closed.
    """

    hostname = SERVER_NAME
    factory: IrcFactory

    def __init__(self) -> None:
        self.conn_id = 0
        self.nick = ""
        self.username = ""
        self.registered = False
        self.caps: set[str] = set()
        self._negotiating = False
        self.seats: dict[str, IrcSeat] = {}
        self._joining: dict[str, defer.Deferred[None]] = {}
        self.closing = False
        self.peer = "?"
        self.opened_at = 0.0
        self.last_received = 0.0
        self._ping_sent: float | None = None
        self._buffer = b""
        self._skipping = False
        self._tracked = False
        self._counted_unregistered = False
        self.chat_sent = 0
        self.chat_delivered = 0
        self.link: TransportAdapter

    def __repr__(self) -> str:
        return f"<IrcConnection {self.conn_id} {self.nick or '*'} {self.peer}>"

    # --- the connection's life -----------------------------------------------------

    @property
    def server(self) -> RTMPServerFactory:
        """The server's factory."""
        return self.factory.server

    @override
    def connectionMade(self) -> None:
        super().connectionMade()
        server = self.server
        self.link = TransportAdapter(self.transport)
        self.peer = self.link.peer_text
        self.opened_at = self.last_received = server.seconds()
        config = server.config
        self._chat_rate = ChatRateLimit(config.chat_rate, config.chat_rate_window)
        server.connection_opened(self)
        self._tracked = True
        refusal = server.admission_refusal(self)
        if refusal is None and self.factory.unregistered >= MAX_UNREGISTERED:
            refusal = f"{MAX_UNREGISTERED} connections are registering already"
        if refusal is not None:
            server.connection_refused(self, "limit", refusal)
            self._close_link(refusal)
            return
        self.factory.unregistered += 1
        self._counted_unregistered = True
        self.link.configure_socket(config.notsent_lowat, config.send_buffer)
        if not config.eager_writes:
            self.link.disable_eager_writes()

    @override
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        self._leave_all()
        self._uncount_unregistered()
        self.factory.release_nick(self)
        if self._tracked:
            self._tracked = False
            self.server.connection_closed(self)

    def _uncount_unregistered(self) -> None:
        if self._counted_unregistered:
            self._counted_unregistered = False
            self.factory.unregistered -= 1

    def _close_link(self, reason: str) -> None:
        """Say why in an ``ERROR`` line, then close once it is sent."""
        if not self.closing:
            self.sendLine(f"ERROR :Closing link: {reason}")
            self.closing = True
            self._leave_all()
            self.link.close()

    def drop_connection(self) -> None:
        """Close now, discarding what is queued (idempotent)."""
        if self.closing:
            return
        self.closing = True
        self._leave_all()
        self.link.abort()

    def check_timeouts(self, now: float) -> bool:
        """Registration within ``connect_timeout``; after it, PING a silent client and
        drop it when ``ping_timeout`` passes without a line (``ping_interval``)."""
        if self.closing:
            return True
        config = self.server.config
        if not self.registered:
            if config.connect_timeout and now - self.opened_at >= config.connect_timeout:
                reason = f"no registration within {config.connect_timeout:g} s"
                self.server.connection_refused(self, "timeout", reason)
                self._close_link(reason)
            return self.closing
        for seat in list(self.seats.values()):
            seat.refresh_topic()
        if self._ping_sent is not None:
            if config.ping_timeout and now - self._ping_sent >= config.ping_timeout:
                reason = f"ping timeout ({config.ping_timeout:g} s)"
                self.server.connection_refused(self, "timeout", reason)
                self._close_link(reason)
        elif config.ping_interval and now - self.last_received >= config.ping_interval:
            self._ping_sent = now
            self.sendLine(f"PING :{SERVER_NAME}")
        return self.closing

    def stats(self) -> ConnectionStats:
        """A snapshot of this client's numbers now."""
        if not self.registered:
            role = "registering"
        elif self.seats:
            role = "chat " + ",".join(self.seats)
        else:
            role = f"irc {self.nick}"
        return ConnectionStats(
            conn_id=self.conn_id,
            peer=self.peer,
            protocol="irc",
            role=role,
            queued=self.link.queued(),
            bytes_sent=self.link.media_written,
            viewer=None,
            publishing=(),
        )

    # --- lines in and out ------------------------------------------------------------

    @override
    def dataReceived(self, data: bytes) -> None:
        """Split *data* into lines; refuse (417) and skip a line past the limit."""
        if self.closing:
            return
        self.last_received = self.server.seconds()
        self._ping_sent = None
        buffer = self._buffer + data
        start = 0
        while not self.closing:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line, start = buffer[start:end], end + 1
            if self._skipping:
                self._skipping = False  # the end of a line already refused
                continue
            self._line(line.rstrip(b"\r"))
        buffer = buffer[start:]
        limit = MAX_LINE_BYTES + (MAX_TAGS_BYTES if buffer.startswith(b"@") else 0)
        if len(buffer) > limit:
            if not self._skipping:
                self._too_long()
            self._skipping = True
            buffer = b""
        self._buffer = buffer

    def _too_long(self) -> None:
        self.numeric("417", text=f"Input line was too long (over {MAX_LINE_BYTES} bytes)")

    def _line(self, raw: bytes) -> None:
        """One line from the client, without its line end."""
        if raw.startswith(b"@"):
            tags, _, raw = raw.partition(b" ")
            if len(tags) > MAX_TAGS_BYTES:
                self._too_long()
                return
        if len(raw) + 2 > MAX_LINE_BYTES:
            self._too_long()
            return
        line = raw.decode("utf-8", "replace").strip(" ")
        if not line:
            return
        try:
            prefix, command, params = irc.parsemsg(line)
        except (ValueError, IndexError, irc.IRCBadMessage):
            return  # nothing we can answer: a prefix without a command
        self.handleCommand(command.upper(), prefix, params)

    @override
    def handleCommand(self, command: str, prefix: str, params: list[str]) -> None:
        if not self.registered and command not in _BEFORE_REGISTRATION:
            self.numeric("451", text="You have not registered")
            return
        method: Callable[[str, list[str]], None] | None = getattr(self, f"irc_{command}", None)
        if method is None:
            self.irc_unknown(prefix, command, params)
            return
        try:
            method(prefix, params)
        except Exception:
            _log.failure("IRC {command} from {peer} failed", command=command, peer=self.peer)

    @override
    def sendLine(self, line: str) -> None:
        if not self.closing:
            self.link.write(line.encode("utf-8") + b"\r\n")

    def numeric(self, code: str, *params: str, text: str) -> None:
        """Send numeric *code* to the client: its nick, *params*, then *text*."""
        self.sendCommand(code, (self.nick or "*", *params, ":" + text), SERVER_NAME)

    def server_notice(self, text: str) -> None:
        """Send the client a ``NOTICE`` from the server."""
        self.sendCommand("NOTICE", (self.nick or "*", ":" + text), SERVER_NAME)

    def deliver_chat(self, data: bytes) -> None:
        """Write one chat message's lines: never dropped, ``--max-queue`` applies."""
        if self.closing:
            return
        limits = self.server.policy.limits
        queued = self.link.queued()
        if limits.enabled and queued + len(data) > limits.max_queue:
            _log.warn(
                "disconnecting IRC client {peer}: {reason} (queued {queued} bytes)",
                peer=self.peer,
                reason=DisconnectReason.MAX_QUEUE,
                queued=queued,
            )
            self.server.viewer_disconnected(None, DisconnectReason.MAX_QUEUE)
            self.drop_connection()
            return
        self.link.write_media(data, queued)
        self.chat_delivered += 1

    # --- registration ----------------------------------------------------------------

    def irc_unknown(self, prefix: str, command: str, params: list[str]) -> None:
        self.numeric("421", command, text="Unknown command")

    def irc_CAP(self, prefix: str, params: list[str]) -> None:
        sub = params[0].upper() if params else ""
        target = self.nick or "*"
        if sub == "LS":
            self._negotiating = not self.registered
            self.sendCommand("CAP", (target, "LS", ":" + " ".join(CAPABILITIES)), SERVER_NAME)
        elif sub == "LIST":
            self.sendCommand(
                "CAP", (target, "LIST", ":" + " ".join(sorted(self.caps))), SERVER_NAME
            )
        elif sub == "REQ":
            self._negotiating = not self.registered
            wanted = params[1].split() if len(params) > 1 else []
            names = [w.lstrip("-") for w in wanted]
            answer = "ACK" if wanted and all(n in CAPABILITIES for n in names) else "NAK"
            if answer == "ACK":
                for word, name in zip(wanted, names, strict=True):
                    (self.caps.discard if word.startswith("-") else self.caps.add)(name)
            self.sendCommand("CAP", (target, answer, ":" + " ".join(wanted)), SERVER_NAME)
        elif sub == "END":
            self._negotiating = False
            self._maybe_register()
        else:
            self.numeric("410", sub or "*", text="Invalid CAP command")

    def irc_PASS(self, prefix: str, params: list[str]) -> None:
        pass  # no server password; a client configured with one still gets in

    def irc_NICK(self, prefix: str, params: list[str]) -> None:
        if not params or not params[0]:
            self.numeric("431", text="No nickname given")
            return
        nick = params[0]
        problem = nick_error(nick)
        if problem is not None:
            self.numeric("432", nick, text=f"Erroneous nickname: {problem}")
            return
        if nick == self.nick:
            return
        if not self.factory.claim_nick(self, nick):
            self.numeric("433", nick, text="Nickname is already in use")
            return
        old, self.nick = self.nick, nick
        if self.registered:
            self.sendCommand("NICK", (nick,), hostmask(old))
        else:
            self._maybe_register()

    def irc_USER(self, prefix: str, params: list[str]) -> None:
        if self.registered:
            self.numeric("462", text="You may not reregister")
            return
        if len(params) < 4 or not params[0]:
            self.numeric("461", "USER", text="Not enough parameters")
            return
        self.username = params[0]
        self._maybe_register()

    def _maybe_register(self) -> None:
        if self.registered or self._negotiating or not self.nick or not self.username:
            return
        self.registered = True
        self._uncount_unregistered()
        nick = self.nick
        self.numeric("001", text=f"Welcome to the {SERVER_NAME} chat, {hostmask(nick)}")
        self.numeric("002", text=f"Your host is {SERVER_NAME}, running streamserver")
        self.numeric("003", text="This server's channels are its streams' chat rooms")
        self.sendCommand("004", (nick, SERVER_NAME, "streamserver", "i", "nt"), SERVER_NAME)
        self.numeric(
            "005",
            "CHANTYPES=#",
            "CASEMAPPING=ascii",
            f"NICKLEN={MAX_NICK_LENGTH}",
            f"CHANLIMIT=#:{MAX_CHAT_ROOMS}",
            "CHANMODES=,,,nt",
            "PREFIX=()",
            f"NETWORK={SERVER_NAME}",
            text="are supported by this server",
        )
        self.numeric("422", text="MOTD File is missing")
        _log.info("IRC client {peer} registered as {nick}", peer=self.peer, nick=nick)

    def irc_PING(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("409", text="No origin specified")
            return
        self.sendCommand("PONG", (SERVER_NAME, ":" + params[0]), SERVER_NAME)

    def irc_PONG(self, prefix: str, params: list[str]) -> None:
        pass  # any line resets the ping timer

    def irc_QUIT(self, prefix: str, params: list[str]) -> None:
        self._close_link("Quit: " + (params[0] if params else "bye"))

    # --- channels --------------------------------------------------------------------

    def _channel_seat(self, command: str, params: list[str]) -> IrcSeat | None:
        """The seat of the channel *params* name (442 if not joined, 461 if none named)."""
        if not params:
            self.numeric("461", command, text="Not enough parameters")
            return None
        seat = self.seats.get(params[0])
        if seat is None:
            self.numeric("442", params[0], text="You're not on that channel")
        return seat

    def irc_JOIN(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("461", "JOIN", text="Not enough parameters")
            return
        if params[0] == "0":
            for channel in list(self.seats):
                self._part(channel, "left all channels")
            return
        keys = params[1].split(",") if len(params) > 1 else []
        for index, channel in enumerate(params[0].split(",")):
            self._join(channel, keys[index] if index < len(keys) else "")

    def _join(self, channel: str, key: str) -> None:
        if channel in self.seats or channel in self._joining:
            return
        target = channel_stream(channel)
        if target is None:
            self.numeric("403", channel, text="No such channel: channels are #APP/NAME")
            return
        if len(self.seats) + len(self._joining) >= MAX_CHAT_ROOMS:
            self.numeric("405", channel, text=f"You may join at most {MAX_CHAT_ROOMS} channels")
            return
        app, name = target
        args = dict(parse_qsl(key, keep_blank_values=True)) if "=" in key else {}
        if key and not args:
            args = {"token": key}
        access = AccessRequest(
            "play",
            app,
            name,
            args,
            self.link.peer,
            self.conn_id,
            {"tcUrl": f"irc://{SERVER_NAME}/{channel}", "protocol": "irc", "nick": self.nick},
        )
        pending = authorize(self.server.authorizer_for(app), access)
        self._joining[channel] = pending
        pending.addCallback(self._join_allowed, channel, app, name)
        pending.addErrback(self._join_refused, channel)

    def _join_refused(self, failure: Failure, channel: str) -> None:
        self._joining.pop(channel, None)
        if self.closing or failure.check(defer.CancelledError):
            return
        error = failure.value
        if isinstance(error, UnauthorizedError):
            reason = error.description
        else:
            _log.failure("joining IRC client {peer} failed", failure, peer=self.peer)
            reason = "refused"
        self.numeric("474", channel, text=f"Cannot join channel (Chat.Unauthorized: {reason})")

    def _join_allowed(self, _: None, channel: str, app: str, name: str) -> None:
        self._joining.pop(channel, None)
        if self.closing:
            return
        try:
            stream = self.server.open_stream(app, name, ChatRejectedError.code)
        except StreamError as error:
            self.numeric(
                "471", channel, text=f"Cannot join channel (Chat.Rejected: {error.description})"
            )
            return
        seat = IrcSeat(self, stream)
        self.seats[channel] = seat
        history = stream.chat.join(seat)
        self.sendCommand("JOIN", (channel,), hostmask(self.nick))
        self.numeric("332", channel, text=seat.topic)
        self._names(seat)
        tags = "server-time" in self.caps
        for message in history:
            self.deliver_chat(chat_lines(message, channel, tags=tags))
        _log.info("IRC client {peer} joined {channel}", peer=self.peer, channel=channel)

    def _names(self, seat: IrcSeat) -> None:
        """353 lines naming everyone in *seat*'s room, then 366."""
        nicks: dict[str, None] = {}
        for participant in seat.stream.chat.participants:
            nick = getattr(participant, "nick", "")
            nicks[display_nick(nick)] = None
        line: list[str] = []
        for nick in nicks:
            if line and sum(len(n) + 1 for n in line) + len(nick) > _NAMES_BYTES:
                self.numeric("353", "=", seat.channel, text=" ".join(line))
                line = []
            line.append(nick)
        if line:
            self.numeric("353", "=", seat.channel, text=" ".join(line))
        self.numeric("366", seat.channel, text="End of /NAMES list")

    def irc_PART(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("461", "PART", text="Not enough parameters")
            return
        for channel in params[0].split(","):
            if channel in self.seats:
                self._part(channel, params[1] if len(params) > 1 else "")
            else:
                self.numeric("442", channel, text="You're not on that channel")

    def _part(self, channel: str, reason: str) -> None:
        seat = self.seats.pop(channel)
        self.sendCommand("PART", (channel, ":" + reason), hostmask(self.nick))
        self._leave(seat)

    def _leave(self, seat: IrcSeat) -> None:
        stream = seat.stream
        stream.chat.leave(seat)
        self.server.release_stream(stream)

    def _leave_all(self) -> None:
        """Leave every room and drop pending joins (the connection is going)."""
        joining, self._joining = self._joining, {}
        for pending in joining.values():
            pending.cancel()
        seats, self.seats = self.seats, {}
        for seat in seats.values():
            self._leave(seat)

    def irc_NAMES(self, prefix: str, params: list[str]) -> None:
        channels = params[0].split(",") if params and params[0] else []
        for channel in channels:
            seat = self.seats.get(channel)
            if seat is not None:
                self._names(seat)
            else:
                self.numeric("366", channel, text="End of /NAMES list")
        if not channels:
            self.numeric("366", "*", text="End of /NAMES list")

    def irc_TOPIC(self, prefix: str, params: list[str]) -> None:
        seat = self._channel_seat("TOPIC", params)
        if seat is None:
            return
        if len(params) > 1:
            self.numeric("482", seat.channel, text="The topic is the stream's title and status")
            return
        self.numeric("332", seat.channel, text=seat.topic)

    def irc_MODE(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("461", "MODE", text="Not enough parameters")
            return
        target = params[0]
        if not target.startswith("#"):
            if target.casefold() != self.nick.casefold():
                self.numeric("502", text="Can't change mode for other users")
            else:
                self.sendCommand(
                    "221", (self.nick, "+"), SERVER_NAME
                )  # no user modes; the request is ignored
            return
        seat = self.seats.get(target)
        if seat is None:
            self.numeric("442", target, text="You're not on that channel")
        elif len(params) == 1:
            self.sendCommand("324", (self.nick, target, "+nt"), SERVER_NAME)
        elif params[1].lstrip("+") == "b":
            self.numeric("368", target, text="End of channel ban list")
        else:
            self.numeric("482", target, text="Moderation is the server's (mute, kick)")

    def irc_WHO(self, prefix: str, params: list[str]) -> None:
        mask = params[0] if params else "*"
        seat = self.seats.get(mask)
        if seat is not None:
            shown: dict[str, None] = {}
            for participant in seat.stream.chat.participants:
                shown[display_nick(getattr(participant, "nick", ""))] = None
            for nick in shown:
                self.numeric(
                    "352", mask, "chat", SERVER_NAME, SERVER_NAME, nick, "H", text=f"0 {nick}"
                )
        self.numeric("315", mask, text="End of /WHO list")

    def irc_LIST(self, prefix: str, params: list[str]) -> None:
        self.numeric("321", "Channel", text="Users  Name")
        for stream in self.server.streams():
            count = str(len(stream.chat.participants))
            channel = channel_name(stream.app, stream.name)
            if channel_stream(channel) is not None:
                self.numeric("322", channel, count, text=stream_topic(stream))
        self.numeric("323", text="End of /LIST")

    # --- users -------------------------------------------------------------------------

    def irc_USERHOST(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("461", "USERHOST", text="Not enough parameters")
            return
        held = self.factory.nicks
        replies = [
            f"{held[n.casefold()].nick}=+{hostmask(held[n.casefold()].nick).partition('!')[2]}"
            for n in params[:5]
            if n.casefold() in held
        ]
        self.numeric("302", text=" ".join(replies))

    def irc_ISON(self, prefix: str, params: list[str]) -> None:
        held = self.factory.nicks
        words = " ".join(params).split()
        self.numeric(
            "303", text=" ".join(held[w.casefold()].nick for w in words if w.casefold() in held)
        )

    def irc_WHOIS(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("431", text="No nickname given")
            return
        nick = params[-1]
        holder = self.factory.nicks.get(nick.casefold())
        if holder is None or not holder.registered:
            self.numeric("401", nick, text="No such nick (only IRC clients are known by nick)")
        else:
            self.numeric("311", holder.nick, "chat", SERVER_NAME, "*", text=holder.nick)
            if holder.seats:
                self.numeric("319", holder.nick, text=" ".join(holder.seats))
            self.numeric("312", holder.nick, SERVER_NAME, text="streamserver")
        self.numeric("318", nick, text="End of /WHOIS list")

    # --- messages --------------------------------------------------------------------

    def irc_PRIVMSG(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.numeric("411", text="No recipient given (PRIVMSG)")
            return
        if len(params) < 2:
            self.numeric("412", text="No text to send")
            return
        for target in params[0].split(","):
            self._say(target, params[1])

    def _say(self, target: str, text: str) -> None:
        seat = self.seats.get(target)
        if seat is None:
            if target.startswith("#"):
                self.numeric("404", target, text="Cannot send to channel (not joined)")
            else:
                self.numeric("401", target, text="No such nick: only channels are served")
            return
        if text.startswith("\x01"):
            self.server_notice("CTCP (and /me) is not relayed to the room")
            return
        stream = seat.stream
        now = self.server.seconds()
        config = self.server.settings_for(stream.app)
        try:
            accepted = accept_message(
                stream.chat,
                self.nick,
                text,
                max_length=config.chat_max_length,
                rate=self._chat_rate,
                now=now,
            )
        except ChatError as error:
            self.server_notice(f"{error.code}: {error.description}")
            return
        seat.own_message = True
        try:
            stream.post_chat(self.nick, accepted, int(now * 1000), sender=seat)
        finally:
            seat.own_message = False
        self.chat_sent += 1

    def irc_NOTICE(self, prefix: str, params: list[str]) -> None:
        pass  # notices are never answered, and not relayed (CTCP replies use them)


class IrcFactory(ServerFactory):
    """Builds :class:`IrcConnection`\\ s for the server's factory *server*.

    :ivar server: the :class:`~streamserver.factory.RTMPServerFactory`.
    :ivar nicks: the connections holding a nick, by casefolded nick.
    :ivar unregistered: connections not registered yet.
    """

    def __init__(self, server: RTMPServerFactory) -> None:
        self.server = server
        self.nicks: dict[str, IrcConnection] = {}
        self.unregistered = 0

    @override
    def buildProtocol(self, addr: Any) -> IrcConnection:  # type: ignore[override]
        connection = IrcConnection()
        connection.factory = self
        connection.conn_id = self.server.next_conn_id()
        return connection

    @override
    def startFactory(self) -> None:
        self.server.events.add(self)

    @override
    def stopFactory(self) -> None:
        self.server.events.remove(self)

    def claim_nick(self, connection: IrcConnection, nick: str) -> bool:
        """Give *nick* to *connection* unless another IRC connection holds it (casefolded)."""
        key = nick.casefold()
        holder = self.nicks.get(key)
        if holder is not None and holder is not connection:
            return False
        self.release_nick(connection)
        self.nicks[key] = connection
        return True

    def release_nick(self, connection: IrcConnection) -> None:
        """Free *connection*'s nick."""
        key = connection.nick.casefold()
        if self.nicks.get(key) is connection:
            del self.nicks[key]

    # --- SessionObserver: the topic follows the publisher ------------------------------

    def session_started(self, event: SessionEvent) -> None:
        if event.role == PUBLISH:
            _refresh_topics(event.stream)

    def session_ended(self, event: SessionEvent, ended_at: float) -> None:
        if event.role == PUBLISH:
            _refresh_topics(event.stream)


def _refresh_topics(stream: Stream) -> None:
    for participant in tuple(stream.chat.participants):
        if isinstance(participant, IrcSeat):
            participant.refresh_topic()
