"""Every exception hyperfs raises on purpose.

Each class carries the errno a local file system would give for it, so the FUSE edge maps any
`HyperfsError` with one lookup (`err.errno`), and the CLI edge prints `str(err)` as one line.
Layers raise the most specific class; callers catch the family they can handle.
"""

from __future__ import annotations

import errno as _errno


class HyperfsError(Exception):
    """Base of all hyperfs errors. `errno` is what the FUSE layer answers with."""

    errno: int = _errno.EIO


# --- formats and core -------------------------------------------------------------------------


class DecodingError(HyperfsError):
    """Bytes that do not decode: truncated, out of range, or malformed (wire, disk, protobuf)."""

    errno = _errno.EIO


class InvalidKeyError(HyperfsError, ValueError):
    """A key, id or key pair of the wrong length or with characters outside its alphabet."""

    errno = _errno.EINVAL


class CorruptStorageError(HyperfsError):
    """A value read back from RocksDB does not decode or contradicts the signed head."""

    errno = _errno.EIO


class TreeNodeMissingError(CorruptStorageError):
    """A Merkle tree node that is not stored: corrupt storage in a core that has every block,
    not fetched yet in a sparse one (`index` says which)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class VerificationError(HyperfsError):
    """A block, tree node, proof or signature does not verify against the signed root."""

    errno = _errno.EIO


class NotWritableError(HyperfsError):
    """A write to a core or drive opened without its secret key, or to a snapshot/checkout."""

    errno = _errno.EROFS


class BlockNotAvailableError(HyperfsError):
    """A block that is not stored locally, asked for with `wait=False`."""

    errno = _errno.EAGAIN


class RequestTimeoutError(HyperfsError):
    """A wait (for a block, a peer, an update) exceeded its timeout."""

    errno = _errno.ETIMEDOUT


class SessionClosedError(HyperfsError):
    """An operation on a core, session, snapshot or store that has been closed."""

    errno = _errno.EBADF


class CoreNotFoundError(HyperfsError, KeyError):
    """A core (by discovery key, key or alias) that the store does not hold."""

    errno = _errno.ENOENT

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "core not found"


class InvalidArgumentError(HyperfsError, ValueError):
    """An argument outside what the operation allows (a range past the end, a bad length)."""

    errno = _errno.EINVAL


# --- drive --------------------------------------------------------------------------------------


class DriveError(HyperfsError):
    """Base of file-system level errors of a drive."""


class FileNotFoundInDrive(DriveError, FileNotFoundError):
    errno = _errno.ENOENT


class FileExistsInDrive(DriveError, FileExistsError):
    errno = _errno.EEXIST


class NotADirectoryInDrive(DriveError, NotADirectoryError):
    errno = _errno.ENOTDIR


class IsADirectoryInDrive(DriveError, IsADirectoryError):
    errno = _errno.EISDIR


class DirectoryNotEmptyError(DriveError):
    errno = _errno.ENOTEMPTY


class InvalidPathError(DriveError, ValueError):
    """A path with `..`, NUL, or an empty component, or not a valid Unix path."""

    errno = _errno.EINVAL


class NameTooLongError(DriveError):
    errno = _errno.ENAMETOOLONG


class UnencodableNameError(InvalidPathError):
    """A file name that is not UTF-8: drive names are protobuf strings, so none can hold it."""

    errno = _errno.EILSEQ


class ReadOnlyDriveError(NotWritableError, DriveError):
    errno = _errno.EROFS


class FileChangedError(DriveError):
    """A file's content changed while a change based on what it held was being made (the
    change is not made; the caller may make it again from the new content)."""

    errno = _errno.EAGAIN


class NotSupportedError(DriveError):
    """An operation the format cannot express (hard links, for one)."""

    errno = _errno.EPERM


# --- replication --------------------------------------------------------------------------------


class ProtocolError(HyperfsError):
    """A peer broke the wire protocol; the connection to that peer is dropped."""

    errno = _errno.EPROTO


class HandshakeError(ProtocolError):
    """The Noise handshake or the secret-stream header failed."""


class PeerClosedError(ProtocolError):
    """The remote side closed the connection."""

    errno = _errno.ECONNRESET


class ProofRequestError(HyperfsError):
    """A peer's request that no proof of ours can answer (bad range or node count, missing data).

    Not hostile by itself: the replicator answers it with noData(INVALID_REQUEST) or NOT_AVAILABLE.
    """

    errno = _errno.EINVAL


class StorageError(HyperfsError):
    """RocksDB itself failed (cannot open the folder, a write or read returned an error)."""

    errno = _errno.EIO


class StorageFullError(StorageError):
    """The disk holding the store has no room left: RocksDB could not write. Writes resume once
    space is freed (see `Rocks._recover`), or else after the store is opened again."""

    errno = _errno.ENOSPC


# --- mount --------------------------------------------------------------------------------------


class MountError(HyperfsError):
    """A mount or unmount that did not happen (not a folder, busy, FUSE refused, daemon failed)."""

    errno = _errno.EIO


class ContentLostError(HyperfsError):
    """A file written through the mount whose content could not be kept: streaming it into the
    drive failed after part of it had left memory for the drive. `errno` is that of `cause`,
    the failure (ENOSPC for a full disk), EIO for one without."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.errno = getattr(cause, "errno", None) or _errno.EIO


# --- command line -------------------------------------------------------------------------------


class LocalFileError(HyperfsError):
    """A file or folder on the local disk that an import or export could not read or write."""

    def __init__(self, message: str, errno: int = _errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno


class UnknownDriveError(HyperfsError, LookupError):
    """A drive name that is neither a local name in the store nor a key or id."""

    errno = _errno.ENOENT


class PeerUnreachableError(HyperfsError):
    """A peer address that refuses or fails the connection (wrong address, nothing listening)."""

    errno = _errno.EHOSTUNREACH


class StoreInUseError(HyperfsError):
    """A store folder another hyperfs process holds open (a mount, a share, a seed)."""

    errno = _errno.EBUSY
