"""Hypercore channel messages against JS-made bytes (proof vectors, observed plaintexts)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.core.encoding import TreeNode
from hyperfs.core.protocol import messages as m
from hyperfs.errors import DecodingError
from tests.vectors import INTEROP


def _proof_cases() -> list[dict]:
    cases = []
    for name in ("proofs-13blocks", "proofs-37blocks"):
        with open(INTEROP / "vectors" / f"{name}.json") as f:
            cases += [c for c in json.load(f)["cases"] if "wire" in c]
    return cases


def _nodes(items: list[dict]) -> list[TreeNode]:
    return [TreeNode(n["index"], n["size"], bytes.fromhex(n["hash"])) for n in items]


def data_from_json(d: dict, request: int = 1) -> m.Data:
    """The `data` object of a proofgen.js case as a message."""
    data = m.Data(request=request, fork=d["fork"])
    if d.get("block"):
        b = d["block"]
        data.block = m.DataBlock(b["index"], bytes.fromhex(b["value"]), _nodes(b["nodes"]))
    if d.get("hash"):
        data.hash = m.DataHash(d["hash"]["index"], _nodes(d["hash"]["nodes"]))
    if d.get("upgrade"):
        u = d["upgrade"]
        data.upgrade = m.DataUpgrade(
            u["start"], u["length"], _nodes(u["nodes"]), _nodes(u["additionalNodes"]), bytes.fromhex(u["signature"])
        )
    return data


@pytest.mark.parametrize("case", _proof_cases(), ids=lambda c: c["label"])
def test_data_matches_js_bytes(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    expected = data_from_json(case["data"])
    assert m.encode(expected) == wire
    assert m.decode(m.Data.TYPE, wire) == expected


OBSERVED = [
    # (type, plaintext payload, message) from wire.md §4.3 / the captures
    (0, "0e000002", m.Sync(remote_length=2, can_upgrade=False, has_manifest=True)),
    (1, "2101000001" "01", m.Request(id=1, block=m.IndexNodes(0, 1), priority=1)),
    (1, "18010000" "02", m.Request(id=1, upgrade=m.UpgradeRequest(0, 2), manifest=True)),
    (8, "000002", m.Range(0, 2)),
    (8, "0205", m.Range(5, 1)),
    (8, "010307", m.Range(3, 7, drop=True)),
    (4, "0700", m.NoData(7)),
    (4, "070102", m.NoData(7, m.INVALID_REQUEST)),
    (5, "00fe00002000", m.Want(0, 2097152)),
    (6, "0a0b", m.Unwant(10, 11)),
    (5, "010201", m.Want(1, 2, any=True)),
    (2, "05", m.Cancel(5)),
    (7, "2002" "01000000" "ffffffff", m.Bitfield(32, [1, 0xFFFFFFFF])),
    (9, "03616263" "7879", m.Extension("abc", b"xy")),
]


@pytest.mark.parametrize("msg_type,hexbytes,msg", OBSERVED)
def test_observed_messages(msg_type: int, hexbytes: str, msg: m.Message) -> None:
    payload = bytes.fromhex(hexbytes)
    assert msg.TYPE == msg_type
    assert m.decode(msg_type, payload) == msg
    assert m.encode(msg) == payload


def test_data_block_observed() -> None:
    value = b"hypercore-interop block 0\n"
    leaf = TreeNode(2, 26, bytes(range(32)))
    payload = bytes.fromhex("010100") + b"\x00\x1a" + value + b"\x01\x02\x1a" + leaf.hash
    msg = m.Data(request=1, block=m.DataBlock(0, value, [leaf]))
    assert m.encode(msg) == payload
    assert m.decode(3, payload) == msg


def test_data_with_manifest_runs_to_the_end() -> None:
    manifest = bytes.fromhex("0100000101") + bytes(65)
    msg = m.Data(request=3, upgrade=m.DataUpgrade(0, 2, [], [], b"s" * 68), manifest=manifest)
    assert m.decode(3, m.encode(msg)) == msg


def test_handshake_observed() -> None:
    cap = bytes(range(32))
    assert m.Handshake(cap).encode() == b"\x01" + cap
    assert m.Handshake.decode(b"\x01" + cap) == m.Handshake(cap, True)
    assert m.Handshake.decode(b"\x00" + cap).seeks is False


def test_trailing_bytes_are_ignored_like_js() -> None:
    assert m.decode(0, bytes.fromhex("0e000002ffff")) == m.Sync(remote_length=2, can_upgrade=False, has_manifest=True)


@pytest.mark.parametrize("msg_type,hexbytes,msg", OBSERVED)
def test_every_truncation_is_a_decoding_error(msg_type: int, hexbytes: str, msg: m.Message) -> None:
    payload = bytes.fromhex(hexbytes)
    # Messages whose tail is optional (flags, raw) decode from shorter prefixes; the rest must not.
    optional_tail = {4: 1, 5: 2, 6: 2, 9: 4}
    for cut in range(optional_tail.get(msg_type, len(payload))):
        with pytest.raises(DecodingError):
            m.decode(msg_type, payload[:cut])


def test_unknown_type_and_bad_handshake() -> None:
    with pytest.raises(DecodingError):
        m.decode(10, b"\x00")
    with pytest.raises(DecodingError):
        m.Handshake.decode(b"\x01" + bytes(31))
    with pytest.raises(DecodingError):
        m.decode(3, bytes.fromhex("100100"))  # manifest flag without a manifest


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 9), st.binary(max_size=80))
def test_random_bytes_decode_or_raise_decoding_error(msg_type: int, payload: bytes) -> None:
    try:
        msg = m.decode(msg_type, payload)
    except DecodingError:
        return
    # Whatever decodes re-encodes to something that decodes to the same message.
    assert m.decode(msg_type, m.encode(msg)) == msg
