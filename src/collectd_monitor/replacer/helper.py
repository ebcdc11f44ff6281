"""The detached helper that restarts collectd: ``python -m collectd_monitor.replacer.helper SPEC``.

It must outlive the collectd that started it, so it runs in a session of its
own (``start_new_session``), or under systemd in a transient unit of its own
(``systemd-run``): stopping ``collectd.service`` kills every process in the
service's cgroup. Inside collectd ``sys.executable`` is a PATH lookup and
``sys.argv == ['']``, so the interpreter is named explicitly (the one collectd
embeds, from ``sys.base_exec_prefix``) and the package's directories are put
on ``PYTHONPATH`` (collectd's ModulePath ignores .pth files). Its environment
is a service manager's, not the caller's (:mod:`~collectd_monitor.replacer.environment`).

The process started here is the *guardian* (:mod:`~collectd_monitor.replacer.guardian`):
it takes over the lock the plugin handed off and forks the worker that runs
the transaction; if the worker dies midway, the guardian brings collectd back.
Both log to ``REPORT.log`` beside the report path.
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

from collectd_monitor.fsutil import open_private
from collectd_monitor.replacer import environment
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.report import OutboxTarget

log = logging.getLogger("collectd_monitor.replacer")

MODULE = "collectd_monitor.replacer.helper"


@dataclass(frozen=True)
class HelperSpec:
    task_id: int
    paths: ReplacerPaths
    loads_remote: bool
    new_outbox: OutboxTarget | None = None
    """The outbox of the new config's remote plugin: where a success is reported."""
    old_outbox: OutboxTarget | None = None
    """The outbox of the old config's remote plugin: where a failure or rollback is reported."""
    local_report: Path | None = None
    """replace-config's own file for the first outcome (instead of an outbox)."""
    expected_broker: str | None = None
    log_level: str = "info"
    was_running: bool = True
    """collectd ran when the config was validated (gone by the restart: stopped from outside)."""

    def encode(self) -> str:
        return json.dumps(
            {
                "task_id": self.task_id,
                "paths": self.paths.to_dict(),
                "loads_remote": self.loads_remote,
                "new_outbox": self.new_outbox.to_dict() if self.new_outbox else None,
                "old_outbox": self.old_outbox.to_dict() if self.old_outbox else None,
                "local_report": str(self.local_report) if self.local_report else None,
                "expected_broker": self.expected_broker,
                "log_level": self.log_level,
                "was_running": self.was_running,
            }
        )

    @classmethod
    def decode(cls, text: str) -> HelperSpec:
        data: dict[str, Any] = json.loads(text)
        local = data.get("local_report")
        return cls(
            task_id=int(data["task_id"]),
            paths=ReplacerPaths.from_dict(data["paths"]),
            loads_remote=bool(data["loads_remote"]),
            new_outbox=OutboxTarget.from_dict(data.get("new_outbox")),
            old_outbox=OutboxTarget.from_dict(data.get("old_outbox")),
            local_report=Path(local) if local else None,
            expected_broker=data.get("expected_broker"),
            log_level=data.get("log_level", "info"),
            was_running=bool(data.get("was_running", True)),
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

    return environment.helper_env(list(module_paths()))


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
    from collectd_monitor.replacer.guardian import guard

    return guard(spec)


if __name__ == "__main__":
    sys.exit(main())
