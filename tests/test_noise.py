"""Noise XX over Ed25519 (hyperfs.core.protocol.noise) against JS-recorded handshakes."""

from __future__ import annotations

import json

import pytest
import trio

from hyperfs.core.corestore import Corestore
from hyperfs.core.crypto import key_pair, keyed_hash32
from hyperfs.core.protocol.framing import FrameDecoder
from hyperfs.core.protocol.keys import noise_key_pair
from hyperfs.core.protocol.noise import NoiseHandshake, dh
from hyperfs.errors import HandshakeError
from tests.vectors import INTEROP, load

CAPTURES = ["cap-2blocks-live", "cap-5blocks-3live", "cap-20blocks-download"]


def capture(name: str) -> dict:
    with open(INTEROP / "vectors" / f"{name}.json") as f:
        return json.load(f)


def frames(chunks: list[bytes]) -> list[bytes]:
    """The frame bodies in one direction of a recorded connection."""
    decoder = FrameDecoder()
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert decoder.buffered == 0
    return out


def directions(cap: dict) -> tuple[list[bytes], list[bytes]]:
    """(initiator→responder frames, responder→initiator frames) of a capture or trace."""
    sent = [c for c in cap["chunks"] if c.get("conn", 1) == 1]
    i2r = [bytes.fromhex(c["hex"]) for c in sent if c["dir"] in ("i2r", "out")]
    r2i = [bytes.fromhex(c["hex"]) for c in sent if c["dir"] in ("r2i", "in")]
    return frames(i2r), frames(r2i)


def initiator_keys(cap: dict, message1: bytes):
    """The recorded initiator's static and ephemeral key pairs (the ephemeral is the one in message 1)."""
    static = cap["initiatorStatic"] if "initiatorStatic" in cap else cap["statics"][0]
    ephemeral = next(e for e in cap["ephemerals"] if bytes.fromhex(e["publicKey"]) == message1[:32])
    return key_pair(bytes.fromhex(static["seed"])), key_pair(bytes.fromhex(ephemeral["seed"]))


def replay_initiator(cap: dict) -> NoiseHandshake:
    """Replays the initiator's handshake, asserting messages 1 and 3 equal the recorded bytes."""
    i2r, r2i = directions(cap)
    static, ephemeral = initiator_keys(cap, i2r[0])
    noise = NoiseHandshake(True, static, ephemeral)
    assert noise.send() == i2r[0]
    assert noise.recv(r2i[0]) == b""
    assert noise.send() == i2r[1]
    assert noise.complete
    return noise


@pytest.mark.parametrize("name", CAPTURES + ["trace-multicore"])
def test_initiator_replay_matches_js_bytes(name: str) -> None:
    cap = capture(name)
    noise = replay_initiator(cap)
    assert len(noise.handshake_hash) == 64
    if "handshakeHash" in cap:
        assert noise.handshake_hash.hex() == cap["handshakeHash"]
        assert noise.remote_public_key.hex() == cap["responderStatic"]["publicKey"]


@pytest.mark.parametrize("name", CAPTURES)
def test_responder_replay_matches_js_bytes(name: str) -> None:
    cap = capture(name)
    i2r, r2i = directions(cap)
    ephemeral = next(e for e in cap["ephemerals"] if bytes.fromhex(e["publicKey"]) == r2i[0][:32])
    noise = NoiseHandshake(False, key_pair(bytes.fromhex(cap["responderStatic"]["seed"])), key_pair(bytes.fromhex(ephemeral["seed"])))
    noise.recv(i2r[0])
    assert noise.send() == r2i[0]
    noise.recv(i2r[1])
    assert noise.handshake_hash.hex() == cap["handshakeHash"]
    assert noise.remote_public_key.hex() == cap["initiatorStatic"]["publicKey"]
    initiator = replay_initiator(cap)
    assert (noise.tx, noise.rx) == (initiator.rx, initiator.tx)


def test_both_roles_agree_and_keys_differ_per_direction() -> None:
    a, b = NoiseHandshake(True, key_pair()), NoiseHandshake(False, key_pair())
    b.recv(a.send())
    a.recv(b.send())
    b.recv(a.send())
    assert a.complete and b.complete
    assert a.handshake_hash == b.handshake_hash
    assert a.tx == b.rx and a.rx == b.tx and a.tx != a.rx
    assert a.remote_public_key == b.static.public_key and b.remote_public_key == a.static.public_key


def test_payloads_are_carried() -> None:
    a, b = NoiseHandshake(True, key_pair()), NoiseHandshake(False, key_pair())
    assert b.recv(a.send(b"one")) == b"one"
    assert a.recv(b.send(b"two")) == b"two"
    assert b.recv(a.send(b"three")) == b"three"


def test_dh_is_symmetric_ed25519() -> None:
    x, y = key_pair(), key_pair()
    assert dh(x.secret_key, y.public_key) == dh(y.secret_key, x.public_key)


def _responder_after_message1() -> tuple[NoiseHandshake, NoiseHandshake]:
    a, b = NoiseHandshake(True, key_pair()), NoiseHandshake(False, key_pair())
    b.recv(a.send())
    return a, b


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: m[:40],  # truncated
        lambda m: m[:50] + bytes([m[50] ^ 1]) + m[51:],  # flipped bit in the encrypted static key
        lambda m: m[:-1] + bytes([m[-1] ^ 0x80]),  # flipped bit in the payload tag
        lambda m: bytes(96),  # all zeros: the identity point as ephemeral key
        lambda m: b"\xff" * 96,  # a non-canonical point
        lambda m: b"",
    ],
)
def test_corrupt_message2_raises_handshake_error(corrupt) -> None:
    a, b = _responder_after_message1()
    with pytest.raises(HandshakeError):
        a.recv(corrupt(b.send()))


def test_garbage_message1_raises_handshake_error() -> None:
    b = NoiseHandshake(False, key_pair())
    with pytest.raises(HandshakeError):
        b.recv(b"short")
    b = NoiseHandshake(False, key_pair())
    b.recv(bytes(32))  # message 1 is only accepted as bytes; the bad point fails at the first DH
    with pytest.raises(HandshakeError):
        b.send()


def test_out_of_turn_and_oversized_messages() -> None:
    a = NoiseHandshake(True, key_pair())
    with pytest.raises(HandshakeError):
        a.recv(bytes(96))  # the initiator speaks first
    b = NoiseHandshake(False, key_pair())
    with pytest.raises(HandshakeError):
        b.send()
    with pytest.raises(HandshakeError):
        b.recv(bytes(70000))
    with pytest.raises(HandshakeError):
        NoiseHandshake(True, key_pair()._replace(secret_key=None))


def test_store_noise_key_pair_is_stable_and_corestore_derived(tmp_path) -> None:
    vectors = load("corestore")
    primary = bytes.fromhex(vectors["primaryKey"])
    # The derivation of corestore.json's named key pairs, for the name "hyperswarm".
    ns = vectors["namespaces"][0]["namespace"]
    seed = keyed_hash32(primary, bytes.fromhex(vectors["corestore_NS"]), bytes.fromhex(ns), b"hyperswarm")

    async def pairs() -> list:
        found = []
        async with Corestore(str(tmp_path / "a"), primary_key=primary) as store:
            found.append(noise_key_pair(store))
        async with Corestore(str(tmp_path / "a")) as store:  # reopened: the primary key is stored
            found.append(noise_key_pair(store))
        async with Corestore(str(tmp_path / "b")) as store:  # another store, another identity
            found.append(noise_key_pair(store))
        return found

    first, reopened, other = trio.run(pairs)
    assert first == reopened == key_pair(seed)
    assert other != first
