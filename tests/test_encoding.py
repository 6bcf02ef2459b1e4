import pytest

from hyperfs.core.encoding import Decoder, Encoder, TreeNode, decode_tree_node, encode_tree_node
from hyperfs.errors import DecodingError
from tests.vectors import load

V = load("encoding")


@pytest.mark.parametrize("case", V["uint"], ids=lambda c: str(c["value"]))
def test_uint(case):
    assert Encoder().uint(case["value"]).getvalue().hex() == case["hex"]
    assert Decoder(bytes.fromhex(case["hex"])).uint() == case["value"]


@pytest.mark.parametrize("case", V["uint64"], ids=lambda c: str(c["value"]))
def test_uint64(case):
    assert Encoder().uint64(case["value"]).getvalue().hex() == case["hex"]
    assert Decoder(bytes.fromhex(case["hex"])).uint64() == case["value"]


@pytest.mark.parametrize("case", V["buffer"], ids=lambda c: str(len(c["value"])))
def test_buffer(case):
    value = bytes.fromhex(case["value"])
    assert Encoder().buffer(value).getvalue().hex() == case["hex"]
    assert Decoder(bytes.fromhex(case["hex"])).buffer() == value


@pytest.mark.parametrize("case", V["string"], ids=lambda c: c["utf8"] or "empty")
def test_string(case):
    assert Encoder().string(case["value"]).getvalue().hex() == case["hex"]
    assert Decoder(bytes.fromhex(case["hex"])).string() == case["value"]


def test_fixed32_array_and_tree_node():
    f = V["fixed32"]
    assert Encoder().fixed32(bytes.fromhex(f["value"])).getvalue().hex() == f["hex"]
    a = V["uint_array"]
    assert Encoder().uint_array(a["value"]).getvalue().hex() == a["hex"]
    assert Decoder(bytes.fromhex(a["hex"])).uint_array() == a["value"]
    t = V["tree_node"]
    node = TreeNode(t["value"]["index"], t["value"]["size"], bytes.fromhex(t["value"]["hash"]))
    assert encode_tree_node(node).hex() == t["hex"]
    assert decode_tree_node(bytes.fromhex(t["hex"])) == node


@pytest.mark.parametrize(
    "data",
    ["", "fd01", "fe010203", "ff0102030405060708"[:-2], "ffffffffffffffffff", "05aabb"],
)
def test_bad_bytes_raise_decoding_error(data):
    dec = Decoder(bytes.fromhex(data))
    with pytest.raises(DecodingError):
        dec.buffer() if data == "05aabb" else dec.uint()


def test_array_count_limit_and_trailing_bytes():
    with pytest.raises(DecodingError):
        Decoder(Encoder().uint(0x100001).getvalue()).uint_array()
    with pytest.raises(DecodingError):
        decode_tree_node(encode_tree_node(TreeNode(1, 2, b"\0" * 32)) + b"\0")
