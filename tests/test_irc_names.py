"""The IRC naming rules: channels of streams, nicks, the lines of a message."""

from __future__ import annotations

import pytest

from streamserver.irc.names import (
    channel_name,
    channel_stream,
    chat_lines,
    display_nick,
    nick_error,
    server_time,
)
from streamserver.media.rooms import ChatMessage, clean_nick


@pytest.mark.parametrize(
    ("channel", "stream"),
    [
        ("#live/cam", ("live", "cam")),
        ("#live/eu/cam", ("live/eu", "cam")),
        ("#Live/Cam", ("Live", "Cam")),
        ("#live/café", ("live", "café")),
        ("#cam", None),
        ("&live/cam", None),
        ("#live//cam", None),
        ("#live/..", None),
        ("#live/a b", None),
        ("#live/a\x07", None),
        ("#live/" + "n" * 257, None),
    ],
)
def test_channel_stream(channel: str, stream: tuple[str, str] | None) -> None:
    assert channel_stream(channel) == stream
    if stream is not None:
        assert channel_name(*stream) == channel


@pytest.mark.parametrize(
    ("nick", "shown"),
    [
        ("ann", "ann"),
        ("bob smith", "bob_smith"),
        ("a,b*c?d!e@f:g", "a_b_c_d_e_f_g"),
        ("@op", "_op"),
        ("+v", "_+v"),
        ("#chan", "_#chan"),
        ("42", "_42"),
        ("-x", "_-x"),
        ("zoë", "zoë"),
        ("", "_"),
    ],
)
def test_display_nick(nick: str, shown: str) -> None:
    """Room nicks are shown with nothing that would split a parameter or read as a prefix."""
    assert display_nick(nick) == shown


@pytest.mark.parametrize("nick", ["ann", "A[1]", "x-y", "_", "`^{|}\\", "g" * 32, "guest"])
def test_valid_nicks_stay_what_the_chat_rules_make_them(nick: str) -> None:
    assert nick_error(nick) is None
    assert clean_nick(nick) == nick == display_nick(nick)


@pytest.mark.parametrize(
    "nick", ["1ann", "-ann", "a b", "café", "g" * 33, "guest-7", "GUEST-7", "a\x01"]
)
def test_invalid_nicks(nick: str) -> None:
    assert nick_error(nick) is not None


def test_server_time_is_utc_with_milliseconds() -> None:
    assert server_time(1_767_225_600_007) == "2026-01-01T00:00:00.007Z"


def test_chat_lines_cut_at_characters_within_512_bytes() -> None:
    """A text too long for one line is cut at UTF-8 character boundaries, tags aside."""
    message = ChatMessage(3, "bob smith", "€" * 500, 1_767_225_600_000)
    data = chat_lines(message, "#live/cam", tags=True)
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) == 4
    texts = []
    for line in lines:
        tag, _, rest = line.partition(b" ")
        assert tag == b"@time=2026-01-01T00:00:00.000Z"
        assert len(rest) + 2 <= 512
        assert rest.startswith(b":bob_smith!chat@streamserver PRIVMSG #live/cam :")
        texts.append(rest.partition(b" :")[2].decode())
    assert "".join(texts) == "€" * 500
    assert chat_lines(ChatMessage(1, "a", "hi", 0), "#l/c", tags=False) == (
        b":a!chat@streamserver PRIVMSG #l/c :hi\r\n"
    )
