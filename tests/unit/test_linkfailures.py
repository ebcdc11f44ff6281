"""The link's failure log: one WARNING per reason, quiet repeats, a summary, the recovery."""

from __future__ import annotations

import logging

from collectd_monitor.commands.linkfailures import FailureLog, SocketErrors, explain

LOGGER = "test.linkfailures"


def levels(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_repeats_are_debug_a_summary_comes_every_interval_and_recovery_is_info(caplog):
    now = [0.0]
    failures = FailureLog(
        logging.getLogger(LOGGER), "broker:1883", summary_every=600, clock=lambda: now[0]
    )
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for _ in range(100):
        now[0] += 5
        failures.failed("cannot connect to broker:1883: refused")
    warnings = [text for level, text in levels(caplog) if level == logging.WARNING]
    assert warnings[0] == "cannot connect to broker:1883: refused; retrying with back-off"
    assert len(warnings) == 1  # 500 s: no summary yet
    now[0] += 200
    failures.failed("cannot connect to broker:1883: refused")
    warnings = [text for level, text in levels(caplog) if level == logging.WARNING]
    assert len(warnings) == 2 and "after 101 failed attempts" in warnings[1]
    assert failures.recovered() == 101
    assert levels(caplog)[-1] == (
        logging.INFO,
        "connected again to broker:1883 after 101 failed attempts",
    )
    failures.failed("cannot connect to broker:1883: refused")  # a new outage warns again
    assert levels(caplog)[-1][0] == logging.WARNING


def test_a_kind_groups_reasons_whose_text_varies(caplog):
    failures = FailureLog(logging.getLogger(LOGGER), "b")
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    failures.failed("closed: EOF", kind="early")
    failures.failed("closed: alert", kind="early")
    failures.failed("other reason")
    assert [level for level, _ in levels(caplog)] == [
        logging.WARNING,
        logging.DEBUG,
        logging.WARNING,
    ]


def test_socket_errors_keep_paho_s_last_socket_error_once():
    errors = SocketErrors()
    errors.on_log(None, None, 16, "Sending CONNECT")
    errors.on_log(None, None, 8, "failed to receive on socket: [Errno 104] reset")
    assert errors.take() == "[Errno 104] reset"
    assert errors.take() is None


def test_hints_name_the_likely_cause():
    assert "expect TLS" in explain("[Errno 104] reset", secure=False, client_cert=False)
    assert "client certificate" in explain("EOF occurred", secure=True, client_cert=False)
    assert "does not seem to speak TLS" in explain(
        "[SSL: WRONG_VERSION_NUMBER] wrong version number", secure=True, client_cert=True
    )
    assert "closed the connection" in explain(None, secure=True, client_cert=True)
