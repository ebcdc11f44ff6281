"""The replacer inside the remote plugin: config pushes, status and report publishing.

:func:`install` wires three things into a :class:`RemoteAgent`:

* a config handler: on a worker thread, lock, write and validate the pushed
  config (answering 0x2000/0x2001/0x2002/0x200a at once), then hand the lock
  to the detached helper, which restarts collectd and writes a report;
* the plugin status file (pid, started/connected, broker) the helper reads to
  tell that the restarted daemon's plugin reached the broker;
* a publisher that sends a waiting report to the result topic once connected
  and removes it only after the broker acknowledged it. If the broker is down,
  the report waits, across restarts, until some plugin can deliver it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.protocol import ConfigRequest, Result
from collectd_monitor.config import MonitorConfig
from collectd_monitor.replacer import helper
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import ReplacerPaths, discover
from collectd_monitor.replacer.report import (
    PendingReport,
    PluginStatus,
    read_report,
    remove_report,
    write_plugin_status,
)
from collectd_monitor.replacer.transaction import Transaction

log = logging.getLogger("collectd_monitor.replacer")

POLL_SECONDS = 0.25
ACK_TIMEOUT = 5.0


def service_options(config: MonitorConfig) -> dict[str, Any]:
    """``Services.collectd`` as one mapping: its settings plus its ``commands``."""
    service = config.services.get("collectd")
    if service is None:
        return {}
    return {**config.collectd.to_options(), "commands": dict(service.commands)}


class ConfigReplacer:
    """The agent's config handler: prepare here, apply in the detached helper."""

    def __init__(
        self,
        config: MonitorConfig,
        paths: ReplacerPaths,
        *,
        spawn: Callable[[helper.HelperSpec], None] = helper.spawn,
    ) -> None:
        self.config = config
        self.paths = paths
        self.spawn = spawn

    def __call__(self, request: ConfigRequest, publish: Callable[[Result], None]) -> None:
        threading.Thread(
            target=self._run, args=(request, publish), name="cm-replace", daemon=True
        ).start()

    def _run(self, request: ConfigRequest, publish: Callable[[Result], None]) -> None:
        task_id = request.task_id
        log.debug("task %s: pushed config:\n%s", task_id, request.config)
        try:
            prepared = Transaction(self.paths).prepare(task_id, request.config, require_remote=True)
        except ReplaceFailed as exc:
            log.warning("task %s: config push refused (%s)", task_id, exc.code.hex)
            publish(Result(task_id, exc.code, exc.message))
            return
        except Exception as exc:
            log.exception("task %s: config push failed", task_id)
            publish(
                Result(
                    task_id,
                    ResultCode.REPLACE_WRITE_FAILED,
                    f"unexpected error before anything was changed: {exc}",
                )
            )
            return
        spec = helper.HelperSpec(
            task_id=task_id,
            paths=self.paths,
            loads_remote=prepared.loads_remote,
            report_to=self.paths.report,
            expected_broker=self.config.broker.address,
            log_level=self.config.log_level,
        )
        prepared.lock.hand_off(task_id)
        try:
            self.spawn(spec)
        except (OSError, ValueError) as exc:
            prepared.lock.acquire(task_id, claim_handoff=True, wait=2.0)
            prepared.lock.release()
            log.error("task %s: cannot start the replacement helper: %s", task_id, exc)
            publish(
                Result(
                    task_id,
                    ResultCode.REPLACE_STOP_FAILED,
                    f"cannot stop collectd: the replacement helper did not start ({exc}); "
                    "nothing was changed",
                )
            )
            return
        log.info(
            "task %s: new config validated; helper restarts collectd (log: %s)",
            task_id,
            self.paths.helper_log,
        )


class ReportPublisher:
    """Publishes the helper's report once connected; removes it once acknowledged."""

    def __init__(self, agent: RemoteAgent, paths: ReplacerPaths) -> None:
        self.agent = agent
        self.paths = paths
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._published: PendingReport | None = None
        self._thread = threading.Thread(target=self._loop, name="cm-replace-report", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("error publishing the replacement report")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def step(self) -> None:
        report = read_report(self.paths.report)
        if report is None or not self.agent.link.connected:
            return
        if self._published is None or self._published.inode != report.inode:
            log.info(
                "task %s: publishing the replacement outcome (code 0x%04x)",
                report.result.task_id,
                report.result.code,
            )
            # Published once per file by this process; paho re-sends it after a reconnect.
            self.agent.publish(report.result)
            self._published = report
        if self.agent.link.flush(ACK_TIMEOUT) and remove_report(self.paths.report, report):
            log.info("task %s: outcome delivered; report removed", report.result.task_id)


class Replacer:
    """What :func:`install` set up, for stopping it again."""

    def __init__(self, agent: RemoteAgent, paths: ReplacerPaths) -> None:
        self.agent = agent
        self.paths = paths
        self.publisher = ReportPublisher(agent, paths)

    def write_status(self, state: str) -> None:
        status = PluginStatus(
            pid=os.getpid(),
            state=state,
            broker=self.agent.config.broker.address,
            error=self.agent.link.last_error,
        )
        try:
            write_plugin_status(self.paths.plugin_status, status)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.paths.plugin_status, exc)

    def on_connected(self) -> None:
        self.write_status("connected")
        self.publisher.wake()

    def start(self) -> None:
        self.write_status("started")
        self.publisher.start()

    def stop(self) -> None:
        self.publisher.stop()


def install(agent: RemoteAgent, *, options: Mapping[str, Any] | None = None) -> Replacer | None:
    """Enable config pushes on ``agent`` (call before ``agent.start()``).

    When collectd's paths cannot be worked out, pushes are answered with
    0x200a and the reason, and nothing else is set up.
    """
    config = agent.config
    try:
        paths = discover(
            service_options(config) if options is None else options, collectd_pid=os.getpid()
        )
    except ReplaceFailed as exc:
        log.warning("config replacement unavailable: %s", exc.message)
        failure = exc

        def refuse(request: ConfigRequest, publish: Callable[[Result], None]) -> None:
            publish(Result(request.task_id, failure.code, failure.message))

        agent.config_handler = refuse
        return None
    agent.config_handler = ConfigReplacer(config, paths)
    replacer = Replacer(agent, paths)
    agent.add_connected_hook(replacer.on_connected)
    agent.add_stop_hook(replacer.stop)
    replacer.start()
    log.info(
        "config replacement enabled: config %s, pid file %s, %s mode, report %s",
        paths.config,
        paths.pid,
        paths.mode,
        paths.report,
    )
    return replacer
