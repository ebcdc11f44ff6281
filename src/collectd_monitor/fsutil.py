"""Files that other processes (or a later run) read back, and who may read them.

One helper for every file this package replaces whole: the outbox entries,
the seen-tasks store, the replacer's outcome, a pushed collectd.conf. The new
content goes to a temporary file in the same directory (so the rename is
atomic), gets its mode before the rename (so it is never visible with looser
permissions), is fsync'd when ``durable`` (content that must survive a power
loss), and the temporary file is removed again when anything fails.

:func:`check_permissions` warns about a config file holding secrets that
others may read.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["atomic_write", "check_permissions"]


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
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(temp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or the file pre-existed
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


def check_permissions(path: str | None, has_secrets: bool) -> str | None:
    """A warning when a config file holding secrets is readable by group or others."""
    if not path or not has_secrets:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} holds a password or key but is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    return None
