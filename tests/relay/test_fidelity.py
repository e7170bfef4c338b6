"""What a relay keeps: metadata, sequence headers, Enhanced RTMP tags byte for byte, and
timestamps (past 2^24 ms too) through a push and a pull, across upstream reconnects."""

from __future__ import annotations

from twisted.internet import task

from streamserver.codec import amf0
from streamserver.codec.messages import Message, MessageType
from streamserver.relay.pull import RulePullRouter
from streamserver.relay.push import RulePushSource
from streamserver.relay.target import RelayRule
from streamserver.testing import FakePeer
from tests.protocol import media
from tests.relay.support import Net, target, viewer

#: Enhanced RTMP video (E-RTMP v1): IsExHeader | FrameType << 4 | PacketType, FourCC.
HEVC_START = b"\x90hvc1" + b"\x01\x02\x03\x04hvcC-record"
HEVC_KEY = b"\x91hvc1\x00\x00\x00" + b"\x00\x00\x00\x05key!!"
HEVC_INTER = b"\xa1hvc1\x00\x00\x21" + b"\x00\x00\x00\x05inter"

#: 2^24 ms - 500 ms: timestamps cross 0xFFFFFF, where RTMP needs the extended field.
NEAR_EXTENDED = 0xFFFFFF - 500


def _chain() -> tuple[Net, object, object, object]:
    """edge A pushes to the origin, edge B pulls from it."""
    net = Net(task.Clock())
    origin = net.server("mem:origin")
    edge_a = net.server("mem:a")
    edge_b = net.server("mem:b")
    edge_a.pushes.add_source(RulePushSource([RelayRule(None, target("mem:origin"))]))
    edge_b.pulls.add_router(RulePullRouter([RelayRule(None, target("mem:origin"))]))
    return net, origin, edge_a, edge_b


def _publish(factory: object) -> tuple[FakePeer, int]:
    peer = FakePeer(factory)  # type: ignore[arg-type]
    peer.connect("live")
    stream_id = peer.create_stream()
    peer.publish("cam", stream_id)
    return peer, stream_id


def _hevc_stream(stream_id: int, start: int, count: int) -> list[Message]:
    out = [
        Message(
            MessageType.DATA_AMF0,
            stream_id,
            start,
            amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"videocodecid": "hvc1"})),
        ),
        Message(MessageType.VIDEO, stream_id, start, HEVC_START),
        Message(MessageType.AUDIO, stream_id, start, media.AAC_SEQUENCE_HEADER),
    ]
    for index in range(count):
        ts = (start + index * 40) & 0xFFFFFFFF
        payload = HEVC_KEY if index % 10 == 0 else HEVC_INTER
        out.append(Message(MessageType.VIDEO, stream_id, ts, payload))
        out.append(Message(MessageType.AUDIO, stream_id, ts, b"\xaf\x01" + bytes([index % 256])))
    return out


def test_enhanced_rtmp_and_extended_timestamps_pass_through_push_and_pull() -> None:
    """HEVC FourCC tags arrive byte for byte and timestamps across 0xFFFFFF unchanged,
    publisher -> edge A -push-> origin -pull-> edge B -> viewer."""
    net, _origin, edge_a, edge_b = _chain()
    watcher = viewer(edge_b)
    source, stream_id = _publish(edge_a)
    sent = _hevc_stream(stream_id, NEAR_EXTENDED, 40)
    for message in sent[:3]:
        source.send(message)
    net.flush()
    for message in sent[3:]:
        source.send(message)
        net.flush()
    got = watcher.media()
    video_in = [(m.timestamp, m.payload) for m in sent if m.type_id == MessageType.VIDEO]
    video_out = [(m.timestamp, m.payload) for m in got if m.type_id == MessageType.VIDEO]
    assert video_out == video_in
    audio_in = [(m.timestamp, m.payload) for m in sent if m.type_id == MessageType.AUDIO]
    audio_out = [(m.timestamp, m.payload) for m in got if m.type_id == MessageType.AUDIO]
    assert audio_out == audio_in
    assert max(t for t, _ in video_out) > 0xFFFFFF
    (meta,) = [m for m in got if m.type_id == MessageType.DATA_AMF0]
    assert amf0.decode_all(meta.payload)[0] == "onMetaData"
    assert amf0.decode_all(meta.payload)[1]["videocodecid"] == "hvc1"
    info = edge_b.find_stream("live", "cam").media_info()
    assert info.video is not None and info.video.codec == "hevc"


def test_timestamps_continue_across_upstream_reconnects_of_push_and_pull() -> None:
    """Cutting the push's and then the pull's upstream: the viewer's timestamps never go
    back and it resumes at a keyframe after sequence headers."""
    net, _origin, edge_a, edge_b = _chain()
    watcher = viewer(edge_b)
    source, stream_id = _publish(edge_a)
    net.flush()  # the push is up before the encoder's first frame
    for message in media.headers(stream_id):
        source.send(message)
    clock_ms = NEAR_EXTENDED

    def gop() -> None:
        nonlocal clock_ms
        for message in media.gop_frames(stream_id, clock_ms, 10):
            source.send(message)
        clock_ms += 400
        net.flush()

    gop()
    (push,) = next(iter(edge_a.pushes.pushes.values()))
    net.cut(push.upstream.client)
    net.advance(3)
    gop()
    (pull,) = edge_b.pulls.pulls.values()
    net.cut(pull.upstream.client)
    net.advance(3)
    gop()
    gop()
    video = [m for m in watcher.media() if m.type_id == MessageType.VIDEO]
    stamps = [m.timestamp for m in video]
    assert stamps == sorted(stamps)
    assert stamps[-1] > 0xFFFFFF
    assert push.upstream.sessions == 2 and pull.upstream.sessions == 2
    # after each new session: sequence headers, then a keyframe
    headers = [i for i, m in enumerate(video) if m.payload[:2] == b"\x17\x00"]
    assert len(headers) >= 3
    for index in headers:
        following = next(m for m in video[index:] if m.payload[:2] != b"\x17\x00")
        assert following.payload[:2] == b"\x17\x01"
    # and from the first keyframe on, no jump: at most a GOP lost while a link was down
    first_key = next(i for i, m in enumerate(video) if m.payload[:2] == b"\x17\x01")
    steps = [b - a for a, b in zip(stamps[first_key:], stamps[first_key + 1 :], strict=False)]
    assert max(steps) <= 500
