"""Loads the JavaScript-made test vectors from ../shared/vectors (or $HYPERFS_VECTORS)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("HYPERFS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
VECTORS = Path(os.environ.get("HYPERFS_VECTORS", SHARED / "vectors"))
INTEROP = SHARED / "interop"


@cache
def load(name: str) -> Any:
    """The parsed JSON of `shared/vectors/<name>.json`."""
    with open(VECTORS / f"{name}.json") as f:
        return json.load(f)


def block(i: int, size: int) -> bytes:
    """The vectors' block rule: bytes((i*7 + j) % 256 for j in range(size))."""
    return bytes((i * 7 + j) % 256 for j in range(size))


def block_fork(i: int, size: int) -> bytes:
    """The rule for blocks appended after a truncation."""
    return bytes((i * 13 + j + 1) % 256 for j in range(size))
