"""Hostile lines fed to the IRC gateway: only the offending client suffers.

Hypothesis mutates a valid IRC session (CAP, NICK, USER, JOIN with a key,
PRIVMSG, TOPIC, NAMES, WHO, MODE, PART, PING, QUIT) -- bytes flipped, cut,
duplicated, lines of thousands of bytes, NUL, lone CR or LF, invalid UTF-8,
hundreds of parameters, colon tricks -- and adds random bytes, fed at random read
sizes to one connection while an RTMP chat client and a good IRC client sit in the
room.  Nothing may be logged as a failure, a message the good IRC client sends
afterwards must reach the RTMP client (and the reverse), and the hostile
connection closes cleanly.  ``bench/fuzz.py --target irc`` runs many more.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address

from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.irc import IrcFactory
from streamserver.testing import FakePeer, FakeTransport
from tests.fuzz_support import mutate, no_failures_logged

HOSTILE_PEER = IPv4Address("TCP", "198.51.100.44", 40444)

VALID_SESSION = (
    b"CAP LS 302\r\nCAP REQ :server-time\r\nNICK eve\r\nUSER eve 0 * :Eve\r\nCAP END\r\n"
    b"JOIN #live/cam key\r\nPRIVMSG #live/cam :hello there\r\nTOPIC #live/cam\r\n"
    b"NAMES #live/cam\r\nWHO #live/cam\r\nMODE #live/cam\r\nPRIVMSG bob :psst\r\n"
    b"PING :x\r\nJOIN #other/room,#live/cam\r\nPART #live/cam :bye\r\nQUIT :done\r\n"
)

HOSTILE_PIECES = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b"\xff\xfe\xc3",
    b":" * 50,
    b" " * 600,
    b"x" * 3000,
    b"PRIVMSG #live/cam :" + "é".encode() * 400 + b"\r\n",
    b"JOIN " + b",".join(b"#a/%d" % i for i in range(40)) + b"\r\n",
    b"NICK " + b"n" * 100 + b"\r\n",
    b"PRIVMSG " + b" ".join(b"p%d" % i for i in range(300)) + b"\r\n",
    b"@a=b;c=d :prefix!x@y PRIVMSG #live/cam :tagged\r\n",
    b"JOIN #../../etc\r\n",
    b"JOIN #\r\n",
    b"USER\r\n",
]


@st.composite
def hostile_sessions(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """The valid session mutated a few times, and where the reads are cut."""
    data = mutate(draw, VALID_SESSION, HOSTILE_PIECES, edits=5, drop=30)
    return data, draw(st.lists(st.integers(1, 700), max_size=6))


def _client(gateway: IrcFactory, peer: IPv4Address | None = None) -> FakeTransport:
    transport = FakeTransport(peer, auto_drain=True)
    protocol: Any = gateway.buildProtocol(transport.getPeer())
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def check_isolation(data: bytes, cuts: list[int]) -> None:
    """Feed *data* to one IRC connection; the room still works for everyone else."""
    with no_failures_logged():
        clock = task.Clock()
        factory = RTMPServerFactory(ServerConfig(), reactor=clock)
        gateway = IrcFactory(factory)
        gateway.startFactory()
        rtmp = FakePeer(factory)
        rtmp.connect("live", nick="bob")
        sid = rtmp.create_stream()
        rtmp.call("joinChat", None, "cam", stream_id=sid)
        good = _client(gateway)
        good.protocol.dataReceived(b"NICK ann\r\nUSER ann 0 * :Ann\r\nJOIN #live/cam\r\n")

        hostile = _client(gateway, HOSTILE_PEER)
        offset = 0
        for cut in [*cuts, len(data)]:
            if hostile.disconnecting or offset >= len(data):
                break
            hostile.protocol.dataReceived(data[offset : offset + cut])
            offset += cut
        for _ in range(3):
            clock.advance(11)  # registration timeout, the watchdog's pings
            factory.check_viewers()
            good.protocol.dataReceived(b"PONG :streamserver\r\n")
            rtmp.call("getViewerCount", None, stream_id=sid)  # keeps the RTMP client alive

        before = len(rtmp.chat())
        good.protocol.dataReceived(b"PRIVMSG #live/cam :after the storm\r\n")
        texts = [message["text"] for _, message in rtmp.chat()[before:]]
        assert "after the storm" in texts, texts
        seen = len(good.value())
        rtmp.call("sendChatMessage", None, "from rtmp", stream_id=sid)
        assert b"from rtmp" in good.value()[seen:]
        assert not good.disconnecting
        assert not rtmp.transport.disconnecting
        hostile.loseConnection()
        assert factory.connections_from(HOSTILE_PEER.host) == 0


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(hostile_sessions())
def test_hostile_irc_lines_cost_only_their_connection(case: tuple[bytes, list[int]]) -> None:
    check_isolation(*case)


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=4000), st.lists(st.integers(1, 300), max_size=6))
def test_random_bytes_to_the_irc_port(data: bytes, cuts: list[int]) -> None:
    check_isolation(data, cuts)
