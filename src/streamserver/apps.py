"""AppView: the settings in force for one application named in ``--config``'s file.

An application the file names (``[app.studio]``) has its own
:class:`~streamserver.config.ServerConfig`, derived from the server's
(:meth:`ServerConfig.derived <streamserver.config.ServerConfig.derived>`), and
with it its own authorizer (when its access differs from the server's) and its
own drop policy.  Every other application uses the server's configuration, its
authorizer and policy: the factory itself, so an application name a client makes
up costs nothing (:meth:`RTMPServerFactory.settings_for
<streamserver.factory.RTMPServerFactory.settings_for>`).

An ``AppView`` is also what a viewer of the application asks for the drop
policy, the clock and the disconnect tally (:class:`~streamserver.media.viewer.ViewerServer`),
so a reload that changes the application's limits changes them for its current
viewers: :meth:`AppView.update` replaces the limits of the same policy object.
A view is kept as long as the process runs (an application dropped from the
file gets the server's settings again); only the file's applications have one,
so they are bounded by the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamserver.auth import IAuthorizer, build_authorizer
from streamserver.config import ServerConfig
from streamserver.policy import DropFramesPolicy

if TYPE_CHECKING:
    from streamserver.factory import RTMPServerFactory
    from streamserver.media.viewer import Viewer

__all__ = ["AppView"]


class AppView:
    """One named application's configuration, authorizer and drop policy.

    :ivar app: the application's name.
    :ivar config: its effective :class:`~streamserver.config.ServerConfig`.
    :ivar policy: the drop policy its viewers consult (one object for the
        view's life; a reload replaces its limits).
    :ivar own_access: its access rules differ from the server's, so
        :attr:`authorizer` is its own.
    """

    def __init__(self, factory: RTMPServerFactory, app: str, config: ServerConfig) -> None:
        self.app = app
        self._factory = factory
        self.seconds = factory.seconds
        self.config = config
        self.policy = DropFramesPolicy(config.limits)
        self._authorizer: IAuthorizer | None = None
        self.own_access = False
        self._set_access(config)

    def _set_access(self, config: ServerConfig) -> None:
        own = config.access != self._factory.config.access
        if own:
            self._authorizer = build_authorizer(config.access, self._factory.reactor)
        else:
            self._authorizer = None
        self.own_access = own

    @property
    def authorizer(self) -> IAuthorizer:
        """Who decides this application's publishes and plays: its own, or the server's."""
        if self._authorizer is not None:
            return self._authorizer
        return self._factory.authorizer

    def update(self, config: ServerConfig) -> None:
        """Take *config*: new limits for current viewers, new access for new sessions.

        The authorizer is rebuilt only when the access rules changed (a publish
        keys authorizer keeps its file's cache otherwise).
        """
        old = self.config
        self.config = config
        if config.limits != self.policy.limits:
            self.policy.limits = config.limits
        if config.access != old.access or self.own_access != (
            config.access != self._factory.config.access
        ):
            self._set_access(config)

    def viewer_disconnected(self, viewer: Viewer | None, reason: str) -> None:
        """Count a disconnect the drop policy decided (the server's tally)."""
        self._factory.viewer_disconnected(viewer, reason)
