"""The `hyperfs` command as a user meets it: every subcommand's --help, every mistake one line,
and a store held by a mount or a share named in that line. Real commands, real stores, real TCP."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperfs.cli import build_parser
from hyperfs.cli.mount_cmds import pid_file, wait_for_exit
from tests.mounting import PYTHON, Mount, hyperfs, is_mounted, mount  # noqa: F401 - `mount` is a fixture

KEY = "ab" * 32  # a well-formed key of a drive no store here holds


def subcommands() -> list[str]:
    (action,) = [a for a in build_parser()._actions if a.dest == "command"]
    return list(action.choices)


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_explains_itself(tmp_path: Path, command: str) -> None:
    done = hyperfs(tmp_path, command, "--help")
    usage, _, rest = done.stdout.partition("\n\n")
    assert usage.startswith(f"usage: hyperfs {command}")
    description = rest.splitlines()[0]
    assert description and not description.startswith(("positional", "options")), done.stdout
    assert not (tmp_path / "db").exists()  # asking for help opens no store


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    assert hyperfs(tmp_path, "--version").stdout == f"hyperfs {version('hyperfs')}\n"
    assert not (tmp_path / "db").exists()


def one_line_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Args = Callable[[Path, int], list[str]]
MISTAKES: list[tuple[str, Args, str]] = [
    ("unknown key", lambda t, p: ["ls", KEY], f"not in this store (no index block); `clone {KEY} --peer HOST:PORT` fetches it"),
    ("short id", lambda t, p: ["ls", "hyper://abc"], "52-character id"),
    ("bad z32 id", lambda t, p: ["cat", "l" * 52, "/f"], "invalid z-base-32 character 'l'"),
    ("bad z32 url", lambda t, p: ["info", "hyper://" + "0" * 52], "invalid z-base-32 character '0'"),
    ("missing drive", lambda t, p: ["ls", "nobody"], "no drive called 'nobody'"),
    ("missing drive share", lambda t, p: ["share", "nobody", "--no-mdns"], "no drive called 'nobody'"),
    ("missing drive export", lambda t, p: ["export", "nobody", str(t / "out")], "no drive called 'nobody'"),
    ("missing file", lambda t, p: ["cat", "mine", "/missing"], "no such file"),
    ("missing folder", lambda t, p: ["ls", "mine", "/missing"], "no such file"),
    ("cat a folder", lambda t, p: ["cat", "mine", "/"], "is a folder"),
    ("missing local folder", lambda t, p: ["import", str(t / "absent"), "mine"], "not a folder"),
    ("export onto a file", lambda t, p: ["export", "mine", str(t / "a file")], "is not a folder"),
    ("unreachable clone", lambda t, p: ["clone", KEY, "--peer", f"127.0.0.1:{p}"], "cannot replicate with"),
    ("unreachable seed", lambda t, p: ["seed", KEY, "--peer", f"127.0.0.1:{p}"], "cannot replicate with"),
    ("bad address", lambda t, p: ["clone", KEY, "--peer", "nowhere"], "not a HOST:PORT address"),
    ("clone a bad key", lambda t, p: ["clone", "nonsense", "--peer", f"127.0.0.1:{p}"], "52-character id"),
    ("mount on nothing", lambda t, p: ["mount", str(t / "absent")], "does not exist"),
    ("mount on a file", lambda t, p: ["mount", str(t / "a file")], "is not a folder"),
    ("mount on a full folder", lambda t, p: ["mount", str(t / "full")], "is not empty"),
    ("mount a missing drive", lambda t, p: ["mount", str(t / "mnt"), "nobody"], "no drive called 'nobody'"),
    ("mount a bad id", lambda t, p: ["mount", str(t / "mnt"), "hyper://" + "v" * 52], "invalid z-base-32"),
    ("mount an unreachable peer", lambda t, p: ["mount", str(t / "mnt"), KEY, "--peer", f"127.0.0.1:{p}"],
     "cannot replicate with"),
    ("unmount what is not mounted", lambda t, p: ["unmount", str(t / "mnt")], "is not mounted"),
    ("not a number", lambda t, p: ["diff", "mine", "x"], "invalid int value: 'x' (see hyperfs diff --help)"),
    ("missing argument", lambda t, p: ["create"], "required: name"),
    ("create an empty name", lambda t, p: ["create", " "], "a drive name cannot be empty"),
    ("create a name with a tab", lambda t, p: ["create", "a\tb"], "cannot hold a tab, newline"),
    ("create a name that is a key", lambda t, p: ["create", KEY], "reads as a drive's key or id"),
    ("import into a new name with a newline", lambda t, p: ["import", str(t / "full"), "a\nb"], "cannot hold a tab, newline"),
    ("mount nowhere", lambda t, p: ["mount"], "required: mountpoint"),
    ("unknown option", lambda t, p: ["clone", KEY, "--fast"], "unrecognized arguments: --fast (see hyperfs --help)"),
]


@pytest.mark.parametrize("args, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistakes_are_one_line(tmp_path: Path, closed_port: int, args: Args, message: str) -> None:
    store = tmp_path / "store"
    hyperfs(store, "create", "mine")
    (tmp_path / "a file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("kept")
    (tmp_path / "mnt").mkdir()
    one_line_error(hyperfs(store, *args(tmp_path, closed_port), check=False), message)
    assert not is_mounted(tmp_path / "mnt") and not is_mounted(tmp_path / "full")
    assert [line.split("\t")[0] for line in hyperfs(store, "keys").stdout.splitlines()] == ["mine"]
    assert (tmp_path / "full" / "kept").read_text() == "kept"


def test_a_bad_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("x")
    one_line_error(hyperfs(tmp_path / "a file", "keys", check=False), "is not a folder")
    store = tmp_path / "store"
    hyperfs(store, "create", "mine")
    (store / "drives.json").write_text("{half")
    one_line_error(hyperfs(store, "ls", "mine", check=False), "cannot read")
    (store / "db" / "CURRENT").write_text("junk")
    one_line_error(hyperfs(store, "keys", check=False), "cannot open RocksDB")


def in_use_line(store: Path, command: str, pid: int) -> str:
    return f"store {store} is in use by `{command}` (pid {pid}); "


def test_a_mounted_store_names_its_mount(mount: Mount, tmp_path: Path) -> None:
    """While `hyperfs mount` holds the store, every command that would write it says so in one
    line, and works again once it is unmounted. The commands that only read it run meanwhile,
    on the store as the mount has written it."""
    pid = int(pid_file(mount.path).read_text())
    expected = in_use_line(mount.store, f"hyperfs mount {os.path.realpath(mount.path)}", pid)
    advice = "copy files into the mount, or unmount first"
    for args in (["import", str(tmp_path), "--quiet"], ["create", "other"]):
        one_line_error(hyperfs(mount.store, *args, check=False), expected + advice)
    other = tmp_path / "other"
    other.mkdir()
    # A mount that would store a peer's blocks writes the store too (one without a peer
    # follows the holder read-only: tests/test_mount_live.py).
    following_a_peer = hyperfs(mount.store, "mount", str(other), mount.key, "--peer", "127.0.0.1:9", check=False)
    one_line_error(following_a_peer, "mount failed: " + expected)
    assert not is_mounted(other)
    with open(mount.path / "note", "w") as f:
        f.write("through the mount\n")
        f.flush()
        os.fsync(f.fileno())  # in the store now, not up to 50 ms later with others
    assert hyperfs(mount.store, "cat", "default", "/note").stdout == "through the mount\n"
    assert hyperfs(mount.store, "ls", "default").stdout == "note\n"
    assert hyperfs(mount.store, "log", "default").stdout.splitlines()[-1].split("\t")[1:3] == ["put", "/note"]
    assert hyperfs(mount.store, "keys").stdout.startswith("default\t")
    hyperfs(mount.store, "export", "default", str(tmp_path / "out"), "--quiet")
    assert (tmp_path / "out" / "note").read_text() == "through the mount\n"
    (mount.path / "later").write_text("after the reads\n")
    mount.unmount()
    assert hyperfs(mount.store, "cat", "default", "/later").stdout == "after the reads\n"


def test_a_share_holds_the_store_for_nobody(tmp_path: Path) -> None:
    """`share` only reads the store, beside whichever process writes it: while it runs, the
    commands that write (here `create`) still run, and a share killed outright leaves nothing
    held."""
    store = tmp_path / "store"
    hyperfs(store, "create", "mine")
    share = subprocess.Popen(
        [PYTHON, "-m", "hyperfs", "--store", str(store), "share", "mine", "--no-mdns"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert share.stdout is not None and share.stdout.readline().startswith("sharing hyper://")
        assert hyperfs(store, "create", "other").stdout.startswith("other\t")
        assert hyperfs(store, "info", "mine").stdout.startswith("id:")
        # A share makes no drive: the default one, not made yet, is not there to share.
        one_line_error(hyperfs(store, "share", "--no-mdns", check=False), "no drive called 'default' in")
    finally:
        share.send_signal(signal.SIGKILL)
        share.wait()
    assert hyperfs(store, "keys").stdout.splitlines()[0].startswith("mine\t")


def test_waiting_for_a_drive_the_peer_lacks_is_said_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    """A peer does not answer for a drive it lacks, so a clone or mount of one waits: each says
    what it waits for, and Ctrl-C of a mount that waits leaves no process behind that would
    mount later or hold the store (the detached one went on waiting before)."""
    store, other, mountpoint = tmp_path / "store", tmp_path / "other", tmp_path / "mnt"
    mountpoint.mkdir()
    hyperfs(store, "create", "mine")
    share = subprocess.Popen(
        [PYTHON, "-m", "hyperfs", "--store", str(store), "share", "mine", "--listen", "127.0.0.1:0", "--no-mdns"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert share.stdout is not None
        address = next(line.split()[-1] for line in share.stdout if line.startswith("listening on"))
        for command in (["clone", KEY], ["mount", str(mountpoint), KEY]):
            waiting = subprocess.Popen(
                [PYTHON, "-m", "hyperfs", "--store", str(other), *command, "--peer", address],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            try:
                assert waiting.stderr is not None
                assert select.select([waiting.stderr], [], [], 60)[0], "nothing said in 60 s"
                assert f"still waiting for {address} to send {KEY}" in waiting.stderr.readline()
                waiting.send_signal(signal.SIGINT)
                assert waiting.wait(60) == 130
            finally:
                waiting.kill()
                waiting.wait()
    finally:
        share.kill()
        share.wait()
    assert not is_mounted(mountpoint) and not pid_file(mountpoint).exists()
    assert hyperfs(other, "create", "free").stdout.startswith("free\t")  # no process holds the store


def test_unmount_of_a_busy_mount_says_why(mount: Mount) -> None:
    with open(mount.path / "open file", "w"):
        one_line_error(hyperfs(mount.store, "unmount", str(mount.path), check=False), "is busy: a program has")
        assert is_mounted(mount.path)
    mount.unmount()


def test_a_mount_whose_process_died_can_be_unmounted(mount: Mount) -> None:
    pid = int(pid_file(mount.path).read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for_exit(pid, 60)
    mount.unmount()
    assert not pid_file(mount.path).exists()
    assert hyperfs(mount.store, "keys").stdout.startswith("default\t")  # the store is free again


def test_mounting_again_where_a_mount_died_replaces_it_and_a_live_one_is_refused(mount: Mount) -> None:
    (mount.path / "kept").write_text("stored before the crash")
    hyperfs(mount.store, "unmount", str(mount.path))
    hyperfs(mount.store, "mount", str(mount.path))
    pid = int(pid_file(mount.path).read_text())
    # A program whose working folder is in the mount keeps it busy: only a lazy unmount goes.
    inside = subprocess.Popen(["sleep", "120"], cwd=mount.path)
    try:
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 60)
        done = hyperfs(mount.store, "mount", str(mount.path))
    finally:
        inside.kill()
        inside.wait()
    assert f"the last mount on {mount.path} had died" in done.stderr
    assert (mount.path / "kept").read_text() == "stored before the crash"
    assert int(pid_file(mount.path).read_text()) != pid
    one_line_error(hyperfs(mount.store, "mount", str(mount.path), check=False), "is already a mount point")
