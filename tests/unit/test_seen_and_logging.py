from __future__ import annotations

import logging

from collectd_monitor import logsetup
from collectd_monitor.commands.seen import SeenTasks


def test_seen_tasks_are_bounded_and_remember_recent_ids():
    seen = SeenTasks(capacity=3)
    assert seen.add(1) and seen.add(2) and seen.add(3)
    assert not seen.add(1)
    assert seen.add(4)  # evicts 2, the least recently seen
    assert 2 not in seen and 1 in seen and len(seen) == 3


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        return lambda text: self.lines.append((level, text))


def test_collectd_handler_masks_secrets_everywhere():
    fake = Recorder()
    logger = logsetup.configure("collectd", "debug", ["hunter2"], collectd=fake)
    child = logging.getLogger("collectd_monitor.test")
    child.info("password is %s", "hunter2")
    try:
        raise ValueError("bad hunter2")
    except ValueError:
        child.exception("failed")
    child.debug("debug line")
    assert ("info", "collectd_monitor.test: password is ********") in fake.lines
    assert all("hunter2" not in text for _, text in fake.lines)
    assert any(level == "error" and "bad ********" in text for level, text in fake.lines)
    assert ("info", "collectd_monitor.test: debug line") in fake.lines
    logger.handlers.clear()


def test_syslog_device_gets_a_syslog_handler():
    import logging
    import logging.handlers

    from collectd_monitor import logsetup

    logger = logsetup.configure("syslog")
    try:
        ours = [h for h in logger.handlers if getattr(h, "_collectd_monitor", False)]
        assert [type(h) for h in ours] == [logging.handlers.SysLogHandler]
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
