"""The viewers of one wire format, and their fast lane.

A :class:`ViewerGroup` is the viewers of a stream that share a
:class:`~streamserver.media.viewer.WireFormat`, so the bytes of every frame.
Each frame is decided for each of them by :meth:`Viewer.deliver
<streamserver.media.viewer.Viewer.deliver>`: the guarded chain, the drop
policy, the write -- about ten Python calls per frame per viewer, which
profiling showed to cost twice what nginx-rtmp spends per delivery in all
(``docs/benchmarks.md``).

For a viewer that keeps up, that decision is known before it is asked.  The
policy's fast path (``streamserver.policy``) says SEND for every frame of a
viewer not waiting for a keyframe, with nothing queued but the frames held for
the same ``sendmsg`` and those within ``drop_low``; the chain's steps say
whether they would admit every frame as things stand
(:meth:`~streamserver.protocol.base.ProtocolRoot.admits_every_frame`).  Such a
viewer is moved to the group's **fast lane**: it gets the group's frames from
one loop, one ``sendmsg`` of the shared bytes per viewer per flush (the end of
a publisher's read, or ``--merge-ms``) and four counters, and no decision per
frame.  What it is sent, and when, is what the slow path would have sent it.

A viewer *joins* at a frame its chain and policy decided to send, when nothing
is queued for it (so no byte of its connection waits in user space), it is
neither watched nor waiting for a keyframe, its level is ``NORMAL``, its
connection is a plain socket (``link.lane_socket``), the policy is the default
one, and the lane holds no frame of the current flush yet.

It *leaves* -- its next frame is decided by its chain and the policy again --
when:

- the kernel does not take a whole flush: the rest goes through its transport,
  in order, and the frames in it are remembered for the queue delay;
- anything else is written to its connection (commands, control, chat), or a
  frame is delivered to it outside the stream's fan-out (a catch-up): its share
  of the held frames goes first (``TransportAdapter`` sees to it);
- the watchdog starts watching it, a new publisher makes it wait for a
  keyframe, or its chain changes its mind (a pause:
  :meth:`~streamserver.media.viewer.Viewer.reconsider`);
- a frame, with the held ones, would pass the policy's ``drop_low``, or the
  policy is no longer the default one: everyone decides that frame.

Nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from streamserver.policy import NEVER_DROPPED, DropFramesPolicy

if TYPE_CHECKING:
    from streamserver.media.stream import Frame, Stream
    from streamserver.media.viewer import Viewer, ViewerServer, WireFormat
    from streamserver.transport import FlushList, TransportAdapter

    #: a viewer of the lane as the flush loop takes it: its adapter, the viewer, and
    #: its socket's ``send`` and ``sendmsg``
    _Member = tuple[TransportAdapter, Viewer, Callable[[bytes], int], Callable[[list[bytes]], int]]

#: The most frames one flush holds: the most buffers one ``sendmsg`` takes
#: (Linux's ``IOV_MAX``, ``streamserver.transport.IOV_MAX``; that module imports Twisted).
MAX_PIECES = 1024


class ViewerGroup:
    """The viewers of *stream* whose frames are serialized as *wire_format*.

    :ivar format: the group's wire format.
    :ivar viewers: every viewer of the group, in the order they came.
    :ivar slow: the viewers outside the fast lane (each frame decided for each).
    :ivar lane: the viewers in the fast lane, by their transport adapter.
    :ivar pending: the bytes of the frames held for the lane's next flush.
    :ivar pending_frames: those frames.
    :ivar pending_bytes: their bytes' length.
    :ivar delivering: the slow viewers are being given a frame: one of them may
        join the lane with it (:meth:`join`).
    :ivar video_serial: video frames the lane has taken (a viewer leaving
        after one took its timestamp as its last video frame's).
    :ivar video_ts: the timestamp of the last of those.
    :ivar flushed_at: when a merging :class:`FlushList` last flushed the lane
        (not read: held frames here are never a viewer's queue).
    """

    __slots__ = (
        "_flush_list",
        "_listed",
        "_members",
        "_server",
        "delivering",
        "flushed_at",
        "format",
        "lane",
        "pending",
        "pending_bytes",
        "pending_frames",
        "slow",
        "stream",
        "video_serial",
        "video_ts",
        "viewers",
    )

    def __init__(self, stream: Stream, wire_format: WireFormat) -> None:
        self.stream = stream
        self.format = wire_format
        self.viewers: dict[Viewer, None] = {}
        self.slow: dict[Viewer, None] = {}
        self.lane: dict[TransportAdapter, Viewer] = {}
        #: the lane as the flush loop walks it, made again after a change
        self._members: list[_Member] | None = None
        self.pending: list[bytes] = []
        self.pending_frames: list[Frame] = []
        self.pending_bytes = 0
        self.delivering = False
        self.video_serial = 0
        self.video_ts: int | None = None
        self.flushed_at = 0.0
        self._flush_list: FlushList | None = None
        self._listed = False
        self._server: ViewerServer | None = None

    def __len__(self) -> int:
        return len(self.viewers)

    def __iter__(self) -> Iterator[Viewer]:
        return iter(self.viewers)

    def __contains__(self, viewer: object) -> bool:
        return viewer in self.viewers

    # --- membership ----------------------------------------------------------------

    def add(self, viewer: Viewer) -> None:
        """*viewer* joins the group, outside the lane."""
        self.viewers[viewer] = None
        self.slow[viewer] = None

    def remove(self, viewer: Viewer) -> None:
        """*viewer* leaves the group; frames held for it are forgotten (it is going)."""
        self.viewers.pop(viewer, None)
        self.slow.pop(viewer, None)
        link: TransportAdapter = viewer.link  # type: ignore[assignment]
        if self.lane.get(link) is viewer:
            self._leave(link)

    def join(self, viewer: Viewer, size: int) -> bool:
        """Move *viewer* into the lane, with the frame of *size* bytes being delivered.

        Called by :meth:`Viewer.deliver` for a frame its chain and policy
        decided to send, nothing queued: the lane then sends that frame.

        :returns: whether it joined (else it writes the frame itself).
        """
        if not self.delivering or self.pending or viewer not in self.slow:
            return False
        server = viewer.server
        policy = server.policy
        if type(policy) is not DropFramesPolicy or size > policy.limits.drop_low:
            return False
        link: TransportAdapter = viewer.link  # type: ignore[assignment]
        sock = link.lane_socket
        if sock is None or link.lane is not None or getattr(link, "preamble", None):
            return False  # (an HTTP-FLV response's header goes with its first frame)
        if self.lane and (link.flush_list is not self._flush_list or server is not self._server):
            return False  # one flush list and one policy per lane
        if not viewer.lane_ready():
            return False
        self._flush_list = link.flush_list
        self._server = server
        del self.slow[viewer]
        self.lane[link] = viewer
        self._members = None
        link.lane = self
        viewer.joined_lane(self.video_serial)
        return True

    def release(self, link: TransportAdapter) -> None:
        """The viewer on *link* leaves the lane, once its held frames are sent."""
        viewer = self.lane.get(link)
        if viewer is None:
            return
        pending = self.pending
        if pending:
            # Flush's loop for one viewer: keep the two alike
            total = self.pending_bytes
            sock = link.lane_socket
            try:
                sent = sock.sendmsg(pending) if sock is not None else 0
            except OSError:
                sent = 0
            link.written += total
            link.media_written += total
            viewer.frames_sent += len(pending)
            viewer.bytes_sent += total
            self.stream.bytes_out += total
            if sent != total:
                self._spill(link, viewer, sent, pending, self.pending_frames, total)
                return
        self._leave(link)

    def remove_link(self, link: TransportAdapter) -> None:
        """The viewer on *link* leaves the lane now (its connection is being
        aborted): the frames held for it are forgotten."""
        if link in self.lane:
            self._leave(link)

    def release_all(self) -> None:
        """Every viewer leaves the lane, once the held frames are sent."""
        self.flush()
        for link in list(self.lane):
            self._leave(link)

    def _leave(self, link: TransportAdapter) -> None:
        viewer = self.lane.pop(link)
        self._members = None
        link.lane = None
        if viewer in self.viewers:
            self.slow[viewer] = None
        viewer.left_lane(self.video_serial, self.video_ts)
        if not self.lane and self.pending:
            # every viewer the held frames were for has them, or is gone
            self.pending = []
            self.pending_frames = []
            self.pending_bytes = 0

    # --- the fan-out -----------------------------------------------------------------

    def deliver(self, frame: Frame, data: bytes) -> None:
        """Give *frame*, whose bytes in the group's format are *data*, to every viewer."""
        size = len(data)
        if self.lane:
            self._make_room(size)
        self.delivering = True
        try:
            for viewer in tuple(self.slow):
                viewer.deliver(frame, data)
        finally:
            self.delivering = False
        if not self.lane:
            return
        self.pending.append(data)
        self.pending_frames.append(frame)
        self.pending_bytes += size
        if frame.is_video and frame.kind not in NEVER_DROPPED:
            self.video_serial += 1
            self.video_ts = frame.message.timestamp
        flush_list = self._flush_list
        if flush_list is not None and flush_list.holding:
            if not self._listed:
                self._listed = True
                flush_list.add(self)
            return
        self.flush()

    def _make_room(self, size: int) -> None:
        """Before a frame of *size* bytes: flush if it would pass ``drop_low`` with the
        held ones; with the policy changed, or a frame past ``drop_low`` alone,
        everyone decides it."""
        server = self._server
        policy = server.policy if server is not None else None
        if type(policy) is not DropFramesPolicy:
            self.release_all()
            return
        assert isinstance(policy, DropFramesPolicy)
        limit = policy.limits.drop_low
        pending = self.pending
        if pending and (self.pending_bytes + size > limit or len(pending) >= MAX_PIECES):
            self.flush()
        if size > limit:
            self.release_all()

    def flush(self) -> None:
        """Send the held frames to every viewer in the lane: one ``sendmsg`` each.

        A viewer whose kernel does not take them all leaves the lane, the rest
        going through its transport.  Never raises: a failure is that viewer's.
        """
        self._listed = False
        pending = self.pending
        if not pending:
            return
        frames = self.pending_frames
        total = self.pending_bytes
        count = len(pending)
        self.pending = []
        self.pending_frames = []
        self.pending_bytes = 0
        members = self._members
        if members is None:
            members = self._members = []
            for link, viewer in self.lane.items():
                sock = link.lane_socket
                assert sock is not None  # (join() took only a link with one)
                members.append((link, viewer, sock.send, sock.sendmsg))
        one = pending[0] if count == 1 else None  # send() costs less than sendmsg()
        short: list[tuple[TransportAdapter, Viewer, int]] = []
        # the hot loop: one C call and four counters per viewer (release() has its twin)
        for link, viewer, send, sendmsg in members:
            try:
                sent = send(one) if one is not None else sendmsg(pending)
            except OSError:
                sent = 0  # EAGAIN, or an error the transport meets next
            link.written += total
            link.media_written += total
            viewer.frames_sent += count
            viewer.bytes_sent += total
            if sent != total:
                short.append((link, viewer, sent))
        self.stream.bytes_out += total * len(members)
        for link, viewer, sent in short:
            self._spill(link, viewer, sent, pending, frames, total)

    def _spill(
        self,
        link: TransportAdapter,
        viewer: Viewer,
        sent: int,
        pending: list[bytes],
        frames: list[Frame],
        total: int,
    ) -> None:
        """The kernel took *sent* of the *total* bytes flushed to *viewer*: it leaves
        the lane, the rest going through its transport."""
        self._leave(link)
        try:
            link.spill(pending, sent)
            viewer.spilled(frames, pending, total)
        except Exception as error:
            viewer.fail(error)

    def flush_failed(self, error: BaseException) -> None:
        """The flush list's :meth:`flush` raised (it never should: a viewer's failure
        is its own): the held frames are forgotten, and every viewer in the lane
        has its frames decided one by one again."""
        self.pending = []
        self.pending_frames = []
        self.pending_bytes = 0
        for link in list(self.lane):
            self._leave(link)
