"""Drive paths: one normal form, and refusal of names a drive cannot hold."""

from __future__ import annotations

import functools

from hyperfs.errors import DriveError, InvalidPathError, NameTooLongError

NAME_MAX = 255  # bytes of one component, as on Linux


def normalize(path: str) -> tuple[str, ...]:
    """The components of the Unix path `path` ('/' and '' are the root; '.' parts are dropped).

    Refused: `..`, NUL, an empty component (`a//b`), text that is not valid UTF-8 (the format
    stores names as protobuf strings), and a component over 255 bytes.
    """
    if not isinstance(path, str):
        raise InvalidPathError(f"a path must be text, not {type(path).__name__}")
    return _normalized(path)


# A mount asks about the same few paths again and again (`tar x` looks up, creates, chowns,
# chmods, stats and writes each file: ~12 lookups of its path); splitting and checking one
# costs more than the dictionary lookup that finds it done.
@functools.lru_cache(maxsize=4096)
def _normalized(path: str) -> tuple[str, ...]:
    parts = path.split("/")
    if parts[0] == "":
        parts.pop(0)
    if parts and parts[-1] == "":
        parts.pop()
    names: list[str] = []
    for part in parts:
        if part == ".":
            continue
        refusal = _refusal(part, path)
        if refusal is not None:
            raise refusal
        names.append(part)
    return tuple(names)


def shown(text: str) -> str:
    """`text` for a message: the bytes of a local name that are not UTF-8 (which Python keeps
    as surrogate escapes, printed as \\udcXX) as \\xXX, the bytes they were."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def holdable(name: str) -> bool:
    """Whether `name`, one component of a name in a drive's log (where a hostile or foreign
    writer may put '..', '.', NUL, or '//' that splits into an empty one), is one a path here
    can name: `normalize` keeps it as it is. Listings leave the others out, so no walk of the
    drive is led above its folder or round in a loop."""
    return name != "." and "/" not in name and _refusal(name, name) is None


def _refusal(part: str, path: str) -> DriveError | None:
    """Why `part` cannot be a component of `path`, or None ('.' is dropped before this)."""
    if part == "..":
        return InvalidPathError(f"path {path!r} contains '..'")
    if part == "":
        return InvalidPathError(f"path {path!r} has an empty component")
    if "\0" in part:
        return InvalidPathError(f"path {path!r} contains NUL")
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        return InvalidPathError(f"path '{shown(path)}' is not valid UTF-8")
    if size > NAME_MAX:
        return NameTooLongError(f"name {part[:40]!r}… is {size} bytes, over {NAME_MAX}")
    return None
