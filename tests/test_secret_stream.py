"""SecretStream: JS captures decrypted both ways, hyperfs↔hyperfs over real TCP, hostile peers."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.core.crypto import key_pair
from hyperfs.core.protocol.framing import FrameDecoder, encode_frame
from hyperfs.core.protocol.noise import NoiseHandshake
from hyperfs.core.protocol.secret_stream import MAX_MESSAGE, Pull, SecretStream, stream_id
from hyperfs.errors import HandshakeError, PeerClosedError, ProtocolError
from tests.test_noise import CAPTURES, capture, directions, replay_initiator


def decrypt_capture(cap: dict) -> tuple[bytes, list[bytes], list[bytes]]:
    """(handshake hash, initiator→responder plaintexts, responder→initiator plaintexts).

    Replays the initiator (asserting its handshake bytes), checks both stream headers and
    decrypts every later frame; keep-alives stay in the lists as empty messages.
    """
    i2r, r2i = directions(cap)
    noise = replay_initiator(cap)
    hh = noise.handshake_hash
    out_header, in_header = i2r[2], r2i[1]
    assert len(out_header) == len(in_header) == 56
    assert out_header[:32] == stream_id(hh, True)
    assert in_header[:32] == stream_id(hh, False)
    sent, received = Pull(bytes(out_header[32:]), noise.tx), Pull(bytes(in_header[32:]), noise.rx)
    return hh, [bytes(sent.message(f)) for f in i2r[3:]], [bytes(received.message(f)) for f in r2i[2:]]


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.lists(st.integers(1, 400), min_size=1))
def test_frames_survive_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(b) for b in bodies)
    decoder, out, pos, i = FrameDecoder(), [], 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        decoder.feed(wire[pos : pos + step])
        pos, i = pos + step, i + 1
        while (frame := decoder.next_frame()) is not None:
            out.append(bytes(frame))
    assert out == bodies and decoder.buffered == 0


def test_frame_limits() -> None:
    decoder = FrameDecoder(max_size=10)
    decoder.feed(b"\x0a\x00\x00" + bytes(10) + b"\x0b\x00")
    assert decoder.next_frame() == bytes(10)
    assert decoder.next_frame() is None  # two bytes of the next prefix
    decoder.feed(b"\x00")  # the prefix says 11: refused before any body arrives
    with pytest.raises(ProtocolError, match="above the limit"):
        decoder.next_frame()
    with pytest.raises(ProtocolError):
        encode_frame(b"")
    with pytest.raises(ProtocolError):
        encode_frame(bytes(1 << 24))


@pytest.mark.parametrize("name", CAPTURES + ["trace-multicore"])
def test_capture_decrypts_both_directions(name: str) -> None:
    hh, sent, received = decrypt_capture(capture(name))
    assert sent and received
    # The first message each way is a Protomux batch on the control channel (00 00).
    assert sent[0][:2] == b"\x00\x00" and received[0][:2] == b"\x00\x00"


def test_capture_tampered_frame_fails() -> None:
    cap = capture("cap-2blocks-live")
    i2r, r2i = directions(cap)
    noise = replay_initiator(cap)
    pull = Pull(bytes(r2i[1][32:]), noise.rx)
    frame = bytearray(r2i[2])
    frame[5] ^= 1
    with pytest.raises(ProtocolError):
        pull.message(bytes(frame))


# --- real TCP on 127.0.0.1 ------------------------------------------------------------------------


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected (client, server) pair of TCP streams on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    return client, server


async def connect_pair(client_is_initiator: bool = True, **options) -> tuple[SecretStream, SecretStream]:
    """Two SecretStreams talking over real TCP (client, server)."""
    client_tcp, server_tcp = await tcp_pair()
    result: dict[str, SecretStream] = {}

    async def side(name: str, tcp: trio.SocketStream, is_initiator: bool) -> None:
        result[name] = await SecretStream.connect(tcp, is_initiator, key_pair(), **options)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "client", client_tcp, client_is_initiator)
        nursery.start_soon(side, "server", server_tcp, not client_is_initiator)
    return result["client"], result["server"]


def run(test: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        with trio.fail_after(timeout):
            await test()

    trio.run(main)


@pytest.mark.parametrize("client_is_initiator", [True, False])
def test_tcp_messages_both_ways(client_is_initiator: bool) -> None:
    sizes = [1, 17, 1000, 65536, 1 << 20, MAX_MESSAGE]

    async def test() -> None:
        client, server = await connect_pair(client_is_initiator)
        assert client.handshake_hash == server.handshake_hash
        assert client.remote_public_key == server.public_key
        assert server.remote_public_key == client.public_key
        assert client.is_initiator == client_is_initiator
        messages = [os.urandom(size) for size in sizes]

        async def pump(a: SecretStream, b: SecretStream) -> None:
            async with trio.open_nursery() as nursery:
                for message in messages:
                    nursery.start_soon(a.send, message)
                    assert await b.receive() == message

        await pump(client, server)
        await pump(server, client)
        await client.send_many([b"a", b"", b"bc"])  # the empty one is a keep-alive
        assert await server.receive() == b"a"
        assert await server.receive() == b"bc"
        await client.aclose()
        with pytest.raises(PeerClosedError):
            await server.receive()
        assert [m async for m in server] == []

    run(test)


def test_keep_alives_are_sent_and_ignored() -> None:
    async def test() -> None:
        client, server = await connect_pair(keep_alive=0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run_keep_alive)
            await trio.sleep(0.3)
            await client.send(b"after silence")
            assert await server.receive() == b"after silence"
            nursery.cancel_scope.cancel()
        # Each keep-alive is a 20-byte frame (prefix + 17-byte tag) the receiver dropped; the
        # counter starts after the handshake.
        keep_alive_bytes = server.bytes_received - (3 + 17 + len(b"after silence"))
        assert keep_alive_bytes >= 20 and keep_alive_bytes % 20 == 0

    run(test)


def test_concurrent_senders_keep_order_per_task() -> None:
    async def test() -> None:
        client, server = await connect_pair()

        async def sender(tag: bytes) -> None:
            for i in range(50):
                await client.send(tag + i.to_bytes(2, "big") + bytes(3000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, b"a")
            nursery.start_soon(sender, b"b")
            seen: dict[bytes, list[int]] = {b"a": [], b"b": []}
            for _ in range(100):
                message = await server.receive()
                seen[bytes(message[:1])].append(int.from_bytes(message[1:3], "big"))
        assert seen == {b"a": list(range(50)), b"b": list(range(50))}

    run(test)


# --- hostile peers --------------------------------------------------------------------------------


async def assert_closed(stream: trio.SocketStream) -> None:
    """The other end closed this connection: EOF or a reset, within a few seconds."""
    with trio.fail_after(5):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


async def expect_handshake_error(is_initiator: bool, peer: Callable[[trio.SocketStream], Awaitable[None]], **options) -> None:
    ours, theirs = await tcp_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer, theirs)
        with pytest.raises(HandshakeError):
            await SecretStream.connect(ours, is_initiator, key_pair(), **options)
    await assert_closed(theirs)


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(b"\x01" * 5),  # too short for an ephemeral key
        encode_frame(os.urandom(32)),  # random "key": not a point, or a bad DH, or a bad message 3
        encode_frame(bytes(32)),  # the identity point
        b"\xff\xff\xff" + os.urandom(100),  # a length far above any Noise message
        b"\x00\x00\x00",  # an empty frame
    ],
)
def test_responder_rejects_garbage_handshake(garbage: bytes) -> None:
    async def peer(tcp: trio.SocketStream) -> None:
        await tcp.send_all(garbage)
        # If the garbage happened to be a usable key, answer message 2 with garbage message 3.
        try:
            data = await tcp.receive_some(1000)
            if data:
                await tcp.send_all(encode_frame(os.urandom(64)))
        except trio.BrokenResourceError:
            pass

    run(lambda: expect_handshake_error(False, peer))


def test_initiator_rejects_garbage_message2() -> None:
    async def peer(tcp: trio.SocketStream) -> None:
        await tcp.receive_some(100)
        await tcp.send_all(encode_frame(os.urandom(96)))

    run(lambda: expect_handshake_error(True, peer))


def test_handshake_timeout() -> None:
    async def silent(tcp: trio.SocketStream) -> None:
        await tcp.receive_some(100)

    run(lambda: expect_handshake_error(False, silent, handshake_timeout=0.3))


def test_peer_closing_during_handshake() -> None:
    async def quitter(tcp: trio.SocketStream) -> None:
        await tcp.send_all(b"\x20\x00")  # half a length prefix, then EOF
        await tcp.send_eof()

    run(lambda: expect_handshake_error(False, quitter))


@pytest.mark.parametrize("bad_header", ["wrong id", "short"])
def test_bad_stream_header(bad_header: str) -> None:
    """A peer that completes Noise as initiator but sends a wrong stream header."""

    async def peer(tcp: trio.SocketStream) -> None:
        noise = NoiseHandshake(True, key_pair())
        frames = FrameDecoder()
        await tcp.send_all(encode_frame(noise.send()))
        while (frame := frames.next_frame()) is None:
            frames.feed(await tcp.receive_some(1000))
        noise.recv(frame)
        message3 = noise.send()
        header = os.urandom(56) if bad_header == "wrong id" else stream_id(noise.handshake_hash, True)
        await tcp.send_all(encode_frame(message3) + encode_frame(header))

    run(lambda: expect_handshake_error(False, peer))


@pytest.mark.parametrize(
    "raw",
    [
        encode_frame(os.urandom(50)),  # random bytes after the handshake
        b"\x64\x00\x00" + os.urandom(10),  # a truncated frame, then EOF
        b"\x05\x00\x00" + os.urandom(5),  # shorter than the 17-byte tag
        b"\x00\x00\x00",  # an empty frame
        b"\xff\xff\x0f" + os.urandom(10),  # a length prefix above the limit (1 MiB here)
    ],
    ids=["random", "truncated", "short", "empty", "oversized"],
)
@pytest.mark.parametrize("we_initiate", [True, False])
def test_malformed_input_after_handshake(raw: bytes, we_initiate: bool) -> None:
    async def test() -> None:
        theirs, ours = await connect_pair(client_is_initiator=not we_initiate, max_frame_size=1 << 20)
        await theirs.send(b"fine")
        assert await ours.receive() == b"fine"
        await theirs.transport.send_all(raw)
        await theirs.transport.send_eof()
        with pytest.raises(ProtocolError) as info:
            await ours.receive()
        assert not isinstance(info.value, PeerClosedError)
        assert ours.closed
        await assert_closed(theirs.transport)
        with pytest.raises(PeerClosedError):
            await ours.send(b"after")

    run(test)


def test_message_above_frame_limit_is_refused_locally() -> None:
    async def test() -> None:
        client, server = await connect_pair()
        with pytest.raises(ProtocolError):
            await client.send(bytes(MAX_MESSAGE + 1))
        await client.send(b"still fine")
        assert await server.receive() == b"still fine"

    run(test)


def test_send_cancelled_halfway_closes_the_stream() -> None:
    async def test() -> None:
        client, server = await connect_pair()
        with trio.move_on_after(0.5) as scope:
            while True:  # the server never reads: the socket buffers fill and send_all blocks
                await client.send(bytes(1 << 20))
        assert scope.cancelled_caught
        assert client.closed  # a half-written frame would desynchronise the peer
        with pytest.raises(ProtocolError):
            async for _ in server:
                pass

    run(test)
