"""Fan-out over real sockets with our own client: many viewers, late joiners, two
streams at once, and a publisher that leaves and comes back.

No external binary is needed: the media is :func:`synthetic_tags`, published by
:func:`~streamserver.client.pace_tags` on a clock sped up five times, so 5 s of
30 fps video and AAC audio take a second with the timers of a real-time publish.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import pytest_twisted
from twisted.internet import defer

from streamserver.client import RTMPClientProtocol, pace_tags
from streamserver.codec import messages
from streamserver.codec.flv import FLVTag
from streamserver.codec.messages import MessageType
from tests.integration.support import (
    AAC_SEQUENCE_HEADER,
    AVC_SEQUENCE_HEADER,
    FrameView,
    SpedUpClock,
    describe_difference,
    get_reactor,
    is_video_keyframe,
    received_views,
    synthetic_tags,
    tag_views,
    wait_until,
    within,
)

if TYPE_CHECKING:
    from tests.integration.conftest import LoopbackServer

pytestmark = pytest.mark.integration

#: How much faster than real time the synthetic media is published.  The drop
#: policy watches how long bytes wait in a viewer's buffer (wall clock), which a
#: faster publish does not change; 5 keeps the publishes short.
_SPEED = 5


def _clock() -> SpedUpClock:
    return SpedUpClock(get_reactor(), _SPEED)


def _media_count(tags: list[FLVTag]) -> int:
    return sum(tag.tag_type in (MessageType.AUDIO, MessageType.VIDEO) for tag in tags)


async def _players(server: LoopbackServer, name: str, count: int) -> list[RTMPClientProtocol]:
    """*count* viewers of live/*name*, connected concurrently."""
    joining = [defer.ensureDeferred(server.player(name)) for _ in range(count)]
    return await within(defer.gatherResults(joining), 30, f"{count} viewers of live/{name}")


async def _publish(publisher: RTMPClientProtocol, stream_id: int, tags: list[FLVTag]) -> None:
    """Send *tags* with :func:`pace_tags` and check every media tag was sent."""
    sent = await within(
        pace_tags(_clock(), publisher, tags, stream_id), 30, "the publisher to send its tags"
    )
    assert sent == _media_count(tags)


async def _received_all(
    server: LoopbackServer,
    viewers: list[RTMPClientProtocol],
    expected: list[FrameView],
    what: str,
) -> None:
    """Wait until every viewer got the payload of *expected*'s last frame (or as many frames).

    Frames arrive in order, so once the last one is in, whatever is missing was
    dropped, not late.  Payloads are unique; timestamps may have been rebased.
    """
    last_payload = expected[-1][2]

    def done(viewer: RTMPClientProtocol) -> bool:
        views = received_views(viewer)
        return len(views) >= len(expected) or any(view[2] == last_payload for view in views)

    def describe() -> str:
        lagging = next(viewer for viewer in viewers if not done(viewer))
        return (
            f"{describe_difference(expected, received_views(lagging))}; "
            f"server: {server.viewer_states()}"
        )

    await wait_until(lambda: all(done(viewer) for viewer in viewers), 20, what, describe=describe)


def _assert_received(
    server: LoopbackServer, viewer: RTMPClientProtocol, expected: list[FrameView], who: str
) -> None:
    """Assert *viewer* received exactly *expected*, with a readable account if not."""
    views = received_views(viewer)
    assert views == expected, (
        f"{who}: {describe_difference(expected, views)}; server: {server.viewer_states()}"
    )


def _is_metadata(view: FrameView) -> bool:
    return view[0] == MessageType.DATA_AMF0 and view[2].startswith(b"\x02\x00\x0aonMetaData")


def _first_coded_video(views: list[FrameView]) -> FrameView:
    """The first video message after the sequence headers."""
    return next(
        view
        for view in views
        if view[0] == MessageType.VIDEO and not view[2].startswith(AVC_SEQUENCE_HEADER)
    )


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_fifty_viewers_receive_every_frame(rtmp_server: LoopbackServer) -> None:
    """Fifty viewers waiting before the publish each receive every published frame, in order."""
    viewers = await _players(rtmp_server, "fan", 50)
    stream = rtmp_server.factory.find_stream("live", "fan")
    assert stream is not None
    assert stream.subscriber_count == 50

    tags = synthetic_tags(b"<fan>", seconds=5)
    expected = tag_views(tags)
    publisher, stream_id = await rtmp_server.publisher("fan")
    await _publish(publisher, stream_id, tags)
    await _received_all(rtmp_server, viewers, expected, "50 viewers to receive the stream")

    for index, viewer in enumerate(viewers):
        _assert_received(rtmp_server, viewer, expected, f"viewer {index}")
    assert all(not viewer.disconnected.called for viewer in viewers)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_late_joiner_starts_with_headers_then_keyframe(rtmp_server: LoopbackServer) -> None:
    """A viewer joining mid-GOP gets metadata, both sequence headers, then the GOP's keyframe on."""
    tags = synthetic_tags(b"<late>", seconds=4)
    headers, media = tags[:3], tags[3:]
    # Join at 2.7 s: keyframes are at 0 s and 2 s, so the cached GOP starts at 2 s.
    before = [tag for tag in media if tag.timestamp < 2700]
    after = media[len(before) :]
    keyframe_index = max(i for i, tag in enumerate(before) if tag.payload[:2] == b"\x17\x01")
    assert before[keyframe_index].timestamp == 2000

    early = await rtmp_server.player("late")
    publisher, stream_id = await rtmp_server.publisher("late")
    await _publish(publisher, stream_id, headers + before)
    late = await rtmp_server.player("late")
    await _publish(publisher, stream_id, after)

    expected_late = tag_views(headers + before[keyframe_index:] + after)
    await _received_all(rtmp_server, [early], tag_views(tags), "the early viewer")
    await _received_all(rtmp_server, [late], expected_late, "the late viewer")

    views = received_views(late)
    assert _is_metadata(views[0])
    assert views[1] == (MessageType.VIDEO, 0, AVC_SEQUENCE_HEADER + b"<late>")
    assert views[2] == (MessageType.AUDIO, 0, AAC_SEQUENCE_HEADER)
    assert is_video_keyframe(_first_coded_video(views[3:]))
    _assert_received(rtmp_server, early, tag_views(tags), "the early viewer")
    _assert_received(rtmp_server, late, expected_late, "the late viewer")


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_two_streams_do_not_mix(rtmp_server: LoopbackServer) -> None:
    """Viewers of live/a get only a's frames and viewers of live/b only b's, published at once."""
    markers = {"a": b"<stream-a>", "b": b"<stream-b>"}
    sources = {name: synthetic_tags(marker, seconds=3) for name, marker in markers.items()}
    viewers = {name: await _players(rtmp_server, name, 5) for name in markers}
    publishers = {name: await rtmp_server.publisher(name) for name in markers}

    await within(
        defer.gatherResults(
            [
                defer.ensureDeferred(_publish(client, stream_id, sources[name]))
                for name, (client, stream_id) in publishers.items()
            ]
        ),
        30,
        "both publishers",
    )
    expected = {name: tag_views(tags) for name, tags in sources.items()}
    for name in markers:
        await _received_all(rtmp_server, viewers[name], expected[name], f"viewers of {name}")

    for name, other in (("a", "b"), ("b", "a")):
        for index, viewer in enumerate(viewers[name]):
            assert not any(markers[other] in payload for _, _, payload in received_views(viewer))
            _assert_received(rtmp_server, viewer, expected[name], f"viewer {index} of {name}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("leave", ["disconnect", "deleteStream"])
@pytest_twisted.ensureDeferred
async def test_viewer_survives_unpublish_and_republish(
    rtmp_server: LoopbackServer, leave: str
) -> None:
    """A viewer gets UnpublishNotify, stays, then PublishNotify and media with time running on."""
    viewer = await rtmp_server.player("again")
    first = synthetic_tags(b"<first>", seconds=2)
    second = synthetic_tags(b"<second>", seconds=2)

    publisher, stream_id = await rtmp_server.publisher("again")
    await _publish(publisher, stream_id, first)
    await _received_all(rtmp_server, [viewer], tag_views(first), "the first session")

    unpublished = viewer.wait_for_status("NetStream.Play.UnpublishNotify")
    if leave == "disconnect":
        publisher.close()
    else:
        publisher.send(messages.command("deleteStream", 0, None, float(stream_id)))
    await within(unpublished, 10, "NetStream.Play.UnpublishNotify")

    stream = rtmp_server.factory.find_stream("live", "again")
    assert stream is not None
    assert stream.publisher is None
    assert stream.subscriber_count == 1
    assert not viewer.disconnected.called

    published = viewer.wait_for_status("NetStream.Play.PublishNotify")
    publisher, stream_id = await rtmp_server.publisher("again")
    await within(published, 10, "NetStream.Play.PublishNotify")
    await _publish(publisher, stream_id, second)
    await _received_all(
        rtmp_server, [viewer], tag_views(first) + tag_views(second), "the second session"
    )

    assert [info.get("code") for info in viewer.statuses] == [
        "NetStream.Play.Reset",
        "NetStream.Play.Start",
        "NetStream.Play.PublishNotify",
        "NetStream.Play.UnpublishNotify",
        "NetStream.Play.PublishNotify",
    ]
    assert not viewer.disconnected.called

    views = received_views(viewer)
    assert views[: len(first)] == tag_views(first)
    resumed = views[len(first) :]
    assert len(resumed) == len(second), describe_difference(tag_views(second), resumed)
    # Same frames, in order, shifted so they follow the first session.
    assert [(kind, payload) for kind, _, payload in resumed] == [
        (kind, payload) for kind, _, payload in tag_views(second)
    ]
    shift = resumed[0][1]
    assert shift >= first[-1].timestamp
    assert [timestamp for _, timestamp, _ in resumed] == [tag.timestamp + shift for tag in second]
    timestamps = [timestamp for _, timestamp, _ in views]
    assert timestamps == sorted(timestamps)
    assert _is_metadata(resumed[0])
    assert is_video_keyframe(_first_coded_video(resumed))
