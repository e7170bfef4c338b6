"""The ``twistd streamserver`` plugin: a ServiceMaker pointing at streamserver.tap.

Installed as ``twisted/plugins/streamserver_plugin.py``.  This directory must
never hold an ``__init__.py`` (it would overwrite Twisted's own on install).
"""

from twisted.application.service import ServiceMaker

streamserver = ServiceMaker(
    "streamserver",
    "streamserver.tap",
    "A live-streaming RTMP relay server (publish, fan-out play, drop-frames backpressure).",
    "streamserver",
)
