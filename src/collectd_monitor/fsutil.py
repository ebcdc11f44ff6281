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
import tempfile
from pathlib import Path

__all__ = [
    "UnsafePath",
    "atomic_write",
    "check_directory",
    "open_private",
    "private_directory",
    "sync_directory",
]


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
        sync_directory(target.parent)


def sync_directory(directory: Path) -> None:
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


class UnsafePath(OSError):
    """A state directory or file an attacker could have planted or may change."""


def check_directory(directory: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafePath` unless ``directory`` and its parents are safe.

    Safe means: a real directory (not a symlink) owned by root or by this
    process's user and not writable by group or others (or sticky, like
    /tmp, for a parent). Otherwise another user could plant a symlink or swap a
    file between our check and our use.
    """
    path = Path(os.path.abspath(directory))
    me = os.geteuid()
    for index, part in enumerate((path, *path.parents)):
        try:
            info = os.lstat(part)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(part)
            if index == 0 or info.st_uid not in (0, me):
                raise UnsafePath(f"{part} is a symbolic link (to {target}); refusing to use it")
            continue  # a root-owned link higher up (e.g. /var/run -> /run) is the admin's
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePath(f"{part} is not a directory")
        if info.st_uid not in (0, me):
            raise UnsafePath(f"{part} is owned by uid {info.st_uid}, not by root or us")
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and (index == 0 or not info.st_mode & stat.S_ISVTX):
            raise UnsafePath(
                f"{part} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
            )


def private_directory(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (mode 0700) if needed and check it with :func:`check_directory`."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_directory(path)
    return path


def open_private(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink and never opens another user's file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{path} is not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise UnsafePath(f"{path} is owned by uid {info.st_uid}, not by root or us")
    except BaseException:
        os.close(fd)
        raise
    return fd
