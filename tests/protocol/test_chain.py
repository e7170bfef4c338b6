"""The cooperative chain: the import-time guard and the composed protocol's hooks."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from twisted.python.failure import Failure

from streamserver.codec.flv import FrameKind
from streamserver.codec.messages import Message, MessageType, acknowledgement
from streamserver.media.stream import Frame, Stream
from streamserver.media.viewer import Viewer
from streamserver.protocol import base
from streamserver.protocol.base import (
    CHAINED_HOOKS,
    ChainError,
    ProtocolRoot,
    check_class,
    check_composition,
    hook_path,
)
from streamserver.protocol.server import RTMPServerProtocol
from streamserver.protocol.subscribe import RtmpChunks
from streamserver.testing import FakePeer


def _sample_args(peer: FakePeer) -> dict[str, tuple[Any, ...]]:
    frame = Frame(FrameKind.AUDIO, Message(MessageType.AUDIO, 0, 0, b"\xaf\x01\x00"))
    stream = Stream("live", "chain")
    protocol = peer.protocol
    viewer = Viewer(stream, protocol, RtmpChunks(128, 7), protocol.factory, gate=protocol)
    return {
        "connectionMade": (),
        "dataReceived": (b"",),
        "connectionLost": (Failure(ConnectionError("test")),),
        "pauseProducing": (),
        "resumeProducing": (),
        "stopProducing": (),
        "handshake_completed": (),
        "message_received": (acknowledgement(0),),
        "admit_frame": (viewer, frame, 10),
        "admits_every_frame": (viewer,),
        "stream_published": (stream,),
        "stream_unpublished": (stream,),
        "stream_joined": (stream, 7, "viewer", {}),
        "stream_left": (stream, 7, "viewer"),
        "message_stream_deleted": (7,),
        "session_closed": (),
    }


def _count_root_arrivals(monkeypatch) -> dict[str, int]:
    """Wrap every root hook so each arrival at ProtocolRoot is counted."""
    counts: dict[str, int] = {}
    for hook in CHAINED_HOOKS:
        original = vars(ProtocolRoot)[hook]

        def counting(self, *args, _hook=hook, _original=original):
            counts[_hook] = counts.get(_hook, 0) + 1
            return _original(self, *args)

        monkeypatch.setattr(ProtocolRoot, hook, counting)
    return counts


def test_every_hook_reaches_the_root_exactly_once(factory, monkeypatch) -> None:
    """Calling each chained hook on the composed protocol arrives at ProtocolRoot once."""
    peer = FakePeer(factory)
    peer.connect("live")
    samples = _sample_args(peer)
    assert set(samples) == set(CHAINED_HOOKS), "every chained hook needs sample arguments"
    counts = _count_root_arrivals(monkeypatch)
    for hook in CHAINED_HOOKS:
        counts.clear()
        getattr(peer.protocol, hook)(*samples[hook])
        assert counts.get(hook) == 1, f"{hook} reached the root {counts.get(hook, 0)} times"


def test_the_root_count_can_fail(factory, monkeypatch) -> None:
    """A composed class whose override skips super() is seen by the arrival count."""

    class Skipping(ProtocolRoot, unchecked_chain=True):
        def stream_published(self, stream: Stream) -> None:
            pass

    class Broken(Skipping, RTMPServerProtocol, unchecked_chain=True):
        pass

    counts = _count_root_arrivals(monkeypatch)
    Broken().stream_published(Stream("live", "x"))
    assert counts.get("stream_published", 0) == 0


def _define(source: str) -> type:
    namespace: dict[str, Any] = {"ProtocolRoot": ProtocolRoot}
    exec(textwrap.dedent(source), namespace)
    return namespace["Mixin"]


GOOD = [
    """
    class Mixin(ProtocolRoot):
        def connectionMade(self):
            self.x = 1
            super().connectionMade()
    """,
    """
    class Mixin(ProtocolRoot):
        def admit_frame(self, viewer, frame, size):
            decision = super().admit_frame(viewer, frame, size)
            return decision if size < 10 else PAUSED
    """,
    """
    class Mixin(ProtocolRoot):
        def dataReceived(self, data):
            try:
                super().dataReceived(data)
            except ValueError:
                pass
    """,
]

BAD = {
    "never calls": """
    class Mixin(ProtocolRoot):
        def connectionMade(self):
            self.x = 1
    """,
    "only on some paths": """
    class Mixin(ProtocolRoot):
        def pauseProducing(self):
            if self.x:
                super().pauseProducing()
    """,
    "short circuit": """
    class Mixin(ProtocolRoot):
        def admit_frame(self, viewer, frame, size):
            return size < 10 and super().admit_frame(viewer, frame, size)
    """,
    "early return": """
    class Mixin(ProtocolRoot):
        def message_received(self, message):
            if message is None:
                return
            super().message_received(message)
    """,
    "twice": """
    class Mixin(ProtocolRoot):
        def session_closed(self):
            super().session_closed()
            super().session_closed()
    """,
    "other hook": """
    class Mixin(ProtocolRoot):
        def resumeProducing(self):
            super().pauseProducing()
    """,
}


@pytest.mark.parametrize("source", GOOD)
def test_guard_accepts_cooperative_overrides(tmp_path, source: str) -> None:
    """Overrides that always call super() once import fine."""
    path = tmp_path / "good_mixin.py"
    path.write_text(
        "from streamserver.protocol.base import ProtocolRoot\n" + textwrap.dedent(source)
    )
    _import_file(path)


@pytest.mark.parametrize("name", sorted(BAD))
def test_guard_rejects_broken_overrides(tmp_path, name: str) -> None:
    """A class whose hook override does not always call super() once fails at import."""
    path = tmp_path / f"bad_{name.replace(' ', '_')}.py"
    path.write_text(
        "from streamserver.protocol.base import ProtocolRoot\n" + textwrap.dedent(BAD[name])
    )
    with pytest.raises(ChainError, match="super"):
        _import_file(path)


def test_guard_without_source_checks_bytecode() -> None:
    """Classes built by exec (no source file) are still checked, by their bytecode."""
    with pytest.raises(ChainError, match="never calls"):
        _define(BAD["never calls"])
    assert _define(GOOD[0]).__name__ == "Mixin"


def test_guard_can_be_bypassed_only_explicitly() -> None:
    """unchecked_chain=True skips the check (used to rebuild the story's bug)."""

    class Unchecked(ProtocolRoot, unchecked_chain=True):
        def connectionMade(self) -> None:
            pass

    with pytest.raises(ChainError):
        check_class(Unchecked)


def test_composition_rejects_a_command_with_two_owners() -> None:
    """A command_<name> defined by two mixins is refused."""

    class A(ProtocolRoot):
        def command_thing(self, command: Any) -> None:
            pass

    class B(ProtocolRoot):
        def command_thing(self, command: Any) -> None:
            pass

    class Both(A, B):
        pass

    with pytest.raises(ChainError, match="command_thing"):
        check_composition(Both)


def test_hook_path_lists_mixins_in_order() -> None:
    """hook_path shows which mixins a hook passes through, ending at the root."""
    path = hook_path(RTMPServerProtocol, "connectionMade")
    assert path[0] == "HandshakeMixin"
    assert path[-1] == "ProtocolRoot"
    assert "ChunkingMixin" in path


def _import_file(path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def test_chained_hooks_are_defined_on_the_root() -> None:
    """Every hook in CHAINED_HOOKS has a root definition that ends the chain."""
    for hook in CHAINED_HOOKS:
        assert hook in vars(base.ProtocolRoot)
