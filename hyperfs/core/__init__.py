"""Hypercore 11 in Python: signed append-only logs on RocksDB."""

from hyperfs.core.corestore import Corestore
from hyperfs.core.hypercore import Hypercore

__all__ = ["Corestore", "Hypercore"]
