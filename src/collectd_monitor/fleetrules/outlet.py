"""Where the central engine's decisions go: collectd notifications, commands, history.

Each output is guarded: one that fails is logged and the others still go out,
for an exception must never reach collectd (it would back off from calling
the plugin) nor stop a send because a notification failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from collectd_monitor.fleet.history import RequestRecord, ResultRecord
from collectd_monitor.fleetrules import notes
from collectd_monitor.fleetrules.decide import Observer, Repair
from collectd_monitor.fleetrules.notes import Note

log = logging.getLogger("collectd_monitor.central")


class Outlet:
    """The outputs of :class:`~collectd_monitor.fleetrules.engine.CentralEngine`."""

    send: Callable[[Repair], None]
    emit: Callable[[Note], None]
    record: Callable[[RequestRecord | ResultRecord], None] | None
    wall: Callable[[], float]
    observe: Observer | None

    def send_failed(self, repair: Repair, text: str) -> None:
        """The MQTT side could not hand ``repair`` to the broker (the engine's)."""
        raise NotImplementedError

    def _flush(self, out: list[Note], sends: list[Repair]) -> None:
        for item in out:
            try:
                self.emit(item)
            except Exception:
                log.exception("cannot dispatch the notification for %s", item.type_instance)
        for repair in sends:
            self._record(
                RequestRecord(
                    repair.task_id,
                    repair.host,
                    "command",
                    repair.action.service,
                    repair.action.command,
                    sent_at=self.wall(),
                    sender=notes.PLUGIN_NAME,
                )
            )
            try:
                self.send(repair)
            except Exception as exc:
                log.exception("cannot send task %d to %s", repair.task_id, repair.host)
                self.send_failed(repair, f"not sent: {exc}")

    def _record(self, item: RequestRecord | ResultRecord) -> None:
        if self.record is None:
            return
        try:
            self.record(item)
        except Exception:
            log.exception("cannot record task %d in the history", item.task_id)

    def _observe(self, now: float, event: str, name: str, host: str, text: str) -> None:
        if self.observe is not None:
            self.observe(now, event, name, host, text)
