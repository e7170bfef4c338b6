"""The IRC gateway over a real socket with an IRC client written by others (the ``irc``
package from PyPI), against a ``twistd -n streamserver --irc ...`` child, talking with an
RTMP chat client (``streamserver.client``) in the same room.

The ``irc`` library has its own select loop, so it runs in a thread: the test hands it
actions through a queue and reads what it received from a list, never blocking the
reactor.  Every raw line both ways is kept; with ``STREAMSERVER_IRC_TRANSCRIPT=FILE``
the transcript is written there.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import threads

from streamserver.client import connect_client
from tests.integration.hardening_support import start_twistd
from tests.integration.support import (
    accepts_connections,
    free_port,
    get_reactor,
    sleep,
    wait_until,
    within,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Interop, ProcessPool

pytestmark = pytest.mark.integration

#: A short limit, so that a refused message fits in one IRC line.
_MAX_LENGTH = 40


class IrcThread:
    """An ``irc.client`` connection driven in its own thread.

    :ivar transcript: ``("<-", line)`` received and ``("->", line)`` sent, in order.
    :ivar events: ``(type, source nick, target, arguments)`` of what the library parsed.
    """

    def __init__(self, port: int, nick: str) -> None:
        import irc.client

        self._irc = irc.client
        self.port = port
        self.nick = nick
        self.transcript: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str, list[str]]] = []
        self._actions: queue.Queue[Callable[[Any], None]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reported by the test
            self.error = error

    def _run(self) -> None:
        reactor = self._irc.Reactor()
        connection = reactor.server()
        original = connection.send_raw

        def send_raw(line: str) -> None:
            with self._lock:
                self.transcript.append(("->", line))
            original(line)

        connection.send_raw = send_raw  # type: ignore[method-assign]

        def raw(_: Any, event: Any) -> None:
            with self._lock:
                self.transcript.append(("<-", event.arguments[0]))

        def parsed(_: Any, event: Any) -> None:
            if event.type == "all_raw_messages":
                return
            source = event.source.nick if event.source and "!" in event.source else ""
            with self._lock:
                self.events.append((event.type, source, event.target or "", list(event.arguments)))

        reactor.add_global_handler("all_raw_messages", raw, -20)
        reactor.add_global_handler("all_events", parsed, -10)
        connection.connect("127.0.0.1", self.port, self.nick)
        while not self._stop.is_set():
            reactor.process_once(0.02)
            while True:
                try:
                    action = self._actions.get_nowait()
                except queue.Empty:
                    break
                action(connection)
        connection.quit("done")
        reactor.process_once(0.2)
        connection.close()

    def do(self, action: Callable[[Any], None]) -> None:
        """Run *action(connection)* in the library's thread."""
        self._actions.put(action)

    def stop(self) -> None:
        self._stop.set()

    def seen(self, kind: str) -> list[tuple[str, str, str, list[str]]]:
        with self._lock:
            return [event for event in self.events if event[0] == kind]

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{way} {line}" for way, line in self.transcript)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_an_irc_library_registers_joins_sees_history_and_talks_with_rtmp(
    processes: ProcessPool, interop: Interop, tmp_path: Path
) -> None:
    """irc.client registers, joins #live/cam, gets the history, exchanges messages with
    an RTMP chat client both ways, and gets a NOTICE for a refused message."""
    try:
        import irc.client  # noqa: F401
    except ImportError:
        interop.unavailable("the irc package is not installed (pip install -e '.[test]')")
    reactor = get_reactor()
    irc_port = free_port()
    server = await start_twistd(
        processes,
        interop,
        tmp_path,
        "--irc",
        f"tcp:{irc_port}:interface=127.0.0.1",
        "--chat-max-length",
        str(_MAX_LENGTH),
    )
    for _ in range(100):
        if await accepts_connections(irc_port):
            break
        await sleep(0.1)
    else:
        raise AssertionError(f"nothing listens on the IRC port {irc_port}")

    rtmp = await within(connect_client(reactor, server.url("live"), nick="bob"), 10, "connect")
    sid = await within(rtmp.create_stream(), 10, "createStream")
    await within(rtmp.join_chat("cam", sid), 10, "joinChat")
    await within(rtmp.send_chat("said before IRC came", sid), 10, "send")

    client = IrcThread(irc_port, "ann")
    running = threads.deferToThread(client.run)
    try:
        await wait_until(lambda: bool(client.seen("welcome")), 10, "001", describe=client.text)
        client.do(lambda c: c.join("#live/cam"))
        await wait_until(
            lambda: any(e[3] == ["said before IRC came"] for e in client.seen("pubmsg")),
            10,
            "the history",
            describe=client.text,
        )
        [(_, _, _, names)] = client.seen("namreply")[:1]
        assert "bob" in names[-1].split() and "ann" in names[-1].split()
        [topic] = client.seen("currenttopic")
        assert topic[3][-1] == "cam | waiting for the publisher"

        await within(rtmp.send_chat("hello from RTMP", sid), 10, "send")
        await wait_until(
            lambda: ("pubmsg", "bob", "#live/cam", ["hello from RTMP"]) in client.seen("pubmsg"),
            10,
            "RTMP -> IRC",
            describe=client.text,
        )

        client.do(lambda c: c.privmsg("#live/cam", "hello from IRC, café"))
        await wait_until(
            lambda: any(m.text == "hello from IRC, café" for m in rtmp.chat_messages),
            10,
            "IRC -> RTMP",
        )
        received = [m for m in rtmp.chat_messages if m.text == "hello from IRC, café"]
        assert [m.nick for m in received] == ["ann"]
        assert [m.id for m in rtmp.chat_messages] == [1, 2, 3]

        client.do(lambda c: c.privmsg("#live/cam", "x" * (_MAX_LENGTH + 1)))
        await wait_until(
            lambda: any(e[3][0].startswith("Chat.TooLong: ") for e in client.seen("privnotice")),
            10,
            "the refusal's NOTICE",
            describe=client.text,
        )
        # IRC does not echo: the sender saw neither its message nor the refused one
        assert not [e for e in client.seen("pubmsg") if e[1] == "ann"]
        await sleep(0.2)
        assert len(rtmp.chat_messages) == 3
    finally:
        client.stop()
        await within(running, 10, "the IRC thread")
        rtmp.transport.loseConnection()
    assert client.error is None, client.error
    transcript = client.text()
    target = os.environ.get("STREAMSERVER_IRC_TRANSCRIPT")
    if target:
        Path(target).write_text(transcript + "\n")
    print(transcript)
