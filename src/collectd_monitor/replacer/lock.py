"""The replacement lock: one transaction per live config file at a time, crash-safe.

An ``flock`` on a lock file: the kernel releases it when its holder dies, so a
crash never leaves a stale lock. The holder stamps the file with its pid and
task for the "already running" message.

The lock passes from the plugin (which writes and validates the new config)
to the detached helper (which restarts collectd). The plugin cannot hand the
lock's file descriptor through ``systemd-run``, so it writes a *hand-off*
stamp naming the task and a deadline, then unlocks; whoever takes the flock
meanwhile sees the stamp and backs off, except the helper of that task. If the
helper never comes, the stamp expires.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.fsutil import open_private, private_directory
from collectd_monitor.replacer.errors import ReplaceFailed

HANDOFF_SECONDS = 30.0


class ReplaceLock:
    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self._fd: int | None = None

    def acquire(self, task_id: int, *, claim_handoff: bool = False, wait: float = 0.0) -> None:
        """Take the lock for ``task_id`` or raise 0x2000 (0x200a if the file cannot be made).

        ``claim_handoff`` is the helper's side: a hand-off stamp for its own task
        is what it expects to find. ``wait`` retries that long while the flock is
        briefly held by someone else.
        """
        try:
            private_directory(self.path.parent)  # root's or ours, not writable by others
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)  # no symlink, ours only
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_PATH_NOT_FOUND, f"cannot open the lock file {self.path}: {exc}"
            ) from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    stamp = _read_stamp(fd)
                    os.close(fd)
                    raise ReplaceFailed(ResultCode.REPLACE_IN_PROGRESS, _busy_text(stamp)) from None
                time.sleep(0.02)
        stamp = _read_stamp(fd)
        handoff = stamp.get("handoff_until")
        if isinstance(handoff, int | float) and handoff > self.now():
            if not (claim_handoff and stamp.get("task_id") == task_id):
                os.close(fd)  # closing drops the flock
                raise ReplaceFailed(ResultCode.REPLACE_IN_PROGRESS, _busy_text(stamp))
        elif claim_handoff:
            os.close(fd)
            raise ReplaceFailed(
                ResultCode.REPLACE_IN_PROGRESS, f"task {task_id} was not handed over to this helper"
            )
        self._fd = fd
        self._stamp({"pid": os.getpid(), "task_id": task_id})

    def hand_off(self, task_id: int, seconds: float = HANDOFF_SECONDS) -> None:
        """Reserve the lock for the helper of ``task_id`` and let go of the flock."""
        self._stamp({"pid": os.getpid(), "task_id": task_id, "handoff_until": self.now() + seconds})
        self._close()

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _stamp(self, data: dict[str, Any]) -> None:
        assert self._fd is not None
        text = json.dumps(data).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def __enter__(self) -> ReplaceLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _read_stamp(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _busy_text(stamp: dict[str, Any]) -> str:
    who = []
    if "task_id" in stamp:
        who.append(f"task {stamp['task_id']}")
    if "pid" in stamp:
        who.append(f"pid {stamp['pid']}")
    suffix = f" ({', '.join(who)})" if who else ""
    return f"another config replacement is already running{suffix}"
