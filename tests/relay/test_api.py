"""/api/streams shows a stream's relays: its pushes and its pull."""

from __future__ import annotations

from twisted.internet import task

from streamserver.relay.pull import RulePullRouter
from streamserver.relay.push import RulePushSource
from streamserver.relay.target import RelayRule
from tests.http.support import SiteClient
from tests.relay.support import Net, publisher, send_gop, target, viewer


def test_api_lists_pushes_and_the_pull() -> None:
    """The edge's stream shows its pull, the publishing server's its push, with state."""
    clock = task.Clock()
    net = Net(clock)
    origin = net.server("mem:origin")
    edge = net.server("mem:edge")
    first = net.server("mem:first")
    first.pushes.add_source(RulePushSource([RelayRule(None, target("mem:origin"))]))
    edge.pulls.add_router(RulePullRouter([RelayRule(None, target("mem:origin"))]))
    source = publisher(first)
    viewer(edge)
    net.flush()
    send_gop(source, 0)
    net.flush()
    pushed = SiteClient(first, clock).get("/api/streams/live/cam").json()["relays"]
    assert pushed["pull"] is None
    (push,) = pushed["pushes"]
    assert push["url"] == "rtmp://mem:origin/live/cam"
    assert push["state"] == "connected" and push["sessions"] == 1
    assert push["frames_sent"] == 3 + 20 and push["frames_dropped"] == 0
    pulled = SiteClient(edge, clock).get("/api/streams/live/cam").json()
    assert pulled["relays"]["pushes"] == []
    assert pulled["relays"]["pull"]["url"] == "rtmp://mem:origin/live/cam"
    assert pulled["relays"]["pull"]["state"] == "connected"
    assert pulled["relays"]["pull"]["frames_in"] == 3 + 20
    assert pulled["publisher"]["address"] == "relay rtmp://mem:origin/live/cam"
    plain = SiteClient(origin, clock).get("/api/streams/live/cam").json()
    assert plain["relays"] is None
