"""Writing files that other processes (or a later run) read back.

One helper for every file this package replaces whole: the outbox entries,
the seen-tasks store, the replacer's outcome, a pushed collectd.conf. The new
content goes to a temporary file in the same directory (so the rename is
atomic), gets its mode before the rename (so it is never visible with looser
permissions), is fsync'd when ``durable`` (content that must survive a power
loss), and the temporary file is removed again when anything fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` in one step; raise ``OSError`` on failure.

    Readers see either the old content or the new, never a part. ``durable``
    also fsyncs the file and its directory, so the new content survives a
    power loss, not only a crash of this process.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # A name of its own (O_EXCL, random) per call: threads of one process may
    # replace the same file at once.
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every FS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
