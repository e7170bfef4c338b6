"""ProtocolRoot: the one class that ends every cooperative hook chain.

The server protocol is composed from mixins (handshake, chunking, session,
publish, subscribe, chat, backpressure), each a subclass of :class:`ProtocolRoot`.
Because every mixin subclasses the root and the root is the only subclass of
:class:`~twisted.internet.protocol.Protocol`, the root is always last in the MRO
and ends every chain.

The chained hooks are listed once, in :data:`CHAINED_HOOKS`.  Every override of
a chained hook must call ``super().<hook>(...)`` exactly once, unconditionally;
a hook never stops the chain with a "handled" flag.  A mixin that contributes to
a decision (:meth:`ProtocolRoot.admit_frame`) combines its verdict with the one
``super()`` returned -- after calling it, never instead of calling it.

This is checked at import time by :meth:`ProtocolRoot.__init_subclass__`: a
class whose override of a chained hook lacks an unconditional ``super()`` call
is rejected with :class:`ChainError`.  The story this project comes from is a
server that ate all its memory because one override lost its ``super()`` call
and the write-buffer check behind the drop policy stopped running; here that
class would not even import.

A viewer that keeps up gets its frames by its group's fast lane
(:mod:`streamserver.media.lane`), without asking the chain for each frame.
Only a chain that declares when it would refuse allows that: every class that
overrides ``admit_frame`` also overrides :meth:`ProtocolRoot.admits_every_frame`
(chained like the others), answering ``False`` in every state in which its
``admit_frame`` could refuse a frame, and calls ``viewer.reconsider()`` when it
enters such a state.  A composed class in which one ``admit_frame`` override
lacks its ``admits_every_frame`` twin is not *fast-lane safe*
(:attr:`ProtocolRoot.fast_lane_safe`): its viewers get every frame decided by
the chain -- slower, never wrong.

Commands (``connect``, ``play``...) are not chained: they are dispatched by name
to ``command_<name>`` methods, each defined by exactly one mixin
(:func:`check_composition`).

The root holds only what every connection has: ``factory``, ``link``,
``conn_id``, ``closing``, :meth:`ProtocolRoot.drop_connection` and the chained
hooks.  What the mixins offer one another is declared, for the type checker, in
:mod:`streamserver.protocol.contracts`.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from typing_extensions import override
from zope.interface import implementer

from streamserver.policy import ADMIT, Decision
from streamserver.transport import TransportAdapter

if TYPE_CHECKING:
    from streamserver.codec.messages import Message
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.stream import Frame, Stream
    from streamserver.media.viewer import Viewer


class ChainError(TypeError):
    """A class breaks the cooperative chain (a hook override without ``super()``)."""


#: The hooks every mixin may override, each of which must call ``super()``
#: exactly once, unconditionally.  Twisted's own names keep their camelCase.
CHAINED_HOOKS: tuple[str, ...] = (
    # Twisted IProtocol
    "connectionMade",
    "dataReceived",
    "connectionLost",
    # Twisted IPushProducer: the transport pauses us when its buffer fills
    "pauseProducing",
    "resumeProducing",
    "stopProducing",
    # ours
    "handshake_completed",
    "message_received",
    "admit_frame",
    "admits_every_frame",
    "stream_published",
    "stream_unpublished",
    "stream_joined",
    "stream_left",
    "message_stream_deleted",
    "session_closed",
)


@implementer(IPushProducer)
class ProtocolRoot(Protocol):
    """End of every hook chain; defines every chained hook as a no-op.

    Subclasses may pass ``unchecked_chain=True`` as a class keyword to skip the
    import-time check.  Only tests that rebuild the story's bug do that.
    """

    #: True once :meth:`drop_connection` was called: stop processing input.
    closing = False

    #: The connection's transport as backpressure sees it; every byte sent goes
    #: through it (set by :meth:`makeConnection`, before ``connectionMade``).
    link: TransportAdapter

    #: The connection's id, unique in the factory (set by ``buildProtocol``).
    conn_id = 0

    if TYPE_CHECKING:
        # Set by the factory's buildProtocol, before anything else runs (Twisted
        # declares it as an optional Factory).  What the mixins offer one another
        # is declared in their contracts (protocol/contracts.py), not here.
        factory: RTMPServerFactory

    #: Every ``admit_frame`` override in the class's MRO has its
    #: ``admits_every_frame`` twin in the same class: its viewers may use the fast
    #: lane (set for each class at its creation).
    fast_lane_safe = True

    def __init_subclass__(cls, *, unchecked_chain: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not unchecked_chain:
            check_class(cls)
        cls.fast_lane_safe = all(
            "admits_every_frame" in vars(klass)
            for klass in cls.__mro__
            if "admit_frame" in vars(klass) and klass is not ProtocolRoot
        )

    def drop_connection(self) -> None:
        """Close the connection now, discarding what is queued (idempotent).

        Used for a peer that broke the protocol or a viewer that cannot keep
        up: neither deserves a graceful flush of its backlog.
        """
        if self.closing:
            return
        self.closing = True
        if self.transport is not None:
            self.link.abort()

    @override
    def makeConnection(self, transport: ITransport) -> None:
        """Wrap *transport* in the :class:`TransportAdapter`, then connect as usual."""
        self.link = TransportAdapter(transport)
        super().makeConnection(transport)

    # --- Twisted IProtocol ---------------------------------------------------

    def connectionMade(self) -> None:
        """The connection is up; every mixin sets up its per-connection state."""

    def dataReceived(self, data: bytes) -> None:
        """Bytes arrived.  The handshake mixin passes on only post-handshake bytes."""

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        """The connection is gone; every mixin releases what it holds."""

    # --- Twisted IPushProducer -----------------------------------------------

    def pauseProducing(self) -> None:
        """The transport's write buffer passed its high-water mark."""

    def resumeProducing(self) -> None:
        """The transport's write buffer was fully handed to the kernel."""

    def stopProducing(self) -> None:
        """The transport will take no more data."""

    # --- ours ------------------------------------------------------------------

    def handshake_completed(self) -> None:
        """The RTMP handshake finished; chunked messages follow."""

    def message_received(self, message: Message) -> None:
        """One complete RTMP message was decoded from the peer."""

    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        """Decide what *viewer* does with *frame* (*size* bytes on the wire); change nothing.

        Each mixin calls ``super().admit_frame(viewer, frame, size)`` first and
        combines its own answer with the result; the root has no objection
        (:data:`~streamserver.policy.ADMIT`).  The backpressure mixin's step asks
        the drop policy, so a mixin in front of it that loses its ``super()``
        call silences the policy: the import-time check refuses such a class.
        """
        return ADMIT

    def admits_every_frame(self, viewer: Viewer) -> bool:
        """Whether this step would admit every frame for *viewer* as things stand.

        Each mixin that overrides :meth:`admit_frame` overrides this too: it calls
        ``super().admits_every_frame(viewer)`` and answers ``False`` in any state
        in which its ``admit_frame`` could refuse a frame, and it calls
        ``viewer.reconsider()`` on entering such a state.  ``True`` lets the
        viewer's frames go by the fast lane (:mod:`streamserver.media.lane`)
        while the policy's fast path holds; the root has no objection.
        """
        return True

    def stream_published(self, stream: Stream) -> None:
        """The stream this connection plays got a publisher."""

    def stream_unpublished(self, stream: Stream) -> None:
        """The stream this connection plays lost its publisher."""

    def stream_joined(
        self, stream: Stream, stream_id: int, role: str, params: dict[str, str]
    ) -> None:
        """This connection joined *stream* on message stream *stream_id*.

        :param role: ``"publisher"``, ``"viewer"`` or ``"chat"`` (``joinChat``).
        :param params: the query parameters of the name it joined with.
        """

    def stream_left(self, stream: Stream, stream_id: int, role: str) -> None:
        """This connection stopped being *role* of *stream* on message stream *stream_id*.

        Emitted before the stream is released from its registry.
        """

    def message_stream_deleted(self, stream_id: int) -> None:
        """The peer deleted or closed message stream *stream_id*: end what runs on it."""

    def session_closed(self) -> None:
        """The RTMP session ended: release streams, rooms and timers (idempotent)."""


# --- the import-time chain check ----------------------------------------------

_CONDITIONAL_STATEMENTS = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Match)


def _super_calls(node: ast.AST, hook: str) -> list[ast.Call]:
    """Every ``super().<hook>(...)`` call anywhere under *node*."""
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == hook
        and isinstance(n.func.value, ast.Call)
        and isinstance(n.func.value.func, ast.Name)
        and n.func.value.func.id == "super"
    ]


def _unconditional_nodes(node: ast.AST) -> list[ast.AST]:
    """The sub-expressions of *node* that are always evaluated.

    Skips branches that may not run: the right side of ``and``/``or``, the
    arms of ``x if c else y``, lambdas and comprehensions.
    """
    found: list[ast.AST] = []
    pending: list[ast.AST] = [node]
    while pending:
        current = pending.pop()
        found.append(current)
        if isinstance(current, ast.BoolOp):
            pending.append(current.values[0])
        elif isinstance(current, ast.IfExp):
            pending.append(current.test)
        elif isinstance(
            current,
            (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
        ):
            continue
        else:
            pending.extend(ast.iter_child_nodes(current))
    return found


def _may_exit(statement: ast.AST) -> bool:
    """Whether *statement* contains a ``return`` or ``raise`` (outside nested defs)."""
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return | ast.Raise):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return False


def _unconditional_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements of *body* that always run, entering ``try``/``with`` bodies.

    Counting stops at a ``return``/``raise``, and after a branch or an
    exception handler that may return or raise: what follows may not run.
    """
    result: list[ast.stmt] = []
    for statement in body:
        if isinstance(statement, _CONDITIONAL_STATEMENTS):
            if _may_exit(statement):
                break
            continue
        if isinstance(statement, ast.Try | ast.TryStar):
            result.extend(_unconditional_statements(statement.body))
            result.extend(_unconditional_statements(statement.finalbody))
            if any(_may_exit(s) for s in [*statement.handlers, *statement.orelse]):
                break
            continue
        if isinstance(statement, ast.With | ast.AsyncWith):
            result.extend(_unconditional_statements(statement.body))
            continue
        result.append(statement)
        if isinstance(statement, ast.Return | ast.Raise):
            break
    return result


def _function_ast(function: types.FunctionType) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
    return None


def chain_problem(function: types.FunctionType, hook: str) -> str | None:
    """Say what is wrong with *function* as an override of *hook*, or ``None``.

    With source available the check is exact: exactly one ``super().<hook>()``
    call, and it always runs.  Without source (code built by ``exec``) it falls
    back to the bytecode: the names ``super`` and *hook* must both be used.
    """
    tree = _function_ast(function)
    if tree is None:
        names = function.__code__.co_names
        if "super" not in names or hook not in names:
            return f"never calls super().{hook}()"
        return None
    calls = _super_calls(tree, hook)
    if not calls:
        return f"never calls super().{hook}()"
    if len(calls) > 1:
        return f"calls super().{hook}() {len(calls)} times; exactly once is required"
    always = {
        id(node)
        for statement in _unconditional_statements(tree.body)
        for node in _unconditional_nodes(statement)
    }
    if id(calls[0]) not in always:
        return f"calls super().{hook}() only on some paths; it must always run"
    return None


def check_class(cls: type) -> None:
    """Reject *cls* if an override of a chained hook breaks the chain.

    :raises ChainError: naming the class, the hook and what is wrong.
    """
    for hook in CHAINED_HOOKS:
        function = cls.__dict__.get(hook)
        if function is None:
            continue
        if not isinstance(function, types.FunctionType):
            raise ChainError(f"{cls.__qualname__}.{hook} must be a plain method")
        problem = chain_problem(function, hook)
        if problem is not None:
            raise ChainError(
                f"{cls.__module__}.{cls.__qualname__}.{hook} {problem}: every override of a "
                f"chained hook must call super().{hook}(...) exactly once, unconditionally"
            )


def command_owners(cls: type) -> dict[str, list[str]]:
    """Map each ``command_<name>`` on *cls* to the classes in its MRO defining it."""
    owners: dict[str, list[str]] = {}
    for klass in cls.__mro__:
        for attribute in vars(klass):
            if attribute.startswith("command_"):
                owners.setdefault(attribute, []).append(klass.__qualname__)
    return owners


def check_composition(cls: type) -> None:
    """Check a composed protocol: the root ends the MRO and commands have one owner.

    :raises ChainError: the composition is not sound.
    """
    mro = cls.__mro__
    root_index = mro.index(ProtocolRoot)
    for klass in mro[:root_index]:
        if not issubclass(klass, ProtocolRoot):
            raise ChainError(f"{klass.__qualname__} comes before ProtocolRoot but is not a mixin")
    for command, owners in command_owners(cls).items():
        if len(owners) > 1:
            raise ChainError(f"{command} is defined by several mixins: {', '.join(owners)}")


def hook_path(cls: type, hook: str) -> list[str]:
    """The classes, in MRO order, whose override of *hook* a call passes through."""
    return [
        klass.__qualname__
        for klass in cls.__mro__
        if issubclass(klass, ProtocolRoot) and hook in vars(klass)
    ]
