"""caps.json: the hypercore namespaces, namespace() examples, replicate capability, signables."""

import pytest

from hyperfs.core import caps
from hyperfs.core.crypto import namespace
from hyperfs.errors import InvalidKeyError
from tests.vectors import load

V = load("caps")


@pytest.mark.parametrize("name", list(V["hypercore"]))
def test_hypercore_namespaces(name):
    assert getattr(caps, name).hex() == V["hypercore"][name]["hex"]


@pytest.mark.parametrize("case", V["namespace_examples"], ids=lambda c: c["name"])
def test_namespace_examples(case):
    assert [n.hex() for n in namespace(case["name"], case["count"])] == case["ids"]


def test_corestore_ns():
    assert namespace("corestore", 1)[0].hex() == V["corestore_NS"]


@pytest.mark.parametrize("case", V["replicate_capability"]["cases"], ids=lambda c: str(c["isInitiator"]))
def test_replicate_capability(case):
    cap = caps.replicate_capability(
        case["isInitiator"], bytes.fromhex(case["key"]), bytes.fromhex(case["handshakeHash"])
    )
    assert cap.hex() == case["capability"]


def test_replicate_capability_rejects_short_key():
    with pytest.raises(InvalidKeyError):
        caps.replicate_capability(True, b"short", bytes(64))


def test_signable_layouts():
    layout = load("signing")["layout"]
    for ex in (layout["example"], layout["large_length_example"]):
        out = caps.tree_signable(
            bytes.fromhex(ex["manifestHash"]), bytes.fromhex(ex["treeHash"]), ex["length"], ex["fork"]
        )
        assert len(out) == 112 and out.hex() == ex["treeSignable"]
    ex = layout["example"]
    th = bytes.fromhex(ex["treeHash"])
    compat = caps.tree_signable_compat(th, ex["length"], ex["fork"])
    assert len(compat) == 80 and compat.hex() == ex["treeSignableCompat"]
    legacy = caps.tree_signable_compat(th, ex["length"], ex["fork"], legacy=True)
    assert len(legacy) == 48 and legacy.hex() == ex["treeSignableCompat_noHeader"]
