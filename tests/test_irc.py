"""The IRC gateway over FakeTransport (a StringTransport) and task.Clock: every command
and numeric, every refusal, nick collisions, the line limit, the registration timeout,
and RTMP <-> IRC messages through FakePeer."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.words.protocols import irc

from streamserver import tokens
from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.irc import IrcFactory, IrcSeat
from streamserver.irc.server import MAX_UNREGISTERED
from streamserver.protocol.chat import MAX_CHAT_ROOMS
from streamserver.testing import FakePeer, FakeTransport

# --- helpers ---------------------------------------------------------------------------


class Client:
    """An IRC client's end of an :class:`~streamserver.irc.IrcConnection`."""

    def __init__(self, gateway: IrcFactory, *, auto_drain: bool = True) -> None:
        self.transport = FakeTransport(auto_drain=auto_drain)
        self.protocol: Any = gateway.buildProtocol(self.transport.getPeer())
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self._read = 0

    def send(self, *lines: str) -> None:
        self.send_bytes(b"".join(line.encode() + b"\r\n" for line in lines))

    def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def raw(self) -> list[str]:
        """The lines received since the last read, as sent (tags included)."""
        data = self.transport.value()
        new, self._read = data[self._read :], len(data)
        assert new.endswith(b"\r\n") or not new
        return [line.decode() for line in new.split(b"\r\n")[:-1]]

    def lines(self) -> list[tuple[str, str, list[str]]]:
        """The lines received since the last read as (prefix, command, params), tags dropped."""
        return [
            irc.parsemsg(line.partition(" ")[2] if line[0] == "@" else line) for line in self.raw()
        ]

    def commands(self) -> list[str]:
        return [command for _, command, _ in self.lines()]

    @property
    def closed(self) -> bool:
        return bool(self.transport.lost)


@pytest.fixture
def gateway(factory: RTMPServerFactory) -> IrcFactory:
    gateway = IrcFactory(factory)
    gateway.startFactory()
    return gateway


def _registered(gateway: IrcFactory, nick: str = "ann", *, caps: str = "") -> Client:
    client = Client(gateway)
    if caps:
        client.send("CAP LS 302", f"CAP REQ :{caps}")
    client.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} the tester")
    if caps:
        client.send("CAP END")
    assert "001" in client.commands()
    return client


def _joined(
    gateway: IrcFactory, nick: str = "ann", channel: str = "#live/cam", **kw: Any
) -> Client:
    client = _registered(gateway, nick, **kw)
    client.send(f"JOIN {channel}")
    assert "JOIN" in client.commands()
    return client


def _rtmp(factory: RTMPServerFactory, nick: str, name: str = "cam") -> tuple[FakePeer, int]:
    peer = FakePeer(factory)
    assert peer.connect("live", nick=nick).name == "_result"
    sid = peer.create_stream()
    reply = peer.result_of(peer.call("joinChat", None, name, stream_id=sid))
    assert reply.args[0]["code"] == "Chat.Joined"
    return peer, sid


def _rtmp_say(peer: FakePeer, sid: int, text: str) -> None:
    reply = peer.result_of(peer.call("sendChatMessage", None, text, stream_id=sid))
    assert reply.name == "_result", reply.args


def _privmsgs(client: Client) -> list[tuple[str, str, str]]:
    """(nick, channel, text) of every PRIVMSG received since the last read."""
    return [
        (prefix.partition("!")[0], params[0], params[1])
        for prefix, command, params in client.lines()
        if command == "PRIVMSG"
    ]


def _notices(client: Client) -> list[str]:
    return [params[1] for _, command, params in client.lines() if command == "NOTICE"]


# --- registration ----------------------------------------------------------------------


def test_registration_answers_001_to_005_and_422(gateway: IrcFactory) -> None:
    """NICK and USER register the client: welcome, host, created, myinfo, isupport, no MOTD."""
    client = Client(gateway)
    client.send("NICK ann")
    assert client.commands() == []
    client.send("USER ann 0 * :Ann")
    lines = client.lines()
    assert [command for _, command, _ in lines] == ["001", "002", "003", "004", "005", "422"]
    assert all(prefix == "streamserver" and params[0] == "ann" for prefix, _, params in lines)
    assert "ann!chat@streamserver" in lines[0][2][-1]
    isupport = lines[4][2]
    assert {
        "CHANTYPES=#",
        "CASEMAPPING=ascii",
        "NICKLEN=32",
        f"CHANLIMIT=#:{MAX_CHAT_ROOMS}",
    } <= set(isupport)
    assert client.protocol.registered


def test_commands_before_registration_get_451(gateway: IrcFactory) -> None:
    """JOIN, PRIVMSG and the rest wait for registration; PING does not."""
    client = Client(gateway)
    client.send("JOIN #live/cam", "PRIVMSG #live/cam :hi", "PING :x")
    assert client.commands() == ["451", "451", "PONG"]


def test_cap_negotiation_holds_registration_and_offers_server_time(gateway: IrcFactory) -> None:
    """CAP LS lists server-time; REQ of it is ACKed, of anything else NAKed; END registers."""
    client = Client(gateway)
    client.send("CAP LS 302", "NICK ann", "USER ann 0 * :Ann")
    lines = client.lines()
    assert [(c, p[1:]) for _, c, p in lines] == [("CAP", ["LS", "server-time"])]
    client.send("CAP REQ :sasl", "CAP REQ :server-time", "CAP LIST")
    assert [(c, p[1:]) for _, c, p in client.lines()] == [
        ("CAP", ["NAK", "sasl"]),
        ("CAP", ["ACK", "server-time"]),
        ("CAP", ["LIST", "server-time"]),
    ]
    client.send("CAP END")
    assert client.commands()[0] == "001"
    assert client.protocol.caps == {"server-time"}


@pytest.mark.parametrize(
    ("line", "numeric"),
    [
        ("NICK", "431"),
        ("NICK 9lives", "432"),
        ("NICK ann@home", "432"),
        ("NICK café", "432"),
        ("NICK " + "a" * 33, "432"),
        ("NICK guest-12", "432"),
        ("USER ann 0", "461"),
        ("PING", "409"),
    ],
)
def test_nick_and_parameter_errors(gateway: IrcFactory, line: str, numeric: str) -> None:
    """Missing or erroneous nicks (IRC's characters, 32 at most, no guest-N) and parameters."""
    client = Client(gateway)
    client.send(line)
    assert client.commands() == [numeric]


def test_a_nick_another_irc_client_holds_gets_433_casefolded(gateway: IrcFactory) -> None:
    """Nicks are unique among IRC clients without regard to case; freed when the holder quits."""
    first = _registered(gateway, "Ann")
    second = Client(gateway)
    second.send("NICK aNN")
    assert second.commands() == ["433"]
    first.send("QUIT :bye")
    assert first.closed
    second.send("NICK aNN", "USER a 0 * :a")
    assert "001" in second.commands()


def test_nick_change_after_registration(gateway: IrcFactory) -> None:
    """NICK after registration is echoed from the old mask and frees the old nick."""
    client = _registered(gateway, "ann")
    client.send("NICK anna")
    assert client.lines() == [("ann!chat@streamserver", "NICK", ["anna"])]
    other = _registered(gateway, "ann")
    assert other.protocol.nick == "ann"


def test_ping_unknown_quit(gateway: IrcFactory) -> None:
    """PING gets PONG with its token; an unknown command 421; QUIT an ERROR and the close."""
    client = _registered(gateway)
    client.send("PING :abc", "FROB x", "USER a 0 * :a")
    assert [(c, p) for _, c, p in client.lines()] == [
        ("PONG", ["streamserver", "abc"]),
        ("421", ["ann", "FROB", "Unknown command"]),
        ("462", ["ann", "You may not reregister"]),
    ]
    client.send("QUIT :done")
    assert client.raw() == ["ERROR :Closing link: Quit: done"]
    assert client.closed


def test_registration_must_finish_within_connect_timeout(
    factory: RTMPServerFactory, gateway: IrcFactory, clock: task.Clock
) -> None:
    """A client that never registers is closed by the watchdog after connect_timeout."""
    client = Client(gateway)
    client.send("NICK ann")
    clock.advance(factory.config.connect_timeout - 0.5)
    factory.check_viewers()
    assert not client.closed
    clock.advance(0.5)
    factory.check_viewers()
    assert client.closed
    assert client.raw()[-1].startswith("ERROR :Closing link: no registration within 10 s")
    assert factory.refusals["timeout"] == 1
    assert gateway.unregistered == 0 and not gateway.nicks


def test_unregistered_connections_are_capped(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """Past MAX_UNREGISTERED registering clients, the next is closed at once."""
    waiting = [Client(gateway) for _ in range(MAX_UNREGISTERED)]
    assert not any(client.closed for client in waiting)
    extra = Client(gateway)
    assert extra.closed and "registering already" in extra.raw()[0]
    waiting[0].send("NICK ann", "USER ann 0 * :a")
    assert not Client(gateway).closed


def test_connection_limits_stats_kick_and_shutdown(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """An IRC client is a factory connection: limited, listed as irc, kicked, shut down."""
    client = _joined(gateway)
    [stats] = factory.connection_stats()
    assert (stats.protocol, stats.role, stats.conn_id) == (
        "irc",
        "chat #live/cam",
        client.protocol.conn_id,
    )
    factory.config.max_connections = 1
    refused = Client(gateway)
    assert refused.closed and "connection limit" in refused.raw()[0]
    assert factory.kick(client.protocol.conn_id)
    assert client.closed and not factory.connections
    assert factory.find_stream("live", "cam") is None  # the room emptied, the stream went
    factory.config.max_connections = 10
    other = _registered(gateway, "bob")
    factory.shutdown()
    assert other.closed


def test_a_silent_client_is_pinged_then_dropped(
    factory: RTMPServerFactory, gateway: IrcFactory, clock: task.Clock
) -> None:
    """After ping_interval without a line, PING; after ping_timeout more, the close."""
    client = _registered(gateway)
    clock.advance(factory.config.ping_interval)
    factory.check_viewers()
    assert client.raw() == ["PING :streamserver"]
    client.send("PONG :streamserver")
    clock.advance(factory.config.ping_interval)
    factory.check_viewers()
    assert client.raw() == ["PING :streamserver"]
    clock.advance(factory.config.ping_timeout)
    factory.check_viewers()
    assert client.closed and "ping timeout" in client.raw()[-1]


# --- the line limit and encoding ---------------------------------------------------------


def test_a_line_over_512_bytes_is_refused_and_the_next_one_read(gateway: IrcFactory) -> None:
    """510 bytes + CR LF pass, 511 get 417; the connection goes on."""
    client = _registered(gateway)
    client.send("PING :" + "x" * (510 - 6))
    assert client.commands() == ["PONG"]
    client.send("PING :" + "x" * (511 - 6), "PING :ok")
    assert [(c, p[-1]) for _, c, p in client.lines()] == [
        ("417", "Input line was too long (over 512 bytes)"),
        ("PONG", "ok"),
    ]


def test_an_unterminated_long_line_is_not_buffered(gateway: IrcFactory) -> None:
    """Bytes past the limit without a line end are dropped (one 417) until the next LF."""
    client = _registered(gateway)
    for _ in range(100):
        client.send_bytes(b"PRIVMSG #live/cam :" + b"y" * 1000)
        assert len(client.protocol._buffer) <= 512
    client.send_bytes(b"yyy\r\nPING :after\r\n")
    assert [c for c in client.commands()] == ["417", "PONG"]


def test_invalid_utf8_is_replaced(factory: RTMPServerFactory, gateway: IrcFactory) -> None:
    """Bytes that are no UTF-8 become U+FFFD; nothing breaks."""
    client = _joined(gateway)
    client.send_bytes(b"PRIVMSG #live/cam :caf\xe9 \xff ok\r\n")
    [message] = factory.find_stream("live", "cam").chat.history  # type: ignore[union-attr]
    assert message.text == "caf\ufffd \ufffd ok"


# --- channels ---------------------------------------------------------------------------


def test_join_answers_echo_topic_names_then_history(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """JOIN: the echo, 332 with the title and status, 353/366 naming everyone, the history."""
    peer, sid = _rtmp(factory, "bob smith")
    _rtmp_say(peer, sid, "first")
    _rtmp_say(peer, sid, "second")
    client = _registered(gateway)
    client.send("JOIN #live/cam")
    lines = client.lines()
    assert [c for _, c, _ in lines] == ["JOIN", "332", "353", "366", "PRIVMSG", "PRIVMSG"]
    assert lines[0] == ("ann!chat@streamserver", "JOIN", ["#live/cam"])
    assert lines[1][2] == ["ann", "#live/cam", "cam | waiting for the publisher"]
    assert lines[2][2] == ["ann", "=", "#live/cam", "bob_smith ann"]
    assert [(p.partition("!")[0], a[1]) for p, c, a in lines[4:]] == [
        ("bob_smith", "first"),
        ("bob_smith", "second"),
    ]


def test_history_carries_server_time_when_asked(
    factory: RTMPServerFactory, gateway: IrcFactory, clock: task.Clock
) -> None:
    """With server-time, history and live lines carry @time= of the message's acceptance."""
    clock.advance(1_767_225_600.25)
    peer, sid = _rtmp(factory, "bob")
    _rtmp_say(peer, sid, "old")
    client = _joined(gateway, caps="server-time")
    client.raw()
    plain = _joined(gateway, "cid")
    plain.raw()
    _rtmp_say(peer, sid, "new")
    assert client.raw() == [
        "@time=2026-01-01T00:00:00.250Z :bob!chat@streamserver PRIVMSG #live/cam :new"
    ]
    assert plain.raw() == [":bob!chat@streamserver PRIVMSG #live/cam :new"]
    late = _registered(gateway, "dee", caps="server-time")
    late.send("JOIN #live/cam")
    assert late.raw()[-2].startswith(
        "@time=2026-01-01T00:00:00.250Z :bob!chat@streamserver PRIVMSG"
    )


@pytest.mark.parametrize(
    "channel", ["#cam", "#live/", "#/cam", "live/cam", "#live/./cam", "#live/ca\x07m"]
)
def test_a_channel_naming_no_stream_gets_403(gateway: IrcFactory, channel: str) -> None:
    client = _registered(gateway)
    client.send(f"JOIN {channel}")
    assert client.commands() == ["403"]


def test_multi_segment_applications(factory: RTMPServerFactory, gateway: IrcFactory) -> None:
    """#live/eu/cam is application live/eu, stream cam."""
    client = _joined(gateway, channel="#live/eu/cam")
    assert factory.find_stream("live/eu", "cam") is not None
    assert client.protocol.seats["#live/eu/cam"].stream.name == "cam"


def test_more_than_16_channels_get_405(gateway: IrcFactory) -> None:
    client = _registered(gateway)
    client.send("JOIN " + ",".join(f"#live/s{i}" for i in range(MAX_CHAT_ROOMS + 1)))
    commands = client.commands()
    assert commands.count("JOIN") == MAX_CHAT_ROOMS and commands[-1] == "405"


def test_join_is_authorized_like_a_play_with_the_key_as_token(
    factory: RTMPServerFactory, clock: task.Clock
) -> None:
    """With a play token secret, JOIN needs the signed query (or the token) as its key: 474."""
    clock.advance(1000)
    config = ServerConfig()
    config.access = type(config.access)(play_token_secret="s3cret")
    secured = RTMPServerFactory(config, reactor=clock)
    gateway = IrcFactory(secured)
    client = _registered(gateway)
    client.send("JOIN #live/cam", "JOIN #live/cam wrong")
    lines = client.lines()
    assert [c for _, c, _ in lines] == ["474", "474"]
    assert "Chat.Unauthorized: a signed URL (expires and token) is required" in lines[0][2][-1]
    key = tokens.signed_query("s3cret", "play", "live", "cam", 2000)
    client.send(f"JOIN #live/cam {key}")
    assert client.commands()[0] == "JOIN"


def test_past_the_stream_limit_join_gets_471(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    factory.config.max_streams = 1
    client = _joined(gateway)
    client.send("JOIN #live/other")
    assert client.commands() == ["471"]


def test_part_names_topic_mode_who_list(factory: RTMPServerFactory, gateway: IrcFactory) -> None:
    """The channel commands irssi and weechat send, answered minimally."""
    _rtmp(factory, "bob")
    client = _joined(gateway)
    client.raw()
    client.send("NAMES #live/cam", "TOPIC #live/cam", "TOPIC #live/cam :new", "MODE #live/cam")
    assert [(c, p[1:]) for _, c, p in client.lines()] == [
        ("353", ["=", "#live/cam", "bob ann"]),
        ("366", ["#live/cam", "End of /NAMES list"]),
        ("332", ["#live/cam", "cam | waiting for the publisher"]),
        ("482", ["#live/cam", "The topic is the stream's title and status"]),
        ("324", ["#live/cam", "+nt"]),
    ]
    client.send("MODE #live/cam +b", "MODE #live/cam +o bob", "MODE ann +i", "WHO #live/cam")
    assert [c for c in client.commands()] == ["368", "482", "221", "352", "352", "315"]
    client.send("LIST")
    assert [(c, p[1:]) for _, c, p in client.lines()][1] == (
        "322",
        ["#live/cam", "2", "cam | waiting for the publisher"],
    )
    client.send("PART #live/cam :bye", "PART #live/cam", "TOPIC #live/cam")
    assert [c for c in client.commands()] == ["PART", "442", "442"]
    assert len(factory.find_stream("live", "cam").chat.participants) == 1  # type: ignore[union-attr]


def test_join_0_parts_every_channel(factory: RTMPServerFactory, gateway: IrcFactory) -> None:
    client = _joined(gateway)
    client.send("JOIN #live/two")
    client.raw()
    client.send("JOIN 0")
    assert client.commands() == ["PART", "PART"]
    assert not factory.streams()


# --- messages ---------------------------------------------------------------------------


def test_messages_flow_between_rtmp_and_irc_without_echo(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """IRC -> RTMP and other IRC clients (not the sender); RTMP -> IRC; one room's ids."""
    peer, sid = _rtmp(factory, "bob")
    ann = _joined(gateway, "ann")
    cid = _joined(gateway, "cid")
    ann.raw(), cid.raw()
    ann.send("PRIVMSG #live/cam :hello from irc")
    assert ann.raw() == []
    assert _privmsgs(cid) == [("ann", "#live/cam", "hello from irc")]
    assert [(f["id"], f["nick"], f["text"]) for _, f in peer.chat()] == [
        (1.0, "ann", "hello from irc")
    ]
    _rtmp_say(peer, sid, "hi irc")
    assert _privmsgs(ann) == [("bob", "#live/cam", "hi irc")]
    assert _privmsgs(cid) == [("bob", "#live/cam", "hi irc")]
    other = FakePeer(factory)
    other.connect("live", nick="eve")
    other_sid = other.create_stream()
    other.result_of(other.call("joinChat", None, "elsewhere", stream_id=other_sid))
    ann.send("PRIVMSG #live/cam :only here")
    assert other.chat() == []


def test_irc_participants_share_one_encoding(
    factory: RTMPServerFactory, gateway: IrcFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broadcast encodes the PRIVMSG line once for every IRC client of the room."""
    clients = [_joined(gateway, nick) for nick in ("ann", "bob", "cid")]
    calls: list[IrcSeat] = []
    original = IrcSeat.encode_chat

    def counting(self: IrcSeat, message: Any, timestamp: int) -> bytes:
        calls.append(self)
        return original(self, message, timestamp)

    monkeypatch.setattr(IrcSeat, "encode_chat", counting)
    peer, sid = _rtmp(factory, "dee")
    _rtmp_say(peer, sid, "to all")
    assert len(calls) == 1
    assert all(_privmsgs(c)[-1] == ("dee", "#live/cam", "to all") for c in clients)


@pytest.mark.parametrize(
    ("setup", "text", "code"),
    [
        ("", "\x02\x03", "Chat.Empty"),
        ("short", "x" * 51, "Chat.TooLong"),
        ("mute", "hello", "Chat.Muted"),
    ],
)
def test_refusals_come_back_as_notices(
    factory: RTMPServerFactory, gateway: IrcFactory, setup: str, text: str, code: str
) -> None:
    """Each refusal of the chat rules is a NOTICE 'CODE: description'; nothing is posted.

    (With the default 500, no IRC line is long enough for Chat.TooLong: the line limit
    leaves 491 bytes of text; 50 makes the check reachable.)"""
    client = _joined(gateway, "Ann")
    client.raw()
    if setup == "mute":
        assert factory.mute("live/cam", "ann")
    factory.config.chat_max_length = 50 if setup == "short" else 500
    client.send(f"PRIVMSG #live/cam :{text}")
    [notice] = _notices(client)
    assert notice.startswith(f"{code}: ")
    assert not factory.find_stream("live", "cam").chat.history  # type: ignore[union-attr]


def test_the_rate_limit_is_the_connections(
    factory: RTMPServerFactory, gateway: IrcFactory, clock: task.Clock
) -> None:
    """5 messages per 10 s per connection, over every channel; then Chat.RateLimited."""
    client = _joined(gateway)
    client.send("JOIN #live/two")
    client.raw()
    for i in range(5):
        client.send(f"PRIVMSG #live/{'cam' if i % 2 else 'two'} :m{i}")
    client.send("PRIVMSG #live/cam :too many")
    assert [n.partition(":")[0] for n in _notices(client)] == ["Chat.RateLimited"]
    clock.advance(10)
    client.send("PRIVMSG #live/cam :later")
    assert _notices(client) == []


def test_length_is_counted_in_characters(factory: RTMPServerFactory, gateway: IrcFactory) -> None:
    """100 two-byte characters pass a 100-character limit; 101 do not."""
    factory.config.chat_max_length = 100
    client = _joined(gateway)
    client.raw()
    client.send("PRIVMSG #live/cam :" + "é" * 100, "PRIVMSG #live/cam :" + "é" * 101)
    assert [n.partition(":")[0] for n in _notices(client)] == ["Chat.TooLong"]
    [message] = factory.find_stream("live", "cam").chat.history  # type: ignore[union-attr]
    assert message.text == "é" * 100


def test_a_long_rtmp_message_is_cut_into_lines_within_512_bytes(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """500 three-byte characters from RTMP reach IRC as several lines, none over 512 bytes."""
    client = _joined(gateway)
    client.raw()
    peer, sid = _rtmp(factory, "bob")
    _rtmp_say(peer, sid, "€" * 500)
    raw = client.raw()
    assert len(raw) > 1 and all(len(line.encode()) + 2 <= 512 for line in raw)
    assert "".join(irc.parsemsg(line)[2][1] for line in raw) == "€" * 500


def test_not_in_the_channel_404_and_other_targets(gateway: IrcFactory) -> None:
    client = _joined(gateway)
    client.raw()
    client.send(
        "PRIVMSG #live/other :x",
        "PRIVMSG bob :x",
        "PRIVMSG",
        "PRIVMSG #live/cam",
        "PRIVMSG #live/cam :\x01ACTION waves\x01",
        "NOTICE #live/cam :x",
    )
    assert client.commands() == ["404", "401", "411", "412", "NOTICE"]


def test_past_max_queue_an_irc_client_is_disconnected(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """Chat is never dropped: a client that would queue past --max-queue is closed."""
    slow = Client(gateway, auto_drain=False)
    slow.send("NICK slow", "USER slow 0 * :s", "JOIN #live/cam")
    factory.set_policy(drop_low=100, drop_high=200, max_queue=slow.transport.queued + 300)
    peer, sid = _rtmp(factory, "bob")
    _rtmp_say(peer, sid, "a" * 100)
    assert not slow.closed
    _rtmp_say(peer, sid, "b" * 400)
    assert slow.closed and slow.transport.aborted
    assert factory.disconnects["max-queue"] == 1


# --- the topic follows the stream ----------------------------------------------------------


def _metadata(sid: int, title: str) -> Message:
    payload = amf0.encode(
        "@setDataFrame", "onMetaData", amf0.ECMAArray({"title": title, "width": 320.0})
    )
    return Message(MessageType.DATA_AMF0, sid, 0, payload)


def test_the_topic_follows_publish_title_and_unpublish(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """TOPIC when the stream is published, when its metadata brings a title, when it ends."""
    client = _joined(gateway)
    client.raw()
    publisher = FakePeer(factory)
    publisher.connect("live")
    sid = publisher.create_stream()
    publisher.publish("cam", sid)
    assert client.lines() == [("streamserver", "TOPIC", ["#live/cam", "cam | live"])]
    publisher.send(_metadata(sid, "Evening show\n"))
    factory.check_viewers()
    assert client.lines() == [("streamserver", "TOPIC", ["#live/cam", "Evening show | live"])]
    factory.check_viewers()
    assert client.lines() == []
    publisher.call("deleteStream", None, float(sid))
    topics = [p[1] for _, c, p in client.lines() if c == "TOPIC"]
    assert topics and topics[-1].endswith("| waiting for the publisher")


def test_userhost_ison_and_whois_know_irc_clients(
    factory: RTMPServerFactory, gateway: IrcFactory
) -> None:
    """The user queries clients send on connecting: answered for IRC clients' nicks."""
    _rtmp(factory, "rtmpbob")
    _joined(gateway, "Bob")
    client = _registered(gateway, "ann")
    client.send("USERHOST bob nobody", "ISON ann BOB rtmpbob", "WHOIS bob", "WHOIS rtmpbob")
    assert [(c, p[1:]) for _, c, p in client.lines()] == [
        ("302", ["Bob=+chat@streamserver"]),
        ("303", ["ann Bob"]),
        ("311", ["Bob", "chat", "streamserver", "*", "Bob"]),
        ("319", ["Bob", "#live/cam"]),
        ("312", ["Bob", "streamserver", "streamserver"]),
        ("318", ["bob", "End of /WHOIS list"]),
        ("401", ["rtmpbob", "No such nick (only IRC clients are known by nick)"]),
        ("318", ["rtmpbob", "End of /WHOIS list"]),
    ]
