"""File semantics on a real mount, each checked against what a local file system does."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import signal
import socket
import stat as stat_mod
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hyperfs.cli.mount_cmds import pid_file, wait_for_exit
from hyperfs.fuse.mount import COMMIT_DELAY
from hyperfs.fuse.operations import WRITE_MEMORY
from tests.mounting import errno_of, hyperfs, is_mounted, mount, mounted  # noqa: F401 - `mount` is a fixture
from tests.small_disk import small_disk


def test_random_reads_writes_truncates_renames_match_a_local_file(tmp_path, mount):
    rng = random.Random(42)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    names = {"local": local_dir / "f", "mount": mount.path / "f"}
    fds = {side: os.open(path, os.O_RDWR | os.O_CREAT, 0o644) for side, path in names.items()}
    try:
        for step in range(400):
            op = rng.choice(["write", "write", "read", "truncate", "rename", "reopen", "append"])
            if op == "write":
                offset = rng.randrange(0, 300_000)
                data = rng.randbytes(rng.choice([1, 100, 4096, 70_000, 200_000]))
                for fd in fds.values():
                    assert os.pwrite(fd, data, offset) == len(data)
            elif op == "read":
                offset, size = rng.randrange(0, 500_000), rng.randrange(0, 150_000)
                assert os.pread(fds["mount"], size, offset) == os.pread(fds["local"], size, offset), step
            elif op == "truncate":
                size = rng.randrange(0, 400_000)
                for fd in fds.values():
                    os.ftruncate(fd, size)
            elif op == "rename":
                for side, path in names.items():
                    new = path.with_name(f"f{step}")
                    os.rename(path, new)
                    names[side] = new
            elif op == "reopen":
                for side in fds:
                    os.close(fds[side])
                    fds[side] = os.open(names[side], os.O_RDWR)
            else:
                data = rng.randbytes(rng.randrange(1, 50_000))
                for side, path in names.items():
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    os.write(fd, data)
                    os.close(fd)
            assert os.fstat(fds["mount"]).st_size == os.fstat(fds["local"]).st_size, step
    finally:
        for fd in fds.values():
            os.close(fd)
    assert names["mount"].read_bytes() == names["local"].read_bytes()
    assert sorted(os.listdir(mount.path)) == [names["mount"].name]


def test_errno_as_a_local_file_system(mount):
    m = mount.path
    (m / "dir" / "sub").mkdir(parents=True)
    (m / "file").write_text("x")
    (m / "empty").mkdir()
    assert errno_of(lambda: (m / "nope").stat()) == errno.ENOENT
    assert errno_of(lambda: open(m / "nope" / "x", "w")) == errno.ENOENT
    assert errno_of(lambda: (m / "dir").mkdir()) == errno.EEXIST
    assert errno_of(lambda: os.open(m / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY)) == errno.EEXIST
    assert errno_of(lambda: (m / "dir").rmdir()) == errno.ENOTEMPTY
    assert errno_of(lambda: (m / "dir").unlink()) == errno.EISDIR
    assert errno_of(lambda: open(m / "dir", "w")) == errno.EISDIR
    assert errno_of(lambda: (m / "file" / "x").stat()) == errno.ENOTDIR
    assert errno_of(lambda: (m / "file").rmdir()) == errno.ENOTDIR
    assert errno_of(lambda: os.listdir(m / "file")) == errno.ENOTDIR
    assert errno_of(lambda: (m / ("n" * 256)).write_text("x")) == errno.ENAMETOOLONG
    # Drive names are UTF-8: another name is in no drive, and none can be made.
    latin1 = os.fsencode(m) + b"/caf\xe9"
    assert errno_of(lambda: os.stat(latin1)) == errno.ENOENT
    assert errno_of(lambda: open(latin1, "w")) == errno.EILSEQ
    assert errno_of(lambda: os.mkdir(latin1)) == errno.EILSEQ
    assert errno_of(lambda: os.symlink("file", latin1)) == errno.EILSEQ
    assert errno_of(lambda: os.rename(m / "file", latin1)) == errno.EILSEQ
    assert (m / "file").read_text() == "x"
    assert errno_of(lambda: os.rename(m / "empty", m / "file")) == errno.ENOTDIR
    assert errno_of(lambda: os.rename(m / "file", m / "empty")) == errno.EISDIR
    assert errno_of(lambda: os.rename(m / "empty", m / "dir")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rename(m / "dir", m / "dir" / "sub" / "in")) == errno.EINVAL
    assert errno_of(lambda: os.link(m / "file", m / "hard")) == errno.EPERM
    assert errno_of(lambda: os.readlink(m / "file")) == errno.EINVAL
    assert errno_of(lambda: os.getxattr(m / "file", "user.none")) == errno.ENODATA


def test_rename_noreplace_and_over_existing(mount):
    m = mount.path
    (m / "a").write_text("a")
    (m / "b").write_text("b")
    renameat2 = _renameat2()
    if renameat2 is not None:
        assert renameat2(m / "a", m / "b") == errno.EEXIST
        # overlayfs's whiteouts are device nodes, which the format has no entry for: EINVAL, as
        # from a local file system without them, and nothing moves.
        assert renameat2(m / "a", m / "c", RENAME_WHITEOUT) == errno.EINVAL
        assert (m / "a").read_text() == "a" and not (m / "c").exists()
        # A file and a folder swap names, and their inodes go with them, as on ext4.
        (m / "d").mkdir()
        (m / "d" / "in").write_text("in")
        ino_a, ino_d = (m / "a").stat().st_ino, (m / "d").stat().st_ino
        assert renameat2(m / "a", m / "d", RENAME_EXCHANGE) == 0
        assert (m / "d").read_text() == "a" and (m / "a" / "in").read_text() == "in"
        assert ((m / "d").stat().st_ino, (m / "a").stat().st_ino) == (ino_a, ino_d)
        with open(m / "a" / "open", "w") as f:  # created, in the drive only once closed
            f.write("x")
            assert renameat2(m / "d", m / "a", RENAME_EXCHANGE) == 0
            f.write("y")
        assert (m / "a").read_text() == "a" and (m / "d" / "open").read_text() == "xy"
        assert sorted(os.listdir(m / "d")) == ["in", "open"]
    os.rename(m / "a", m / "b")
    assert (m / "b").read_text() == "a" and not (m / "a").exists()
    (m / "d1" / "in").mkdir(parents=True)
    (m / "d1" / "in" / "f").write_text("f")
    (m / "d2").mkdir()
    with open(m / "d2" / "open", "w"):  # created, in the drive only once closed
        assert errno_of(lambda: os.rename(m / "d1", m / "d2")) == errno.ENOTEMPTY
    (m / "d2" / "open").unlink()
    os.rename(m / "d1", m / "d2")  # over an empty folder
    assert (m / "d2" / "in" / "f").read_text() == "f"
    assert not (m / "d1").exists()


RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4  # <linux/fs.h>


def _renameat2():
    """renameat2 through libc (RENAME_NOREPLACE unless told), returning the errno (0 on success)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return None

    def call(old: Path, new: Path, flags: int = RENAME_NOREPLACE) -> int:
        at_fdcwd = -100
        done = libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), flags)
        return 0 if done == 0 else ctypes.get_errno()

    return call


def test_open_files_survive_rename_and_unlink(mount):
    m = mount.path
    (m / "r").write_bytes(b"read me")
    reader = open(m / "r", "rb")
    writer = open(m / "w", "wb")
    writer.write(b"first ")
    writer.flush()
    os.rename(m / "w", m / "w2")
    writer.write(b"second")
    writer.close()
    assert (m / "w2").read_bytes() == b"first second"
    os.unlink(m / "r")
    assert reader.read() == b"read me"
    reader.close()
    assert not (m / "r").exists()
    # Written after its unlink: the data is the handle's alone and never reappears.
    ghost = open(m / "ghost", "w+b")
    os.unlink(m / "ghost")
    ghost.write(b"boo")
    ghost.seek(0)
    assert ghost.read() == b"boo"
    ghost.close()
    assert sorted(os.listdir(m)) == ["w2"]


def test_handles_share_content_and_o_append_appends(mount):
    path = mount.path / "shared"
    one = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    two = os.open(path, os.O_RDWR)
    app = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.pwrite(one, b"hello world", 0)
    assert os.pread(two, 100, 0) == b"hello world"
    os.pwrite(two, b"W", 6)
    os.write(app, b"!")
    assert os.pread(one, 100, 0) == b"hello World!"
    os.pwrite(one, b"end", 20)  # sparse past the end
    assert os.pread(two, 100, 0) == b"hello World!" + bytes(8) + b"end"
    for fd in (one, two, app):
        os.close(fd)
    assert path.read_bytes() == b"hello World!" + bytes(8) + b"end"
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.close(fd)
    assert path.read_bytes() == b""


def test_inodes_links_and_blocks(mount):
    m = mount.path
    (m / "d" / "e").mkdir(parents=True)
    (m / "d" / "f").write_bytes(b"z" * 10_000)
    ino = (m / "d" / "f").stat().st_ino
    assert (m / "d" / "f").stat().st_ino == ino
    os.rename(m / "d" / "f", m / "d" / "g")
    assert (m / "d" / "g").stat().st_ino == ino
    assert len({p.stat().st_ino for p in [m, m / "d", m / "d" / "e", m / "d" / "g"]}) == 4
    st = (m / "d" / "g").stat()
    assert st.st_nlink == 1
    (m / "d" / "h" / "i").mkdir(parents=True)
    assert [(m / p).stat().st_nlink for p in ("", "d", "d/e", "d/h")] == [3, 4, 2, 3]  # as ext4
    assert st.st_blocks * 512 >= st.st_size
    # cp sizes its buffer by st_blksize: 1 MiB, the largest write the kernel sends us, makes
    # each of its write() calls (one security.capability lookup each) a whole request.
    assert st.st_blksize == 1024 * 1024 == os.statvfs(m).f_bsize
    du = subprocess.run(["du", "-sk", str(m / "d" / "g")], capture_output=True, text=True)
    assert int(du.stdout.split()[0]) >= 10
    found = subprocess.run(["find", str(m), "-name", "g"], capture_output=True, text=True)
    assert found.stdout.split() == [str(m / "d" / "g")]


def test_mknod_makes_an_empty_file_a_fifo_or_a_socket_and_refuses_devices(mount):
    m = mount.path
    os.mknod(m / "node", 0o640 | stat_mod.S_IFREG)
    st = (m / "node").stat()
    assert (stat_mod.S_IFMT(st.st_mode), stat_mod.S_IMODE(st.st_mode), st.st_size) == (stat_mod.S_IFREG, 0o640, 0)
    assert os.listdir(m) == ["node"]
    (m / "node").write_text("now with content")
    assert (m / "node").read_text() == "now with content"
    assert errno_of(lambda: os.mknod(m / "node", 0o644 | stat_mod.S_IFREG)) == errno.EEXIST
    assert errno_of(lambda: os.mknod(m / "nope" / "node", 0o644 | stat_mod.S_IFREG)) == errno.ENOENT
    # A FIFO and a socket are entries of their own, which the kernel serves as on any file system.
    os.mkfifo(m / "fifo", 0o620)
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(lambda: (m / "fifo").write_bytes(b"through the pipe"))
        assert (m / "fifo").read_bytes() == b"through the pipe"
        writing.result(timeout=10)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(m / "sock"))
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(m / "sock"))
            peer, _ = server.accept()
            client.sendall(b"ping")
            assert peer.recv(4) == b"ping"
            peer.close()
    os.chmod(m / "fifo", 0o600)
    os.rename(m / "sock", m / "socket")
    os.chmod(m / "socket", 0o750)
    kinds = {p.name: (stat_mod.S_IFMT(p.lstat().st_mode), stat_mod.S_IMODE(p.lstat().st_mode)) for p in m.iterdir()}
    expected = {"node": (stat_mod.S_IFREG, 0o640), "fifo": (stat_mod.S_IFIFO, 0o600), "socket": (stat_mod.S_IFSOCK, 0o750)}
    assert kinds == expected
    assert errno_of(lambda: os.mkfifo(m / "fifo")) == errno.EEXIST
    # A device node has no place in the format (nor could one be opened on a FUSE mount).
    assert errno_of(lambda: os.mknod(m / "null", 0o666 | stat_mod.S_IFCHR, os.makedev(1, 3))) == errno.EPERM
    assert errno_of(lambda: os.mknod(m / "disk", 0o660 | stat_mod.S_IFBLK, os.makedev(8, 0))) == errno.EPERM
    mount.unmount()
    with mounted(mount.store, mount.path):
        again = {p.name: (stat_mod.S_IFMT(p.lstat().st_mode), stat_mod.S_IMODE(p.lstat().st_mode)) for p in m.iterdir()}
        assert again == expected
        os.unlink(m / "fifo")
        os.unlink(m / "socket")
        assert os.listdir(m) == ["node"]


def test_files_open_for_writing_together_share_a_memory_bound(mount):
    """Forty files open for writing at once, 2 MiB each (a build or a download manager): the
    buffers the mount holds them in stay within WRITE_MEMORY together, the rest spilling to
    temporary files beside the store (not in the system's temporary folder, often memory
    itself), and every file comes out whole."""
    pid = int(pid_file(mount.path).read_text())

    def spilled() -> list[str]:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        return [link for link in links if "hyperfs-write-" in link]

    size, count = 2 * 1024 * 1024, 40
    data = [random.Random(i).randbytes(size) for i in range(count)]
    fds = [os.open(mount.path / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644) for i in range(count)]
    try:
        for fd, content in zip(fds, data):
            os.write(fd, content)
            os.fsync(fd)  # the kernel's cached pages reach the mount
        held_in_memory = count - len(spilled())
        assert 0 < held_in_memory <= WRITE_MEMORY // size
        assert all(link.startswith(f"{mount.store}/hyperfs-write-") for link in spilled())
    finally:
        for fd in fds:
            os.close(fd)
    for i, content in enumerate(data):
        assert (mount.path / f"f{i}").read_bytes() == content
    deadline = time.monotonic() + 30
    while spilled() and time.monotonic() < deadline:  # the last releases may still run
        time.sleep(0.05)
    assert spilled() == []


def test_xattrs_chmod_utimes_symlink(mount):
    m = mount.path
    path = m / "x"
    path.write_text("x")
    os.setxattr(path, "user.color", b"blue")
    os.setxattr(path, "user.size", b"\x00\x01")
    assert os.getxattr(path, "user.color") == b"blue"
    assert sorted(os.listxattr(path)) == ["user.color", "user.size"]
    os.removexattr(path, "user.color")
    assert os.listxattr(path) == ["user.size"]
    assert errno_of(lambda: os.removexattr(path, "user.color")) == errno.ENODATA
    assert errno_of(lambda: os.setxattr(m, "user.color", b"red")) == errno.EOPNOTSUPP  # the root
    os.chmod(path, 0o600)
    os.utime(path, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    st = path.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_mtime_ns == 1_500_000_000_000_000_000
    assert path.read_text() == "x" and os.getxattr(path, "user.size") == b"\x00\x01"
    os.symlink("x", m / "l")
    assert os.readlink(m / "l") == "x" and (m / "l").read_text() == "x"
    assert (m / "l").lstat().st_size == 1


def test_times_before_1970_are_kept_as_the_epoch(tmp_path):
    """The format holds ms since the epoch: an older time is stored as the epoch, as the kernel
    clamps a time outside what a file system can hold, never an EIO (`touch -d 1960-01-01`,
    `tar x` of an old archive). While mounted, the kernel shows the time it was given (with the
    writeback cache it keeps mtime itself); the drive, and so the next mount, has the epoch."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt) as first:
        (mnt / "closed").write_text("x")
        os.utime(mnt / "closed", ns=(0, -315_619_200_000_000_000))  # 1960-01-01
        with open(mnt / "open", "w") as f:  # kept with the open file's content until closed
            f.write("y")
            f.flush()
            os.utime(f.fileno(), ns=(0, -1))
        first.unmount()
    with mounted(store, mnt):
        assert [(mnt / n).stat().st_mtime_ns for n in ("closed", "open")] == [0, 0]
        assert (mnt / "closed").read_text() == "x" and (mnt / "open").read_text() == "y"


def write_and_fsync(path: Path, data: bytes) -> None:
    """Write, fsync and close `path`; the first failure is raised."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_a_full_disk_is_enospc_and_keeps_what_was_synced(tmp_path):
    """When the store's disk fills up, writing fails with ENOSPC ("No space left on device",
    not an I/O error), what was fsynced before still reads back, and the mount unmounts."""
    with small_disk(tmp_path / "disk", 48) as disk, mounted(disk / "store", tmp_path / "mnt") as m:
        kept = os.urandom(20 << 20)
        write_and_fsync(m.path / "kept", kept)
        failures = set()
        for i in range(4):
            try:
                write_and_fsync(m.path / f"more{i}", os.urandom(20 << 20))
            except OSError as err:
                failures.add(err.errno)
        assert failures == {errno.ENOSPC}
        assert (m.path / "kept").read_bytes() == kept


def test_a_file_made_longer_than_the_disk_holds_is_enospc_up_front(tmp_path):
    """A Hyperdrive file has no holes: its zeros are stored like any bytes. A truncate or a
    write past the end that would need more than the disk has fails with ENOSPC before it
    writes them, so the disk does not fill and the mount goes on writing."""
    with small_disk(tmp_path / "disk", 64) as disk, mounted(disk / "store", tmp_path / "mnt") as m:
        assert errno_of(lambda: os.truncate(m.path / "kept", 0)) == errno.ENOENT
        (m.path / "kept").write_bytes(b"k" * 1000)
        assert errno_of(lambda: os.truncate(m.path / "kept", 1 << 30)) == errno.ENOSPC

        def write_far() -> None:
            with open(m.path / "far", "wb") as f:
                f.seek(1 << 30)
                f.write(b"x")

        assert errno_of(write_far) == errno.ENOSPC
        free = os.statvfs(disk)
        assert free.f_bavail * free.f_frsize > 48 << 20
        (m.path / "after").write_bytes(b"a" * 100_000)
        assert (m.path / "kept").read_bytes() == b"k" * 1000
        assert (m.path / "after").read_bytes() == b"a" * 100_000


def test_files_write_again_once_the_full_disk_has_room(tmp_path):
    """Another program fills the store's disk: files small and streamed (past STREAM_START)
    fail with ENOSPC, and so does a mkdir; once it frees the space they write again in the
    same mount, and everything reported written is kept."""
    store, mnt = tmp_path / "disk" / "store", tmp_path / "mnt"
    big, small = 8 << 20, 65536
    with small_disk(tmp_path / "disk", 64) as disk:
        with mounted(store, mnt) as m:
            write_and_fsync(m.path / "kept", b"k" * 1000)
            free = os.statvfs(disk)
            filler = disk / "filler"
            filler.write_bytes(bytes(free.f_bavail * free.f_frsize - (6 << 20)))
            written, failures = {}, set()
            for i in range(12):
                data = bytes([i]) * (big if i % 2 else small)
                try:
                    write_and_fsync(m.path / f"f{i}", data)
                    written[i] = data
                except OSError as err:
                    failures.add(err.errno)
            assert failures == {errno.ENOSPC}
            assert errno_of(lambda: (m.path / "lost").mkdir()) == errno.ENOSPC
            filler.unlink()
            write_and_fsync(m.path / "after", b"room" * (big // 4))
            (m.path / "folder").mkdir()
            write_and_fsync(m.path / "folder" / "inside", b"again")
        with mounted(store, mnt) as m:
            assert (m.path / "kept").read_bytes() == b"k" * 1000
            assert all((m.path / f"f{i}").read_bytes() == data for i, data in written.items())
            assert (m.path / "after").read_bytes() == b"room" * (big // 4)
            assert (m.path / "folder" / "inside").read_bytes() == b"again"
            assert not (m.path / "lost").exists()


def test_readdir_neither_repeats_nor_drops_during_changes(mount):
    m = mount.path
    for i in range(300):
        (m / f"e{i:03}").write_bytes(b"")
    seen = []
    with os.scandir(m) as listing:
        for n, entry in enumerate(listing):
            seen.append(entry.name)
            if n == 10:
                for i in range(300, 320):
                    (m / f"e{i:03}").write_bytes(b"")
                (m / "e299").unlink()
    assert len(seen) == len(set(seen))
    assert {f"e{i:03}" for i in range(299)} <= set(seen)


def test_fsync_then_kill_keeps_the_data(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt):
        pid = int(pid_file(mnt).read_text())
        fd = os.open(mnt / "durable", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"d" * 300_000)
        os.fsync(fd)
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 30)
        try:
            os.close(fd)
        except OSError:
            pass  # the file system is gone: ENOTCONN
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    with mounted(store, mnt):
        assert (mnt / "durable").read_bytes() == b"d" * 300_000


def test_closed_files_reach_the_store_soon_after_without_fsync(tmp_path):
    """Closes are appended in groups a moment later (`COMMIT_DELAY`), not kept until unmount:
    a crash well after the close keeps the files."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt):
        pid = int(pid_file(mnt).read_text())
        for i in range(20):
            (mnt / f"closed{i}").write_bytes(bytes([i]) * 5000)
        (mnt / "folder").mkdir()
        time.sleep(40 * COMMIT_DELAY)
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid, 30)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
    with mounted(store, mnt):
        assert all((mnt / f"closed{i}").read_bytes() == bytes([i]) * 5000 for i in range(20))
        assert (mnt / "folder").is_dir()


def test_sigterm_flushes_open_files_then_unmounts(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt):
        pid = int(pid_file(mnt).read_text())
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITE_AND_WAIT, str(mnt / "open.txt")], stdout=subprocess.PIPE
        )
        assert writer.stdout.readline() == b"written\n"
        os.kill(pid, signal.SIGTERM)
        wait_for_exit(pid, 60)
        writer.kill()
        writer.wait()
        assert not is_mounted(mnt)
    with mounted(store, mnt):
        assert (mnt / "open.txt").read_bytes() == b"kept"


_WRITE_AND_WAIT = """
import sys, time
f = open(sys.argv[1], "wb")
f.write(b"kept")
f.flush()
print("written", flush=True)
time.sleep(600)
"""


def test_unmount_by_fusermount(tmp_path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt):
        pid = int(pid_file(mnt).read_text())
        (mnt / "f").write_text("f")
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        wait_for_exit(pid, 60)
        assert not is_mounted(mnt)
    with mounted(store, mnt):
        assert (mnt / "f").read_text() == "f"


def test_mount_refuses_a_missing_folder(tmp_path):
    from tests.mounting import hyperfs

    done = hyperfs(tmp_path / "store", "mount", str(tmp_path / "absent"), check=False)
    assert done.returncode == 1 and "not a folder" in done.stderr
    assert not pid_file(tmp_path / "absent").exists()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args, said in [
        (["nosuchname"], ["no drive called 'nosuchname'"]),
        # A key the store lacks is looked for on the LAN (as `clone` does): a note, then the error.
        (["ab" * 32], ["not in this store: looking for a peer sharing it on the LAN", "no peer on the LAN shares"]),
        (["--checkout", "99"], ["version 99 is outside"]),
    ]:
        done = hyperfs(tmp_path / "store", "mount", str(mnt), *args, check=False)
        lines = done.stderr.splitlines()
        assert done.returncode == 1 and len(lines) == len(said), done.stderr  # no traceback
        assert all(text in line for text, line in zip(said, lines)), done.stderr
        assert not is_mounted(mnt)


def push(f) -> None:
    """Make the kernel send a file's cached writes to the mount now, without an fsync (which
    would commit the file): sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)."""
    f.flush()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    assert libc.sync_file_range(f.fileno(), 0, 0, 7) == 0, os.strerror(ctypes.get_errno())


def test_large_files_stream_into_the_drive_and_survive_interruptions(tmp_path, mount):
    """Files past the streaming threshold go to the drive while written; a second writer, a
    rewrite below what was streamed, a cut, a read of what streamed and a rename while open all
    leave the right bytes."""
    rng = random.Random(7)
    m = mount.path
    mib = 1 << 20
    expected: dict[str, bytes] = {}

    def stream(name: str, size: int, during=None) -> None:
        source = rng.randbytes(size)
        data = bytearray(source)  # what the file must hold in the end
        with open(m / name, "wb") as f:
            for i in range(0, size, mib):
                f.write(source[i : i + mib])
                push(f)
                if during is not None and i == 12 * mib:
                    during(f, data)
        expected[name] = bytes(data)

    def other_writer(f, data) -> None:
        (m / "small").write_bytes(b"s" * 300_000)  # its content lands between the stream's blocks
        expected["small"] = b"s" * 300_000

    def rewrite_start(f, data) -> None:
        os.pwrite(f.fileno(), b"X" * 5000, 1000)
        data[1000:6000] = b"X" * 5000

    def read_back(f, data) -> None:
        # Past the mount's page cache (O_DIRECT): what streamed is read back from the drive.
        fd = os.open(m / "read-back", os.O_RDONLY | os.O_DIRECT)
        try:
            for offset in (0, 5 * mib - 100, 12 * mib - 7):
                assert os.pread(fd, 200_000, offset) == bytes(data[offset : offset + 200_000]), offset
        finally:
            os.close(fd)

    def cut(f, data) -> None:
        os.ftruncate(f.fileno(), 2 * mib)
        data[2 * mib : 13 * mib] = bytes(11 * mib)  # the next writes land past the cut

    stream("plain", 20 * mib + 123)
    stream("interleaved", 20 * mib, other_writer)
    stream("rewritten", 16 * mib, rewrite_start)
    stream("cut", 16 * mib, cut)
    stream("read-back", 16 * mib, read_back)
    with open(m / "moving", "wb") as f:
        data = rng.randbytes(12 * mib)
        f.write(data)
        push(f)
        os.rename(m / "moving", m / "moved")
        f.write(data)
    expected["moved"] = data + data
    for name, data in expected.items():
        assert (m / name).read_bytes() == data, name
    mount.unmount()
    with mounted(mount.store, mount.path):
        for name, data in expected.items():
            assert (m / name).read_bytes() == data, name
        assert sorted(os.listdir(m)) == sorted(expected)


def test_streaming_file_under_random_operations_matches_a_local_file(tmp_path, mount):
    """A file big enough to stream, written mostly front to back with pushes (so the mount
    streams it and drops what the drive holds), between random rewrites, cuts, reads past the
    page cache, fsyncs and restarts from empty: always the bytes a local file holds."""
    rng = random.Random(11)
    mib = 1 << 20
    paths = {"local": tmp_path / "local-f", "mount": mount.path / "f"}
    fds = {side: os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644) for side, path in paths.items()}
    direct = os.open(paths["mount"], os.O_RDONLY | os.O_DIRECT)
    try:
        for step in range(120):
            size = os.fstat(fds["local"]).st_size
            op = rng.choices(["append", "rewrite", "cut", "read", "fsync", "restart"], [12, 2, 1, 3, 1, 1])[0]
            if op == "append":
                data = rng.randbytes(rng.choice([mib, mib, 300_000, 2 * mib + 17]))
                for fd in fds.values():
                    assert os.pwrite(fd, data, size) == len(data)
                with open(fds["mount"], "rb", closefd=False) as f:
                    push(f)
            elif op == "rewrite":
                offset, data = rng.randrange(0, size + 1), rng.randbytes(rng.choice([10, 5000, mib]))
                for fd in fds.values():
                    os.pwrite(fd, data, offset)
            elif op == "cut":
                cut = rng.randrange(0, size + 1)
                for fd in fds.values():
                    os.ftruncate(fd, cut)
            elif op == "read":
                offset, count = rng.randrange(0, size + 1), rng.choice([4096, 200_000, 3 * mib])
                assert os.pread(direct, count, offset) == os.pread(fds["local"], count, offset), step
            elif op == "fsync":
                os.fsync(fds["mount"])
            else:
                for fd in fds.values():
                    os.ftruncate(fd, 0)
            assert os.fstat(fds["mount"]).st_size == os.fstat(fds["local"]).st_size, (step, op)
        # And for sure once: an fsync while streaming, then more writes, and a read of the start.
        size = os.fstat(fds["local"]).st_size
        for data in (rng.randbytes(6 * mib), b"after the fsync"):
            for fd in fds.values():
                os.pwrite(fd, data, size)
            with open(fds["mount"], "rb", closefd=False) as f:
                push(f)
            os.fsync(fds["mount"])
            size += len(data)
        assert os.pread(direct, 3 * mib, 0) == os.pread(fds["local"], 3 * mib, 0)
    finally:
        os.close(direct)
        for fd in fds.values():
            os.close(fd)
    assert paths["mount"].read_bytes() == paths["local"].read_bytes()


def test_small_reads_alone_or_side_by_side_return_the_files_bytes(mount):
    """A short read while the mount serves nothing else runs on its event loop; with other
    requests in flight it goes to the reader's worker thread. Both give the file's bytes,
    across block edges too. O_DIRECT: every read reaches the mount, none the page cache."""
    rng = random.Random(5)
    data = rng.randbytes(3 * 1024 * 1024 + 123)
    (mount.path / "f").write_bytes(data)
    block = 64 * 1024
    offsets = [0, block - 100, block, 3 * 1024 * 1024 + 100, len(data) - 10, len(data)]
    offsets += [rng.randrange(len(data)) for _ in range(200)]
    fd = os.open(mount.path / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        for offset in offsets:
            assert os.pread(fd, 4096, offset) == data[offset : offset + 4096], offset
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda offset: os.pread(fd, 4096, offset), offsets * 4))
        assert got == [data[offset : offset + 4096] for offset in offsets * 4]
    finally:
        os.close(fd)


def test_writes_through_a_shared_mapping_reach_the_drive(tmp_path):
    """A MAP_SHARED mapping written after the file is closed, and unmapped without msync (as
    a program that maps a file and exits does): the kernel writes its pages back through the
    mount, and the drive has them after a remount."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    expected = bytearray(300_000)
    with mounted(store, mnt):
        (mnt / "mapped").write_bytes(bytes(expected))
        fd = os.open(mnt / "mapped", os.O_RDWR)
        mapping = mmap.mmap(fd, len(expected))
        os.close(fd)
        for offset, piece in ((0, b"start"), (70_000, b"in the middle"), (299_990, b"0123456789")):
            mapping[offset : offset + len(piece)] = piece
            expected[offset : offset + len(piece)] = piece
        mapping.close()
        assert (mnt / "mapped").read_bytes() == expected
    with mounted(store, mnt):
        assert (mnt / "mapped").read_bytes() == expected


def test_a_file_appended_to_and_fsynced_again_and_again_is_stored_once(tmp_path):
    """A log or a database journal: a line appended, fsync, again. Each fsync appends what came
    since the last one, not the whole file again (which made the drive hold the file once per
    fsync: 25 MiB written in 64 KiB appends took 6 GB and grew slower with every line). Writes
    in between into what was fsynced, cuts and renames still give the bytes a local file has."""
    rng = random.Random(3)
    store = tmp_path / "store"
    paths = {"local": tmp_path / "local-log", "mount": tmp_path / "mnt" / "log"}
    with mounted(store, tmp_path / "mnt") as m:
        fds = {side: os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644) for side, path in paths.items()}
        try:
            for step in range(300):
                op = rng.choices(["append", "poke", "cut", "rename"], [40, 2, 1, 1])[0]
                size = os.fstat(fds["local"]).st_size
                if op == "append":
                    data = rng.randbytes(rng.choice([1, 100, 4096, 70_000]))
                    for fd in fds.values():
                        os.write(fd, data)
                elif op == "poke":  # into what was fsynced already
                    offset, data = rng.randrange(0, size + 1), rng.randbytes(rng.choice([1, 5000]))
                    for fd in fds.values():
                        os.pwrite(fd, data, offset)  # O_APPEND: Linux appends, on both sides
                elif op == "cut":
                    cut = rng.randrange(0, size + 1)
                    for fd in fds.values():
                        os.ftruncate(fd, cut)
                else:
                    new = paths["mount"].with_name(f"log{step}")
                    os.rename(paths["mount"], new)
                    paths["mount"] = new
                os.fsync(fds["mount"])
                assert os.fstat(fds["mount"]).st_size == os.fstat(fds["local"]).st_size, (step, op)
                if step % 50 == 0:
                    assert os.pread(fds["mount"], 1 << 20, 0) == os.pread(fds["local"], 1 << 20, 0), step
        finally:
            for fd in fds.values():
                os.close(fd)
        expected = paths["local"].read_bytes()
        assert paths["mount"].read_bytes() == expected
        name = paths["mount"].name
        m.unmount()
    with mounted(store, tmp_path / "mnt") as m:
        assert (m.path / name).read_bytes() == expected
    # And plain appends with an fsync each store the file about once.
    journal = bytearray()
    with mounted(store, tmp_path / "mnt") as m:
        fd = os.open(m.path / "journal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(200):
                journal += rng.randbytes(65536)
                os.write(fd, journal[-65536:])
                os.fsync(fd)
        finally:
            os.close(fd)
        # A cut by name (no handle open: the mount reads the file in first) still cuts.
        os.truncate(m.path / name, 1000)
        m.unmount()
    with mounted(store, tmp_path / "mnt") as m:
        assert (m.path / "journal").read_bytes() == journal
        assert (m.path / name).read_bytes() == expected[:1000]
        m.unmount()
    info = dict(line.split(":", 1) for line in hyperfs(store, "info", "default").stdout.splitlines())
    content = int(info["content"].split()[2])  # "N blocks, M bytes"
    assert content < 3 * (200 * 65536 + len(expected)), content  # 100 times more before
