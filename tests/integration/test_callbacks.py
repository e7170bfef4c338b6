"""The ``--on-publish`` / ``--on-play`` HTTP callback against a local twisted.web server.

A 2xx answer allows, a 403 refuses, no answer within the timeout refuses; the
form carries app, name, addr and the query parameters.  End to end, a refused
publish reaches our RTMP client as ``NetStream.Publish.Unauthorized``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from streamserver.auth import AccessConfig, AccessRequest, HTTPCallbackAuthorizer, authorize
from streamserver.client import StatusError, connect_client
from streamserver.errors import UnauthorizedError
from streamserver.factory import RTMPServerFactory, ServerConfig
from tests.integration.support import get_reactor, wait_until, within

pytestmark = pytest.mark.integration


class Hook(Resource):
    """Answers POSTs by path: /ok (204), /deny (403), /hang (never); records the forms."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.hanging: list[Request] = []

    def render_POST(self, request: Request) -> bytes | int:
        form = {k.decode(): v[0].decode() for k, v in (request.args or {}).items()}
        self.forms.append(form)
        path = request.path
        if path == b"/hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(204 if path == b"/ok" else 403)
        return b""


class HookServer:
    def __init__(self, hook: Hook, port: int) -> None:
        self.hook = hook
        self.port = port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest_twisted.async_yield_fixture
async def hook_server() -> AsyncIterator[HookServer]:
    reactor = get_reactor()
    hook = Hook()
    site = Site(hook)
    site.noisy = False
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        yield HookServer(hook, listening.getHost().port)
    finally:
        for request in hook.hanging:
            if not request.finished and not request._disconnected:
                request.finish()
        await defer.maybeDeferred(listening.stopListening)


def _request(**args: str) -> AccessRequest:
    from twisted.internet.address import IPv4Address

    peer = IPv4Address("TCP", "198.51.100.7", 4000)
    return AccessRequest("publish", "live", "cam", args, peer, 3, {"tcUrl": "rtmp://x/live"})


async def _decide(authorizer: HTTPCallbackAuthorizer, request: AccessRequest) -> str | None:
    try:
        await within(authorize(authorizer, request), 10, "the callback decision")
    except UnauthorizedError as error:
        assert error.code == "NetStream.Publish.Unauthorized"
        return error.description
    return None


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_2xx_answer_allows_and_gets_the_form(hook_server: HookServer) -> None:
    """204 allows; the POST carries call, app, name, addr, clientid, tcurl, args and key."""
    authorizer = HTTPCallbackAuthorizer(hook_server.url("/ok"), "publish", get_reactor())
    assert await _decide(authorizer, _request(key="s3cret")) is None
    (form,) = hook_server.hook.forms
    assert form["call"] == "publish" and form["app"] == "live" and form["name"] == "cam"
    assert form["addr"] == "198.51.100.7" and form["clientid"] == "3"
    assert form["tcurl"] == "rtmp://x/live"
    assert form["args"] == "key=s3cret" and form["key"] == "s3cret"


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_403_refuses(hook_server: HookServer) -> None:
    """Any non-2xx answer refuses, naming the status."""
    authorizer = HTTPCallbackAuthorizer(hook_server.url("/deny"), "publish", get_reactor())
    assert await _decide(authorizer, _request()) == "on-publish callback answered 403"


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_no_answer_within_the_timeout_refuses(hook_server: HookServer) -> None:
    """A callback that does not answer in time refuses, without blocking anything."""
    reactor = get_reactor()
    authorizer = HTTPCallbackAuthorizer(hook_server.url("/hang"), "publish", reactor, timeout=0.5)
    started = reactor.seconds()
    assert await _decide(authorizer, _request()) == "on-publish callback timed out after 0.5 s"
    assert 0.4 <= reactor.seconds() - started < 5
    assert len(hook_server.hook.hanging) == 1


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_an_unreachable_callback_refuses() -> None:
    """A connection error refuses (fail closed)."""
    reactor = get_reactor()
    closed = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
    port = closed.getHost().port
    await defer.maybeDeferred(closed.stopListening)
    authorizer = HTTPCallbackAuthorizer(f"http://127.0.0.1:{port}/", "publish", reactor)
    assert await _decide(authorizer, _request()) == "on-publish callback failed"


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_on_publish_end_to_end(hook_server: HookServer) -> None:
    """With --on-publish, RTMP publishes wait for the callback: 403 refuses, 2xx publishes."""
    reactor = get_reactor()
    clients: list[Any] = []
    listeners = []
    try:
        for path in ("/deny", "/ok"):
            access = AccessConfig(on_publish=hook_server.url(path), callback_timeout=5)
            factory = RTMPServerFactory(ServerConfig(access=access), reactor=reactor)
            listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
            listeners.append((listening, factory))
            url = f"rtmp://127.0.0.1:{listening.getHost().port}/live"
            client = await within(connect_client(reactor, url), 10, "connect")
            clients.append(client)
            stream_id = await within(client.create_stream(), 10, "createStream")
            if path == "/deny":
                with pytest.raises(StatusError) as refused:
                    await within(client.publish("cam?key=k", stream_id), 10, "publish")
                assert refused.value.code == "NetStream.Publish.Unauthorized"
                assert factory.find_stream("live", "cam") is None
            else:
                await within(client.publish("cam?key=k", stream_id), 10, "publish")
                stream = factory.find_stream("live", "cam")
                assert stream is not None and stream.publisher is not None
        assert [f["key"] for f in hook_server.hook.forms] == ["k", "k"]
        assert all(f["addr"] == "127.0.0.1" for f in hook_server.hook.forms)
    finally:
        for client in clients:
            client.close()
        for listening, factory in listeners:
            await defer.maybeDeferred(listening.stopListening)
            for protocol in list(factory.connections.values()):
                protocol.transport.abortConnection()


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_cancelled_callback_is_not_a_refusal(hook_server: HookServer) -> None:
    """Cancelling a pending callback (the peer left) cancels; it is not logged as a refusal."""
    authorizer = HTTPCallbackAuthorizer(hook_server.url("/hang"), "publish", get_reactor())
    pending = authorize(authorizer, _request())
    await wait_until(lambda: bool(hook_server.hook.hanging), 10, "the callback request")
    pending.cancel()
    with pytest.raises(defer.CancelledError):
        await pending
