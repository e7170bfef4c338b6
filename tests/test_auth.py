"""Authorizers: each one allows and refuses; composition; signed URLs; the CLI helper."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamserver import tokens
from streamserver.auth import (
    LOOPBACK_NETWORKS,
    AccessConfig,
    AccessRequest,
    AddressAuthorizer,
    AllOf,
    HTTPCallbackAuthorizer,
    IAuthorizer,
    PublishKeyAuthorizer,
    TokenAuthorizer,
    authorize,
    build_authorizer,
    callback_form,
    is_loopback,
    parse_publish_keys,
)
from streamserver.errors import UnauthorizedError


def request(
    action: str = "publish",
    name: str = "cam",
    *,
    app: str = "live",
    host: str = "127.0.0.1",
    **args: str,
) -> AccessRequest:
    peer: Any = IPv6Address("TCP", host, 5000) if ":" in host else IPv4Address("TCP", host, 5000)
    return AccessRequest(action, app, name, args, peer, 7, {"tcUrl": "rtmp://h/live"})


def outcome(authorizer: Any, req: AccessRequest) -> str | None:
    """``None`` if *req* is allowed, else the refusal's description (code checked)."""
    results: list[Any] = []
    authorize(authorizer, req).addBoth(results.append)
    assert results, "the authorizer did not answer synchronously"
    if results[0] is None:
        return None
    error = results[0].value
    assert isinstance(error, UnauthorizedError), results[0]
    expected = (
        "NetStream.Publish.Unauthorized"
        if req.action == "publish"
        else "NetStream.Play.Unauthorized"
    )
    assert error.code == expected
    return str(error.description)


# --- the interface ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorizer",
    [
        AllOf(),
        AddressAuthorizer(),
        PublishKeyAuthorizer({"cam": "s"}),
        TokenAuthorizer("s", "play", lambda: 0.0),
        HTTPCallbackAuthorizer("http://127.0.0.1:1/", "publish", reactor=object(), agent=object()),
    ],
)
def test_builtins_provide_the_interface(authorizer: Any) -> None:
    """Every built-in authorizer provides IAuthorizer."""
    assert verifyObject(IAuthorizer, authorizer)


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_may_publish(host: str) -> None:
    """Loopback peers (IPv4, IPv6, IPv4-mapped) may publish by default."""
    assert outcome(AddressAuthorizer(), request(host=host)) is None
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9", "10.0.0.1"])
def test_remote_peers_may_not_publish_by_default(host: str) -> None:
    """Other peers are refused publishing, with their address in the reason."""
    reason = outcome(AddressAuthorizer(), request(host=host))
    assert reason is not None and "not allowed" in reason
    assert not is_loopback(host)


def test_anyone_may_play_by_default() -> None:
    """The address rule never restricts play."""
    assert outcome(AddressAuthorizer(), request("play", host="203.0.113.9")) is None


def test_listed_networks_may_publish() -> None:
    """--publish-from networks allow publishing from them and only them."""
    authorizer = AddressAuthorizer(["192.168.1.0/24", "2001:db8::/32"])
    assert outcome(authorizer, request(host="192.168.1.77")) is None
    assert outcome(authorizer, request(host="2001:db8::5")) is None
    assert outcome(authorizer, request(host="192.168.2.1")) is not None
    assert outcome(authorizer, request(host="127.0.0.1")) is not None


def test_unix_socket_peers_count_as_loopback() -> None:
    """A peer on a UNIX socket is local: it may publish under the loopback rule."""
    req = AccessRequest("publish", "live", "cam", {}, UNIXAddress("/tmp/s"))
    assert req.host == "unix"
    assert outcome(AddressAuthorizer(), req) is None
    assert outcome(AddressAuthorizer(["10.0.0.0/8"]), req) is not None


def test_a_bad_network_is_a_value_error() -> None:
    """A malformed network is refused when the authorizer is built."""
    with pytest.raises(ValueError):
        AddressAuthorizer(["not-a-network"])


# --- publish keys ---------------------------------------------------------------------------


def test_publish_key_right_wrong_missing() -> None:
    """The right key allows; a wrong or missing key refuses, each with its reason."""
    keys = PublishKeyAuthorizer({"cam": "s3cret"})
    assert outcome(keys, request(key="s3cret")) is None
    assert outcome(keys, request(key="s3creT")) == "wrong stream key"
    assert outcome(keys, request(key="")) == "a stream key (?key=...) is required"
    assert outcome(keys, request()) == "a stream key (?key=...) is required"
    assert outcome(keys, request(name="other", key="s3cret")) == (
        "no stream key is configured for live/other"
    )
    assert outcome(keys, request("play")) is None


def test_publish_key_lookup_order() -> None:
    """app/name beats name, name beats the * line."""
    keys = PublishKeyAuthorizer({"live/cam": "a", "cam": "b", "*": "c"})
    assert outcome(keys, request(key="a")) is None
    assert outcome(keys, request(key="b")) == "wrong stream key"
    assert outcome(keys, request(app="other", key="b")) is None
    assert outcome(keys, request(name="anything", key="c")) is None


def test_publish_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is compared with hmac.compare_digest."""
    import streamserver.auth as auth

    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    outcome(PublishKeyAuthorizer({"cam": "s3cret"}), request(key="guess"))
    assert calls == [(b"guess", b"s3cret")]


def test_publish_keys_file_format() -> None:
    """Comments and blank lines are skipped; names may be app/name or *."""
    text = "# streams\n\ncam  s3cret\n  /live/cam2/\tother\n*\tfallback\n"
    assert parse_publish_keys(text) == {"cam": "s3cret", "live/cam2": "other", "*": "fallback"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [("cam\n", "expected 'NAME SECRET'"), ("cam a b\n", "expected"), ("cam a\ncam b\n", "twice")],
)
def test_malformed_keys_files_are_refused(text: str, problem: str) -> None:
    """A line without exactly two fields, or a name given twice, is an error with its line."""
    with pytest.raises(ValueError, match=problem):
        parse_publish_keys(text, "keys.txt")


def test_publish_keys_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    """A changed file takes effect at the next publish; a broken one keeps the old keys."""
    path = tmp_path / "keys"
    path.write_text("cam one\n")
    keys = PublishKeyAuthorizer(path=str(path))
    assert outcome(keys, request(key="one")) is None
    path.write_text("cam two\n")
    os.utime(path, ns=(1, 10**18))
    assert outcome(keys, request(key="two")) is None
    assert outcome(keys, request(key="one")) == "wrong stream key"
    path.write_text("cam\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert outcome(keys, request(key="two")) is None


# --- signed URLs --------------------------------------------------------------------------------


def test_signed_text_is_documented_exactly() -> None:
    """The token is hex HMAC-SHA256 of "action:app/name:expires"."""
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"publish:live/cam:1700000000", hashlib.sha256).hexdigest()
    assert tokens.sign("k", "publish", "live", "cam", 1700000000) == expected


def test_token_valid_expired_wrong() -> None:
    """A valid token allows until its expiry; tampering or expiry refuses."""
    now = [1000.0]
    authorizer = TokenAuthorizer("k", "publish", lambda: now[0])
    token = tokens.sign("k", "publish", "live", "cam", 1060)
    assert outcome(authorizer, request(expires="1060", token=token)) is None
    assert outcome(authorizer, request(expires="1060", token=token.upper())) is None
    assert outcome(authorizer, request(expires="1061", token=token)) == "token does not match"
    assert outcome(authorizer, request("publish", "cam2", expires="1060", token=token)) == (
        "token does not match"
    )
    assert outcome(authorizer, request(expires="soon", token=token)) == (
        "expires is not a Unix time"
    )
    assert outcome(authorizer, request()) == "a signed URL (expires and token) is required"
    now[0] = 1060.5
    assert outcome(authorizer, request(expires="1060", token=token)) == "token expired"


def test_a_play_token_does_not_publish() -> None:
    """The action is signed: a play token never authorizes a publish, even with one secret."""
    publish = TokenAuthorizer("k", "publish", lambda: 0.0)
    play = TokenAuthorizer("k", "play", lambda: 0.0)
    play_token = tokens.sign("k", "play", "live", "cam", 100)
    assert outcome(play, request("play", expires="100", token=play_token)) is None
    assert outcome(publish, request("publish", expires="100", token=play_token)) is not None
    # each guards only its own action
    assert outcome(publish, request("play")) is None
    assert outcome(play, request("publish")) is None


def test_token_cli_prints_a_signed_url() -> None:
    """python -m streamserver.tokens sign prints a URL the authorizer accepts."""
    out = io.StringIO()
    with redirect_stdout(out):
        tokens.main(
            ["sign", "--secret", "k", "--url", "rtmp://h:1935/live/cam", "--expires", "5000"]
        )
    url = out.getvalue().strip()
    assert url.startswith("rtmp://h:1935/live/cam?expires=5000&token=")
    token = url.rpartition("token=")[2]
    assert token == tokens.sign("k", "publish", "live", "cam", 5000)
    out = io.StringIO()
    with redirect_stdout(out):
        tokens.main(["sign", "--secret", "k", "--action", "play", "--app", "a", "--name", "b"])
    assert out.getvalue().startswith("expires=")


# --- composition ---------------------------------------------------------------------------------


@implementer(IAuthorizer)
class Recorder:
    """Answers with a fixed value and records that it was asked."""

    def __init__(self, name: str, answer: Any, asked: list[str]) -> None:
        self.name = name
        self._answer = answer
        self._asked = asked

    def _reply(self) -> Any:
        self._asked.append(self.name)
        if isinstance(self._answer, Exception):
            raise self._answer
        return self._answer

    def authorize_publish(self, request: AccessRequest) -> Any:
        return self._reply()

    def authorize_play(self, request: AccessRequest) -> Any:
        return self._reply()


def test_all_must_allow_in_order_stopping_at_the_first_refusal() -> None:
    """AllOf asks in order and stops at the first refusal; its name is the reason."""
    asked: list[str] = []
    chain = AllOf(
        Recorder("a", True, asked), Recorder("b", False, asked), Recorder("c", True, asked)
    )
    assert outcome(chain, request()) == "refused by b"
    assert asked == ["a", "b"]
    asked.clear()
    assert outcome(AllOf(Recorder("a", True, asked), Recorder("c", True, asked)), request()) is None
    assert asked == ["a", "c"]
    assert outcome(AllOf(), request("play")) is None


def test_asynchronous_answers_are_awaited() -> None:
    """A Deferred answer holds the decision until it fires."""
    answer: defer.Deferred[bool] = defer.Deferred()
    chain = AllOf(Recorder("slow", answer, []))
    results: list[Any] = []
    authorize(chain, request()).addBoth(results.append)
    assert results == []
    answer.callback(True)
    assert results == [None]


def test_an_authorizer_bug_refuses() -> None:
    """An unexpected exception refuses (fail closed) and is logged, never allows."""
    reason = outcome(AllOf(Recorder("buggy", KeyError("x"), [])), request())
    assert reason == "authorization failed"


def test_a_non_boolean_answer_refuses() -> None:
    """Only True allows: a truthy non-bool answer is a refusal."""
    assert outcome(Recorder("odd", "yes", []), request()) == "refused by odd"


def test_build_default_is_loopback_only_publishing() -> None:
    """Without options: publish from loopback only, play from anywhere."""
    chain = build_authorizer(AccessConfig(), reactor=None, clock=lambda: 0.0)
    assert [type(a) for a in chain.authorizers] == [AddressAuthorizer]
    assert [str(n) for n in chain.authorizers[0].networks] == [  # type: ignore[attr-defined]
        str(n) for n in AddressAuthorizer(LOOPBACK_NETWORKS).networks
    ]
    assert AccessConfig().describe() == ("from loopback only (127.0.0.0/8, ::1)", "from anywhere")


def test_explicit_publish_authorizers_replace_the_loopback_default(tmp_path: Path) -> None:
    """Keys (or tokens, or on-publish) lift the loopback rule; --publish-from adds to them."""
    keys = tmp_path / "keys"
    keys.write_text("cam s\n")
    access = AccessConfig(publish_keys_file=str(keys))
    chain = build_authorizer(access, reactor=None, clock=lambda: 0.0)
    assert outcome(chain, request(host="203.0.113.9", key="s")) is None
    access = AccessConfig(publish_keys_file=str(keys), publish_from=("10.0.0.0/8",))
    chain = build_authorizer(access, reactor=None, clock=lambda: 0.0)
    assert outcome(chain, request(host="203.0.113.9", key="s")) is not None
    assert outcome(chain, request(host="10.1.2.3", key="s")) is None
    publish, play = access.describe()
    assert "10.0.0.0/8" in publish and str(keys) in publish and play == "from anywhere"


def test_plugin_authorizers_keep_the_loopback_default() -> None:
    """A user's authorizer adds to the chain and never opens publishing to everyone."""
    access = AccessConfig(authorizers=(Recorder("mine", True, []),))
    chain = build_authorizer(access, reactor=None, clock=lambda: 0.0)
    assert outcome(chain, request(host="203.0.113.9")) is not None
    assert outcome(chain, request(host="127.0.0.1")) is None


def test_play_token_is_required_when_configured() -> None:
    """--play-token-secret: playing needs a signed URL; publishing is unaffected."""
    access = AccessConfig(play_token_secret="p")
    chain = build_authorizer(access, reactor=None, clock=lambda: 50.0)
    assert outcome(chain, request("play")) is not None
    token = tokens.sign("p", "play", "live", "cam", 60)
    assert outcome(chain, request("play", expires="60", token=token)) is None
    assert outcome(chain, request("publish")) is None
    assert access.describe()[1] == "with a signed URL"


def test_callback_form_fields() -> None:
    """The callback gets call, app, name, addr, clientid, tcurl, args and each parameter."""
    form = callback_form(request(key="s", call="spoof"))
    assert form["call"] == "publish"
    assert form["app"] == "live" and form["name"] == "cam" and form["addr"] == "127.0.0.1"
    assert form["clientid"] == "7" and form["tcurl"] == "rtmp://h/live"
    assert form["key"] == "s"
    assert form["args"] == "key=s&call=spoof"
