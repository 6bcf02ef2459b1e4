"""The errno edge: every FUSE request handler answers a failure with the errno a local file
system would give, and never lets an exception escape into pyfuse3 (that would end the mount)."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from hyperfs.errors import HyperfsError

log = logging.getLogger("hyperfs.fuse")

P = ParamSpec("P")
T = TypeVar("T")


def to_fuse_error(err: BaseException) -> pyfuse3.FUSEError:
    """The FUSEError to answer `err` with: its own errno, or EIO for anything unplanned."""
    if isinstance(err, pyfuse3.FUSEError):
        return err
    if isinstance(err, HyperfsError):
        return pyfuse3.FUSEError(err.errno)
    if isinstance(err, OSError) and err.errno:
        return pyfuse3.FUSEError(err.errno)
    return pyfuse3.FUSEError(errno.EIO)


def fuse_errors(handler: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wrap a request handler so any failure becomes a FUSEError with the right errno. It also
    counts the requests being answered, in `serving` on the handlers' object: a handler can
    tell it is the only one (one handler calling another counts twice, so 1 still means that)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        ops: Any = args[0]
        ops.serving += 1
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as err:  # noqa: BLE001 - the mount must outlive any one request
            if not isinstance(err, (HyperfsError, OSError)):
                log.exception("%s failed", handler.__name__)
            else:
                log.debug("%s%r: %s", handler.__name__, args[1:], err)
            raise to_fuse_error(err) from err
        finally:
            ops.serving -= 1

    return wrapper
