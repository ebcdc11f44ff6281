"""Stage stamps for ``trace_round_trip.py``: wraps the agent's own methods in place.

Imported by the in-process trace, and by collectd itself (``Import
"trace_hook"`` with this directory on PYTHONPATH) for ``--collectd``, where it
writes the stamps of every round trip to its ``<Module>`` block's ``Output``
file when collectd stops. Times are ``time.perf_counter()`` (CLOCK_MONOTONIC,
the same clock in every process on the machine).
"""

from __future__ import annotations

import json
import time
from typing import Any

from collectd_monitor import process as process_module
from collectd_monitor.commands import agent as agent_module
from collectd_monitor.commands import tasks as tasks_module
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.delivery import Delivery
from collectd_monitor.executor import CommandExecutor

rounds: list[dict[str, float]] = []
"""One dict of stage -> time per command message, in arrival order."""

FIRST = "1 message in (link thread)"


def stamp(name: str) -> None:
    if name == FIRST:
        rounds.append({})
    if rounds:
        rounds[-1].setdefault(name, time.perf_counter())


def wrap(owner: Any, name: str, before: str | None, after: str | None) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after:
                stamp(after)

    setattr(owner, name, wrapped)


def instrument() -> None:
    wrap(RemoteAgent, "handle_message", FIRST, None)
    wrap(CommandExecutor, "submit", "2 checks done, submit", None)
    wrap(process_module.subprocess, "Popen", "3 worker picked the job", "4 spawned")
    wrap(process_module, "_collect", None, "5 exit noticed, pipes drained")
    wrap(tasks_module, "command_result", "6 reaped", None)
    wrap(agent_module.Outbox, "put", None, "7 outbox written")
    wrap(Delivery, "send", None, "8 published (paho queued/written)")


def _in_collectd() -> None:
    try:
        import collectd  # type: ignore[import-not-found]
    except ImportError:
        return
    output: dict[str, str] = {}

    def config(conf: Any) -> None:
        for child in conf.children:
            output[child.key.lower()] = str(child.values[0])

    def shutdown() -> None:
        if "output" in output:
            with open(output["output"], "w", encoding="utf-8") as handle:
                json.dump(rounds, handle)

    instrument()
    collectd.register_config(config)
    collectd.register_shutdown(shutdown)


_in_collectd()
