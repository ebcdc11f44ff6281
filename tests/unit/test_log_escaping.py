"""Log lines carry message text escaped: one line per event, whatever a message holds."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from collectd_monitor import logsetup


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __getattr__(self, level: str):
        return self.lines.append


def configured() -> tuple[Recorder, logging.Logger]:
    fake = Recorder()
    logsetup.configure("collectd", "info", ["s3cret-password"], collectd=fake)
    return fake, logging.getLogger("collectd_monitor.test")


def test_newlines_and_controls_are_escaped_not_forwarded():
    fake, log = configured()
    log.warning("task %s refused", "1\ncollectd_monitor.remote: forged line\x1b[31m")
    assert len(fake.lines) == 1
    (line,) = fake.lines
    assert "\n" not in line and "\x1b" not in line
    assert "\\n" in line and "\\x1b" in line


def test_lone_surrogates_are_escaped_and_never_raise():
    fake, log = configured()
    log.warning("task %s refused", "id-\udcff-\ud800")
    (line,) = fake.lines
    line.encode("utf-8")  # what collectd's C side needs
    assert "\\udcff" in line


def test_secrets_are_still_masked_after_escaping():
    fake, log = configured()
    log.warning("login with %s\n", "s3cret-password")
    assert fake.lines == ["collectd_monitor.test: login with ********\\n"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=60))
def test_any_message_value_is_one_printable_utf8_line(value: str):
    fake, log = configured()
    log.warning("service %r command %s", value, value)
    assert len(fake.lines) == 1
    line = fake.lines[0]
    line.encode("utf-8")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)
    assert "\u2028" not in line and "\u2029" not in line
