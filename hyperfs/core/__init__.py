"""Hypercore 11 in Python: signed append-only logs on RocksDB."""
