"""SubscribeMixin: a viewer plays a live stream.

Hooks overridden: ``connectionMade``, ``admit_frame`` (a paused viewer's frames
are refused, counted as :attr:`~streamserver.policy.DropReason.PAUSED`),
``stream_published`` / ``stream_unpublished`` (``NetStream.Play.PublishNotify``
/ ``UnpublishNotify``: the viewer stays connected), ``message_stream_deleted``
and ``session_closed`` (stop playing).

Events emitted: ``stream_joined`` / ``stream_left`` with role ``"viewer"`` when
a play starts / ends (the chat mixin seats the viewer in the room).

Commands defined here: ``play``, ``pause``, ``FCSubscribe``, ``FCUnsubscribe``,
``receiveAudio``, ``receiveVideo``.

Each play creates a :class:`~streamserver.media.viewer.Viewer` (``viewer``) in
the group of its :class:`RtmpChunks` format.  The protocol is the viewer's owner
(status messages, disconnects, failures) and its gate: the viewer asks the
protocol's ``admit_frame`` chain for every frame, and that chain's backpressure
step asks the drop policy.  The hot path is the viewer's (``docs/architecture.md``).

Offers :class:`~streamserver.protocol.contracts.Playing`; needs
:class:`~streamserver.protocol.contracts.Messaging`,
:class:`~streamserver.protocol.contracts.Session` and
:class:`~streamserver.protocol.contracts.Disconnecting` (the viewer's owner
disconnects it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from typing_extensions import override

from streamserver.auth import RelayRedirect
from streamserver.codec import messages
from streamserver.codec.chunk import encode_message
from streamserver.codec.messages import (
    CSID_AUDIO,
    CSID_DATA,
    CSID_VIDEO,
    Command,
    Message,
    MessageType,
)
from streamserver.errors import StreamError
from streamserver.events import PLAY, SessionEvent
from streamserver.media.stream import Frame, Stream
from streamserver.media.viewer import Viewer
from streamserver.policy import PAUSED, Decision
from streamserver.protocol.base import ProtocolRoot
from streamserver.protocol.session import split_name

_log = Logger()

_CSID_BY_TYPE: dict[int, int] = {MessageType.AUDIO: CSID_AUDIO, MessageType.VIDEO: CSID_VIDEO}


@dataclass(frozen=True, slots=True)
class RtmpChunks:
    """The RTMP wire format of a group of viewers: chunk size and message stream id.

    Every media message's first chunk carries a full (fmt 0) header, so there is
    no per-viewer header state and one serialization serves the whole group.
    Media goes out on chunk streams 4 (audio), 6 (video) and 5 (data).
    """

    chunk_size: int
    stream_id: int

    def encode(self, frame: Frame) -> bytes:
        """*frame* as chunk bytes for this group."""
        message = frame.message
        return encode_message(
            Message(message.type_id, self.stream_id, message.timestamp, message.payload),
            _CSID_BY_TYPE.get(message.type_id, CSID_DATA),
            self.chunk_size,
        )


if TYPE_CHECKING:
    from streamserver.protocol.contracts import Disconnecting, Messaging, Playing, Session

    class _Contracts(Messaging, Session, Disconnecting, Playing, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class SubscribeMixin(_Contracts):
    """Plays one stream per connection, on the message stream ``play`` came on.

    :ivar viewer: the :class:`~streamserver.media.viewer.Viewer` of the current
        play, or ``None``.
    :ivar play_event: the current play's session event (told to ``factory.events``).
    :ivar play_stream_id: the message stream id the media goes out on.
    :ivar play_args: query parameters of the played name.
    :ivar _paused: the viewer paused the stream (``pause``).
    :ivar _play_pending: the authorization of a ``play`` in progress, or ``None``.
    :ivar _play_pending_id: the message stream id of that ``play``.
    """

    #: the wire protocol, as viewers' and connections' snapshots name it
    protocol_name = "rtmp"
    viewer: Viewer | None = None
    play_event: SessionEvent | None = None
    play_stream_id = 0
    play_args: dict[str, str]
    _paused = False
    _play_pending: defer.Deferred[None] | None = None
    _play_pending_id: int | None = None

    @override
    def connectionMade(self) -> None:
        self.play_args = {}
        super().connectionMade()

    @property
    def play_stream(self) -> Stream | None:
        """The stream played, or ``None``."""
        viewer = self.viewer
        return viewer.stream if viewer is not None else None

    @override
    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        decision = super().admit_frame(viewer, frame, size)
        return PAUSED if self._paused else decision

    @override
    def admits_every_frame(self, viewer: Viewer) -> bool:
        admitted = super().admits_every_frame(viewer)
        return admitted and not self._paused

    def viewer_failed(self, viewer: Viewer, error: BaseException) -> None:
        """Delivering to this connection's viewer raised: log it once and drop the connection."""
        stream = viewer.stream
        _log.failure(
            "delivering to viewer {peer} of {stream} failed; disconnecting it",
            Failure(error, type(error), error.__traceback__),
            peer=self.peer,
            stream=f"{stream.app}/{stream.name}",
        )
        self.drop_connection()

    # --- stream events -------------------------------------------------------------

    @override
    def stream_published(self, stream: Stream) -> None:
        self.send_message(messages.stream_begin(self.play_stream_id))
        self.send_status(
            self.play_stream_id, "NetStream.Play.PublishNotify", f"{stream.name} is now published."
        )
        super().stream_published(stream)

    @override
    def stream_unpublished(self, stream: Stream) -> None:
        self.send_status(
            self.play_stream_id,
            "NetStream.Play.UnpublishNotify",
            f"{stream.name} is now unpublished.",
        )
        super().stream_unpublished(stream)

    @override
    def message_stream_deleted(self, stream_id: int) -> None:
        if self.play_stream is not None and stream_id == self.play_stream_id:
            self.stop_playing()
        if self._play_pending_id == stream_id:
            self._cancel_pending_play()
        super().message_stream_deleted(stream_id)

    @override
    def session_closed(self) -> None:
        self._cancel_pending_play()
        self.stop_playing()
        super().session_closed()

    # --- commands ----------------------------------------------------------------------

    def command_play(self, command: Command) -> None:
        """``play``: authorize, then subscribe to the named stream.

        Until the factory's authorizer answers, the current play (if any) goes
        on; a ``play`` sent meanwhile replaces the pending one.
        """
        name, args = split_name(command.args[0] if command.args else None)
        self._cancel_pending_play()
        pending = self.authorize_access("play", name, args)
        self._play_pending = pending
        self._play_pending_id = command.stream_id
        pending.addCallback(self._play_authorized, command, name, args)
        pending.addErrback(self._play_failed, command)

    def _cancel_pending_play(self) -> None:
        pending = self._play_pending
        self._play_pending = None
        self._play_pending_id = None
        if pending is not None:
            pending.cancel()

    def _play_failed(self, failure: Failure, command: Command) -> None:
        """The authorization refused the play, or starting it failed."""
        if failure.check(defer.CancelledError) or self.closing:
            return  # replaced by another play, stream deleted or connection closed
        self._play_pending = None
        self._play_pending_id = None
        if isinstance(failure.value, StreamError):
            self.refuse(command, failure.value)
        else:
            _log.failure("play by {peer} failed", failure, peer=self.peer)

    def _play_authorized(
        self, decision: RelayRedirect | None, command: Command, name: str, args: dict[str, str]
    ) -> None:
        """Start the play the authorizer allowed, unless it was cancelled meanwhile.

        A :class:`~streamserver.auth.RelayRedirect` (an ``--on-play`` 3xx) pulls the
        stream from there when nobody publishes it here.

        :raises StreamError: the server's stream limit is reached.
        """
        if self._play_pending is None or self.closing:
            return
        self._play_pending = None
        self._play_pending_id = None
        self.play_args = args
        self.stop_playing()
        stream_id = command.stream_id
        stream = self.factory.open_stream(self.app or "", name, "NetStream.Play.Rejected")
        self.play_stream_id = stream_id
        viewer = Viewer(
            stream,
            self,
            RtmpChunks(self.out_chunk_size, stream_id),
            self.factory.viewer_server(stream.app),
            gate=self,
        )
        self.viewer = viewer
        self._paused = False
        self.send_message(messages.stream_is_recorded(stream_id))
        self.send_message(messages.stream_begin(stream_id))
        self.send_status(stream_id, "NetStream.Play.Reset", f"Playing and resetting {name}.")
        self.send_status(stream_id, "NetStream.Play.Start", f"Started playing {name}.")
        self.send_message(messages.data("|RtmpSampleAccess", True, True, stream_id=stream_id))
        catch_up = stream.subscribe(viewer)
        if stream.publisher is not None:
            viewer.send_catch_up(catch_up)
        self.factory.pulls.demand(stream, decision.url if decision is not None else None)
        _log.info("{app}/{name} played by {peer}", app=stream.app, name=name, peer=self.peer)
        self.stream_joined(stream, stream_id, "viewer", self.play_args)
        self.play_event = self.session_event(PLAY, stream, self.play_args)
        self.factory.events.started(self.play_event)

    def stop_playing(self) -> None:
        """Leave the played stream, if any."""
        viewer = self.viewer
        if viewer is None:
            return
        self.viewer = None
        viewer.leave()
        stream = viewer.stream
        self.stream_left(stream, self.play_stream_id, "viewer")
        event, self.play_event = self.play_event, None
        if event is not None:
            self.factory.events.ended(event, self.factory.seconds())
        self.factory.release_stream(stream)

    def command_pause(self, command: Command) -> None:
        """``pause``: a paused live viewer gets nothing; unpausing jumps to live."""
        pause = bool(command.args[0]) if command.args else True
        self._paused = pause
        viewer = self.viewer
        if pause:
            if viewer is not None:
                viewer.reconsider()  # its frames are refused now: none by the fast lane
            self.send_status(self.play_stream_id, "NetStream.Pause.Notify", "Paused live stream.")
            return
        self.send_status(self.play_stream_id, "NetStream.Unpause.Notify", "Unpaused live stream.")
        if viewer is not None and viewer.stream.publisher is not None:
            viewer.awaiting_keyframe = True
            viewer.send_catch_up(viewer.stream.catch_up_frames())

    def command_FCSubscribe(self, command: Command) -> None:
        """``FCSubscribe`` (sent by rtmpdump and CDN-era players): acknowledged."""
        self.reply(command)
        name = command.args[0] if command.args and isinstance(command.args[0], str) else ""
        self.send_message(
            messages.command(
                "onFCSubscribe", 0, None, messages.status_info("NetStream.Play.Start", name)
            )
        )

    def command_FCUnsubscribe(self, command: Command) -> None:
        """``FCUnsubscribe``: acknowledged; ``deleteStream`` or closing ends the play."""
        self.reply(command)

    def command_receiveAudio(self, command: Command) -> None:
        """``receiveAudio``: accepted; every viewer gets audio."""

    def command_receiveVideo(self, command: Command) -> None:
        """``receiveVideo``: accepted; every viewer gets video."""
