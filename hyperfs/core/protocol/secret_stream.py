"""@hyperswarm/secret-stream over any trio stream: Noise XX, stream header, secretstream transport.

After the handshake each direction starts with one 56-byte frame `streamId(32) || header(24)`,
then every frame is one libsodium `crypto_secretstream_xchacha20poly1305` message (tag 0, no
additional data) carrying one upper-layer message. Empty plaintexts are keep-alives: sent by
`run_keep_alive()` when nothing was written for a while, dropped by `receive()` (wire.md §2).

Any malformed input (bad handshake, bad header, a frame that fails to decrypt, an empty or
oversized frame, EOF inside a frame) raises ProtocolError/HandshakeError and closes the
transport; a clean EOF raises PeerClosedError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nacl.bindings as nb
import trio
from nacl._sodium import ffi, lib  # cffi handles: encrypt/decrypt in place, no extra copies

from hyperfs.core.crypto import KeyPair, keyed_hash32, namespace
from hyperfs.core.crypto import key_pair as new_key_pair
from hyperfs.core.protocol.framing import HEADER_SIZE, MAX_FRAME_SIZE, FrameDecoder, encode_frame
from hyperfs.core.protocol.noise import MAX_MESSAGE_SIZE, NoiseHandshake
from hyperfs.errors import HandshakeError, PeerClosedError, ProtocolError

NS_INITIATOR, NS_RESPONDER, NS_SEND = namespace("hyperswarm/secret-stream", 3)
ABYTES = nb.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
SECRETSTREAM_HEADER_SIZE = nb.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
STREAM_HEADER_SIZE = 32 + SECRETSTREAM_HEADER_SIZE
MAX_MESSAGE = MAX_FRAME_SIZE - ABYTES  # largest plaintext one frame can carry

HANDSHAKE_TIMEOUT = 10.0  # seconds, for the Noise messages and both stream headers
KEEP_ALIVE = 5.0  # seconds of silence before an empty message; Hypercore's default
RECEIVE_SIZE = 1 << 18


def stream_id(handshake_hash: bytes, is_initiator: bool) -> bytes:
    """secret-stream `streamId`: BLAKE2b-256 keyed with the handshake hash over the role's namespace."""
    return keyed_hash32(handshake_hash, NS_INITIATOR if is_initiator else NS_RESPONDER)


class Push:
    """The sending half of a secretstream: plaintext → a whole frame (prefix + ciphertext)."""

    __slots__ = ("_state", "header")

    def __init__(self, key: bytes) -> None:
        self._state = nb.crypto_secretstream_xchacha20poly1305_state()
        self.header = nb.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)

    def frame(self, message: bytes | bytearray | memoryview) -> bytearray:
        size = len(message) + ABYTES
        if size > MAX_FRAME_SIZE:
            raise ProtocolError(f"message of {len(message)} bytes is above the limit of {MAX_MESSAGE}")
        out = bytearray(HEADER_SIZE + size)
        out[0:HEADER_SIZE] = size.to_bytes(HEADER_SIZE, "little")
        dst = ffi.from_buffer("unsigned char[]", out, require_writable=True)
        rc = lib.crypto_secretstream_xchacha20poly1305_push(
            self._state.statebuf, dst + HEADER_SIZE, ffi.NULL, ffi.from_buffer(message), len(message), ffi.NULL, 0, 0
        )
        ffi.release(dst)
        if rc != 0:  # libsodium only fails on a message above its own maximum
            raise ProtocolError("secretstream encryption failed")
        return out


class Pull:
    """The receiving half of a secretstream: ciphertext → plaintext, or ProtocolError."""

    __slots__ = ("_state", "_tag")

    def __init__(self, header: bytes, key: bytes) -> None:
        self._state = nb.crypto_secretstream_xchacha20poly1305_state()
        nb.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)
        self._tag = ffi.new("unsigned char *")

    def message(self, ciphertext: bytes | memoryview) -> bytearray:
        size = len(ciphertext) - ABYTES
        if size < 0:
            raise ProtocolError(f"encrypted frame of {len(ciphertext)} bytes is shorter than its tag")
        out = bytearray(size)
        dst = ffi.from_buffer("unsigned char[]", out, require_writable=True)
        rc = lib.crypto_secretstream_xchacha20poly1305_pull(
            self._state.statebuf, dst, ffi.NULL, self._tag, ffi.from_buffer(ciphertext), len(ciphertext), ffi.NULL, 0
        )
        ffi.release(dst)
        if rc != 0:
            raise ProtocolError("encrypted frame does not decrypt (corrupt, replayed or forged)")
        return out


class SecretStream:
    """An encrypted, authenticated message stream to one peer (one secret-stream connection).

    Make one with `await SecretStream.connect(transport, is_initiator, key_pair)`. Then
    `await send(message)` and `await receive()` move whole messages; run `run_keep_alive()` in
    a task (Mux.run does) to send keep-alives. `handshake_hash` (64 bytes) is what Hypercore binds
    its capabilities to; `remote_public_key` is the peer's Noise static key.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        noise: NoiseHandshake,
        push: Push,
        pull: Pull,
        frames: FrameDecoder,
        keep_alive: float | None,
    ) -> None:
        assert noise.complete and noise.handshake_hash is not None and noise.remote_public_key is not None
        self.transport = transport
        self.is_initiator = noise.is_initiator
        self.public_key: bytes = noise.static.public_key
        self.remote_public_key: bytes = noise.remote_public_key
        self.handshake_hash: bytes = noise.handshake_hash
        self.keep_alive = keep_alive
        self.bytes_sent = 0
        self.bytes_received = 0
        self._push = push
        self._pull = pull
        self._frames = frames
        self._send_lock = trio.StrictFIFOLock()
        self._last_send = trio.current_time()
        self._closed = False

    @property
    def id(self) -> bytes:
        """Our stream id (the first 32 bytes of the header we sent)."""
        return stream_id(self.handshake_hash, self.is_initiator)

    @classmethod
    async def connect(
        cls,
        transport: trio.abc.Stream,
        is_initiator: bool,
        key_pair: KeyPair | None = None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_frame_size: int = MAX_FRAME_SIZE,
        keep_alive: float | None = KEEP_ALIVE,
        ephemeral: KeyPair | None = None,
    ) -> SecretStream:
        """Run the Noise XX handshake and exchange stream headers on `transport`.

        `key_pair` is our static Ed25519 key pair (a fresh one if None); `ephemeral` exists only
        for replaying recorded sessions. Frames above `max_frame_size` are rejected later on.
        On any failure, timeout included, the transport is closed and HandshakeError raised.
        """
        noise = NoiseHandshake(is_initiator, key_pair or new_key_pair(), ephemeral)
        frames = FrameDecoder(MAX_MESSAGE_SIZE)
        try:
            with trio.fail_after(handshake_timeout):
                push, pull = await _handshake(transport, noise, frames)
        except trio.TooSlowError:
            await trio.aclose_forcefully(transport)
            raise HandshakeError(f"secret-stream handshake did not finish within {handshake_timeout}s") from None
        except ProtocolError as err:
            await trio.aclose_forcefully(transport)
            if isinstance(err, HandshakeError):
                raise
            raise HandshakeError(f"secret-stream handshake failed: {err}") from None
        except BaseException:
            await trio.aclose_forcefully(transport)
            raise
        frames.max_size = max_frame_size
        return cls(transport, noise, push, pull, frames, keep_alive)

    async def send(self, message: bytes | bytearray | memoryview) -> None:
        """Encrypt and send one message (empty = a keep-alive)."""
        async with self._send_lock:
            # Encrypt under the lock: nonces follow encryption order, which must be send order.
            await self._send_all(self._push.frame(message))

    async def send_many(self, messages: list[bytes]) -> None:
        """Send several messages, one frame each, in one write."""
        async with self._send_lock:
            await self._send_all(b"".join([self._push.frame(m) for m in messages]))

    async def _send_all(self, data: bytes | bytearray) -> None:
        if self._closed:
            raise PeerClosedError("the connection is closed")
        try:
            await self.transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
            await self.abort()
            raise PeerClosedError(f"connection lost while sending: {err}") from None
        except trio.Cancelled:
            # The frame's nonce is spent and part of it may be on the wire: the stream cannot
            # go on, so close it rather than desynchronise the peer.
            with trio.CancelScope(shield=True):
                await self.abort()
            raise
        self.bytes_sent += len(data)
        self._last_send = trio.current_time()

    async def receive(self) -> bytearray:
        """The next non-empty message (a fresh bytearray owned by the caller).

        Raises PeerClosedError when the peer closed the connection between frames, and
        ProtocolError (closing the connection) for anything malformed.
        """
        while True:
            try:
                frame = self._frames.next_frame()
                if frame is None:
                    await self._fill()
                    continue
                message = self._pull.message(frame)
            except ProtocolError:  # PeerClosedError included
                await self.abort()
                raise
            if message:
                return message

    async def _fill(self) -> None:
        if self._closed:
            raise PeerClosedError("the connection is closed")
        try:
            data = await self.transport.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
            raise PeerClosedError(f"connection lost: {err}") from None
        if not data:
            if self._frames.buffered:
                raise ProtocolError(f"connection closed inside a frame ({self._frames.buffered} bytes pending)")
            raise PeerClosedError("peer closed the connection")
        self.bytes_received += len(data)
        self._frames.feed(data)

    def __aiter__(self) -> AsyncIterator[bytearray]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytearray]:
        """Messages until the peer closes cleanly (a malformed stream still raises)."""
        while True:
            try:
                yield await self.receive()
            except PeerClosedError:
                return

    async def run_keep_alive(self) -> None:
        """Send an empty message whenever nothing was sent for `keep_alive` seconds; runs until closed."""
        if not self.keep_alive:
            await trio.sleep_forever()
        while not self._closed:
            await trio.sleep_until(self._last_send + self.keep_alive)
            if trio.current_time() >= self._last_send + self.keep_alive:
                try:
                    await self.send(b"")
                except PeerClosedError:
                    return

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close the connection (a TCP close; secret-stream has no goodbye message)."""
        if not self._closed:
            self._closed = True
            await self.transport.aclose()

    async def abort(self) -> None:
        """Close the connection at once (cancellation-safe), e.g. after a protocol error."""
        if not self._closed:
            self._closed = True
            await trio.aclose_forcefully(self.transport)

    async def __aenter__(self) -> SecretStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _read_frame(transport: trio.abc.Stream, frames: FrameDecoder) -> memoryview:
    while (frame := frames.next_frame()) is None:
        try:
            data = await transport.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
            raise HandshakeError(f"connection lost during the handshake: {err}") from None
        if not data:
            raise HandshakeError("peer closed the connection during the handshake")
        frames.feed(data)
    return frame


async def _send(transport: trio.abc.Stream, data: bytes) -> None:
    try:
        await transport.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as err:
        raise HandshakeError(f"connection lost during the handshake: {err}") from None


async def _handshake(transport: trio.abc.Stream, noise: NoiseHandshake, frames: FrameDecoder) -> tuple[Push, Pull]:
    """Noise XX, then our header out and the peer's header in (wire.md §2.1-§2.3)."""
    last = b""
    while not noise.complete:
        if noise.my_turn:
            message = encode_frame(noise.send())
            if noise.complete:
                last = message  # the initiator's message 3 goes out together with its header
            else:
                await _send(transport, message)
        else:
            noise.recv(await _read_frame(transport, frames))
    assert noise.tx is not None and noise.rx is not None and noise.handshake_hash is not None
    push = Push(noise.tx)
    await _send(transport, last + encode_frame(stream_id(noise.handshake_hash, noise.is_initiator) + push.header))
    header = await _read_frame(transport, frames)
    if len(header) != STREAM_HEADER_SIZE:
        raise HandshakeError(f"peer's stream header is {len(header)} bytes, expected {STREAM_HEADER_SIZE}")
    if header[:32] != stream_id(noise.handshake_hash, not noise.is_initiator):
        raise HandshakeError("peer's stream id does not match the handshake")
    return push, Pull(bytes(header[32:]), noise.rx)


__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KEEP_ALIVE",
    "MAX_MESSAGE",
    "Pull",
    "Push",
    "SecretStream",
    "stream_id",
]
