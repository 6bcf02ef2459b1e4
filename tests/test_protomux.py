"""Protomux: JS captures decoded, our bytes equal to JS's, hyperfs↔hyperfs over TCP, hostile
peers, and live handshakes + channel opens with the real JS peer in both roles."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable

import pytest
import trio

from hyperfs.core.caps import replicate_capability
from hyperfs.core.crypto import discovery_key, key_pair
from hyperfs.core.encoding import Decoder, Encoder
from hyperfs.core.protocol.protomux import CLOSE, OPEN, REJECT, Channel, Frame, Mux, decode_frames
from hyperfs.core.protocol.secret_stream import SecretStream
from hyperfs.errors import ProtocolError
from tests.interop import js_peer
from tests.test_noise import CAPTURES, capture
from tests.test_secret_stream import assert_closed, connect_pair, decrypt_capture, run

HYPERCORE = "hypercore/alpha"


def frames_of(messages: list[bytes]) -> list[Frame]:
    return [frame for message in messages if message for frame in decode_frames(message)]


def decode_open(frame: Frame) -> tuple[int, str, bytes | None, bytes]:
    """(sender's channel id, protocol, id, handshake bytes) of an open control message."""
    assert (frame.channel, frame.type) == (0, OPEN)
    dec = Decoder(frame.payload)
    return dec.uint(), dec.string(), dec.optional_buffer(), bytes(dec.raw())


def hypercore_handshake(is_initiator: bool, key: bytes, handshake_hash: bytes) -> bytes:
    """The hypercore channel's open payload: flags (1 = seeks) || capability (wire.md §4.1)."""
    return Encoder().uint(1).fixed32(replicate_capability(is_initiator, key, handshake_hash)).getvalue()


# --- captures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_frames_decode(name: str) -> None:
    cap = capture(name)
    hh, sent, received = decrypt_capture(cap)
    key = bytes.fromhex(cap["key"])
    for direction, is_initiator in ((sent, True), (received, False)):
        frames = frames_of(direction)
        assert decode_open(frames[0]) == (1, HYPERCORE, discovery_key(key), hypercore_handshake(is_initiator, key, hh))
        for frame in frames[1:]:
            assert frame.channel == 1 and frame.type < 10  # everything else is the hypercore channel
    # The reader's first sync: canUpgrade|uploading|downloading, fork 0, length 0, remoteLength 0.
    assert frames_of(sent)[1] == Frame(1, 0, memoryview(b"\x07\x00\x00\x00"))


def test_multicore_trace_opens_and_reject() -> None:
    cap = capture("trace-multicore")
    hh, sent, received = decrypt_capture(cap)
    keys = [bytes.fromhex(k) for k in cap["keys"]]
    out, back = frames_of(sent), frames_of(received)
    opens = [decode_open(f) for f in out if (f.channel, f.type) == (0, OPEN)]
    assert [(o[0], o[1]) for o in opens] == [(1, HYPERCORE), (2, HYPERCORE), (3, HYPERCORE)]
    for (_, _, id, handshake), key in zip(opens, keys):
        assert id == discovery_key(key) and handshake == hypercore_handshake(True, key, hh)
    answers = [f for f in back if f.channel == 0]
    assert [decode_open(f)[:3] for f in answers if f.type == OPEN] == [
        (1, HYPERCORE, discovery_key(keys[0])),
        (2, HYPERCORE, discovery_key(keys[1])),
    ]
    assert [bytes(f.payload) for f in answers if f.type == REJECT] == [b"\x03"]
    assert {f.channel for f in back if f.channel} == {1, 2}


class Recorder:
    """The layer below a Mux, scripted: `receive()` hands out `inbox`, `send()` records."""

    closed = False

    def __init__(self, inbox: list[bytes]) -> None:
        self.inbox = inbox
        self.sent: list[bytes] = []
        self.sent_event = trio.Event()

    async def send(self, message) -> None:
        self.sent.append(bytes(message))
        self.sent_event.set()

    async def receive(self) -> bytearray:
        if not self.inbox:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        return bytearray(self.inbox.pop(0))

    async def run_keep_alive(self) -> None:
        await trio.sleep_forever()

    async def abort(self) -> None:
        self.closed = True


def test_our_corked_open_and_sync_equal_js_bytes() -> None:
    """Replaying the reader of a capture: our open batch and first sync batch are JS's bytes."""
    cap = capture("cap-2blocks-live")
    hh, sent, received = decrypt_capture(cap)
    key = bytes.fromhex(cap["key"])

    async def test() -> None:
        recorder = Recorder([received[0]])  # the writer's open
        mux = Mux(recorder)
        opened = trio.Event()

        async def on_open(channel: Channel, handshake: memoryview) -> None:
            assert bytes(handshake) == hypercore_handshake(False, key, hh)
            async with mux.corked():
                await channel.send(0, b"\x07\x00\x00\x00")  # sync, as the JS reader sends it
            opened.set()

        channel = mux.create_channel(HYPERCORE, discovery_key(key), messages=[None] * 10, on_open=on_open)
        async with mux.corked():
            await channel.open(hypercore_handshake(True, key, hh))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mux.run)
            await opened.wait()
            nursery.cancel_scope.cancel()
        assert recorder.sent == sent[:2]

    run(test)


def test_decode_frames_ignores_unknown_control_messages() -> None:
    assert decode_frames(b"\x00\x07\x01") == []
    assert decode_frames(b"\x00\x00\x00\x01\x09\x02\x03\x05") == [
        Frame(0, 3, memoryview(b"\x05"))
    ]


def test_decode_frames_rejects_malformed() -> None:
    for bad in [
        b"\x00\x00\x01\x05\x01",  # truncated batch
        b"\x00\x00\x00\x03\x00\x00\x01",  # a batch inside a batch
        b"\xfd\x01",  # truncated channel id
        b"\x01",  # no type
    ]:
        with pytest.raises(ProtocolError):
            decode_frames(bad)
    assert decode_frames(b"\x00\x00\x01\x02\x00\x41\x00\x02\x02\x01\x07") == [
        Frame(1, 0, memoryview(b"\x41")),
        Frame(2, 1, memoryview(b"\x07")),
    ]


# --- hyperfs <-> hyperfs over TCP -----------------------------------------------------------------


class Peer:
    """One side: a Mux plus a log of what its channels saw."""

    def __init__(self, stream: SecretStream, **options) -> None:
        self.mux = Mux(stream, **options)
        self.log: list[tuple] = []
        self.got = trio.Event()

    def channel(self, id: bytes, types: int = 3) -> Channel | None:
        async def on_open(channel: Channel, handshake: memoryview) -> None:
            self.note("open", channel.id, bytes(handshake))

        def on_close(channel: Channel, is_remote: bool) -> None:
            self.note("close", channel.id, is_remote)

        def handler(t: int) -> Callable[[Channel, memoryview], Awaitable[None]]:
            async def on_message(channel: Channel, payload: memoryview) -> None:
                self.note("message", channel.id, t, bytes(payload))

            return on_message

        return self.mux.create_channel("test", id, messages=[handler(t) for t in range(types)], on_open=on_open, on_close=on_close)

    def accept_all(self, handshake: bytes = b"accepted") -> None:
        """Answer every open of the peer with our own (a pairing hook for any id)."""

        async def notify(id: bytes | None) -> None:
            channel = self.channel(id)
            if channel is not None:
                await channel.open(handshake)

        self.mux.pair("test", None, notify)

    def note(self, *event) -> None:
        self.log.append(event)
        self.got.set()

    async def wait_for(self, *event) -> None:
        with trio.fail_after(10):
            while event not in self.log:
                self.got = trio.Event()
                await self.got.wait()


async def with_peers(
    test: Callable[[Peer, Peer], Awaitable[None]],
    before: Callable[[Peer, Peer], Awaitable[None]] | None = None,
    a_is_initiator: bool = True,
) -> None:
    """Runs `test(a, b)` with both muxes running (`before(a, b)` first, with neither running).

    `a` is the TCP client; `a_is_initiator` says which side runs Noise as initiator.
    """
    a_stream, b_stream = await connect_pair(a_is_initiator)
    a, b = Peer(a_stream), Peer(b_stream)
    if before is not None:
        await before(a, b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.mux.run)
        nursery.start_soon(b.mux.run)
        await test(a, b)
        await a.mux.close()
    assert b.mux.channels == []


def test_simultaneous_open_pairs_and_messages_flow() -> None:
    channels = {}

    async def before(a: Peer, b: Peer) -> None:
        # Both opens are on the wire before either side reads: each open pairs with the other.
        channels["a"], channels["b"] = a.channel(b"x"), b.channel(b"x")
        await channels["a"].open(b"hello from a")
        await channels["b"].open(b"hello from b")

    async def test(a: Peer, b: Peer) -> None:
        ca, cb = channels["a"], channels["b"]
        assert await ca.wait_opened() and await cb.wait_opened()
        await a.wait_for("open", b"x", b"hello from b")
        await b.wait_for("open", b"x", b"hello from a")
        await ca.send(1, b"one")
        await ca.send(7, b"type beyond the declared ones: dropped")
        await ca.send(2, b"")
        await b.wait_for("message", b"x", 2, b"")
        assert [e for e in b.log if e[0] == "message"] == [("message", b"x", 1, b"one"), ("message", b"x", 2, b"")]
        assert a.mux.create_channel("test", b"x") is None  # unique per (protocol, id)

    run(lambda: with_peers(test, before))


@pytest.mark.parametrize("a_is_initiator", [True, False])
def test_pair_hook_answers_or_rejects(a_is_initiator: bool) -> None:
    async def test(a: Peer, b: Peer) -> None:
        async def notify(id: bytes | None) -> None:
            if id == b"known":
                channel = b.channel(id)
                await channel.open(b"ok")
            elif id == b"changed its mind":
                await b.channel(id).close()  # made, then closed unopened: the open is rejected

        b.mux.pair("test", None, notify)
        known, unknown, undecided = a.channel(b"known"), a.channel(b"unknown"), a.channel(b"changed its mind")
        await known.open(b"")
        await unknown.open(b"")
        await undecided.open(b"")
        await a.wait_for("open", b"known", b"ok")
        await a.wait_for("close", b"unknown", True)  # rejected
        await a.wait_for("close", b"changed its mind", True)
        assert not await unknown.wait_opened()
        await known.send(0, b"ping")
        await b.wait_for("message", b"known", 0, b"ping")
        # Ids are reused: the rejected channels' ids 2 and 3 are free again (last freed first).
        again = a.channel(b"known-2")
        await again.open(b"")
        assert again._local_id == 3

    run(lambda: with_peers(test, a_is_initiator=a_is_initiator))


def test_close_and_reopen() -> None:
    async def test(a: Peer, b: Peer) -> None:
        b.accept_all()
        for round in range(3):
            ca = a.channel(b"c")
            await ca.open(b"")
            assert await ca.wait_opened()
            await a.wait_for("open", b"c", b"accepted")
            (cb,) = b.mux.channels
            await cb.send(0, bytes([round]))
            await a.wait_for("message", b"c", 0, bytes([round]))
            await ca.close()
            await b.wait_for("close", b"c", True)
            assert ca.closed and not a.mux.opened("test", b"c")
            a.log.clear()
            b.log.clear()

    run(lambda: with_peers(test))


@pytest.mark.parametrize("a_is_initiator", [True, False])
def test_corked_batch_of_many_channels(a_is_initiator: bool) -> None:
    async def test(a: Peer, b: Peer) -> None:
        b.accept_all()
        ids = [bytes([i]) for i in range(5)]
        a_channels = [a.channel(i) for i in ids]
        async with a.mux.corked():  # five opens in one batch
            for c in a_channels:
                await c.open(b"")
        for c in a_channels:
            assert await c.wait_opened()
        async with a.mux.corked():
            for n in range(3):
                for c in a_channels:
                    await c.send(1, c.id + bytes([n]))
        await b.wait_for("message", ids[-1], 1, ids[-1] + b"\x02")
        got = [e[3] for e in b.log if e[0] == "message"]
        assert got == [i + bytes([n]) for n in range(3) for i in ids]

    run(lambda: with_peers(test, a_is_initiator=a_is_initiator))


def test_big_messages_unbatched_and_batched() -> None:
    async def test(a: Peer, b: Peer) -> None:
        b.accept_all()
        ca = a.channel(b"big")
        await ca.open(b"")
        assert await ca.wait_opened()
        big = bytes(range(256)) * 4096  # 1 MiB
        await ca.send(0, big)
        async with a.mux.corked():
            await ca.send(1, big)
            await ca.send(2, big)
        await b.wait_for("message", b"big", 2, big)
        assert [e[2] for e in b.log if e[0] == "message"] == [0, 1, 2]

    run(lambda: with_peers(test))


# --- hostile peers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01\x05\x04test\x00",  # open with id 5 as the first channel
        b"\x00\x01\x00\x04test\x00",  # open with id 0
        b"\x00\x02\x09",  # reject of a channel we never opened
        b"\x00\x00\x01\x05\x01",  # truncated batch
        b"\x00\x00\x00\x03\x00\x00\x01",  # nested batch
        b"\x00\x01\x01\x04te",  # truncated open
        b"\x00\x01\x01\x02\xff\xfe\x00",  # protocol name that is not UTF-8
    ],
)
def test_bad_protomux_message_drops_connection(raw: bytes) -> None:
    async def test() -> None:
        ours, theirs = await connect_pair()
        peer = Peer(ours)
        channel = peer.channel(b"mine")
        await channel.open(b"")
        await theirs.send(raw)
        with pytest.raises(ProtocolError):
            await peer.mux.run()
        assert ours.closed and channel.closed
        assert ("close", b"mine", True) in peer.log
        await assert_closed(theirs.transport)

    run(test)


def test_too_many_channels_drops_connection() -> None:
    async def test() -> None:
        ours, theirs = await connect_pair()
        peer = Peer(ours, max_channels=3)
        for i in range(1, 5):
            await theirs.send(Encoder().uint(0).uint(OPEN).uint(i).string("test").optional_buffer(bytes([i])).getvalue())
        with pytest.raises(ProtocolError, match="allowed"):
            await peer.mux.run()
        await assert_closed(theirs.transport)

    run(test)


def test_peer_close_of_unknown_channel_is_ignored() -> None:
    async def test() -> None:
        ours, theirs = await connect_pair()
        peer = Peer(ours)
        await theirs.send(bytes([0, CLOSE, 9]))
        await theirs.send(b"\x05\x00payload for a channel that does not exist")
        await theirs.aclose()
        await peer.mux.run()  # a clean end
        assert ours.closed

    run(test)


# --- the real JS peer -----------------------------------------------------------------------------


async def open_hypercore_channel(stream: SecretStream, key: bytes) -> bytes:
    """Pair the hypercore channel for `key` with the JS side; returns the first message it sends."""
    mux = Mux(stream)
    remote = {}
    first = trio.Event()

    async def on_open(channel: Channel, handshake: memoryview) -> None:
        remote["handshake"] = bytes(handshake)

    async def on_sync(channel: Channel, payload: memoryview) -> None:
        remote.setdefault("sync", bytes(payload))
        first.set()

    async def notify(id: bytes | None) -> None:
        remote["id"] = id
        channel = mux.create_channel(HYPERCORE, id, messages=[on_sync], on_open=on_open, aliases=["hypercore"])
        await channel.open(hypercore_handshake(stream.is_initiator, key, stream.handshake_hash))

    mux.pair(HYPERCORE, None, notify)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mux.run)
        with trio.fail_after(20):
            await first.wait()
        await mux.close()
    # The JS side's open: the core's discovery key and the capability for its own role.
    assert remote["id"] == discovery_key(key)
    assert remote["handshake"] == hypercore_handshake(not stream.is_initiator, key, stream.handshake_hash)
    return remote["sync"]


def sync_length(payload: bytes) -> int:
    dec = Decoder(payload)
    dec.uint()  # flags
    dec.uint()  # fork
    return dec.uint()


def test_js_responder_we_initiate(tmp_path) -> None:
    with js_peer("seed", "--storage", str(tmp_path / "js"), "--blocks", "3", "--listen", "0", "--keepalive", "50") as (_, info):

        async def test() -> None:
            tcp = await trio.open_tcp_stream("127.0.0.1", info["port"])
            stream = await SecretStream.connect(tcp, True, key_pair())
            sync = await open_hypercore_channel(stream, bytes.fromhex(info["key"]))
            assert sync_length(sync) == 3

        run(test)


def test_js_initiator_we_respond(tmp_path) -> None:
    async def test() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        args = ("seed", "--storage", str(tmp_path / "js"), "--blocks", "2", "--connect", f"127.0.0.1:{port}")
        # The JS peer dials (and redials) on its own; starting it blocks only until it is ready.
        with js_peer(*args) as (proc, info):
            assert isinstance(proc, subprocess.Popen)
            tcp = await listeners[0].accept()
            stream = await SecretStream.connect(tcp, False, key_pair())
            sync = await open_hypercore_channel(stream, bytes.fromhex(info["key"]))
            assert sync_length(sync) == 2
        await listeners[0].aclose()

    run(test, timeout=60)
