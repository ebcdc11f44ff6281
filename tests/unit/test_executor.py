"""The executor runs real (tiny) processes: it is about processes."""

from __future__ import annotations

import os
import threading
import time

import pytest

from collectd_monitor import process as process_module
from collectd_monitor.codes import ResultCode
from collectd_monitor.config import CommandSpec
from collectd_monitor.executor import Busy, CommandExecutor, Handle, Job, Outcome, run_command


def shell(line: str, **kwargs) -> CommandSpec:
    return CommandSpec(service="s", name="c", line=line, **kwargs)


def run(spec: CommandSpec, timeout: float = 10, max_output: int = 1000, **kw) -> Outcome:
    return run_command(spec, timeout=timeout, max_output=max_output, **kw)


def test_stdout_is_the_message_and_code_is_the_exit_status():
    outcome = run(shell("echo hi; echo err >&2; exit 7"))
    assert (outcome.code, outcome.message, outcome.errors) == (7, "hi", "err")


def test_argv_form_passes_arguments_verbatim():
    outcome = run(
        CommandSpec(service="s", name="c", argv=("/bin/echo", "$(id)", "; rm -rf /", "*"))
    )
    assert outcome.message == "$(id) ; rm -rf / *"


def test_missing_program_is_a_start_failure():
    outcome = run(CommandSpec(service="s", name="c", argv=("/nonexistent/prog",)))
    assert outcome.code == ResultCode.COMMAND_START_FAILED
    assert "cannot start s/c" in outcome.message


def test_signal_death_reads_as_128_plus_n():
    assert run(shell("kill -KILL $$")).code == 128 + 9


def test_timeout_kills_the_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    outcome = run(shell(f"sleep 100 & echo $! > {pidfile}; wait"), timeout=0.5, kill_grace=0.2)
    assert outcome.code == ResultCode.COMMAND_TIMEOUT and outcome.timed_out
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(child, 0)
            time.sleep(0.05)


def test_output_cap_and_marker():
    outcome = run(shell("yes | head -c 5000"), max_output=100)
    assert outcome.truncated
    assert outcome.message.endswith("[output cut at 100 bytes of 5000]")


def test_background_child_holding_the_pipe_does_not_hang_the_result():
    started = time.monotonic()
    outcome = run(shell("sleep 30 & echo started"), timeout=20)
    assert outcome.code == 0 and outcome.message == "started"
    assert time.monotonic() - started < 15  # a hang guard, not a speed goal


def test_a_command_that_closes_its_output_early_still_reports_its_exit_status():
    outcome = run(shell("exec >&- 2>&-; sleep 0.3; exit 3"))
    assert (outcome.code, outcome.timed_out) == (3, False)


def test_a_command_that_closes_its_output_and_runs_on_times_out():
    outcome = run(shell("exec >/dev/null 2>&1; sleep 30"), timeout=0.5, kill_grace=0.2)
    assert outcome.code == ResultCode.COMMAND_TIMEOUT and outcome.timed_out


@pytest.mark.parametrize("line", ["echo hi; exit 4", "exec >&- 2>&-; sleep 0.2; exit 4"])
def test_without_pidfds_the_exit_is_found_by_polling(monkeypatch, line):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    outcome = run(shell(line))
    assert outcome.code == 4
    assert run(shell("sleep 30"), timeout=0.3, kill_grace=0.2).timed_out


def test_abort_through_handle():
    handle = Handle()
    threading.Timer(0.2, handle.abort).start()
    outcome = run(shell("sleep 30"), handle=handle)
    assert outcome.code == ResultCode.COMMAND_ABORTED and outcome.aborted


def test_env_allow_list_and_extra_env(monkeypatch):
    monkeypatch.setenv("KEEP_ME", "1")
    monkeypatch.setenv("DROP_ME", "1")
    outcome = run(
        shell('echo "$KEEP_ME-$DROP_ME-$EXTRA"', env_allow=("KEEP_ME",), env={"EXTRA": "x"})
    )
    assert outcome.message == "1--x"


def test_pool_runs_everything_and_reports_once():
    results: list[Outcome] = []
    lock = threading.Lock()
    done = threading.Event()

    def collect(outcome: Outcome) -> None:
        with lock:
            results.append(outcome)
            if len(results) == 20:
                done.set()

    pool = CommandExecutor(max_concurrent=3, max_queued=50)
    for i in range(20):
        pool.submit(Job(shell(f"echo {i}"), collect))
    assert done.wait(20)
    assert sorted(int(r.message) for r in results) == list(range(20))
    pool.shutdown()


def test_pool_rejects_when_queue_is_full_and_aborts_on_shutdown():
    outcomes: list[Outcome] = []
    pool = CommandExecutor(max_concurrent=1, max_queued=1)
    pool.submit(Job(shell("sleep 30"), outcomes.append))
    deadline = time.monotonic() + 5
    while pool.running == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.submit(Job(shell("sleep 30"), outcomes.append))
    with pytest.raises(Busy):
        pool.submit(Job(shell("true"), outcomes.append))
    pool.shutdown(timeout=5)
    assert sorted(o.code for o in outcomes) == [ResultCode.COMMAND_ABORTED] * 2
    with pytest.raises(Busy):
        pool.submit(Job(shell("true"), outcomes.append))


def test_hooks_say_when_a_command_started_and_when_it_runs_long(monkeypatch):
    monkeypatch.setattr(process_module, "RUNNING_NOTICE", 0.3)
    calls: list[tuple[str, str]] = []

    def job(line: str, done: threading.Event) -> Job:
        return Job(
            spec=shell(line),
            on_done=lambda _outcome: done.set(),
            on_start=lambda: calls.append(("start", line)),
            on_long_run=lambda: calls.append(("long", line)),
        )

    pool = CommandExecutor(max_concurrent=2)
    quick, slow = threading.Event(), threading.Event()
    pool.submit(job("true", quick))
    pool.submit(job("sleep 1", slow))
    assert quick.wait(10) and slow.wait(10)
    pool.shutdown()
    assert sorted(calls) == [("long", "sleep 1"), ("start", "sleep 1"), ("start", "true")]


def test_a_failing_hook_does_not_lose_the_result():
    def broken() -> None:
        raise RuntimeError("hook bug")

    outcome = run_command(
        shell("echo fine"), timeout=5, max_output=100, handle=Handle(on_start=broken)
    )
    assert (outcome.code, outcome.message) == (0, "fine")
