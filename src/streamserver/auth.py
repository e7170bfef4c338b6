"""Who may publish and who may play: authorizers behind :class:`IAuthorizer`.

Every ``publish`` and ``play`` is checked by the factory's authorizer before it
takes effect (:func:`authorize`).  An authorizer answers ``True``/``False``, or a
Deferred that fires with one, or raises :class:`~streamserver.errors.UnauthorizedError`
with the reason the client should see.  :class:`AllOf` composes them: every one
must allow, asked in order, stopping at the first refusal.

Built in (``docs/security.md`` lists the options that configure them):

- :class:`AddressAuthorizer`: publishing only from listed networks.  Without any
  other publish authorizer the server allows publishing from loopback only
  (127.0.0.0/8 and ::1); playing is allowed from anywhere.
- :class:`PublishKeyAuthorizer`: a file of ``NAME SECRET`` lines; the publisher
  presents ``?key=SECRET`` (OBS's stream key).  Constant-time comparison.
- :class:`TokenAuthorizer`: signed, expiring URLs (:mod:`streamserver.tokens`).
- :class:`HTTPCallbackAuthorizer`: nginx-rtmp's ``on_publish``/``on_play``: a
  form POST; a 2xx answer allows, a 3xx with ``Location: rtmp://...`` allows and
  relays (:class:`RelayRedirect`), anything else, an error or a timeout refuses.

:func:`build_authorizer` turns an :class:`AccessConfig` into the composed
authorizer.  Explicit publish authorizers (keys, tokens, an on-publish callback)
replace the loopback default; ``--publish-from`` networks add to them.
Authorizers given by the user (``--authorizer``) add to the chain and never lift
the loopback default, so a plug-in that only looks at ``play`` cannot open
publishing to everyone by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IConsumer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import Attribute, Interface, implementer

from streamserver import tokens
from streamserver.errors import UnauthorizedError

_log = Logger()

#: Status codes of a refused publish and a refused play.  There is no standard
#: play counterpart of ``NetStream.Publish.Unauthorized``; players treat any
#: ``error``-level status as a failure and show its description, and the name
#: says what happened.
REFUSAL_CODES: Mapping[str, str] = {
    "publish": "NetStream.Publish.Unauthorized",
    "play": "NetStream.Play.Unauthorized",
}

#: Where publishing is allowed from when no publish authorizer is configured.
LOOPBACK_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

#: Seconds an HTTP callback may take (connect, request, response headers).
DEFAULT_CALLBACK_TIMEOUT = 5.0


@dataclass(frozen=True)
class AccessRequest:
    """What an authorizer is asked about: one ``publish`` or ``play``.

    :ivar action: ``"publish"`` or ``"play"``.
    :ivar app: the application (first path segment of the URL).
    :ivar name: the stream name, without its query string.
    :ivar args: the query parameters given with the name (``?key=...``).
    :ivar peer: the peer's address (``IPv4Address``, ``IPv6Address``, ``UNIXAddress``).
    :ivar conn_id: the connection's id in the factory.
    :ivar connect_params: the ``connect`` command object (``tcUrl``, ``flashVer``...).
    """

    action: str
    app: str
    name: str
    args: Mapping[str, str] = field(default_factory=dict)
    peer: IAddress | None = None
    conn_id: int = 0
    connect_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The peer's IP address as text, or ``"unix"`` for a UNIX socket peer."""
        if isinstance(self.peer, IPv4Address | IPv6Address):
            return self.peer.host
        return "unix" if self.peer is not None else "unknown"

    @property
    def stream(self) -> str:
        """``app/name``."""
        return f"{self.app}/{self.name}"


class IAuthorizer(Interface):
    """Decides whether a peer may publish or play a stream.

    Each method returns ``True`` (allow), ``False`` (refuse), or a Deferred
    firing with one of those; it may also raise (or fail the Deferred with)
    :class:`~streamserver.errors.UnauthorizedError`, whose description is sent
    to the client and logged.  Any other exception refuses too and is logged as
    a bug: authorization fails closed.
    """

    name = Attribute("A short label naming the authorizer in logs and refusals.")

    def authorize_publish(request: AccessRequest) -> Any:
        """May ``request.peer`` publish ``request.app``/``request.name``?"""

    def authorize_play(request: AccessRequest) -> Any:
        """May ``request.peer`` play ``request.app``/``request.name``?"""


@dataclass(frozen=True)
class RelayRedirect:
    """An authorizer's "allowed, and relay it": pull a play from / push a publish to *url*.

    What an HTTP callback answering 3xx with ``Location: rtmp://...`` means
    (nginx-rtmp's ``notify_relay_redirect``).  :func:`authorize` fires with it
    instead of ``None``; the RTMP publish and play and the HTTP-FLV play hand it to
    ``factory.pushes`` / ``factory.pulls`` (docs/scaling.md, "Relays").

    :ivar url: ``rtmp://HOST[:PORT]/APP[/NAME]`` (without NAME: the stream's own name).
    """

    url: str


def _ask(authorizer: IAuthorizer, request: AccessRequest) -> Any:
    if request.action == "publish":
        return authorizer.authorize_publish(request)
    return authorizer.authorize_play(request)


def authorize(authorizer: IAuthorizer, request: AccessRequest) -> defer.Deferred[Any]:
    """Ask *authorizer* about *request*; the Deferred fails if it is refused.

    The Deferred has already fired when the authorizer answered synchronously.

    :returns: a Deferred that fires with ``None`` when allowed (with a
        :class:`RelayRedirect` when allowed through a relay), or fails with
        :class:`~streamserver.errors.UnauthorizedError` carrying the refusal
        code of the action (:data:`REFUSAL_CODES`) and the reason.
    """
    code = REFUSAL_CODES[request.action]

    def allowed(answer: object) -> RelayRedirect | None:
        if isinstance(answer, RelayRedirect):
            return answer
        if answer is not True:
            raise UnauthorizedError(f"refused by {authorizer.name}", code=code)
        return None

    def refused(failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, UnauthorizedError):
            return Failure(UnauthorizedError(error.description, code=code))
        if isinstance(error, defer.CancelledError):
            return failure
        _log.failure(
            "authorizer {authorizer} failed on {action} of {stream} by {peer}",
            failure,
            authorizer=authorizer.name,
            action=request.action,
            stream=request.stream,
            peer=request.host,
        )
        return Failure(UnauthorizedError("authorization failed", code=code))

    deferred: defer.Deferred[Any] = defer.maybeDeferred(_ask, authorizer, request)
    deferred.addCallbacks(allowed, refused)
    return deferred


@implementer(IAuthorizer)
class AllOf:
    """Every authorizer must allow; asked in order, stopping at the first refusal.

    An empty ``AllOf`` allows everything.

    :ivar authorizers: the authorizers, in the order they are asked.
    """

    name = "all-of"

    def __init__(self, *authorizers: IAuthorizer) -> None:
        self.authorizers: list[IAuthorizer] = list(authorizers)

    def __repr__(self) -> str:
        return f"AllOf({', '.join(a.name for a in self.authorizers)})"

    def authorize_publish(self, request: AccessRequest) -> defer.Deferred[bool | RelayRedirect]:
        return defer.ensureDeferred(self._all(request))

    def authorize_play(self, request: AccessRequest) -> defer.Deferred[bool | RelayRedirect]:
        return defer.ensureDeferred(self._all(request))

    async def _all(self, request: AccessRequest) -> bool | RelayRedirect:
        """Allowed by all; the first :class:`RelayRedirect` among the answers, if any."""
        redirect: RelayRedirect | None = None
        for authorizer in self.authorizers:
            answer = await authorize(authorizer, request)
            if redirect is None and isinstance(answer, RelayRedirect):
                redirect = answer
        return redirect if redirect is not None else True


def _as_network_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    """Whether *host* (an IP address as text) is a loopback address (IPv4-mapped too)."""
    address = _as_network_address(host)
    return address is not None and address.is_loopback


@implementer(IAuthorizer)
class AddressAuthorizer:
    """Publishing only from the listed networks; playing is not restricted.

    IPv4-mapped IPv6 peers (``::ffff:127.0.0.1``) match as their IPv4 address.
    Peers on a UNIX socket are local and match as ``127.0.0.1``.

    :ivar networks: the networks publishing is allowed from.
    """

    name = "publish-from"

    def __init__(self, networks: Iterable[str] = LOOPBACK_NETWORKS) -> None:
        """
        :raises ValueError: a network is not in CIDR notation (or a plain address).
        """
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __repr__(self) -> str:
        return f"AddressAuthorizer({', '.join(str(n) for n in self.networks)})"

    def allows(self, host: str) -> bool:
        """Whether *host* (an address as text, or ``"unix"``) is in a listed network."""
        address = _as_network_address("127.0.0.1" if host == "unix" else host)
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def authorize_publish(self, request: AccessRequest) -> bool:
        if not self.allows(request.host):
            raise UnauthorizedError(f"publishing is not allowed from {request.host}")
        return True

    def authorize_play(self, request: AccessRequest) -> bool:
        return True


def parse_publish_keys(text: str, source: str = "publish keys") -> dict[str, str]:
    """Parse a publish keys file: ``NAME SECRET`` per line.

    Blank lines and lines starting with ``#`` are ignored.  NAME is a stream name
    (any application), ``app/name`` (that application only), or ``*`` (every
    stream without a line of its own).  SECRET contains no whitespace.

    :raises ValueError: a line is not two fields, or a NAME appears twice.
    """
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{source}:{number}: expected 'NAME SECRET'")
        name, secret = fields[0].strip("/"), fields[1]
        if not name:
            raise ValueError(f"{source}:{number}: empty stream name")
        if name in keys:
            raise ValueError(f"{source}:{number}: {name!r} appears twice")
        keys[name] = secret
    return keys


def load_publish_keys(path: str) -> dict[str, str]:
    """Read and parse the publish keys file at *path*.

    :raises OSError: the file cannot be read.
    :raises ValueError: the file is malformed.
    """
    with open(path, encoding="utf-8") as keys_file:
        return parse_publish_keys(keys_file.read(), path)


@implementer(IAuthorizer)
class PublishKeyAuthorizer:
    """The publisher must present its stream's secret as ``?key=SECRET``.

    The key for ``app/name`` is the line for ``app/name``, else the line for
    ``name``, else the ``*`` line; a stream with none cannot be published.  The
    comparison is constant-time (:func:`hmac.compare_digest`).  With a *path*,
    the file is read again when its modification time changes; a file that then
    fails to parse is logged and the previous keys stay in force.

    :ivar keys: stream name (or ``app/name``, or ``*``) -> secret.
    """

    name = "publish-keys"

    def __init__(self, keys: Mapping[str, str] | None = None, *, path: str | None = None) -> None:
        """
        :raises OSError, ValueError: *path* cannot be read or parsed.
        """
        self.path = path
        self._mtime: int | None = None
        if path is not None:
            self._mtime = os.stat(path).st_mtime_ns
            keys = load_publish_keys(path)
        self.keys: dict[str, str] = dict(keys or {})

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime:
                return
            self._mtime = mtime
            self.keys = load_publish_keys(self.path)
        except (OSError, ValueError) as error:
            _log.error(
                "publish keys {path} not reloaded, the previous keys stay in force: {error}",
                path=self.path,
                error=str(error),
            )
            return
        _log.info("publish keys reloaded from {path}", path=self.path)

    def secret_for(self, app: str, name: str) -> str | None:
        """The secret that publishes *app*/*name*, or ``None``."""
        for candidate in (f"{app}/{name}", name, "*"):
            secret = self.keys.get(candidate)
            if secret is not None:
                return secret
        return None

    def authorize_publish(self, request: AccessRequest) -> bool:
        self._reload()
        secret = self.secret_for(request.app, request.name)
        if secret is None:
            raise UnauthorizedError(f"no stream key is configured for {request.stream}")
        presented = request.args.get("key")
        if not presented:
            raise UnauthorizedError("a stream key (?key=...) is required")
        if not hmac.compare_digest(presented.encode(), secret.encode()):
            raise UnauthorizedError("wrong stream key")
        return True

    def authorize_play(self, request: AccessRequest) -> bool:
        return True


@implementer(IAuthorizer)
class TokenAuthorizer:
    """A signed, unexpired ``?expires=...&token=...`` is required for one action.

    See :mod:`streamserver.tokens` for the format.

    :ivar action: ``"publish"`` or ``"play"``: the action this authorizer guards.
    """

    def __init__(self, secret: str, action: str, clock: Callable[[], float]) -> None:
        if action not in tokens.ACTIONS:
            raise ValueError(f"action must be one of {tokens.ACTIONS}")
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._secret = secret
        self.action = action
        self.name = f"{action}-token"
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenAuthorizer({self.action!r})"

    def _check(self, request: AccessRequest) -> bool:
        if request.action != self.action:
            return True
        problem = tokens.check(
            self._secret, self.action, request.app, request.name, request.args, self._clock()
        )
        if problem is not None:
            raise UnauthorizedError(problem)
        return True

    def authorize_publish(self, request: AccessRequest) -> bool:
        return self._check(request)

    def authorize_play(self, request: AccessRequest) -> bool:
        return self._check(request)


@implementer(IBodyProducer)
class FormBody:
    """A request body that is one ``bytes`` object, written at once."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length: int | object = len(body) if body else UNKNOWN_LENGTH

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is written at once."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class DiscardBody(Protocol):
    """Reads a response body and throws it away (only the status code matters)."""

    def dataReceived(self, data: bytes) -> None:
        """Ignored."""


#: Form fields the callback always gets; query parameters with these names are
#: left out of the per-parameter fields (they stay in ``args``).
CALLBACK_FIELDS = ("call", "app", "name", "addr", "clientid", "tcurl", "flashver", "args")


def callback_form(request: AccessRequest) -> dict[str, str]:
    """The form fields POSTed to an ``--on-publish``/``--on-play`` URL.

    ``call`` (``publish``/``play``), ``app``, ``name``, ``addr`` (peer address),
    ``clientid`` (connection id), ``tcurl`` and ``flashver`` (from ``connect``),
    ``args`` (the name's query string), then each query parameter as a field of
    its own (``key=...``) unless its name is one of :data:`CALLBACK_FIELDS`, as
    nginx-rtmp passes them.
    """
    params = request.connect_params
    form = {
        "call": request.action,
        "app": request.app,
        "name": request.name,
        "addr": request.host,
        "clientid": str(request.conn_id),
        "tcurl": str(params.get("tcUrl", "")),
        "flashver": str(params.get("flashVer", "")),
        "args": urlencode(dict(request.args)),
    }
    for key, value in request.args.items():
        form.setdefault(key, value)
    return form


def _cancelled(failure: Failure) -> bool:
    """Whether *failure* is a cancelled request (the Agent wraps CancelledError)."""
    if failure.check(defer.CancelledError):
        return True
    reasons = getattr(failure.value, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(defer.CancelledError) for r in reasons)


def timed_out(result: object, timeout: float) -> Failure:
    """An ``addTimeout`` ``onTimeoutCancel``: the failure of a request that got no answer."""
    return Failure(defer.TimeoutError(f"no answer within {timeout:g} s"))


@implementer(IAuthorizer)
class HTTPCallbackAuthorizer:
    """POST the request to a URL, in the style of nginx-rtmp's ``on_publish``.

    The body is ``application/x-www-form-urlencoded`` (:func:`callback_form`).
    A 2xx answer allows; a 3xx with ``Location: rtmp://...`` allows through a
    relay (:class:`RelayRedirect`: pull the play from there, push the publish
    there); any other status (another 3xx too), a connection error or no answer
    within *timeout* seconds refuses.  HTTP redirects are not followed.  Uses
    Twisted's non-blocking HTTP client on the given reactor.

    :ivar url: the callback URL.
    :ivar action: the action this callback is asked about.
    :ivar timeout: seconds for connecting, sending and the response headers.
    """

    def __init__(
        self,
        url: str,
        action: str,
        reactor: Any,
        *,
        timeout: float = DEFAULT_CALLBACK_TIMEOUT,
        agent: Any = None,
    ) -> None:
        if action not in tokens.ACTIONS:
            raise ValueError(f"action must be one of {tokens.ACTIONS}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the callback URL must be http:// or https://, got {url!r}")
        from twisted.web.client import Agent

        self.url = url
        self.action = action
        self.name = f"on-{action}"
        self.timeout = timeout
        self._reactor = reactor
        self._agent = agent if agent is not None else Agent(reactor, connectTimeout=timeout)

    def __repr__(self) -> str:
        return f"HTTPCallbackAuthorizer({self.action!r}, {self.url!r})"

    def _ask(self, request: AccessRequest) -> bool | defer.Deferred[bool]:
        if request.action != self.action:
            return True
        body = urlencode(callback_form(request)).encode()
        headers = Headers(
            {
                b"Content-Type": [b"application/x-www-form-urlencoded"],
                b"User-Agent": [b"streamserver"],
            }
        )
        deferred: defer.Deferred[Any] = self._agent.request(
            b"POST", self.url.encode(), headers, FormBody(body)
        )
        # Cancelling a request in flight fails it with ResponseNeverReceived, not
        # CancelledError, so say "timeout" explicitly whatever the cancel produced.
        deferred.addTimeout(self.timeout, self._reactor, onTimeoutCancel=timed_out)
        deferred.addCallbacks(self._answered, self._failed, errbackArgs=(request,))
        return deferred

    def _answered(self, response: IResponse) -> bool | RelayRedirect:
        response.deliverBody(DiscardBody())
        if 200 <= response.code < 300:
            return True
        if 300 <= response.code < 400:
            location = (response.headers.getRawHeaders(b"location") or [b""])[0]
            url = location.decode("utf-8", "replace").strip()
            if url.startswith("rtmp://"):
                return RelayRedirect(url)
        raise UnauthorizedError(f"{self.name} callback answered {response.code}")

    def _failed(self, failure: Failure, request: AccessRequest) -> Failure:
        if failure.check(defer.TimeoutError):
            reason = f"{self.name} callback timed out after {self.timeout:g} s"
        elif _cancelled(failure):
            return Failure(defer.CancelledError())  # the publish or play was abandoned
        else:
            reason = f"{self.name} callback failed"
        _log.warn(
            "{callback} for {stream} by {peer}: {reason}: {error}",
            callback=self.name,
            stream=request.stream,
            peer=request.host,
            reason=reason,
            error=failure.getErrorMessage(),
        )
        return Failure(UnauthorizedError(reason))

    def authorize_publish(self, request: AccessRequest) -> bool | defer.Deferred[bool]:
        return self._ask(request)

    def authorize_play(self, request: AccessRequest) -> bool | defer.Deferred[bool]:
        return self._ask(request)


@dataclass
class AccessConfig:
    """Who may publish and play; the twistd options map onto these fields.

    :ivar publish_from: networks publishing is allowed from (CIDR); empty means
        loopback only, unless an explicit publish authorizer is configured.
    :ivar publish_keys_file: path of the ``NAME SECRET`` publish keys file.
    :ivar publish_token_secret: secret of signed publish URLs.
    :ivar play_token_secret: secret of signed play URLs.
    :ivar on_publish: URL POSTed to before a publish starts.
    :ivar on_play: URL POSTed to before a play starts.
    :ivar callback_timeout: seconds an HTTP callback may take.
    :ivar authorizers: more authorizers (plug-ins), asked after the built-in
        ones and before the HTTP callbacks.
    """

    publish_from: Sequence[str] = ()
    publish_keys_file: str | None = None
    publish_token_secret: str | None = None
    play_token_secret: str | None = None
    on_publish: str | None = None
    on_play: str | None = None
    callback_timeout: float = DEFAULT_CALLBACK_TIMEOUT
    authorizers: Sequence[IAuthorizer] = ()

    @property
    def explicit_publish_authorizers(self) -> bool:
        """Whether keys, tokens or a callback authenticate publishers."""
        return bool(self.publish_keys_file or self.publish_token_secret or self.on_publish)

    def describe(self) -> tuple[str, str]:
        """Who may publish and who may play, in words, for the start-up log."""
        publish: list[str] = []
        networks = list(self.publish_from)
        if not networks and not self.explicit_publish_authorizers:
            publish.append("from loopback only (127.0.0.0/8, ::1)")
        elif networks:
            publish.append(f"from {', '.join(networks)}")
        if self.publish_keys_file:
            publish.append(f"with a stream key from {self.publish_keys_file}")
        if self.publish_token_secret:
            publish.append("with a signed URL")
        play: list[str] = []
        if self.play_token_secret:
            play.append("with a signed URL")
        for authorizer in self.authorizers:
            publish.append(f"if {authorizer.name} allows")
            play.append(f"if {authorizer.name} allows")
        if self.on_publish:
            publish.append(f"if {self.on_publish} answers 2xx")
        if self.on_play:
            play.append(f"if {self.on_play} answers 2xx")
        return " and ".join(publish), " and ".join(play) or "from anywhere"


def build_authorizer(
    access: AccessConfig, reactor: Any, clock: Callable[[], float] | None = None
) -> AllOf:
    """The composed authorizer *access* describes.

    Order: network restriction, publish keys, tokens, plug-ins, HTTP callbacks
    (the slowest last, so a request refused locally never reaches them).

    :raises OSError, ValueError: the publish keys file cannot be read or parsed,
        a network or URL is malformed.
    """
    now = clock if clock is not None else reactor.seconds
    chain: list[IAuthorizer] = []
    if access.publish_from:
        chain.append(AddressAuthorizer(access.publish_from))
    elif not access.explicit_publish_authorizers:
        chain.append(AddressAuthorizer(LOOPBACK_NETWORKS))
    if access.publish_keys_file:
        chain.append(PublishKeyAuthorizer(path=access.publish_keys_file))
    if access.publish_token_secret:
        chain.append(TokenAuthorizer(access.publish_token_secret, "publish", now))
    if access.play_token_secret:
        chain.append(TokenAuthorizer(access.play_token_secret, "play", now))
    chain.extend(access.authorizers)
    for url, action in ((access.on_publish, "publish"), (access.on_play, "play")):
        if url:
            chain.append(
                HTTPCallbackAuthorizer(url, action, reactor, timeout=access.callback_timeout)
            )
    return AllOf(*chain)
