"""A cluster of servers on Redis (``--cluster redis://HOST:PORT/DB``; docs/scaling.md).

:mod:`~streamserver.cluster.store` is the small store interface (the Redis
commands the cluster uses), with two implementations: :mod:`.redis`
(txredisapi, on the default reactor) and :mod:`.fake` (in memory, on a
``task.Clock``, for tests).  :mod:`.node` is a node's lease, its streams'
origins, the router the pulls ask and the cluster-wide view of the API;
:mod:`.chat` carries chat rooms across nodes; :mod:`.service` wires them into
a server.
"""
