"""The detached helper that restarts collectd: ``python -m collectd_monitor.replacer.helper SPEC``.

It must outlive the collectd that started it, so it runs in a session of its
own (``start_new_session``), or under systemd in a transient unit of its own
(``systemd-run``): stopping ``collectd.service`` kills every process in the
service's cgroup. Inside collectd ``sys.executable`` is a PATH lookup and
``sys.argv == ['']``, so the interpreter is named explicitly (the one collectd
embeds, from ``sys.base_exec_prefix``) and the package's directories are put
on ``PYTHONPATH`` (collectd's ModulePath ignores .pth files).

The helper takes over the lock the plugin handed off, runs
:meth:`Transaction.apply`, writes the outcome to the report file and exits.
Its own log goes to ``REPORT.log`` beside the report.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import Result
from collectd_monitor.fsutil import open_private
from collectd_monitor.plugin_support import OFFLINE_ENV, SAFE_PATH
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.report import write_report
from collectd_monitor.replacer.transaction import Transaction

log = logging.getLogger("collectd_monitor.replacer")

MODULE = "collectd_monitor.replacer.helper"
CLAIM_WAIT = 10.0


@dataclass(frozen=True)
class HelperSpec:
    task_id: int
    paths: ReplacerPaths
    loads_remote: bool
    report_to: Path
    """Where to write the outcome: the report path (published by the plugin) or a CLI's own file."""
    expected_broker: str | None = None
    log_level: str = "info"

    def encode(self) -> str:
        return json.dumps(
            {
                "task_id": self.task_id,
                "paths": self.paths.to_dict(),
                "loads_remote": self.loads_remote,
                "report_to": str(self.report_to),
                "expected_broker": self.expected_broker,
                "log_level": self.log_level,
            }
        )

    @classmethod
    def decode(cls, text: str) -> HelperSpec:
        data: dict[str, Any] = json.loads(text)
        return cls(
            task_id=int(data["task_id"]),
            paths=ReplacerPaths.from_dict(data["paths"]),
            loads_remote=bool(data["loads_remote"]),
            report_to=Path(data["report_to"]),
            expected_broker=data.get("expected_broker"),
            log_level=data.get("log_level", "info"),
        )


def interpreter() -> str:
    """The interpreter for the helper: the base install's python (the one collectd embeds)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        os.path.join(sys.base_exec_prefix, "bin", version),
        os.path.join(sys.base_exec_prefix, "bin", "python3"),
        "/usr/bin/python3",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return "/usr/bin/python3"


def helper_env() -> dict[str, str]:
    from collectd_monitor.confblock import module_paths

    env = {
        key: value for key, value in os.environ.items() if key in ("LANG", "LC_ALL", "TZ", "PATH")
    }
    env.setdefault("PATH", SAFE_PATH)
    env["PYTHONPATH"] = os.pathsep.join(module_paths())
    env.pop(OFFLINE_ENV, None)
    return env


def helper_argv(spec: HelperSpec) -> list[str]:
    return [interpreter(), "-m", MODULE, spec.encode()]


def spawn(spec: HelperSpec) -> None:
    """Start the helper detached from the caller; raise ``OSError`` if it cannot start."""
    env = helper_env()
    argv = helper_argv(spec)
    if spec.paths.mode == "systemd":
        unit = f"collectd-monitor-replace-{spec.task_id}"
        argv = [
            "systemd-run",
            f"--unit={unit}",
            "--collect",
            "--quiet",
            f"--property=StandardOutput=append:{spec.paths.helper_log}",
            "--property=StandardError=inherit",
            *(f"--setenv={key}={value}" for key, value in env.items()),
            "--",
            *argv,
        ]
        done = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise OSError(f"systemd-run failed: {done.stderr.decode(errors='replace').strip()}")
        return
    fd = open_private(spec.paths.helper_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    # Reap it if it ends while we still run (collectd restores SIGCHLD to default).
    threading.Thread(target=proc.wait, name="cm-replace-reaper", daemon=True).start()


def run(spec: HelperSpec) -> Result:
    lock = ReplaceLock(spec.paths.lock)
    try:
        lock.acquire(spec.task_id, claim_handoff=True, wait=CLAIM_WAIT)
    except ReplaceFailed as exc:
        return Result(spec.task_id, exc.code, exc.message)
    try:
        return Transaction(spec.paths).apply(
            spec.task_id, loads_remote=spec.loads_remote, expected_broker=spec.expected_broker
        )
    finally:
        lock.release()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s helper[%(process)d] %(levelname)s %(message)s"
    )
    try:
        spec = HelperSpec.decode(args[0])
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        log.error("bad helper spec: %s", exc)
        return 2
    if spec.log_level == "debug":
        logging.getLogger().setLevel(logging.DEBUG)
    log.info("task %s: helper started", spec.task_id)
    try:
        result = run(spec)
    except Exception as exc:  # the report must be written whatever happens
        log.exception("task %s: helper failed", spec.task_id)
        result = Result(
            spec.task_id,
            ResultCode.REPLACE_RECOVERY_FAILED,
            f"the replacement helper failed unexpectedly: {exc}",
        )
    log.info("task %s: outcome %s: %s", spec.task_id, ResultCode(result.code).hex, result.message)
    write_report(spec.report_to, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
