"""A chat bot for streamserver: joins a stream's room, logs it, answers ``!viewers``.

Run it against a server (the stream need not be published yet)::

    python examples/chat_bot.py rtmp://127.0.0.1:1935/live/cam
    python examples/chat_bot.py rtmp://127.0.0.1:1935/live/cam --nick helper

It connects with ``nick`` in the ``connect`` object, joins the room without
media (``joinChat``, so it is not counted as a viewer itself), logs every
message to stdout (the room's history first), and answers a ``!viewers``
message with the number of connections playing the stream, which it asks the
server for with ``getViewerCount``.  The wire contract is in ``docs/chat.md``.
It exits when the connection closes; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from streamserver.client import (
    ReceivedChatMessage,
    RTMPClientProtocol,
    StatusError,
    connect_client,
    parse_rtmp_url,
)

log = Logger(namespace="chat_bot")

#: The command the bot answers (compared trimmed and casefolded).
VIEWERS_COMMAND = "!viewers"


class ChatBot:
    """Logs a room's messages and answers :data:`VIEWERS_COMMAND`.

    :ivar live: false while the history arrives; history is logged, never answered.
    """

    def __init__(self, client: RTMPClientProtocol, stream_id: int, room: str) -> None:
        self.client = client
        self.stream_id = stream_id
        self.room = room
        self.live = False

    def message_received(self, message: ReceivedChatMessage) -> None:
        """Log *message*; answer it if it is a live ``!viewers``."""
        log.info(
            "[{room}] #{id} <{nick}> {text}",
            room=self.room,
            id=message.id,
            nick=message.nick,
            text=message.text,
        )
        if self.live and message.text.strip().casefold() == VIEWERS_COMMAND:
            defer.ensureDeferred(self.answer_viewers())

    async def answer_viewers(self) -> None:
        """Ask the server for the viewer count and say it in the room."""
        try:
            count = await self.client.get_viewer_count(self.stream_id)
            noun = "viewer" if count == 1 else "viewers"
            await self.client.send_chat(f"{count} {noun} watching {self.room}", self.stream_id)
        except StatusError as error:
            log.warn("could not answer {command}: {code}", command=VIEWERS_COMMAND, code=error.code)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="rtmp://HOST[:PORT]/APP/NAME of the stream whose room to join")
    parser.add_argument("--nick", default="bot", help="the bot's nick (default: bot)")
    return parser.parse_args(argv)


async def main(reactor: Any, argv: list[str]) -> None:
    arguments = parse_arguments(argv)
    _, _, app, name = parse_rtmp_url(arguments.url)
    if not app or not name:
        raise SystemExit(f"expected rtmp://HOST[:PORT]/APP/NAME, got {arguments.url}")
    client = await connect_client(reactor, arguments.url, nick=arguments.nick)
    stream_id = await client.create_stream()
    bot = ChatBot(client, stream_id, f"{app}/{name.partition('?')[0]}")
    client.on_chat = bot.message_received
    reply = await client.join_chat(name, stream_id)
    bot.live = True
    log.info(
        "joined {room} as {nick}; answering {command}",
        room=bot.room,
        nick=reply.args[0].get("nick", arguments.nick),
        command=VIEWERS_COMMAND,
    )
    await client.disconnected
    log.info("disconnected from {room}", room=bot.room)


if __name__ == "__main__":
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
