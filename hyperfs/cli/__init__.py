"""The `hyperfs` command: one entry point, one module per group of subcommands.

Each group module (`drive_cmds`, `mount_cmds`, `net_cmds`) exposes `register(subparsers)`, which
adds its subcommands with a `func(args) -> int` default. `main` turns any `HyperfsError` into one
line on stderr and a non-zero exit, so user mistakes never print a traceback (nor does a reader
that stops reading the output).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from hyperfs.cli.common import one_line_errors
from hyperfs.errors import HyperfsError

GROUPS = ("drive_cmds", "mount_cmds", "net_cmds")


def default_store() -> Path:
    """The store folder: $HYPERFS_STORE, else $XDG_DATA_HOME/hyperfs, else ~/.local/share/hyperfs."""
    if os.environ.get("HYPERFS_STORE"):
        return Path(os.environ["HYPERFS_STORE"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "hyperfs"


class _Version(argparse.Action):
    """--version, looked up only when asked: importlib.metadata costs ~30 ms, which every
    command's start would pay."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show hyperfs's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("hyperfs")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "(not installed)"
        print(f"hyperfs {found}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = one_line_errors(
        argparse.ArgumentParser(prog="hyperfs", description="A peer-to-peer Hyperdrive as an ordinary folder.")
    )
    parser.add_argument(
        "--store", type=Path, default=None, help="store folder (default: %s)" % default_store()
    )
    parser.add_argument("--version", action=_Version)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in GROUPS:
        try:
            module = importlib.import_module(f"hyperfs.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"hyperfs.cli.{name}":
                raise
            continue  # that group is not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store is None:
        args.store = default_store()
    try:
        return int(args.func(args) or 0)
    except HyperfsError as err:
        print(f"hyperfs: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went (`hyperfs ls DRIVE | head`): stop as `ls` would, without a word, and
        # without the second error the interpreter's exit would hit flushing the rest.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program the pipe stopped


if __name__ == "__main__":
    sys.exit(main())
