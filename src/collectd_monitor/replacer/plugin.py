"""The replacer inside the remote plugin: config pushes, status, outcome delivery.

:func:`install` wires three things into a :class:`RemoteAgent`:

* a config handler: on a worker thread, lock, write and validate the pushed
  config (answering 0x2000/0x2001/0x2002/0x200a at once), then hand the lock
  to the detached helper, which restarts collectd. If collectd is stopped
  during the validation, the validation is killed, ``CONFIG.new`` removed and
  no helper started (the admin's stop wins, 0x2010);
* the plugin status file (pid, started/connected, broker) the helper reads to
  tell that the restarted daemon's plugin reached the broker;
* a courier that publishes what the helper left in this plugin's outbox (its
  outcome; a late death's second result) while a replacement is under way.
  Like every outbox entry it is removed once the broker acknowledged it, and
  published again after a reconnect or a restart until then.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.protocol import ConfigRequest, Result
from collectd_monitor.config import MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer import helper
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import ReplacerPaths, discover
from collectd_monitor.replacer.report import OutboxTarget, PluginStatus, write_plugin_status
from collectd_monitor.replacer.transaction import Transaction
from collectd_monitor.replacer.validate import ProcessResult, module_options

log = logging.getLogger("collectd_monitor.replacer")

BUSY_POLL = 0.25
IDLE_POLL = 5.0
ABORT_WAIT = 2.0


def service_options(config: MonitorConfig) -> dict[str, Any]:
    """``Services.collectd`` as one mapping: its settings plus its ``commands``."""
    service = config.services.get("collectd")
    if service is None:
        return {}
    return {**config.collectd.to_options(), "commands": dict(service.commands)}


def lock_busy(path: Path) -> bool:
    """Whether someone (a replacement helper) holds the replacement lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we got
    return False


class AbortableRunner:
    """Runs the validation's ``collectd -T`` so that a collectd shutdown can kill it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.aborted = False

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> ProcessResult:
        with self._lock:
            if self.aborted:
                return ProcessResult(130, "not run: collectd is stopping")
            try:
                proc = subprocess.Popen(
                    list(argv),
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                return ProcessResult(127, f"cannot run {argv[0]}: {exc}")
            self._running.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            return ProcessResult(124, f"timed out after {timeout:g} s")
        finally:
            with self._lock:
                self._running.discard(proc)
        return ProcessResult(proc.returncode, out.decode("utf-8", errors="replace"))

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            for proc in self._running:
                self._kill(proc)


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
        self.runner = AbortableRunner()
        self._threads: list[threading.Thread] = []

    def __call__(self, request: ConfigRequest, publish: Callable[[Result], None]) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, publish), name="cm-replace", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def abort(self) -> None:
        """collectd is stopping: kill a validation under way, start no helper, clean up."""
        self.runner.abort()
        for thread in self._threads:
            thread.join(ABORT_WAIT)

    def _stopped_result(self, task_id: int) -> Result:
        return Result(
            task_id,
            ResultCode.REPLACE_STOPPED_OUTSIDE,
            "collectd was stopped while the pushed config was being validated; the admin's "
            "stop wins: nothing was changed and no restart was attempted",
        )

    def _run(self, request: ConfigRequest, publish: Callable[[Result], None]) -> None:
        task_id = request.task_id
        log.debug("task %s: pushed config:\n%s", task_id, request.config)
        tx = Transaction(self.paths, runner=self.runner)
        try:
            prepared = tx.prepare(task_id, request.config, require_remote=True)
        except ReplaceFailed as exc:
            if self.runner.aborted:
                publish(self._stopped_result(task_id))
                return
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
        if self.runner.aborted:
            tx.discard_new()
            prepared.lock.release()
            publish(self._stopped_result(task_id))
            return
        spec = helper.HelperSpec(
            task_id=task_id,
            paths=self.paths,
            loads_remote=prepared.loads_remote,
            new_outbox=_outbox_of(request.config),
            old_outbox=OutboxTarget.of(self.config),
            expected_broker=self.config.broker.address,
            log_level=self.config.log_level,
        )
        prepared.lock.hand_off(task_id)
        try:
            self.spawn(spec)
        except (OSError, ValueError) as exc:
            prepared.lock.acquire(task_id, claim_handoff=True, wait=2.0)
            tx.discard_new()
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


def _outbox_of(text: str) -> OutboxTarget | None:
    """The outbox of the remote plugin a config loads (validated: its config loads)."""
    try:
        return OutboxTarget.of(load_config(module_options(text) or {}))
    except ConfigError:
        return None


class Replacer:
    """What :func:`install` set up: status file, outcome courier; stopped with the agent."""

    def __init__(self, agent: RemoteAgent, paths: ReplacerPaths, handler: ConfigReplacer) -> None:
        self.agent = agent
        self.paths = paths
        self.handler = handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._courier, name="cm-replace-out", daemon=True)

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

    def start(self) -> None:
        self.write_status("started")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.handler.abort()

    def _courier(self) -> None:
        """Publish the helper's entries: often while a replacement runs, rarely otherwise."""
        while not self._stop.is_set():
            busy = False
            try:
                self.agent.deliver_foreign()
                busy = lock_busy(self.paths.lock)
            except Exception:
                log.exception("error delivering the replacement outcome")
            self._stop.wait(BUSY_POLL if busy else IDLE_POLL)


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
    handler = ConfigReplacer(config, paths)
    agent.config_handler = handler
    replacer = Replacer(agent, paths, handler)
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
