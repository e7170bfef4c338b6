"""BackpressureMixin: the drop-frames policy's step in the decision chain.

Hooks overridden: ``connectionMade`` (registers the protocol as its transport's
streaming producer; sets ``TCP_NOTSENT_LOWAT``/``SO_SNDBUF`` on real sockets;
puts the link on the factory's flush list, so its frames may be held),
``pauseProducing``/``resumeProducing`` (record congestion), ``admit_frame``
(asks the factory's :class:`~streamserver.policy.IDropPolicy` for every frame
the rest of the chain admits).

The chain is pure: ``admit_frame(viewer, frame, size)`` returns a
:class:`~streamserver.policy.Decision` and changes nothing; the
:class:`~streamserver.media.viewer.Viewer` carries the final decision out.
The queue the policy sees is the transport's user-space write buffer, measured
by the viewer through the connection's
:class:`~streamserver.transport.TransportAdapter`.  Without ``TCP_NOTSENT_LOWAT``
the kernel would take ~3 MB per socket before user space saw anything
(TWISTED-FACTS §4), and the policy would act 50 s late at 0.5 Mbit/s.

This is the check the story's bug silenced: when a mixin in front of this one
overrides ``admit_frame`` without calling ``super()``, nothing here runs and a
slow viewer's buffer grows without bound (``tests/protocol/test_backpressure.py``
rebuilds exactly that).

Offers :class:`~streamserver.protocol.contracts.Disconnecting`
(:meth:`disconnect_viewer`); needs :class:`~streamserver.protocol.contracts.Session`
(the peer) and :class:`~streamserver.protocol.contracts.Playing` (the viewer's numbers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger
from typing_extensions import override

from streamserver.media.stream import Frame
from streamserver.media.viewer import Viewer
from streamserver.policy import ADMIT, Decision
from streamserver.protocol.base import ProtocolRoot

_log = Logger()


if TYPE_CHECKING:
    from streamserver.protocol.contracts import Disconnecting, Playing, Session

    class _Contracts(Session, Disconnecting, Playing, ProtocolRoot): ...
else:
    _Contracts = ProtocolRoot


class BackpressureMixin(_Contracts):
    """Puts the drop policy in the decision chain; registers the producer.

    :ivar congested: the transport paused us (its buffer passed 64 KiB) and has
        not resumed us yet.
    :ivar pauses: how many times the transport paused us.
    """

    congested = False
    pauses = 0

    @override
    def connectionMade(self) -> None:
        config = self.factory.config
        self.link.configure_socket(config.notsent_lowat, config.send_buffer)
        if not config.eager_writes:
            self.link.disable_eager_writes()
        self.link.flush_list = self.factory.flush_list
        self.link.register_producer(self)
        super().connectionMade()

    @override
    def pauseProducing(self) -> None:
        if not self.congested:
            self.congested = True
            self.pauses += 1
        super().pauseProducing()

    @override
    def resumeProducing(self) -> None:
        self.congested = False
        super().resumeProducing()

    # --- the decision -------------------------------------------------------------

    @override
    def admit_frame(self, viewer: Viewer, frame: Frame, size: int) -> Decision:
        decision = super().admit_frame(viewer, frame, size)
        # the root's ADMIT, unchanged behind us, is the common case: no property call
        if decision is not ADMIT and not decision.admits:
            return decision  # refused behind us (paused): that refusal stands
        return viewer.policy_decision(frame, size)

    @override
    def admits_every_frame(self, viewer: Viewer) -> bool:
        # the policy's part is the fast lane's own condition (streamserver.media.lane)
        return super().admits_every_frame(viewer)

    def disconnect_viewer(self, reason: str) -> bool:
        """Drop this connection for the policy's *reason*, logging the viewer's numbers.

        :returns: whether it was dropped now (``False``: it was closing already).
        """
        if self.closing:
            return False
        viewer = self.viewer
        stream = viewer.stream if viewer is not None else None
        _log.warn(
            "disconnecting viewer {peer} of {stream}: {reason} (queued {queued} bytes, "
            "peak {peak}, lag {lag_ms} ms, sent {sent}, dropped {dropped})",
            peer=self.peer,
            stream=f"{stream.app}/{stream.name}" if stream else "-",
            reason=reason,
            **(
                viewer.log_fields()
                if viewer is not None
                else {
                    "queued": self.link.queued(),
                    "peak": 0,
                    "lag_ms": 0,
                    "sent": 0,
                    "dropped": {},
                }
            ),
        )
        self.drop_connection()
        return True
