"""The stable Noise key pair of a store (issue 5: "each peer has a stable Noise key pair").

It is the store's derived key pair named `hyperswarm`, what a JS app gets from
`await store.createKeyPair('hyperswarm')` (the usual Hyperswarm identity): derived from the
primary key the store keeps, so it is the same on every run and nothing new is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperfs.core.crypto import KeyPair

if TYPE_CHECKING:  # corestore will call into this module: no import at run time, no cycle
    from hyperfs.core.corestore import Corestore

NOISE_KEY_PAIR_NAME = "hyperswarm"


def noise_key_pair(store: Corestore) -> KeyPair:
    """The Noise static key pair of `store` (a ready Corestore), Corestore `createKeyPair('hyperswarm')`."""
    return store.key_pair_for(NOISE_KEY_PAIR_NAME)
