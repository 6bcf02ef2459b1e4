"""Runs the real JavaScript Hypercore 11 peer (../shared/interop/peer.js, installed by .ci/run)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
INTEROP_DIR = Path(os.environ.get("HYPERFS_INTEROP_DIR", REPO / ".cache" / "interop"))
PEER_JS = INTEROP_DIR / "peer.js"


def require_peer() -> None:
    """Skip when node or the installed JS peer (its node_modules) is missing on this machine."""
    if shutil.which("node") is None:
        pytest.skip("system resource missing: node")
    if not (INTEROP_DIR / "node_modules" / "hypercore").is_dir():
        pytest.skip(f"system resource missing: JS interop peer not installed in {INTEROP_DIR} (.ci/run runs npm ci)")


def peer_command(*args: str) -> list[str]:
    """The command line running the JS peer with `args` (JSON on stdout, no chatter)."""
    return ["node", str(PEER_JS), *args, "--quiet"]


def interop_block(i: int, size: int = 0) -> bytes:
    """The JS peer's content rule for block `i` (see shared/interop/README.md)."""
    line = f"hypercore-interop block {i}\n".encode()
    if size == 0:
        return line
    return (line * (size // len(line) + 1))[:size]


@contextmanager
def js_peer(*args: str, timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen, dict[str, Any]]]:
    """Start `node peer.js ARGS --quiet`, wait for its first JSON line on stdout, yield (process, line).

    The process is terminated (then killed) on exit, whatever happened inside the block.
    """
    require_peer()
    proc = subprocess.Popen(
        peer_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_json_line(proc, timeout)
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _lines(proc: subprocess.Popen) -> queue.Queue:
    # One reader thread per process: a select() on a buffered pipe can miss lines already read
    # into the buffer, so lines go through a queue instead. None marks the end of stdout.
    q = getattr(proc, "_json_lines", None)
    if q is None:
        q = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                q.put(line)
            q.put(None)

        threading.Thread(target=pump, daemon=True).start()
        proc._json_lines = q  # type: ignore[attr-defined]
    return q


def read_json_line(proc: subprocess.Popen, timeout: float = 60.0) -> dict[str, Any]:
    """The next JSON line the peer prints on stdout (e.g. a clone's result after `listening`)."""
    q = _lines(proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"JS peer printed no JSON line within {timeout}s") from None
        if line is None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"JS peer exited ({proc.wait()}): {err.strip()[-2000:]}")
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
