"""The one way collabgen replaces a file: a hidden temp file in the target's own folder,
renamed over the target.

A reader (a resumed run, `load_dataset`, a push in progress) sees the old file or the new
one, never half of one. The rename is atomic only within one filesystem, hence the temp in
the same folder rather than in /tmp. The temp name carries the pid: slices in several
processes may write one file at once (the recipe stamp) and must not write through each
other's temp file. The out dir's writers, the journal's repair and the partition record
all go through here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

Content = bytes | str | Callable[[Path], object]


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, content: Content) -> Path:
    """Write `path` through a temp file + `os.replace`; `content` is the bytes, the text
    (UTF-8), or a function that writes the temp path (Parquet writers, file copies). A
    failed write removes its temp file and leaves the target as it was."""
    temp = temp_path(path)
    try:
        if isinstance(content, bytes):
            temp.write_bytes(content)
        elif isinstance(content, str):
            temp.write_text(content, encoding="utf-8")
        else:
            content(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def copy_atomic(source: Path, target: Path) -> Path:
    """A copy that a reader of `target` never sees half done."""
    return write_atomic(target, lambda temp: shutil.copyfile(source, temp))


def create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text`, whole, unless it exists: True when this call made it.
    Exactly one of several processes racing for the same path wins (a hard link fails on an
    existing name), and no reader ever sees it half written."""
    temp = temp_path(path)
    temp.write_text(text, encoding="utf-8")
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
