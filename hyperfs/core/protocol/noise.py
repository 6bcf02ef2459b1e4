"""Noise XX with Ed25519 keys, as noise-handshake 4 + noise-curve-ed 2 do it (wire.md §2.2).

`Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`: HASHLEN 64, HMAC/HKDF over BLAKE2b-512, ChaCha20-Poly1305
IETF, and a DH that is Ed25519 point multiplication by the clamped SHA-512 of the secret seed
(its output is a compressed Edwards point, not an X25519 value). Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings as nb
import nacl.exceptions

from hyperfs.core.crypto import KeyPair, key_pair
from hyperfs.errors import HandshakeError

PROTOCOL_NAME = b"Noise_XX_Ed25519_ChaChaPoly_BLAKE2b"
HASHLEN = 64
DHLEN = 32
KEYLEN = 32
TAGLEN = 16
MAX_MESSAGE_SIZE = 65535

# XX: `-> e`, `<- e, ee, s, es`, `-> s, se`.
_PATTERN = (("e",), ("e", "ee", "s", "es"), ("s", "se"))

if not nb.has_crypto_scalarmult_ed25519:  # a PyNaCl built on a minimal libsodium
    raise ImportError("PyNaCl lacks crypto_scalarmult_ed25519_noclamp (minimal libsodium build)")


def dh(secret_key: bytes, public_key: bytes) -> bytes:
    """noise-curve-ed `dh`: the clamped scalar of `secret_key` (64 bytes) times the point `public_key`."""
    try:
        scalar = nb.crypto_sign_ed25519_sk_to_curve25519(secret_key)
        return nb.crypto_scalarmult_ed25519_noclamp(scalar, public_key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, nacl.exceptions.ValueError) as err:
        raise HandshakeError(f"Noise DH with the peer's key failed: {err}") from None


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def hkdf(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """noise-handshake `hkdf` with two 64-byte outputs."""
    prk = _hmac(chaining_key, ikm)
    out1 = _hmac(prk, b"\x01")
    return out1, _hmac(prk, out1 + b"\x02")


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class _SymmetricState:
    """Noise's SymmetricState + CipherState: `h`, `ck`, the key and its nonce counter."""

    __slots__ = ("h", "ck", "k", "n")

    def __init__(self) -> None:
        self.h = PROTOCOL_NAME.ljust(HASHLEN, b"\x00")
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.mix_hash(b"")  # the (empty) prologue

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp = hkdf(self.ck, ikm)
        self.k = temp[:KEYLEN]
        self.n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            ciphertext = plaintext
        else:
            ciphertext = nb.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, self.h, _nonce(self.n), self.k)
            self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = nb.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, self.h, _nonce(self.n), self.k)
            except nacl.exceptions.CryptoError:
                raise HandshakeError("Noise handshake message does not decrypt (wrong key or corrupt)") from None
            self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        out1, out2 = hkdf(self.ck, b"")
        return out1[:KEYLEN], out2[:KEYLEN]


class NoiseHandshake:
    """One side of a Noise XX handshake.

    Drive it with `send()` / `recv(message)` in pattern order (the initiator sends first). Once
    `complete`, `tx`/`rx` are the 32-byte transport keys (own sending key / key of what we
    receive), `handshake_hash` the final 64-byte `h`, `remote_public_key` the peer's static key.
    `ephemeral` is for replaying recorded sessions; normally a fresh key pair is drawn.
    """

    def __init__(self, is_initiator: bool, static: KeyPair, ephemeral: KeyPair | None = None) -> None:
        if static.secret_key is None:
            raise HandshakeError("the Noise static key pair needs its secret key")
        self.is_initiator = is_initiator
        self.static = static
        self.ephemeral = ephemeral if ephemeral is not None else key_pair()
        self.remote_ephemeral: bytes | None = None
        self.remote_public_key: bytes | None = None
        self.tx: bytes | None = None
        self.rx: bytes | None = None
        self.handshake_hash: bytes | None = None
        self._state = _SymmetricState()
        self._step = 0

    @property
    def complete(self) -> bool:
        return self._step == len(_PATTERN)

    @property
    def my_turn(self) -> bool:
        """True when the next handshake message is ours to send."""
        # Initiator writes steps 0 and 2, responder step 1.
        return not self.complete and (self._step % 2 == 0) == self.is_initiator

    def send(self, payload: bytes = b"") -> bytes:
        """The next handshake message we send (with an optional, normally empty payload)."""
        if not self.my_turn:
            raise HandshakeError("Noise handshake: not our turn to send")
        st = self._state
        out = bytearray()
        for token in _PATTERN[self._step]:
            if token == "e":
                st.mix_hash(self.ephemeral.public_key)
                out += self.ephemeral.public_key
            elif token == "s":
                out += st.encrypt_and_hash(self.static.public_key)
            else:
                st.mix_key(self._dh(token))
        out += st.encrypt_and_hash(payload)
        self._advance()
        return bytes(out)

    def recv(self, message: bytes | memoryview) -> bytes:
        """Process the peer's next handshake message; returns its (normally empty) payload."""
        if self.complete or self.my_turn:
            raise HandshakeError("Noise handshake: got a message when it was our turn to send")
        if len(message) > MAX_MESSAGE_SIZE:
            raise HandshakeError(f"Noise handshake message of {len(message)} bytes is too long")
        st = self._state
        pos = 0
        for token in _PATTERN[self._step]:
            if token == "e":
                self.remote_ephemeral = self._take(message, pos, DHLEN)
                st.mix_hash(self.remote_ephemeral)
                pos += DHLEN
            elif token == "s":
                size = DHLEN + (TAGLEN if st.k is not None else 0)
                self.remote_public_key = st.decrypt_and_hash(self._take(message, pos, size))
                pos += size
            else:
                st.mix_key(self._dh(token))
        rest = message[pos:]
        if st.k is not None and len(rest) < TAGLEN:
            raise HandshakeError("Noise handshake message is truncated")
        payload = st.decrypt_and_hash(bytes(rest))
        self._advance()
        return payload

    @staticmethod
    def _take(message: bytes | memoryview, pos: int, size: int) -> bytes:
        if len(message) < pos + size:
            raise HandshakeError(f"Noise handshake message of {len(message)} bytes is truncated")
        return bytes(message[pos : pos + size])

    def _dh(self, token: str) -> bytes:
        # First letter = initiator's key, second = responder's (e = ephemeral, s = static).
        mine, theirs = (token[0], token[1]) if self.is_initiator else (token[1], token[0])
        local = self.ephemeral if mine == "e" else self.static
        remote = self.remote_ephemeral if theirs == "e" else self.remote_public_key
        assert local.secret_key is not None and remote is not None  # the pattern guarantees both
        return dh(local.secret_key, remote)

    def _advance(self) -> None:
        self._step += 1
        if self.complete:
            k1, k2 = self._state.split()
            self.tx, self.rx = (k1, k2) if self.is_initiator else (k2, k1)
            self.handshake_hash = self._state.h
