"""Protomux over a SecretStream: channels paired by protocol name + id, control messages, batches.

One decrypted message = `uint channel || uint type || payload` (wire.md §3). Channel 0 carries
the control messages batch (0), open (1), reject (2) and close (3). Channel numbers are each
sender's own ids; a channel is usable once both sides have sent their open for the same
(protocol, id). The port follows protomux 3.12 `index.js`, with trio instead of callbacks:
`Mux.run()` is the receive loop and awaits each handler in wire order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import trio

from hyperfs.core.encoding import Decoder, Encoder, uint_bytes
from hyperfs.errors import DecodingError, PeerClosedError, ProtocolError

MAX_BATCH = 8 * 1024 * 1024  # a corked batch is flushed at this size, as protomux does
MAX_CHANNELS = 4096  # remote channels open at once on one connection before we drop the peer
MAX_BUFFERED = 1 << 20  # bytes held for remote channels paired but not yet opened locally

BATCH, OPEN, REJECT, CLOSE = 0, 1, 2, 3  # control message types (channel 0)

MessageHandler = Callable[["Channel", memoryview], Awaitable[None]]
OpenHandler = Callable[["Channel", bytes], Awaitable[None]]
CloseHandler = Callable[["Channel", bool], None]
PairHandler = Callable[[bytes | None], Awaitable[None]]


class MessageStream(Protocol):
    """What Mux needs from the connection below it (SecretStream has it)."""

    closed: bool

    async def send(self, message: bytes | bytearray | memoryview) -> None: ...
    async def receive(self) -> bytearray: ...
    async def run_keep_alive(self) -> None: ...
    async def abort(self) -> None: ...


class Frame(NamedTuple):
    """One Protomux message: the sender's channel id (0 = control), its type and its payload."""

    channel: int
    type: int
    payload: memoryview


def decode_frames(message: bytes | bytearray | memoryview) -> list[Frame]:
    """The Protomux messages in one decrypted message: one, or the contents of a batch.

    Control messages other than batch/open/reject/close are left out, as protomux ignores them
    (wire.md §3.2), so a newer peer's additions do not cost the connection. Raises ProtocolError
    for bytes that do not parse or a batch inside a batch.
    """
    view = memoryview(message)
    try:
        dec = Decoder(view)
        channel, type = dec.uint(), dec.uint()
        if channel != 0 or type != BATCH:
            frames = [Frame(channel, type, view[dec.pos :])]
        else:
            frames = []
            channel = dec.uint()
            while not dec.done():
                size = dec.uint()
                if size == 0:
                    channel = dec.uint()
                    continue
                stop = dec.pos + size
                if stop > dec.end:
                    raise ProtocolError("peer sent a truncated Protomux batch")
                sub = Decoder(view, dec.pos, stop)
                type = sub.uint()
                if channel == 0 and type == BATCH:
                    raise ProtocolError("peer sent a Protomux batch inside a batch")
                frames.append(Frame(channel, type, view[sub.pos : stop]))
                dec.pos = stop
    except DecodingError as err:
        raise ProtocolError(f"peer sent a malformed Protomux message: {err}") from None
    return [f for f in frames if f.channel != 0 or f.type in (OPEN, REJECT, CLOSE)]


def _key(protocol: str, id: bytes | None) -> tuple[str, bytes]:
    return (protocol, id or b"")


@dataclass(eq=False)
class _Info:
    """Per (protocol, id): our opens awaiting the peer's, the peer's opens awaiting ours."""

    keys: list[tuple[str, bytes]]
    opened: int = 0
    incoming: deque[int] = field(default_factory=deque)  # remote ids not yet paired
    outgoing: deque[int] = field(default_factory=deque)  # local ids not yet paired


@dataclass(eq=False)
class _Remote:
    """A channel the peer opened: its open's handshake bytes and, once paired, our Channel."""

    handshake: bytes
    session: Channel | None = None
    pending: list[tuple[int, memoryview]] | None = None  # messages before our side opened


async def _ignore(channel: Channel, payload: memoryview) -> None:
    return None


class Channel:
    """One end of a Protomux channel. Create with `Mux.create_channel`, then `await open(...)`.

    `opened` turns True (and `on_open(channel, remote_handshake)` runs) when both opens are
    known; `send(type, payload)` writes message `type`; `close()` ends it. Incoming messages of
    type `t` go to `messages[t](channel, payload)` (payload: a memoryview over the decrypted
    message, valid as long as it is referenced); types beyond `messages` are dropped.
    """

    def __init__(
        self,
        mux: Mux,
        info: _Info,
        protocol: str,
        id: bytes | None,
        messages: Sequence[MessageHandler | None],
        on_open: OpenHandler | None,
        on_close: CloseHandler | None,
    ) -> None:
        self.mux = mux
        self.protocol = protocol
        self.id = id
        self.remote_handshake: bytes | None = None
        self.opened = False
        self.closed = False
        self._info = info
        self._handlers = [h or _ignore for h in messages]
        self._on_open = on_open
        self._on_close = on_close
        self._local_id = 0
        self._remote_id = 0
        self._opened_event = trio.Event()

    async def open(self, handshake: bytes = b"") -> None:
        """Send our open with `handshake` (the protocol's handshake encoding, raw bytes)."""
        mux = self.mux
        if self._local_id or self.closed:
            return
        if mux._done:
            self._close(is_remote=True)
            return
        local = mux._free.pop() if mux._free else _append(mux._local)
        self._local_id = local + 1
        mux._local[local] = self
        self._info.opened += 1
        if self._remote_id == 0:
            self._info.outgoing.append(self._local_id)
        enc = Encoder().uint(self._local_id).string(self.protocol).optional_buffer(self.id).raw(handshake)
        await mux._write_control(OPEN, enc.getvalue())
        if self._remote_id:
            await self._fully_open()

    async def wait_opened(self) -> bool:
        """Wait until the channel is fully opened (True) or closed before that (False)."""
        await self._opened_event.wait()
        return self.opened

    async def send(self, type: int, payload: bytes | bytearray | memoryview = b"") -> bool:
        """Send message `type` with `payload`; False if the channel is closed."""
        if self.closed or not self._local_id:
            return False
        mux = self.mux
        if mux._batch is not None:
            await mux._push_batch(self._local_id, uint_bytes(type) + payload)
        else:
            await mux._send(uint_bytes(self._local_id) + uint_bytes(type) + payload)
        return True

    async def close(self) -> None:
        """Close our end and tell the peer (it does not answer)."""
        if self.closed:
            return
        local_id, remote_id = self._local_id, self._remote_id
        self._close(is_remote=False)
        if local_id:
            await self.mux._write_control(CLOSE, uint_bytes(local_id))
        elif remote_id:  # made in a pairing hook but never opened: answer the peer's open
            await self.mux._write_control(REJECT, uint_bytes(remote_id))

    async def _fully_open(self) -> None:
        if self.opened or self.closed:
            return
        mux = self.mux
        remote = mux._remote[self._remote_id - 1]
        assert remote is not None
        remote.session = self
        self.remote_handshake = remote.handshake
        self.opened = True
        if self._on_open is not None:
            await self._on_open(self, remote.handshake)
        pending, remote.pending = remote.pending, None
        for type, payload in pending or ():
            mux._buffered -= len(payload)
            await self._receive(type, payload)
        self._opened_event.set()

    async def _receive(self, type: int, payload: memoryview) -> None:
        if type < len(self._handlers) and not self.closed:
            await self._handlers[type](self, payload)

    def _close(self, is_remote: bool) -> None:
        if self.closed:
            return
        self.closed = True
        mux = self.mux
        self._info.opened -= 1 if self._local_id else 0
        if self._remote_id:
            mux._remote[self._remote_id - 1] = None
            self._remote_id = 0
            if self._local_id:
                # The peer knows our id, so it is free now; an unpaired id waits for its open/reject.
                mux._free.append(self._local_id - 1)
        if self._local_id:
            mux._local[self._local_id - 1] = None
            self._local_id = 0
        mux._gc(self._info)
        self._opened_event.set()
        if self._on_close is not None:
            self._on_close(self, is_remote)


def _append(table: list[Any]) -> int:
    table.append(None)
    return len(table) - 1


class Mux:
    """Protomux on one connection. Start `await mux.run()` in a task, then create channels.

    `run()` returns when the peer closes cleanly and raises ProtocolError (after closing the
    connection and every channel) when the peer breaks the protocol or a handler raises one.
    """

    def __init__(self, stream: MessageStream, *, max_channels: int = MAX_CHANNELS) -> None:
        self.stream = stream
        self.max_channels = max_channels
        self.cork_depth = 0
        self._local: list[Channel | None] = []
        self._free: list[int] = []
        self._remote: list[_Remote | None] = []
        self._infos: dict[tuple[str, bytes], _Info] = {}
        self._notify: dict[tuple[str, bytes], PairHandler] = {}
        self._batch: bytearray | None = None
        self._batch_channel = 0
        self._buffered = 0
        self._done = False

    @property
    def channels(self) -> list[Channel]:
        """The channels we have opened and not closed."""
        return [c for c in self._local if c is not None]

    # --- channels ------------------------------------------------------------------------------

    def create_channel(
        self,
        protocol: str,
        id: bytes | None = None,
        *,
        messages: Sequence[MessageHandler | None] = (),
        on_open: OpenHandler | None = None,
        on_close: CloseHandler | None = None,
        aliases: Sequence[str] = (),
    ) -> Channel | None:
        """A new channel for (protocol, id), or None if the connection is closed or one is
        already open for it. If the peer's open for it is waiting (we are in
        its pairing hook), the channel pairs with it as soon as `open()` is called.
        """
        if self._done or self.stream.closed:
            return None
        info = self._get(protocol, id, aliases)
        if info.opened > 0:
            return None
        channel = Channel(self, info, protocol, id, messages, on_open, on_close)
        while info.incoming:
            remote_id = info.incoming.popleft()
            remote = self._remote[remote_id - 1]
            if remote is not None:
                channel._remote_id = remote_id
                remote.session = channel
                break
        return channel

    def pair(self, protocol: str, id: bytes | None, notify: PairHandler) -> None:
        """Call `await notify(id)` when the peer opens (protocol, id) and we have no open for it
        (id None: any id). If notify does not create and open that channel, the peer's open is
        rejected."""
        self._notify[_key(protocol, id)] = notify

    def opened(self, protocol: str, id: bytes | None = None) -> bool:
        """True if a channel for (protocol, id) is open on our side."""
        info = self._infos.get(_key(protocol, id))
        return info is not None and info.opened > 0

    def _get(self, protocol: str, id: bytes | None, aliases: Sequence[str] = ()) -> _Info:
        key = _key(protocol, id)
        info = self._infos.get(key)
        if info is None:
            info = _Info([key] + [_key(alias, id) for alias in aliases])
            for k in info.keys:
                self._infos[k] = info
        return info

    def _gc(self, info: _Info) -> None:
        if info.opened == 0 and not info.outgoing and not info.incoming:
            for k in info.keys:
                if self._infos.get(k) is info:
                    del self._infos[k]

    # --- sending -------------------------------------------------------------------------------

    def cork(self) -> None:
        """Collect outgoing messages into one batch until the matching `uncork()`."""
        self.cork_depth += 1
        if self.cork_depth == 1:
            self._batch = bytearray()

    async def uncork(self) -> None:
        """Send what was collected since the first `cork()` (nothing if nothing was)."""
        self.cork_depth -= 1
        if self.cork_depth == 0:
            batch, self._batch = self._batch, None
            if batch:
                await self._send(batch)

    @asynccontextmanager
    async def corked(self) -> AsyncIterator[None]:
        """`async with mux.corked():` everything sent inside goes out as one batch."""
        self.cork()
        try:
            yield
        finally:
            await self.uncork()

    async def _push_batch(self, channel: int, message: bytes) -> None:
        batch = self._batch
        assert batch is not None
        if len(batch) >= MAX_BATCH:
            await self._send(batch)
            batch = self._batch = bytearray()
        if not batch:
            batch += b"\x00\x00" + uint_bytes(channel)
        elif self._batch_channel != channel:
            batch += b"\x00" + uint_bytes(channel)
        self._batch_channel = channel
        batch += uint_bytes(len(message))
        batch += message

    async def _write_control(self, type: int, payload: bytes) -> None:
        if self._batch is not None:
            await self._push_batch(0, uint_bytes(type) + payload)
        else:
            await self._send(b"\x00" + uint_bytes(type) + payload)

    async def _send(self, message: bytes | bytearray) -> None:
        if not self._done:
            await self.stream.send(message)

    # --- receiving -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Receive and dispatch until the connection ends; also sends the stream's keep-alives."""
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.stream.run_keep_alive)
                try:
                    while True:
                        message = await self.stream.receive()
                        await self._on_message(memoryview(message))
                except PeerClosedError:
                    pass
                except DecodingError as err:
                    failure = ProtocolError(f"peer sent a malformed Protomux message: {err}")
                except Exception as err:  # noqa: BLE001 - re-raised below, after cleanup
                    failure = err
                nursery.cancel_scope.cancel()
        finally:
            await self._shutdown()
        if failure is not None:
            raise failure

    async def close(self) -> None:
        """Close every channel and the connection."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._done:
            return
        self._done = True
        with trio.CancelScope(shield=True):
            await self.stream.abort()
        for channel in list(self._local):
            if channel is not None:
                channel._close(is_remote=True)

    async def _on_message(self, message: memoryview) -> None:
        frames = decode_frames(message)
        corked = len(frames) > 1
        if corked:
            self.cork()  # answer a batch with one batch, as protomux does
        try:
            for frame in frames:
                if self._done:
                    return
                await self._dispatch(frame)
        finally:
            if corked and not self._done:
                await self.uncork()

    async def _dispatch(self, frame: Frame) -> None:
        channel, type, payload = frame
        if channel == 0:
            dec = Decoder(payload)
            if type == OPEN:
                await self._on_open(dec, payload)
            elif type == REJECT:
                self._on_reject(dec.uint())
            else:
                self._on_close(dec.uint())
            return
        remote = self._remote[channel - 1] if channel <= len(self._remote) else None
        if remote is None:
            return  # a closed channel: messages in flight are dropped
        if remote.pending is not None:
            self._buffered += len(payload)
            if self._buffered > MAX_BUFFERED:
                raise ProtocolError("peer sent too much to channels we have not opened")
            remote.pending.append((type, payload))
            return
        if remote.session is not None:
            await remote.session._receive(type, payload)

    async def _on_open(self, dec: Decoder, message: memoryview) -> None:
        remote_id = dec.uint()
        protocol = dec.string()
        id = dec.optional_buffer()
        handshake = bytes(message[dec.pos : dec.end])  # small; not a view pinning the whole batch
        if remote_id == 0:
            raise ProtocolError("peer opened channel id 0")
        if remote_id > self.max_channels:
            # Ids are the smallest free ones, so this bounds the channels open at once too.
            raise ProtocolError(f"peer opened channel {remote_id}, more than the {self.max_channels} allowed")
        rid = remote_id - 1
        if rid == len(self._remote):
            self._remote.append(None)  # ids grow by at most one
        if rid >= len(self._remote) or self._remote[rid] is not None:
            raise ProtocolError(f"peer sent an invalid open for channel {remote_id}")
        info = self._get(protocol, id)
        if info.outgoing:
            local_id = info.outgoing.popleft()
            session = self._local[local_id - 1]
            if session is None:  # we closed it before the peer's open arrived
                self._free.append(local_id - 1)
                self._gc(info)
                return
            self._remote[rid] = _Remote(handshake)
            session._remote_id = remote_id
            await session._fully_open()
            return
        self._remote[rid] = _Remote(handshake, pending=[])
        info.incoming.append(remote_id)
        notify = self._notify.get(_key(protocol, id)) or self._notify.get(_key(protocol, None))
        if notify is not None:
            await notify(id)
        while info.incoming:
            await self._reject(info.incoming.popleft())
        self._gc(info)

    async def _reject(self, remote_id: int) -> None:
        remote = self._remote[remote_id - 1]
        if remote is not None and remote.pending:
            self._buffered -= sum(len(p) for _, p in remote.pending)
        self._remote[remote_id - 1] = None
        await self._write_control(REJECT, uint_bytes(remote_id))

    def _on_reject(self, local_id: int) -> None:
        for info in self._infos.values():
            if local_id in info.outgoing:
                info.outgoing.remove(local_id)
                session = self._local[local_id - 1]
                self._free.append(local_id - 1)
                if session is not None:
                    session._close(is_remote=True)
                self._gc(info)
                return
        raise ProtocolError(f"peer rejected channel {local_id}, which we did not open")

    def _on_close(self, remote_id: int) -> None:
        remote = self._remote[remote_id - 1] if 0 < remote_id <= len(self._remote) else None
        if remote is not None and remote.session is not None:
            remote.session._close(is_remote=True)
