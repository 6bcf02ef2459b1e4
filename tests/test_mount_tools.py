"""Ordinary tools on a real mount: cp, rsync, tar, diff, git, sqlite; persistence; read-only."""

from __future__ import annotations

import errno
import os
import random
import shutil
import socket
import sqlite3
import stat as stat_mod
import subprocess
from pathlib import Path

import pytest
import trio

from hyperfs.cli.mount_cmds import open_drive

from tests.mounting import PYTHON, errno_of, hyperfs, mount, mounted, run  # noqa: F401 - `mount` is a fixture


def make_tree(root: Path, seed: int = 7) -> Path:
    """A small tree with what tools trip on: empty and odd-sized files, a multi-MiB file, nested
    and empty folders, a symlink, modes and old mtimes."""
    rng = random.Random(seed)
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "one").write_bytes(b"x")
    (root / "block+1").write_bytes(rng.randbytes(64 * 1024 + 1))
    (root / "big.bin").write_bytes(rng.randbytes(5 * 1024 * 1024 + 123))
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "a" / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "a" / "script.sh", 0o755)
    (root / "void").mkdir()
    (root / "ünïcødé name.txt").write_text("names\n")
    os.symlink("a/b/c/deep.txt", root / "link")
    for i in range(30):
        (root / "a" / f"f{i:02}").write_bytes(rng.randbytes(rng.randrange(0, 20000)))
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_600_000_000 + 17, 1_600_000_000 + 17), follow_symlinks=False)
    return root


def test_cp_a_in_and_out(tmp_path, mount):
    src = make_tree(tmp_path / "src")
    run("cp", "-a", str(src), str(mount.path / "tree"))
    run("diff", "-r", "--no-dereference", str(src), str(mount.path / "tree"))
    assert os.readlink(mount.path / "tree" / "link") == "a/b/c/deep.txt"
    assert (mount.path / "tree" / "a" / "script.sh").stat().st_mode & 0o777 == 0o755
    assert (mount.path / "tree" / "a" / "f00").stat().st_mtime == 1_600_000_017
    run("cp", "-a", str(mount.path / "tree"), str(tmp_path / "back"))
    run("diff", "-r", "--no-dereference", str(src), str(tmp_path / "back"))


def test_rsync_twice_transfers_nothing_the_second_time(tmp_path, mount):
    if shutil.which("rsync") is None:
        pytest.skip("needs rsync")
    src = make_tree(tmp_path / "src")
    run("rsync", "-a", f"{src}/", f"{mount.path}/dst/")
    run("diff", "-r", "--no-dereference", str(src), str(mount.path / "dst"))
    again = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{mount.path}/dst/")
    assert again.strip() == ""


def test_a_home_folders_fifos_and_sockets_copy_in_and_out(tmp_path, mount):
    """`rsync -a` of a home folder meets sockets (gpg-agent's, ssh-agent's) and FIFOs, and
    recreates them (-a includes --specials); so does `cp -a`, and `tar` the FIFOs (it leaves
    sockets out). On the mount they are
    entries of their own kind, as on the local disk: nothing fails, nothing is left behind,
    and a second rsync has nothing to do."""
    if shutil.which("rsync") is None:
        pytest.skip("needs rsync")
    home = make_tree(tmp_path / "home")
    (home / ".gnupg").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(home / ".gnupg" / "S.gpg-agent"))
    os.mkfifo(home / "a" / "pipe", 0o600)
    specials = {".gnupg/S.gpg-agent": stat_mod.S_IFSOCK, "a/pipe": stat_mod.S_IFIFO}

    def same_tree(copy: Path, kept: dict[str, int] = specials) -> None:
        """`copy` is `home` but for the specials not `kept`, which are missing."""
        for rel, kind in kept.items():
            assert stat_mod.S_IFMT((copy / rel).lstat().st_mode) == kind, rel
        diff = subprocess.run(["diff", "-r", "--no-dereference", str(home), str(copy)], capture_output=True, text=True)
        said = sorted(diff.stdout.splitlines())
        kinds = {stat_mod.S_IFSOCK: "socket", stat_mod.S_IFIFO: "fifo"}
        expected = sorted(
            f"File {home}/{rel} is a {kinds[kind]} while file {copy}/{rel} is a {kinds[kind]}"
            if rel in kept
            else f"Only in {home}/{os.path.dirname(rel)}: {os.path.basename(rel)}"
            for rel, kind in specials.items()
        )
        assert said == expected, diff.stdout + diff.stderr

    run("rsync", "-a", f"{home}/", f"{mount.path}/home/")
    same_tree(mount.path / "home")
    assert run("rsync", "-a", "--itemize-changes", f"{home}/", f"{mount.path}/home/").strip() == ""
    run("cp", "-a", str(mount.path / "home"), str(tmp_path / "back"))
    same_tree(tmp_path / "back")
    run("tar", "-cf", str(tmp_path / "home.tar"), "-C", str(mount.path / "home"), ".")
    (mount.path / "untarred").mkdir()
    run("tar", "-xf", str(tmp_path / "home.tar"), "-C", str(mount.path / "untarred"))
    same_tree(mount.path / "untarred", {"a/pipe": stat_mod.S_IFIFO})


def test_tar_x_and_tar_c(tmp_path, mount):
    src = make_tree(tmp_path / "src")
    run("tar", "-cf", str(tmp_path / "t.tar"), "-C", str(src), ".")
    (mount.path / "x").mkdir()
    run("tar", "-xf", str(tmp_path / "t.tar"), "-C", str(mount.path / "x"))
    run("diff", "-r", "--no-dereference", str(src), str(mount.path / "x"))
    run("tar", "-cf", str(tmp_path / "back.tar"), "-C", str(mount.path / "x"), ".")
    (tmp_path / "out").mkdir()
    run("tar", "-xf", str(tmp_path / "back.tar"), "-C", str(tmp_path / "out"))
    run("diff", "-r", "--no-dereference", str(src), str(tmp_path / "out"))


def test_git_init_add_commit(tmp_path, mount):
    repo = mount.path / "repo"
    repo.mkdir()
    make_tree(repo / "work")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    run("git", *env, "init", "-q", cwd=repo)
    run("git", *env, "add", "-A", cwd=repo)
    run("git", *env, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "work" / "one").write_text("changed\n")
    run("git", *env, "commit", "-q", "-am", "second", cwd=repo)
    assert run("git", "log", "--format=%s", cwd=repo).split() == ["second", "first"]
    assert run("git", "status", "--porcelain", cwd=repo) == ""
    run("git", "fsck", "--strict", cwd=repo)


def test_sqlite_database(mount):
    db = sqlite3.connect(mount.path / "data.db")
    db.execute("create table t (k integer primary key, v text)")
    with db:
        db.executemany("insert into t values (?, ?)", [(i, f"value {i}" * 20) for i in range(3000)])
    with db:
        db.execute("delete from t where k % 3 = 0")
        db.execute("update t set v = 'x' where k % 7 = 0")
    db.close()
    db = sqlite3.connect(mount.path / "data.db")
    assert db.execute("select count(*) from t").fetchone() == (2000,)
    assert db.execute("select v from t where k = 14").fetchone() == ("x",)
    assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    db.close()


def test_everything_is_still_there_after_remount(tmp_path):
    src = make_tree(tmp_path / "src")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt) as first:
        run("cp", "-a", str(src), str(mnt / "tree"))
        first.unmount()
    with mounted(store, mnt) as second:
        assert second.key == first.key
        run("diff", "-r", "--no-dereference", str(src), str(mnt / "tree"))
        second.unmount()
    # The named drive mounts the same content.
    with mounted(store, mnt, first.key):
        run("diff", "-r", "--no-dereference", str(src), str(mnt / "tree"))


def test_checkout_mounts_read_only_with_erofs(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt) as m:
        (mnt / "old.txt").write_text("old\n")
        m.unmount()
    version = drive_version(store, m.key)
    with mounted(store, mnt) as m:
        (mnt / "old.txt").write_text("new\n")
        (mnt / "later.txt").write_text("later\n")
        m.unmount()
    with mounted(store, mnt) as writer, mounted(store, tmp_path / "old", "--checkout", str(version)) as old:
        # It says what it shows: that version, not the store's writes as they come.
        assert f"read-only: version {version} of" in old.said and "changes show here" not in old.said
        writer.unmount()
    with mounted(store, mnt, "--checkout", str(version)):
        assert (mnt / "old.txt").read_text() == "old\n"
        assert not (mnt / "later.txt").exists()
        for attempt in (
            lambda: (mnt / "old.txt").write_text("no"),
            lambda: (mnt / "new.txt").write_text("no"),
            lambda: (mnt / "dir").mkdir(),
            lambda: (mnt / "old.txt").unlink(),
            lambda: os.rename(mnt / "old.txt", mnt / "moved"),
            lambda: os.chmod(mnt / "old.txt", 0o600),
        ):
            with pytest.raises(OSError) as err:
                attempt()
            assert err.value.errno == errno.EROFS


def drive_version(store: Path, key: str) -> int:
    """The version of drive `key` in `store` (not mounted), read through the mount's own opener."""

    async def version() -> int:
        async with open_drive(store, key, None) as drive:
            return drive.version

    return trio.run(version)


def test_a_drive_without_its_secret_key_mounts_read_only(tmp_path):
    """A drive cloned from a peer (its keys stay with the writer) mounts with EROFS for writes."""
    writer_store, reader_store, mnt = tmp_path / "writer", tmp_path / "reader", tmp_path / "mnt"
    src = make_tree(tmp_path / "src")
    with mounted(writer_store, mnt) as m:
        run("cp", "-a", str(src), str(mnt / "tree"))
        m.unmount()
    share = subprocess.Popen(
        [PYTHON, "-m", "hyperfs", "--store", str(writer_store), "share", "--no-mdns"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = next(line.split()[-1] for line in share.stdout if line.startswith("listening on"))
        hyperfs(reader_store, "clone", m.key, "--peer", address, "--quiet")
    finally:
        share.terminate()
        share.wait(timeout=60)
    with mounted(reader_store, mnt, m.key) as ro:
        assert ro.key == m.key
        run("diff", "-r", "--no-dereference", str(src), str(mnt / "tree"))
        assert errno_of(lambda: (mnt / "tree" / "one").write_text("no")) == errno.EROFS
        assert errno_of(lambda: (mnt / "new").mkdir()) == errno.EROFS
        assert errno_of(lambda: os.setxattr(mnt / "tree" / "one", "user.x", b"1")) == errno.EROFS
