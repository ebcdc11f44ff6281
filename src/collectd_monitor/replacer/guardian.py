"""The guardian: no death of the helper leaves the host without collectd.

The helper process takes the replacement lock and forks a *worker* that runs
the transaction; the guardian itself only waits. The worker journals every
step on a pipe (``begin``, ``stopping``, ``stopped``, ``swapping``,
``swapped``, ``started``, ``rolling-back``, ``reported``, ``finished``). The
pipe's end of file tells the guardian that the worker is gone; if it is gone
before ``finished`` (SIGKILL, OOM killer, a crash), the guardian recovers
from the last step (:meth:`Transaction.recover`): removes ``CONFIG.new``,
starts collectd again on the old config (or rolls the swapped config back),
takes over the watch after a reported success, and delivers the outcome.
The lock is shared by both (one open file) and held until the guardian ends.

Test hook: with ``COLLECTD_MONITOR_TEST_PAUSE_AFTER=STEP`` in its environment
the worker stops after STEP (logging its pid) so a test can kill it there.
Unset, as in production, it does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import Result
from collectd_monitor.replacer.environment import PAUSE_ENV
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.helper import HelperSpec
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.report import write_report
from collectd_monitor.replacer.transaction import Transaction

log = logging.getLogger("collectd_monitor.replacer")

CLAIM_WAIT = 10.0
PAUSE_SECONDS = 300.0


def deliver(spec: HelperSpec, result: Result, *, first: bool = True) -> None:
    """Leave ``result`` where it will be published (or read by replace-config)."""
    log.info("task %s: outcome %s: %s", spec.task_id, ResultCode(result.code).hex, result.message)
    if first and spec.local_report is not None:
        write_report(spec.local_report, result)
        return
    target = spec.new_outbox if result.code == ResultCode.SUCCESS else spec.old_outbox
    if target is None:
        if spec.local_report is not None:
            write_report(spec.local_report, result)
        return
    try:
        target.put(result)
    except OSError as exc:
        log.error(
            "task %s: cannot write the outcome to %s: %s", spec.task_id, target.directory, exc
        )


class PipeJournal:
    """The worker's side of the journal: one JSON line per step."""

    def __init__(self, fd: int, task_id: int) -> None:
        self.fd = fd
        self.task_id = task_id

    def __call__(self, step: str, data: Mapping[str, Any]) -> None:
        line = json.dumps({"step": step, **data}).encode() + b"\n"
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # the guardian is gone: carry on alone
        if os.environ.get(PAUSE_ENV) == step:
            log.warning(
                "task %s: paused after step %s (test hook), pid %d",
                self.task_id,
                step,
                os.getpid(),
            )
            time.sleep(PAUSE_SECONDS)


def work(spec: HelperSpec, journal: PipeJournal) -> None:
    """The worker: the transaction, its outcome, the watch."""
    tx = Transaction(spec.paths, journal=journal)
    journal("begin", {})
    result = tx.apply(
        spec.task_id,
        loads_remote=spec.loads_remote,
        expected_broker=spec.expected_broker,
        was_running=spec.was_running,
    )
    deliver(spec, result)
    if result.code == ResultCode.SUCCESS and tx.new_pid and spec.paths.timing.watch > 0:
        until = time.monotonic() + spec.paths.timing.watch
        journal("reported", {"pid": tx.new_pid, "until": until})
        late = tx.watch(spec.task_id, tx.new_pid, until)
        if late is not None:
            deliver(spec, late, first=False)
    journal("finished", {})


def _how_it_ended(pid: int, status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"the replacement helper (pid {pid}) was killed by {name}"
    return f"the replacement helper (pid {pid}) exited with status {os.WEXITSTATUS(status)}"


def guard(spec: HelperSpec) -> int:
    lock = ReplaceLock(spec.paths.lock)
    try:
        lock.acquire(spec.task_id, claim_handoff=True, wait=CLAIM_WAIT)
    except ReplaceFailed as exc:
        deliver(spec, Result(spec.task_id, exc.code, exc.message))
        return 0
    try:
        read_fd, write_fd = os.pipe()
        worker = os.fork()
        if worker == 0:  # the worker; the lock's open file is shared with the guardian
            os.close(read_fd)
            code = 0
            try:
                work(spec, PipeJournal(write_fd, spec.task_id))
            except BaseException:
                log.exception("task %s: the replacement helper failed", spec.task_id)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        state: dict[str, Any] = {"step": "begin"}
        with os.fdopen(read_fd, "rb") as journal:
            for line in journal:
                try:
                    state = json.loads(line)
                except ValueError:
                    continue
        _, status = os.waitpid(worker, 0)
        if state.get("step") != "finished":
            died = _how_it_ended(worker, status)
            log.error("task %s: %s after step %s; recovering", spec.task_id, died, state["step"])
            result = Transaction(spec.paths).recover(spec.task_id, died, state)
            if result is not None:
                deliver(spec, result, first=state.get("step") != "reported")
        return 0
    finally:
        lock.release()
