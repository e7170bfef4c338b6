"""An IRC bot for streamserver's IRC gateway: joins a stream's channel, logs it, answers ``!hello``.

Start the server with the gateway, then the bot (it needs the ``irc`` package from PyPI)::

    twistd -n streamserver --irc tcp:6667:interface=127.0.0.1
    python examples/irc_bot.py 127.0.0.1 6667 '#live/cam' --nick hellobot

It registers, joins the channel (``#APP/NAME`` is the room of ``rtmp://HOST/APP/NAME``),
prints every message (the room's history first, with the time the server accepted it,
as it asks for ``server-time``) and topic change, and answers ``!hello`` with a greeting.
Messages from RTMP and browser participants arrive like any other.  A refused message
(too long, too fast, muted) comes back as a ``NOTICE``, which it prints.  Ctrl-C stops it.
The gateway's contract is in ``docs/watch.md`` ("IRC").
"""

from __future__ import annotations

import argparse
from typing import Any

import irc.client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("channel", help="#APP/NAME, e.g. '#live/cam' (quote the #)")
    parser.add_argument("--nick", default="hellobot")
    parser.add_argument("--key", default="", help="the play token, with --play-token-secret")
    options = parser.parse_args()

    reactor = irc.client.Reactor()
    connection = reactor.server()

    def welcome(conn: Any, event: Any) -> None:
        conn.cap("REQ", "server-time")
        conn.join(options.channel, options.key)

    def message(conn: Any, event: Any) -> None:
        time = next((t["value"] for t in event.tags or [] if t["key"] == "time"), "")
        text = event.arguments[0]
        print(f"{time} <{event.source.nick}> {text}", flush=True)
        if text.strip().casefold() == "!hello":
            conn.privmsg(event.target, f"hello, {event.source.nick}!")

    def notice(conn: Any, event: Any) -> None:
        print(f"-- notice: {event.arguments[0]}", flush=True)

    def topic(conn: Any, event: Any) -> None:
        print(f"-- topic: {event.arguments[-1]}", flush=True)

    connection.add_global_handler("welcome", welcome)
    connection.add_global_handler("pubmsg", message)
    connection.add_global_handler("privnotice", notice)
    connection.add_global_handler("currenttopic", topic)
    connection.add_global_handler("topic", topic)
    connection.add_global_handler("disconnect", lambda conn, event: raise_exit())
    connection.connect(options.host, options.port, options.nick)
    try:
        reactor.process_forever()
    except KeyboardInterrupt:
        connection.quit("bye")


def raise_exit() -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
