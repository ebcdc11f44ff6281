"""Reload config.json when it changes, without a collectd restart.

The original re-read its config file for every command, so a service added to
config.json was served at once. Reading and checking JSON per message is too
slow for us, so :class:`ConfigWatch` compares the file's (mtime, size, inode)
- one ``stat()`` - before each command and on a timer, and loads the file
only when that changed. A new config that does not load is logged and the old
one kept: a typo in config.json never takes a host's recovery commands away.

What can change at run time is what is read per message (Services, Security,
log level); the broker connection, topics, state directory, executor limits
and config replacement are set up once, so a change there is named in the log
line as needing a collectd restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from collectd_monitor.config import MonitorConfig
from collectd_monitor.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
"""Seconds between two checks on the timer (a command also checks first)."""

RESTART_FIELDS = (
    ("broker", "broker settings"),
    ("command_topic", "CommandTopic"),
    ("result_topic", "CommandResultTopic"),
    ("status_topic", "StatusTopic"),
    ("state_dir", "StateDir"),
    ("duplicate_memory", "DuplicateMemory"),
    ("max_concurrent_commands", "MaxConcurrentCommands"),
    ("max_queued_commands", "MaxQueuedCommands"),
    ("command_timeout", "CommandTimeout"),
    ("max_output_bytes", "MaxOutputBytes"),
    ("allow_config_replace", "AllowConfigReplace"),
    ("collectd", "Services.collectd paths"),
    ("log_device", "LogDevice"),
)
"""MonitorConfig fields read once at start-up, and how an operator knows them."""

FileKey = tuple[int, int, int]


@dataclass(frozen=True)
class Change:
    """A config that replaced the running one, and what of it waits for a restart."""

    config: MonitorConfig
    needs_restart: tuple[str, ...]


def needs_restart(old: MonitorConfig, new: MonitorConfig) -> tuple[str, ...]:
    return tuple(
        name for field, name in RESTART_FIELDS if getattr(old, field) != getattr(new, field)
    )


def file_key(path: str) -> FileKey | None:
    """(mtime in ns, size, inode) of ``path``; None when it cannot be stat'ed."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class ConfigWatch:
    """Watches one config.json; hands a config that loads to ``apply``.

    ``load`` reads and checks the file as the plugin did at start-up and raises
    :class:`ConfigError` when it is not usable. :meth:`check` is cheap when
    nothing changed; it is safe to call from any thread.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        load: Callable[[], MonitorConfig],
        apply: Callable[[Change], None],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if not config.source:
            raise ValueError("nothing to watch: the config has no file")
        self.path = config.source
        self.current = config
        self.load = load
        self.apply = apply
        self.interval = interval
        self._key = file_key(self.path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Reload if the file changed; True when a new config was applied."""
        with self._lock:
            key = file_key(self.path)
            if key == self._key:
                return False
            self._key = key
            if key is None:
                log.error("%s: cannot read the config file; keeping the running config", self.path)
                return False
            try:
                new = self.load()
            except ConfigError as exc:
                log.error("the changed config does not load: %s; keeping the running config", exc)
                return False
            change = Change(new, needs_restart(self.current, new))
            self.current = new
        self._report(change)
        self.apply(change)
        return True

    def _report(self, change: Change) -> None:
        services = ", ".join(sorted(change.config.services)) or "none"
        line = f"{self.path} changed: config reloaded; services now: {services}"
        if change.needs_restart:
            log.warning(
                "%s; changed settings that take effect only after a collectd restart: %s",
                line,
                ", ".join(change.needs_restart),
            )
        else:
            log.info("%s", line)

    # -- the timer -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="collectd-monitor-config-watch", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the timer; returns at once (the thread is a daemon)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watch must outlive any surprise
                log.exception("error while checking %s", self.path)
