"""The JavaScript anchors the benchmarks measure against, installed once into .cache/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_ANCHORS = ROOT.parent / "shared" / "anchors"


def ensure_anchor(name: str, marker: str) -> Path:
    """`.cache/<name>`: a copy of ../shared/anchors/<name> with `npm install` done.

    `marker` is a package the install must provide (e.g. "hypercore"); when its folder exists
    under node_modules nothing is done.
    """
    target = ROOT / ".cache" / name
    if (target / "node_modules" / marker).is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for item in (SHARED_ANCHORS / name).iterdir():
        copy = target / item.name
        shutil.copyfile(item, copy)
        copy.chmod(0o644)  # shared/ is read-only; npm rewrites package files
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=target, check=True)
    return target
