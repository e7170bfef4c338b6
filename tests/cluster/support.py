"""Nodes of a cluster on one FakeStore and one task.Clock, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import Clock

from streamserver.auth import AccessRequest
from streamserver.cluster.chat import ClusterChat
from streamserver.cluster.fake import FakeHandle, FakeStore
from streamserver.cluster.node import ClusterNode, NodeSettings
from streamserver.cluster.store import Keys
from streamserver.events import PLAY, PUBLISH, SessionEvent
from streamserver.media.rooms import ChatMessage
from streamserver.media.stream import Stream, StreamRegistry


class Publisher:
    peer = "test"


class Server:
    """What a node needs of the factory: streams() and kick()."""

    def __init__(self, registry: StreamRegistry) -> None:
        self.registry = registry
        self.kicked: list[tuple[int, str]] = []

    def streams(self) -> list[Stream]:
        return self.registry.streams

    def kick(self, conn_id: int, reason: str = "kicked") -> bool:
        self.kicked.append((conn_id, reason))
        return True


@dataclass
class Node:
    """One node: its store handle, registry, server, node and chat."""

    node: ClusterNode[str]
    handle: FakeHandle
    registry: StreamRegistry
    server: Server
    chat: ClusterChat
    events: dict[int, SessionEvent] = field(default_factory=dict)

    def publish(self, name: str, conn_id: int, app: str = "live") -> Stream:
        stream = self.registry.get_or_create(name)
        stream.publish(Publisher())
        event = SessionEvent(
            PUBLISH, stream, AccessRequest("publish", app, name, conn_id=conn_id), "rtmp", 0.0
        )
        self.events[conn_id] = event
        self.node.session_started(event)
        return stream

    def unpublish(self, conn_id: int) -> None:
        event = self.events.pop(conn_id)
        if event.stream.publisher is not None:
            event.stream.unpublish(event.stream.publisher)
        self.node.session_ended(event, 0.0)

    def play_event(self, name: str, conn_id: int) -> None:
        stream = self.registry.get_or_create(name)
        event = SessionEvent(
            PLAY, stream, AccessRequest("play", "live", name, conn_id=conn_id), "rtmp", 0.0
        )
        self.node.session_started(event)


def make_node(store: FakeStore, clock: Clock, node_id: str, *, history: int = 50) -> Node:
    handle = store.handle()
    keys = Keys()
    chat = ClusterChat(handle, keys, node_id, history)
    registry = StreamRegistry("live", clock=clock.seconds, chat_history=history, chat_bridge=chat)
    server = Server(registry)
    settings = NodeSettings(node_id=node_id, advertise=f"rtmp://{node_id}.test:1935")
    node: ClusterNode[str] = ClusterNode(server, handle, settings, clock, lambda url: url)
    return Node(node, handle, registry, server, chat)


class Seat:
    """A chat participant that records the messages it is given."""

    fanout_key = "seat"

    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []

    def encode_chat(self, message: ChatMessage, timestamp: int) -> Any:
        return (message.id, message.text)

    def deliver_chat(self, data: Any) -> None:
        self.messages.append(data)
