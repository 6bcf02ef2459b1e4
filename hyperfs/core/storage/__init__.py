"""Hypercore storage on RocksDB: a port of hypercore-storage 1.9.6 (key layout and values).

`CorestoreStorage(path)` opens a store folder; `create(...)`/`resume(discovery_key)` give a
`HypercoreStorage` per core, whose `write()` batches commit atomically and whose `read()`
batches read back. All calls block; the async layers decide what runs in a worker thread.
"""

from hyperfs.core.storage.batch import CorePointers, CoreReadBatch, CoreWriteBatch
from hyperfs.core.storage.core import HypercoreStorage
from hyperfs.core.storage.schema import (
    Alias,
    Auth,
    CoreRecord,
    Dependency,
    Head,
    Hints,
    KeyPair,
    Session,
    StoreHead,
)
from hyperfs.core.storage.store import Atom, CorestoreStorage
from hyperfs.core.storage.streams import (
    AliasEntry,
    BitfieldEntry,
    BlockEntry,
    CoreEntry,
    LocalEntry,
    UserDataEntry,
)

__all__ = [
    "Alias",
    "AliasEntry",
    "Atom",
    "Auth",
    "BitfieldEntry",
    "BlockEntry",
    "CoreEntry",
    "CorePointers",
    "CoreReadBatch",
    "CoreRecord",
    "CoreWriteBatch",
    "CorestoreStorage",
    "Dependency",
    "Head",
    "Hints",
    "HypercoreStorage",
    "KeyPair",
    "LocalEntry",
    "Session",
    "StoreHead",
    "UserDataEntry",
]
