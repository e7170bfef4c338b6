"""The HTTP side: one ``twisted.web`` site (``docs/http.md``).

:func:`~streamserver.http.site.build_site` puts together the resources: the
page at ``/``, HTTP-FLV and WebSocket-FLV at ``/APP/NAME.flv``
(:mod:`streamserver.http.flv`), the JSON API under ``/api/`` and the Prometheus
metrics at ``/metrics``.
"""

from streamserver.http.site import build_site

__all__ = ["build_site"]
