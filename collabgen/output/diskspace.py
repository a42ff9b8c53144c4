"""A full disk, recognised whichever library hit it, and said as one error.

A disk fills up under a run in many voices: `OSError(ENOSPC)` from a journal append,
sqlite's "database or disk is full" (or a bare "disk I/O error" when it cannot even grow
its shared-memory file) from the request cache, a polars or pyarrow error from a shard
writer. None of them is a bug or a failed conversation: the run stops, says which out dir
has no space left, and exits with its own code; everything already journaled stays, and
`collabgen run` resumes once space is freed.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collabgen.config.errors import NoSpaceError

_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NO_SPACE_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")
_SQLITE_FULL = 13
_NEARLY_FULL = 1 << 20  # bytes: below this, an I/O error on the out dir is taken for a full disk


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem holding `path` (its nearest existing parent), or None."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_out_of_space(err: BaseException, where: Path | None = None) -> bool:
    """True when `err`, or an error it was raised from, says the disk is full; with
    `where`, also any I/O error while the filesystem holding `where` is nearly full."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if any(words in str(current).lower() for words in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    if where is not None and (isinstance(err, (OSError, sqlite3.Error)) or _is_writer_error(err)):
        free = free_bytes(where)
        return free is not None and free < _NEARLY_FULL
    return False


def _is_writer_error(err: BaseException) -> bool:
    """A shard writer's own error type (polars, pyarrow), whose message rarely says why."""
    return type(err).__module__.split(".")[0] in ("polars", "pyarrow")


def no_space_error(root: Path) -> NoSpaceError:
    free = free_bytes(root)
    left = f" ({free:,} bytes free)" if free is not None else ""
    return NoSpaceError(
        f"no space left on {root}{left}: free some space there (or set another output.dir) and run the same "
        "command again; it resumes from what is already written, which is kept"
    )


@contextmanager
def stop_on_full_disk(root: Path) -> Iterator[None]:
    """Turn any out-of-space error inside the block into a `NoSpaceError` naming `root`."""
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as err:
        if is_out_of_space(err, root):
            raise no_space_error(root) from None
        raise
