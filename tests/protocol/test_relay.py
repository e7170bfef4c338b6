"""Publish → play over FakeTransport: the relay's behaviour seen by its peers."""

from __future__ import annotations

from streamserver.codec import amf0, messages
from streamserver.codec.flv import FrameKind, classify
from streamserver.codec.messages import Message, MessageType
from streamserver.factory import RTMPServerFactory, ServerConfig
from streamserver.testing import FakePeer
from tests.protocol import media


def _publisher(factory, name: str = "cam", app: str = "live") -> tuple[FakePeer, int]:
    peer = FakePeer(factory)
    peer.connect(app)
    stream_id = peer.create_stream()
    assert "NetStream.Publish.Start" in [
        c.args[0]["code"] for c in peer.publish(name, stream_id) if c.name == "onStatus"
    ]
    return peer, stream_id


def _viewer(factory, name: str = "cam", app: str = "live", **kwargs) -> tuple[FakePeer, int]:
    peer = FakePeer(factory, **kwargs)
    peer.connect(app)
    stream_id = peer.create_stream()
    peer.play(name, stream_id)
    return peer, stream_id


def _kinds(msgs: list[Message]) -> list[FrameKind]:
    return [classify(m.type_id, m.payload) for m in msgs]


def test_connect_reply_and_control_messages(factory) -> None:
    """connect is answered with Window Ack Size, Set Peer Bandwidth, Set Chunk Size and _result."""
    peer = FakePeer(factory)
    reply = peer.connect("live")
    assert reply.name == "_result"
    assert reply.args[0]["code"] == "NetConnection.Connect.Success"
    types = [m.type_id for m in peer.received]
    assert MessageType.WINDOW_ACK_SIZE in types
    assert MessageType.SET_PEER_BANDWIDTH in types
    chunk = [m for m in peer.received if m.type_id == MessageType.SET_CHUNK_SIZE]
    assert messages.parse_uint32(chunk[0]) == 4096


def test_publish_then_play_relays_every_frame_on_the_play_stream_id(factory) -> None:
    """A viewer gets every published message, on the message stream id it played on."""
    publisher, pub_sid = _publisher(factory)
    viewer, play_sid = _viewer(factory)
    sent = media.headers(pub_sid) + media.gop_frames(pub_sid, 0, 30)
    for message in sent:
        publisher.send(message)
    got = viewer.media()
    assert [m.stream_id for m in got] == [play_sid] * len(sent)
    assert [m.payload for m in got[1:]] == [m.payload for m in sent[1:]]
    assert [m.timestamp for m in got] == [m.timestamp for m in sent]
    # @setDataFrame is stripped: viewers get onMetaData.
    assert amf0.decode_all(got[0].payload)[0] == "onMetaData"


def test_play_sends_the_statuses_players_wait_for(factory) -> None:
    """play answers Stream Begin, Play.Reset, Play.Start and |RtmpSampleAccess."""
    _publisher(factory)
    viewer = FakePeer(factory)
    viewer.connect("live")
    sid = viewer.create_stream()
    codes = [c.args[0]["code"] for c in viewer.play("cam", sid) if c.name == "onStatus"]
    assert codes == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    begins = [
        m
        for m in viewer.received
        if m.type_id == MessageType.USER_CONTROL
        and messages.parse_user_control(m) == (messages.UserControlEvent.STREAM_BEGIN, (sid,))
    ]
    assert begins
    data = [messages.parse_data(m) for m in viewer.received if m.type_id == MessageType.DATA_AMF0]
    assert ["|RtmpSampleAccess", True, True] in data


def test_late_joiner_starts_with_metadata_headers_and_a_keyframe(factory) -> None:
    """A viewer joining mid-GOP gets metadata, sequence headers, then the GOP from its keyframe."""
    publisher, sid = _publisher(factory)
    for message in (
        media.headers(sid) + media.gop_frames(sid, 0, 60) + media.gop_frames(sid, 2000, 20)
    ):
        publisher.send(message)
    viewer, _ = _viewer(factory)
    kinds = _kinds(viewer.media())
    assert kinds[:3] == [
        FrameKind.METADATA,
        FrameKind.VIDEO_SEQUENCE_HEADER,
        FrameKind.AUDIO_SEQUENCE_HEADER,
    ]
    assert kinds[3] == FrameKind.KEYFRAME
    # the whole current GOP (20 video + 20 audio) is replayed, nothing older
    assert len(kinds) == 3 + 40
    assert viewer.media()[3].timestamp == 2000


def test_viewer_before_keyframe_waits_for_one(factory) -> None:
    """Without a cached GOP, a new viewer skips inter frames until the next keyframe."""
    factory.config.gop_cache_bytes = 0
    publisher, sid = _publisher(factory)
    for message in media.headers(sid) + media.gop_frames(sid, 0, 10):
        publisher.send(message)
    viewer, _ = _viewer(factory)
    for message in media.gop_frames(sid, 333, 10)[2:] + media.gop_frames(sid, 1000, 5):
        publisher.send(message)
    videos = [m for m in viewer.media() if m.type_id == MessageType.VIDEO]
    assert _kinds(videos)[:2] == [FrameKind.VIDEO_SEQUENCE_HEADER, FrameKind.KEYFRAME]
    assert videos[1].timestamp == 1000


def test_play_before_publish_waits_and_gets_publish_notify(factory) -> None:
    """A viewer that plays first waits; when the publisher comes it gets PublishNotify and media."""
    viewer, _ = _viewer(factory)
    assert viewer.media() == []
    publisher, sid = _publisher(factory)
    assert "NetStream.Play.PublishNotify" in viewer.statuses()
    for message in media.headers(sid) + media.gop_frames(sid, 0, 5):
        publisher.send(message)
    assert _kinds(viewer.media())[:4] == [
        FrameKind.METADATA,
        FrameKind.VIDEO_SEQUENCE_HEADER,
        FrameKind.AUDIO_SEQUENCE_HEADER,
        FrameKind.KEYFRAME,
    ]


def test_unpublish_and_republish_keep_the_viewer(factory) -> None:
    """Publisher leaves: UnpublishNotify, viewer stays; it returns: PublishNotify, time goes on."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    for message in media.headers(sid) + media.gop_frames(sid, 0, 30):
        publisher.send(message)
    publisher.call("deleteStream", None, float(sid))
    assert "NetStream.Play.UnpublishNotify" in viewer.statuses()
    assert not viewer.transport.disconnecting
    before = len(viewer.media())

    again, sid2 = _publisher(factory)
    assert "NetStream.Play.PublishNotify" in viewer.statuses()
    for message in media.headers(sid2) + media.gop_frames(sid2, 0, 30):
        again.send(message)
    got = viewer.media()
    assert len(got) > before
    stamps = [m.timestamp for m in got if m.type_id != MessageType.DATA_AMF0]
    assert stamps == sorted(stamps), "timestamps ran backwards across the republish"


def test_publisher_disconnect_notifies_viewers(factory) -> None:
    """Losing the publisher's connection is an unpublish too."""
    publisher, _sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    publisher.transport.loseConnection()
    assert "NetStream.Play.UnpublishNotify" in viewer.statuses()
    assert factory.find_stream("live", "cam").publisher is None


def test_second_publisher_gets_bad_name(factory) -> None:
    """Publishing a name already being published is refused with NetStream.Publish.BadName."""
    _publisher(factory)
    intruder = FakePeer(factory)
    intruder.connect("live")
    sid = intruder.create_stream()
    replies = intruder.publish("cam", sid)
    statuses = [c.args[0] for c in replies if c.name == "onStatus"]
    assert statuses[0]["code"] == "NetStream.Publish.BadName"
    assert statuses[0]["level"] == "error"
    assert not intruder.transport.disconnecting


def test_same_name_in_two_apps_are_two_streams(factory) -> None:
    """Registries are per application: live/cam and other/cam are independent."""
    _publisher(factory, app="live")
    _publisher(factory, app="other")
    assert factory.find_stream("live", "cam") is not factory.find_stream("other", "cam")


def test_two_streams_do_not_mix(factory) -> None:
    """Viewers of a get only a's frames, viewers of b only b's."""
    pub_a, sid_a = _publisher(factory, "a")
    pub_b, sid_b = _publisher(factory, "b")
    view_a, _ = _viewer(factory, "a")
    view_b, _ = _viewer(factory, "b")
    for index in range(10):
        pub_a.send(media.video(sid_a, index * 33, key=index == 0, tag=0xAA))
        pub_b.send(media.video(sid_b, index * 33, key=index == 0, tag=0xBB))
    assert all(m.payload[6] == 0xAA for m in view_a.media())
    assert all(m.payload[6] == 0xBB for m in view_b.media())
    assert len(view_a.media()) == len(view_b.media()) == 10


def test_timed_data_is_forwarded_and_not_cached(factory) -> None:
    """onTextData/onCuePoint reach viewers live but are not replayed as metadata."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    for message in media.headers(sid) + media.gop_frames(sid, 0, 3):
        publisher.send(message)
    text = messages.data("onTextData", {"text": "hello"}, stream_id=sid, timestamp=50)
    cue = messages.data("onCuePoint", {"name": "c1", "time": 0.1}, stream_id=sid, timestamp=60)
    publisher.send(text)
    publisher.send(cue)
    names = [messages.parse_data(m)[0] for m in viewer.media() if m.type_id == 18]
    assert names == ["onMetaData", "onTextData", "onCuePoint"]
    late, _ = _viewer(factory)
    late_names = [messages.parse_data(m)[0] for m in late.media() if m.type_id == 18]
    assert late_names == ["onMetaData"]
    stream = factory.find_stream("live", "cam")
    assert amf0.decode_all(stream.metadata.message.payload)[0] == "onMetaData"


def test_metadata_update_replaces_the_cache(factory) -> None:
    """A second @setDataFrame replaces the cached onMetaData."""
    publisher, sid = _publisher(factory)
    publisher.send(media.metadata(sid, width=320.0))
    publisher.send(media.metadata(sid, width=640.0))
    late, _ = _viewer(factory)
    meta = [amf0.decode_all(m.payload) for m in late.media() if m.type_id == 18]
    assert meta[0][1]["width"] == 640.0


def test_fanout_writes_the_same_bytes_object_to_each_viewer(factory) -> None:
    """One serialization per group: every viewer's transport gets the identical object."""
    publisher, sid = _publisher(factory)
    viewers = [_viewer(factory)[0] for _ in range(5)]
    written: list[list[bytes]] = []
    for viewer in viewers:
        log: list[bytes] = []
        original = viewer.transport.write

        def spy(data: bytes, _log=log, _write=original) -> None:
            _log.append(data)
            _write(data)

        viewer.transport.write = spy  # type: ignore[method-assign]
        written.append(log)
    publisher.send(media.video(sid, 0, key=True, size=9000))
    firsts = [log[0] for log in written]
    assert all(data is firsts[0] for data in firsts)


def test_groups_by_chunk_size_and_stream_id(factory) -> None:
    """Viewers with different play stream ids get different bytes, each decodable."""
    publisher, sid = _publisher(factory)
    first, sid1 = _viewer(factory)
    second = FakePeer(factory)
    second.connect("live")
    second.create_stream()
    sid2 = second.create_stream()
    second.play("cam", sid2)
    publisher.send(media.video(sid, 0, key=True))
    assert factory.find_stream("live", "cam").group_count == 2
    assert first.media()[0].stream_id == sid1
    assert second.media()[0].stream_id == sid2 == 2


def test_aggregate_messages_are_split(factory) -> None:
    """An aggregate message (type 22) is relayed as its sub-messages."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    subs = [media.video(sid, 100, key=True), media.audio(sid, 120)]
    body = b""
    for sub in subs:
        size = len(sub.payload)
        ts = sub.timestamp
        body += bytes([sub.type_id]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        body += bytes([ts >> 24]) + b"\x00\x00\x00" + sub.payload + (size + 11).to_bytes(4, "big")
    publisher.send(Message(MessageType.AGGREGATE, sid, 1000, body))
    got = viewer.media()
    assert [m.payload for m in got] == [s.payload for s in subs]
    assert [m.timestamp for m in got] == [1000, 1020]


def test_unknown_command_gets_an_error_and_the_connection_stays(factory) -> None:
    """An unknown command with a transaction id is answered with _error."""
    peer = FakePeer(factory)
    peer.connect("live")
    txn = peer.call("noSuchCommand", None)
    reply = peer.result_of(txn)
    assert reply.name == "_error"
    assert reply.args[0]["code"] == "NetConnection.Call.Failed"
    assert not peer.transport.disconnecting


def test_commands_before_connect_are_refused(factory) -> None:
    """publish before connect is refused, not crashed on."""
    peer = FakePeer(factory)
    txn = peer.call("createStream")
    assert peer.result_of(txn).name == "_error"


def test_ping_request_is_answered(factory) -> None:
    """A User Control Ping Request gets a Ping Response with the same timestamp."""
    peer = FakePeer(factory)
    peer.connect("live")
    peer.send(messages.ping_request(12345))
    responses = [
        messages.parse_user_control(m) for m in peer.read() if m.type_id == MessageType.USER_CONTROL
    ]
    assert (messages.UserControlEvent.PING_RESPONSE, (12345,)) in responses


def test_acknowledgement_after_the_peers_window(factory) -> None:
    """After the peer's Window Acknowledgement Size worth of bytes, the server acknowledges."""
    publisher, sid = _publisher(factory)
    publisher.send(messages.window_ack_size(10_000))
    for index in range(5):
        publisher.send(media.video(sid, index * 33, key=True, size=3000))
    acks = [m for m in publisher.read() if m.type_id == MessageType.ACKNOWLEDGEMENT]
    assert acks
    assert messages.parse_uint32(acks[0]) >= 10_000


def test_garbage_drops_only_that_connection(factory) -> None:
    """Bytes that break the chunk format close that connection; others keep streaming."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory)
    bad = FakePeer(factory)
    bad.connect("live")
    bad.send_bytes(b"\x47" + b"\xff" * 64)  # fmt 1 on chunk stream 7, never opened by fmt 0
    assert bad.transport.disconnecting
    publisher.send(media.video(sid, 0, key=True))
    assert len(viewer.media()) == 1
    assert not viewer.transport.disconnecting


def test_http_request_on_the_rtmp_port_is_dropped(factory) -> None:
    """A port scanner's HTTP GET fails the handshake and is closed."""
    peer = FakePeer(factory, handshake=False)
    peer.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert peer.transport.disconnecting


def test_digest_handshake_clients_are_served(factory) -> None:
    """A client using the FP9 digest handshake connects and plays."""
    publisher, sid = _publisher(factory)
    viewer, _ = _viewer(factory, digest=True)
    publisher.send(media.video(sid, 0, key=True))
    assert len(viewer.media()) == 1


def test_session_inputs_at_every_split_size() -> None:
    """The handshake and first commands give the same replies whatever the read sizes."""
    from twisted.internet import task

    from streamserver.codec.chunk import ChunkEncoder
    from streamserver.codec.handshake import ClientHandshake

    client = ClientHandshake()
    encoder = ChunkEncoder(128)
    script = client.initial_bytes() + bytes(1536)  # C2 content is not validated
    script += encoder.encode(messages.set_chunk_size(1000), 2)
    encoder.chunk_size = 1000
    for message in [
        messages.command("connect", 1, {"app": "live", "tcUrl": "rtmp://h/live"}),
        messages.command("releaseStream", 2, None, "cam"),
        messages.command("FCPublish", 3, None, "cam"),
        messages.command("createStream", 4, None),
        messages.command("publish", 5, None, "cam", "live", stream_id=1),
    ]:
        script += encoder.encode(message, 3)
    script += encoder.encode(media.headers(1)[0], 5)
    script += encoder.encode(media.video(1, 0, key=True, size=3000), 6)

    reference: list[tuple[int, int, bytes]] | None = None
    for split in range(1, len(script) + 1):
        factory = RTMPServerFactory(ServerConfig(), reactor=task.Clock())
        peer = FakePeer(factory, handshake=False, split=split)
        peer.send_bytes(script)
        assert not peer.transport.disconnecting, f"split {split} dropped the connection"
        out = peer.output()[1 + 1536 + 1536 :]
        peer._decoder.receive_data(b"")
        from streamserver.codec.chunk import ChunkDecoder

        got = [(m.type_id, m.stream_id, m.payload) for m in ChunkDecoder().receive_data(out)]
        if reference is None:
            reference = got
            assert any(t == MessageType.COMMAND_AMF0 for t, _, _ in got)
        assert got == reference, f"split {split} changed the replies"
        stream = factory.find_stream("live", "cam")
        assert stream is not None and stream.frames_in == 2


def test_kick_disconnects_one_connection(factory) -> None:
    """factory.kick drops the named connection and only it."""
    publisher, _ = _publisher(factory)
    viewer, _ = _viewer(factory)
    assert factory.kick(viewer.protocol.conn_id, "test")
    assert viewer.transport.aborted
    assert not publisher.transport.disconnecting
    assert not factory.kick(10**9)


def test_a_paused_viewer_gets_nothing_and_its_refusals_are_not_counted_as_sent(factory) -> None:
    """pause: frames are refused (counted as paused, not sent); unpause jumps to live."""
    publisher, pub_sid = _publisher(factory)
    viewer, play_sid = _viewer(factory)
    for message in media.headers(pub_sid) + media.gop_frames(pub_sid, 0, 10):
        publisher.send(message)
    played = viewer.protocol.viewer
    before = len(viewer.media())
    sent_before = played.frames_sent
    viewer.call("pause", None, True, 0.0, stream_id=play_sid)
    assert "NetStream.Pause.Notify" in viewer.statuses()
    for message in media.gop_frames(pub_sid, 400, 10)[1:]:
        publisher.send(message)
    assert len(viewer.media()) == before
    assert played.frames_sent == sent_before
    assert played.dropped["paused"] == 19
    assert played.awaiting_keyframe
    viewer.call("pause", None, False, 0.0, stream_id=play_sid)
    assert "NetStream.Unpause.Notify" in viewer.statuses()
    resumed = viewer.media()[before:]
    kinds = _kinds([m for m in resumed if m.type_id == MessageType.VIDEO])
    assert kinds[0] is FrameKind.VIDEO_SEQUENCE_HEADER and kinds[1] is FrameKind.KEYFRAME
    assert played.frames_sent > sent_before
