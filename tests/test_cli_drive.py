"""The real `python -m hyperfs` drive commands, on a real store folder."""

from __future__ import annotations

import os
import socket
import stat as stat_mod
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mounting import hyperfs


def odd_tree(root: Path) -> None:
    """Spaces, unicode, 255-byte names, empty files and folders, deep nesting, a symlink,
    modes and a multi-block file."""
    (root / "with spaces").mkdir(parents=True)
    (root / "with spaces" / "a file .txt").write_text("spaced\n")
    (root / "ünïcødé" / "日本語").mkdir(parents=True)
    (root / "ünïcødé" / "日本語" / "ファイル.txt").write_text("unicode ✓\n")
    (root / ("n" * 255)).write_bytes(b"long ascii name")
    (root / ("é" * 127 + "x")).write_bytes(b"long two-byte name")  # 255 bytes
    (root / "empty file").write_bytes(b"")
    (root / "empty folder").mkdir()
    deep = root.joinpath(*["deep"] + [f"level{i}" for i in range(40)])
    deep.mkdir(parents=True)
    (deep / "bottom").write_text("deep\n")
    (root / "big.bin").write_bytes(bytes((i * 31 + 7) % 251 for i in range(300_000)))
    (root / "tool.sh").write_text("#!/bin/sh\n")
    (root / "tool.sh").chmod(0o755)
    (root / "secret").write_text("s")
    (root / "secret").chmod(0o600)
    (root / "link").symlink_to("with spaces/a file .txt")
    os.utime(root / "big.bin", ns=(1_600_000_000_123_000_000, 1_600_000_000_123_000_000))


def special_entries(root: Path) -> dict[str, int]:
    """A FIFO and a socket in `root` (a home folder has both: ~/.gnupg's agent sockets); their
    names and types."""
    os.mkfifo(root / "a fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "a socket"))
    return {"a fifo": stat_mod.S_IFIFO, "a socket": stat_mod.S_IFSOCK}


def test_import_export_round_trip(tmp_path: Path) -> None:
    store, src, dest = tmp_path / "store", tmp_path / "src", tmp_path / "dest"
    odd_tree(src)
    specials = special_entries(src)
    hyperfs(store, "create", "t")
    done = hyperfs(store, "import", str(src), "t", "--quiet")
    assert "skipped 0" in done.stdout, done.stdout + done.stderr
    assert hyperfs(store, "stat", "t", "/a fifo").stdout.splitlines()[1] == "type:    FIFO"
    done = hyperfs(store, "cat", "t", "/a socket", check=False)
    assert done.returncode == 1 and done.stderr == "hyperfs: /a socket is a socket, not a file\n"
    hyperfs(store, "export", "t", str(dest), "--quiet")

    # diff says only that the specials are specials; their kind and attributes are below.
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(dest)], capture_output=True, text=True)
    said = {line.split(" is a ")[0].removeprefix(f"File {src}/") for line in diff.stdout.splitlines()}
    assert said == set(specials) and diff.stderr == "", diff.stdout + diff.stderr
    for name, kind in specials.items():
        assert stat_mod.S_IFMT((dest / name).lstat().st_mode) == kind
    for path in src.rglob("*"):
        a, b = path.lstat(), (dest / path.relative_to(src)).lstat()
        assert stat_mod.S_IMODE(a.st_mode) == stat_mod.S_IMODE(b.st_mode) or path.is_symlink(), path
        assert a.st_mtime_ns // 1_000_000 == b.st_mtime_ns // 1_000_000, path

    # Resumable: a second run copies nothing; a half-done export is finished.
    assert "imported 0," in hyperfs(store, "import", str(src), "t", "--quiet").stdout
    assert "exported 0," in hyperfs(store, "export", "t", str(dest), "--quiet").stdout
    (dest / "big.bin").unlink()
    (dest / "tool.sh").write_text("changed")
    assert "exported 2," in hyperfs(store, "export", "t", str(dest), "--quiet").stdout
    assert (dest / "big.bin").read_bytes() == (src / "big.bin").read_bytes()

    # An entry that changed kind is replaced, whichever way it went.
    (src / "secret").unlink()
    (src / "secret").symlink_to("tool.sh")
    os.unlink(src / "a fifo")
    (src / "a fifo").write_text("now a file\n")
    (src / "link").unlink()
    os.mkfifo(src / "link")
    assert "imported 3, unchanged" in hyperfs(store, "import", str(src), "t", "--quiet").stdout
    assert hyperfs(store, "cat", "t", "/secret").stdout == "#!/bin/sh\n"
    assert hyperfs(store, "cat", "t", "/a fifo").stdout == "now a file\n"
    assert hyperfs(store, "stat", "t", "/link").stdout.splitlines()[1] == "type:    FIFO"


def test_export_leaves_out_device_nodes_another_writer_made(tmp_path: Path) -> None:
    """Only another writer can put a device node in a drive (ours refuse to): export says it
    leaves it out, and recreates the rest."""
    store, dest = tmp_path / "store", tmp_path / "dest"
    hyperfs(store, "create", "t")
    script = (
        "import sys, stat, trio\n"
        "from hyperfs.core.corestore import Corestore\n"
        "from hyperfs.drive.drive import Drive, Stat\n"
        "async def main():\n"
        "    async with Corestore(sys.argv[1]) as store:\n"
        "        drive = await Drive.open(store, bytes.fromhex(sys.argv[2]))\n"
        "        drive._queue_put(('null',), Stat(mode=stat.S_IFCHR | 0o666, mtime=1).encode())\n"
        "        await drive.mknod('/fifo', stat.S_IFIFO | 0o600)\n"
        "        await drive.close()\n"
        "trio.run(main)\n"
    )
    key = hyperfs(store, "keys").stdout.split()[2]
    subprocess.run([sys.executable, "-c", script, str(store), key], check=True, timeout=60)
    done = hyperfs(store, "export", "t", str(dest), "--quiet")
    assert "exported 1, unchanged 0, skipped 1" in done.stdout
    assert done.stderr.strip() == f"skipped: {dest}/null: a character device in the drive (not made here)"
    assert stat_mod.S_ISFIFO((dest / "fifo").lstat().st_mode) and not (dest / "null").exists()


def test_output_to_a_reader_that_stops(tmp_path: Path) -> None:
    """`hyperfs ls -l DRIVE | head -1`: once the reader goes, the command stops quietly, as
    `ls` does (no traceback), with the status a shell gives a program a pipe stopped."""
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    for i in range(3000):  # ~150 KB of listing: more than a pipe holds
        (src / f"file-{i:05}").write_bytes(b"")
    hyperfs(store, "create", "t")
    hyperfs(store, "import", str(src), "t", "--quiet")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperfs", "--store", str(store), "ls", "-l", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().endswith(b" file-00000\n")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_import_of_a_file_from_before_1970(tmp_path: Path) -> None:
    """The format's times start at the epoch: an older one is kept as the epoch (as the kernel
    clamps a time a file system cannot hold), and the next import finds the file unchanged."""
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("punched cards\n")
    os.utime(src / "old.txt", ns=(0, -315_619_200_000_000_000))  # 1960-01-01
    hyperfs(store, "create", "t")
    assert "imported 1," in hyperfs(store, "import", str(src), "t", "--quiet").stdout
    assert "imported 0, unchanged 1," in hyperfs(store, "import", str(src), "t", "--quiet").stdout
    assert hyperfs(store, "cat", "t", "/old.txt").stdout == "punched cards\n"


def test_read_commands_and_names(tmp_path: Path) -> None:
    store, src = tmp_path / "store", tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "readme.md").write_text("# hi\n")
    created = hyperfs(store, "create", "mine").stdout.split()
    name, drive_id, key = created
    hyperfs(store, "import", str(src), "mine", "--quiet")
    assert hyperfs(store, "keys").stdout.split() == [name, drive_id, key]
    for ref in (name, drive_id, key, f"hyper://{drive_id}"):
        assert hyperfs(store, "cat", ref, "/docs/readme.md").stdout == "# hi\n"
    assert hyperfs(store, "ls", "mine", "/docs").stdout == "readme.md\n"
    assert "readme.md" in hyperfs(store, "ls", "-l", "mine", "docs").stdout
    assert "size:    5 bytes" in hyperfs(store, "stat", "mine", "/docs/readme.md").stdout
    assert hyperfs(store, "log", "mine").stdout.splitlines() == ["1\tput\t/docs\t0", "2\tput\t/docs/readme.md\t5"]
    assert "+ /docs/readme.md" in hyperfs(store, "diff", "mine", "2").stdout
    assert "version:        3" in hyperfs(store, "info", key).stdout


def test_rm(tmp_path: Path) -> None:
    """As rm: files and symlinks go, a folder only with -r (and never the root); a path that
    cannot go is reported and the others still go, the exit status saying so."""
    store, src = tmp_path / "store", tmp_path / "src"
    (src / "docs" / "sub").mkdir(parents=True)
    (src / "docs" / "sub" / "deep.txt").write_text("deep\n")
    (src / "docs" / "readme.md").write_text("# hi\n")
    (src / "keep").write_text("kept\n")
    (src / "link").symlink_to("keep")
    hyperfs(store, "create", "mine")
    hyperfs(store, "import", str(src), "mine", "--quiet")
    assert hyperfs(store, "rm", "mine", "/link", "docs/readme.md").stdout == ""
    assert sorted(hyperfs(store, "ls", "mine").stdout.split()) == ["docs", "keep"]
    for args, message in [(("/docs",), "is a folder (-r"), (("-r", "/"), "root"), (("/missing",), "no such file")]:
        done = hyperfs(store, "rm", "mine", *args, check=False)
        assert done.returncode == 1 and message in done.stderr and len(done.stderr.splitlines()) == 1
    done = hyperfs(store, "rm", "-r", "mine", "/missing", "/docs", check=False)
    assert done.returncode == 1 and "missing" in done.stderr
    assert hyperfs(store, "ls", "mine").stdout.split() == ["keep"]
    assert hyperfs(store, "cat", "mine", "/keep").stdout == "kept\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (("cat", "mine", "/missing"), "no such file"),
        (("ls", "nobody"), "no drive called 'nobody'"),
        (("cat", "mine", "/a/../b"), "'..'"),
        (("import", "/nonexistent-folder", "mine"), "not a folder"),
        (("diff", "mine", "99"), "outside"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    hyperfs(tmp_path, "create", "mine")
    done = hyperfs(tmp_path, *args, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_default_drive(tmp_path: Path) -> None:
    """Without a drive name, import and export use the store's default drive (the one
    `hyperfs mount` shows)."""
    store, src, dest = tmp_path / "store", tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "f").write_text("default\n")
    hyperfs(store, "import", str(src), "--quiet")
    hyperfs(store, "export", str(dest), "--quiet")
    assert (dest / "f").read_text() == "default\n"
    assert hyperfs(store, "keys").stdout.startswith("default\t")
    hyperfs(store, "import", str(src), "fresh", "--quiet")  # a new name makes a new drive
    assert [line.split()[0] for line in hyperfs(store, "keys").stdout.splitlines()] == ["default", "fresh"]


def test_export_over_a_file_where_the_drive_has_a_folder(tmp_path: Path) -> None:
    """A local file stands where the drive has a folder: export leaves that folder out, says
    so once, exports everything else, and leaves the file as it was (it stopped at the first
    entry under the folder, ENOTDIR, having exported nothing after it)."""
    store, src, dest = tmp_path / "store", tmp_path / "src", tmp_path / "dest"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "f").write_text("in d\n")
    (src / "d" / "sub" / "g").write_text("in sub\n")
    (src / "d").chmod(0o700)
    (src / "z").write_text("after d\n")
    hyperfs(store, "import", str(src), "t", "--quiet")
    dest.mkdir()
    (dest / "d").write_text("mine\n")
    (dest / "d").chmod(0o644)
    done = hyperfs(store, "export", "t", str(dest), "--quiet")
    assert "exported 1, unchanged 0, skipped 1" in done.stdout
    assert done.stderr.strip() == (
        f"skipped: {dest}/d: exists as another kind of file (the drive's folder, with all in it)"
    )
    assert (dest / "d").read_text() == "mine\n" and stat_mod.S_IMODE((dest / "d").stat().st_mode) == 0o644
    assert (dest / "z").read_text() == "after d\n"


def test_a_local_name_that_is_not_utf8_is_shown_with_its_bytes(tmp_path: Path) -> None:
    """Import skips a name a drive cannot hold and says which, as the bytes it has (\\xff), not
    as Python's stand-ins for them (\\udcff), which name no file the user can find."""
    store, src = tmp_path / "store", tmp_path / "src"
    src.mkdir()
    (src / "kept").write_text("kept\n")
    with open(os.fsencode(src) + b"/caf\xe9.txt", "w") as f:  # Latin-1, as an old disk has them
        f.write("latin-1\n")
    done = hyperfs(store, "import", str(src), "t", "--quiet")
    assert "imported 1, unchanged 0, skipped 1" in done.stdout
    assert done.stderr.strip() == f"skipped: {src}/caf\\xe9.txt: path '/caf\\xe9.txt' is not valid UTF-8"
