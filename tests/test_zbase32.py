"""zbase32.json: z-base-32 of 0..32 byte inputs, core ids, and every accepted key form."""

import pytest

from hyperfs.core import z32
from hyperfs.errors import InvalidKeyError
from tests.vectors import load

V = load("zbase32")


def test_alphabet():
    assert z32.ALPHABET == V["alphabet"]


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: c["hex"][:16] or "empty")
def test_encode_decode(case):
    data = bytes.fromhex(case["hex"])
    assert z32.encode(data) == case["z32"]
    assert z32.decode(case["z32"]) == data


@pytest.mark.parametrize("case", V["ids"], ids=lambda c: c["id"][:8])
def test_ids_and_key_forms(case):
    key = bytes.fromhex(case["key"])
    assert z32.encode_id(key) == case["id"]
    assert z32.decode_key(case["id"]) == key
    assert z32.decode_key(case["key"]) == key
    assert z32.decode_key(case["key"].upper()) == key
    assert z32.decode_key(f"pear://{case['id']}/some/path") == key
    assert z32.decode_key(f"hyper://{case['id']}") == key
    assert z32.decode_key(f"hyper://{case['key']}/") == key
    assert z32.decode_key(key) == key


@pytest.mark.parametrize(
    "bad",
    [
        "l" + "y" * 51,  # 'l' is not in the alphabet
        "y" * 51 + "0",
        "y" * 51,
        "y" * 53,
        "ab" * 31,
        "zz" * 32,  # 64 characters, not hex
        "",
        "hyper://",
        b"\x00" * 31,
        12345,
    ],
)
def test_bad_keys_raise(bad):
    with pytest.raises(InvalidKeyError):
        z32.decode_key(bad)


def test_bad_character_message_names_it():
    with pytest.raises(InvalidKeyError, match="'0'"):
        z32.decode("yy0y")
