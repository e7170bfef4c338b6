"""Chat over real sockets with our own client: a room talking while media flows, a
late chat-only joiner with history, two rooms side by side, and the example bot.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, StatusError, pace_tags
from tests.integration.support import (
    SpedUpClock,
    describe_difference,
    get_reactor,
    received_views,
    sleep,
    synthetic_tags,
    tag_views,
    wait_until,
    within,
)

if TYPE_CHECKING:
    from tests.integration.conftest import LoopbackServer, ProcessPool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: Media is published this much faster than real time (see test_fanout.py).
_SPEED = 5

#: Messages each participant sends; under the default rate limit (5 per 10 s).
_ROUNDS = 4


async def _participant(
    server: LoopbackServer, name: str, nick: str, how: str
) -> tuple[RTMPClientProtocol, int]:
    """A client in *name*'s room as *nick*, by ``play`` or ``joinChat``."""
    client = await server.connect()
    stream_id = await within(client.create_stream(), 10, "createStream")
    if how == "play":
        await within(client.play(f"{name}?nick={nick}", stream_id), 10, f"play {name}")
    else:
        await within(client.join_chat(f"{name}?nick={nick}", stream_id), 10, f"join {name}")
    return client, stream_id


async def _talk(client: RTMPClientProtocol, stream_id: int, nick: str) -> None:
    """Send *_ROUNDS* messages, each answered with _result, a little apart."""
    for index in range(_ROUNDS):
        reply = await within(client.send_chat(f"{nick} {index}", stream_id), 10, "_result")
        assert reply.args[0]["code"] == "Chat.Sent"
        await sleep(0.05)


def _chat(client: RTMPClientProtocol) -> list[tuple[int, str, str]]:
    return [(m.id, m.nick, m.text) for m in client.chat_messages]


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_publisher_and_three_viewers_chat_while_media_flows(
    rtmp_server: LoopbackServer,
) -> None:
    """Everyone in a room gets every message of it, in one order, and viewers every frame."""
    viewers = [await _participant(rtmp_server, "talk", f"v{i}", "play") for i in range(3)]
    publisher, pub_sid = await rtmp_server.publisher("talk?nick=host")
    # a second room, talking at the same time
    side = [await _participant(rtmp_server, "side", f"s{i}", "joinChat") for i in range(2)]

    tags = synthetic_tags(b"<talk>", seconds=4)
    publishing = pace_tags(SpedUpClock(get_reactor(), _SPEED), publisher, tags, pub_sid)
    talk = [(publisher, pub_sid, "host")] + [
        (client, sid, f"v{i}") for i, (client, sid) in enumerate(viewers)
    ]
    talking = [defer.ensureDeferred(_talk(c, sid, nick)) for c, sid, nick in talk]
    talking += [defer.ensureDeferred(_talk(c, sid, f"s{i}")) for i, (c, sid) in enumerate(side)]
    await within(defer.gatherResults(talking), 30, "every participant to send")
    await within(publishing, 30, "the publisher to send its tags")

    room = [client for client, _, _ in talk]
    expected_count = len(talk) * _ROUNDS
    await wait_until(
        lambda: all(len(c.chat_messages) >= expected_count for c in room),
        10,
        "every participant to receive every message",
        describe=lambda: str([len(c.chat_messages) for c in room]),
    )
    reference = _chat(publisher)
    assert [entry[0] for entry in reference] == list(range(1, expected_count + 1))
    for client in room:
        assert _chat(client) == reference
        assert {m.stream_id for m in client.chat_messages} == {
            sid for c, sid, _ in talk if c is client
        }
    for _, _, nick in talk:
        mine = [text for _, who, text in reference if who == nick]
        assert mine == [f"{nick} {index}" for index in range(_ROUNDS)]
    assert all(text.startswith(("host", "v")) for _, _, text in reference)

    side_chat = _chat(side[0][0])
    assert len(side_chat) == 2 * _ROUNDS
    assert _chat(side[1][0]) == side_chat
    assert all(nick.startswith("s") for _, nick, _ in side_chat)

    expected = tag_views(tags)
    await wait_until(
        lambda: all(len(received_views(c)) >= len(expected) for c, _ in viewers),
        20,
        "the viewers to receive the media",
    )
    for index, (client, _) in enumerate(viewers):
        views = received_views(client)
        assert views == expected, f"viewer {index}: {describe_difference(expected, views)}"


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_chat_only_joiner_gets_the_history_first(rtmp_server: LoopbackServer) -> None:
    """A connection joining with joinChat gets the history, oldest first, before its _result."""
    publisher, pub_sid = await rtmp_server.publisher("hist?nick=host")
    for index in range(5):
        await within(publisher.send_chat(f"line {index}", pub_sid), 10, "_result")
    client = await rtmp_server.connect()
    stream_id = await within(client.create_stream(), 10, "createStream")
    seen_at_join: list[int] = []
    joined = client.join_chat("hist?nick=late", stream_id)
    joined.addCallback(lambda reply: seen_at_join.append(len(client.chat_messages)) or reply)
    reply = await within(joined, 10, "joinChat")
    assert reply.args[0]["nick"] == "late"
    assert seen_at_join == [5]
    assert _chat(client) == [(i + 1, "host", f"line {i}") for i in range(5)]
    assert client.media_count == 0

    await within(client.send_chat("hello all", stream_id), 10, "_result")
    await wait_until(lambda: len(publisher.chat_messages) == 6, 10, "the publisher to hear it")
    assert _chat(publisher)[-1] == (6, "late", "hello all")


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_refusals_come_back_with_their_code(rtmp_server: LoopbackServer) -> None:
    """A refused message errbacks send_chat with a StatusError carrying the Chat.* code."""
    client, stream_id = await _participant(rtmp_server, "refuse", "r", "joinChat")
    with pytest.raises(StatusError) as too_long:
        await within(client.send_chat("x" * 501, stream_id), 10, "_error")
    assert too_long.value.code == "Chat.TooLong"
    with pytest.raises(StatusError) as not_in_room:
        await within(client.send_chat("hi", stream_id + 1), 10, "_error")
    assert not_in_room.value.code == "Chat.NotInRoom"


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_example_bot_answers_viewers(
    rtmp_server: LoopbackServer, processes: ProcessPool
) -> None:
    """examples/chat_bot.py joins the room, logs messages and answers !viewers with the count."""
    bot = processes.spawn(
        [sys.executable, str(ROOT / "examples" / "chat_bot.py"), rtmp_server.url("live/cam")]
    )

    def bot_joined() -> bool:
        stream = rtmp_server.factory.find_stream("live", "cam")
        return stream is not None and any(
            getattr(seat, "nick", None) == "bot" for seat in stream.chat.participants
        )

    await wait_until(
        bot_joined, 20, "the bot to join", describe=lambda: bot.stdout.decode(errors="replace")
    )
    for _ in range(2):
        await rtmp_server.player("cam")
    asker, stream_id = await _participant(rtmp_server, "cam", "asker", "joinChat")
    await within(asker.send_chat("!viewers", stream_id), 10, "_result")
    await wait_until(
        lambda: any(m.nick == "bot" for m in asker.chat_messages),
        20,
        "the bot's answer",
        describe=lambda: bot.stdout.decode(errors="replace"),
    )
    answer = next(m for m in asker.chat_messages if m.nick == "bot")
    assert answer.text == "2 viewers watching live/cam"
    result = await bot.stop("INT")
    log = result.stdout.decode(errors="replace")
    assert "<asker> !viewers" in log, result.describe()
    assert "<bot> 2 viewers watching live/cam" in log, result.describe()
