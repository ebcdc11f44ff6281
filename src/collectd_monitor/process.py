"""One command run: spawned, its output read, its exit seen, ended if it must be.

Every command runs in a new session (so in its own process group), with no
standard input. A command that passes its timeout, or is aborted because
collectd stops, is ended by signalling its **whole process group**: first
SIGTERM, then SIGKILL after a short grace. Output is read while the command
runs (a full pipe never blocks it) and capped; a visible marker says what was
cut. The code reported is the command's true exit status; death by signal N
reads as 128+N, as in a shell. The exit is seen the moment it happens (a
pidfd in the same ``poll`` that reads the output), not by polling.
:mod:`collectd_monitor.executor` runs these on a pool of worker threads.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from collectd_monitor.cmdline import direct_argv
from collectd_monitor.codes import ResultCode
from collectd_monitor.config import CommandSpec
from collectd_monitor.runas import SHELL, child_env, identity_of

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_DRAIN_AFTER_EXIT = 0.5
"""How long to keep reading after the command exited while a background child
still holds its output pipe (a daemon a restart command left behind)."""
_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)
"""poll(2): one system call per wait. An epoll set would cost three more
(create, register, close) for a selector that lives as long as one command."""
RUNNING_NOTICE = 1.0
"""Seconds after which a command still running is reported (``Handle.on_long_run``)."""


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    errors: str = ""
    truncated: bool = False
    timed_out: bool = False
    aborted: bool = False
    start_failed: bool = False
    duration: float = 0.0

    @property
    def message(self) -> str:
        """The text a result carries: the command's stdout, plus what happened to it."""
        if self.start_failed:
            return self.errors
        notes = []
        if self.timed_out:
            notes.append("[timed out: process group killed]")
        if self.aborted:
            notes.append("[aborted: collectd is shutting down; process group killed]")
        return "\n".join([self.output, *notes]) if notes else self.output


@dataclass
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        text = bytes(self.data).decode("utf-8", errors="replace")
        if self.total > self.limit:
            text += f"\n[output cut at {self.limit} bytes of {self.total}]"
        elif text.endswith("\n"):
            text = text[:-1]
        return text


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Handle:
    """A command being run; lets another thread end it.

    Its hooks run on the worker and must return promptly: ``on_start`` once
    the command runs, ``on_long_run`` if it still runs after
    :data:`RUNNING_NOTICE` seconds (the place for log lines that must not
    delay a quick command's result).
    """

    def __init__(
        self,
        on_start: Callable[[], None] | None = None,
        on_long_run: Callable[[], None] | None = None,
    ) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.aborted = False
        self._lock = threading.Lock()
        self._on_start = on_start
        self.on_long_run = on_long_run

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self.proc = proc
            if self.aborted:
                _signal_group(proc, signal.SIGKILL)
        self.call(self._on_start)

    @staticmethod
    def call(hook: Callable[[], None] | None) -> None:
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("error in a command's hook")

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self.proc is not None:
                _signal_group(self.proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def _argv(spec: CommandSpec, env: Mapping[str, str] | None) -> list[str]:
    """The argument list to execute: a plain shell line runs without the shell."""
    if spec.argv is not None:
        return list(spec.argv)
    line = spec.line or ""
    if spec.user is None:
        direct = direct_argv(line, (env if env is not None else os.environ).get("PATH", ""))
        if direct is not None:
            return direct
    return [SHELL, "-c", line]


def run_command(
    spec: CommandSpec,
    *,
    timeout: float,
    max_output: int,
    kill_grace: float = 1.0,
    handle: Handle | None = None,
) -> Outcome:
    """Run ``spec`` to completion, its timeout, or an abort through ``handle``."""
    handle = handle or Handle()
    started = time.monotonic()
    try:
        identity = identity_of(spec)
        env = child_env(spec, identity.account)
        proc = subprocess.Popen(
            _argv(spec, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            cwd=spec.cwd,
            env=env,
            user=identity.account.pw_uid if identity.account is not None else None,
            group=identity.group,
            extra_groups=identity.extra_groups,
        )
    except KeyError as exc:
        return _not_started(f"cannot start {spec.label}: unknown user or group {exc}", started)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _not_started(f"cannot start {spec.label}: {exc}", started)
    handle.attach(proc)
    out, err = _Capture(max_output), _Capture(max_output)
    deadline = started + timeout
    timed_out, exited = _collect(proc, out, err, deadline, handle)
    if timed_out:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(kill_grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)  # the stragglers of the group too
        proc.wait()
    elif exited:
        proc.wait()  # a zombie already: reaped at once, no polling
    else:
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    code = _exit_code(proc.returncode)
    if handle.aborted:
        code = ResultCode.COMMAND_ABORTED
    elif timed_out:
        code = ResultCode.COMMAND_TIMEOUT
    return Outcome(
        code=code,
        output=out.text(),
        errors=err.text(),
        truncated=out.total > out.limit,
        timed_out=timed_out and not handle.aborted,
        aborted=handle.aborted,
        duration=time.monotonic() - started,
    )


def _not_started(why: str, started: float) -> Outcome:
    return Outcome(
        code=ResultCode.COMMAND_START_FAILED,
        output="",
        errors=why,
        start_failed=True,
        duration=time.monotonic() - started,
    )


def _exit_watch(proc: subprocess.Popen[bytes]) -> int | None:
    """A descriptor that turns readable the moment ``proc`` exits (a pidfd), or None.

    Linux 5.3+ has them; elsewhere (or if the call fails) the exit is found by
    polling between reads, as ``Popen.wait(timeout)`` does.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(proc.pid)
    except OSError:
        return None
    return fd


def _collect(
    proc: subprocess.Popen[bytes],
    out: _Capture,
    err: _Capture,
    deadline: float,
    handle: Handle | None = None,
) -> tuple[bool, bool]:
    """Read the command's output until it has exited and closed its pipes, or ``deadline``.

    Returns ``(timed_out, exited)``. With a pidfd the exit wakes the same
    ``select`` that reads the output, so it is noticed at once; after the exit
    the pipes are drained for at most ``_DRAIN_AFTER_EXIT`` (a background child
    may hold them). Without one, the loop ends when both pipes are closed and
    the caller waits for the exit. ``handle``'s ``on_long_run`` is called
    once the command has run :data:`RUNNING_NOTICE` seconds.
    """
    assert proc.stdout is not None and proc.stderr is not None
    pidfd = _exit_watch(proc)
    notice = handle.on_long_run if handle is not None else None
    notice_at = time.monotonic() + RUNNING_NOTICE
    exited_at: float | None = None
    streams = 2
    try:
        with _Selector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, out)
            selector.register(proc.stderr, selectors.EVENT_READ, err)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ, None)
            while True:
                now = time.monotonic()
                if pidfd is None and exited_at is None and proc.poll() is not None:
                    exited_at = now
                if streams == 0 and (exited_at is not None or pidfd is None):
                    break
                if now >= deadline:
                    return True, exited_at is not None
                if exited_at is not None and now - exited_at > _DRAIN_AFTER_EXIT:
                    break
                if notice is not None and now >= notice_at and exited_at is None:
                    Handle.call(notice)
                    notice = None
                wait = deadline - now
                if notice is not None:
                    wait = min(wait, max(notice_at - now, 0))
                if exited_at is not None:
                    wait = min(wait, exited_at + _DRAIN_AFTER_EXIT - now)
                elif pidfd is None:
                    wait = min(wait, 0.25)
                for key, _ in selector.select(wait):
                    if key.data is None:  # the pidfd: the command has exited
                        exited_at = time.monotonic()
                        selector.unregister(key.fileobj)
                        continue
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if chunk:
                        key.data.feed(chunk)
                    else:
                        selector.unregister(key.fileobj)
                        streams -= 1
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if pidfd is not None:
            os.close(pidfd)
    return False, exited_at is not None
