"""The local plugin inside a real collectd, fed with real values and notifications.

Values go in through collectd's ``unixsock`` plugin (PUTVAL with explicit
timestamps, one per "interval"); what the plugin did comes out as
notifications, which collectd's ``logfile`` plugin prints line by line.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.rules import notify
from collectd_monitor.testing.sandbox import Collectd, wait_for

pytestmark = pytest.mark.integration

NOTE = re.compile(
    r"Notification: severity = (?P<severity>\w+), host = (?P<host>[^,]*), "
    r"plugin = (?P<plugin>[^,]*), (?:plugin_instance = (?P<plugin_instance>[^,]*), )?"
    r"type = (?P<type>[^,]*), (?:type_instance = (?P<type_instance>[^,]*), )?"
    r"message = (?P<message>.*)$",
    re.M,
)
SLOW = 8.0
"""Deadline for anything a test waits for (generous: never a timing assertion)."""


@dataclass
class Local:
    collectd: Collectd
    config_path: Path
    rules_dir: Path
    socket_path: Path
    hostname: str
    clock: float = field(default_factory=lambda: float(int(time.time())) - 1000)

    def log(self) -> str:
        return self.collectd.log_text()

    def putval(self, identifier: str, *values: float, interval: float = 1.0) -> None:
        """One PUTVAL, one interval later than the previous one."""
        self.clock += interval
        joined = ":".join(repr(v) for v in values)
        line = f"PUTVAL {self.hostname}/{identifier} interval={interval} {self.clock}:{joined}\n"
        self.command(line)

    def putnotif(self, severity: str, message: str, **fields: str) -> None:
        parts = " ".join(f"{k}={v}" for k, v in fields.items())
        self.command(
            f"PUTNOTIF severity={severity} time={time.time():.3f} "
            f'host={self.hostname} {parts} message="{message}"\n'
        )

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode())
            reply = sock.makefile().readline()
        assert reply.startswith("0 "), f"{line.strip()} -> {reply.strip()}"
        return reply

    def ours(self) -> list[dict[str, Any]]:
        """Notifications the local plugin dispatched, oldest first, message decoded."""
        found = []
        for match in NOTE.finditer(self.log()):
            note = {k: v or "" for k, v in match.groupdict().items()}
            if note["plugin"] == notify.PLUGIN_NAME:
                note["json"] = json.loads(note["message"])
                found.append(note)
        return found

    def wait_ours(
        self, count: int = 1, type_instance: str | None = None, timeout: float = SLOW
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            notes = [
                n
                for n in self.ours()
                if type_instance is None or n["type_instance"] == type_instance
            ]
            return notes if len(notes) >= count else None

        try:
            return wait_for(enough, timeout, what=f"{count} notification(s)")  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from None


def _listening(path: Path) -> bool:
    """The socket file appears before collectd listens on it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class LocalFactory:
    tmp_path: Path
    started: list[Collectd] = field(default_factory=list)

    def __call__(
        self,
        *,
        rules: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        services: dict[str, Any] | None = None,
        extra_conf: str = "",
        settings: dict[str, Any] | None = None,
        wait: str | None = "Initialization complete",
        module_options: dict[str, Any] | None = None,
    ) -> Local:
        directory = self.tmp_path / f"collectd-{len(self.started)}"
        rules_dir = directory / "local"
        rules_dir.mkdir(parents=True)
        for name, text in (files or {}).items():
            (rules_dir / name).write_text(textwrap.dedent(text))
        config: dict[str, Any] = {
            "Services": services
            if services is not None
            else {
                "hello": {"Commands": {"exec": 'echo "Hello World!"'}},
            },
            "LocalMonitorConfigDir": str(rules_dir),
            **(settings or {}),
        }
        if rules is not None:
            config["Rules"] = rules
        config_path = directory / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        socket_path = directory / "sock"
        hostname = f"local-{len(self.started)}"
        # One write thread keeps the values of a series in the order they were sent.
        conf = (
            textwrap.dedent(f"""
            WriteThreads 1
            LoadPlugin unixsock
            <Plugin unixsock>
              SocketFile "{socket_path}"
              SocketPerms "0600"
            </Plugin>
        """)
            + extra_conf
        )
        collectd = Collectd(
            directory,
            modules={
                "collectd_monitor.local": {
                    "MonitorConfigPath": str(config_path),
                    **(module_options or {}),
                }
            },
            hostname=hostname,
            interval=1.0,
            extra_conf=conf,
        )
        self.started.append(collectd)
        collectd.start(wait_log=wait)
        wait_for(lambda: _listening(socket_path), SLOW, what="unixsock socket")
        return Local(collectd, config_path, rules_dir, socket_path, hostname)

    def stop_all(self) -> None:
        for collectd in self.started:
            collectd.stop()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalFactory]:
    factory = LocalFactory(tmp_path)
    yield factory
    factory.stop_all()


def value_rule(name: str, **fields: Any) -> dict[str, Any]:
    rule = {
        "Name": name,
        "Plugin": "app",
        "Type": "gauge",
        "Action": {"Service": "hello", "Command": "exec"},
        "Cooldown": 0,
    }
    rule.update(fields)
    return rule


# --------------------------------------------------------------------------- rule files


HELLO_FILE = """
    def memory_free_is_low(metric):
        if metric.plugin == "app" and metric.type == "gauge" and metric.values[0] < 10:
            assert metric.dsnames == ("value",) and metric.dstypes == ("gauge",)
            assert metric.host.startswith("local-") and metric.interval == 1.0
            return {"service": "hello", "command": "exec"}

    metric_handlers = memory_free_is_low
"""


def test_python_handler_fires_and_notifies_with_the_documented_fields(local):
    m = local(files={"example.py": HELLO_FILE})
    m.putval("app-x/gauge-free", 50)
    m.putval("app-x/gauge-free", 5)
    note = m.wait_ours()[0]
    assert note["severity"] == "OKAY"
    assert note["plugin"] == "collectd_monitor.local"
    assert note["type"] == "commands"
    assert note["type_instance"] == "example.py::metric::memory_free_is_low"
    assert note["host"] == m.hostname
    assert set(note["json"]) == {"task_id", "code", "message"}
    assert note["json"]["code"] == 0
    assert note["json"]["message"] == "Hello World!"
    assert isinstance(note["json"]["task_id"], int)


def fired(m: Local, name: str) -> int:
    """How many runs the log shows for the rule called ``name``."""
    return len(re.findall(rf"{re.escape(name)}: task \d+: running", m.log()))


def marker(m: Local, count: int = 1) -> None:
    """Send a value that the ``marker`` rule fires on and wait for its result.

    With one write thread, every value sent before it has been judged by then.
    """
    m.putval("marker/gauge", 1000)
    m.wait_ours(count, type_instance="config.json::metric::marker")


MARKER = {
    "Name": "marker",
    "Plugin": "marker",
    "Type": "gauge",
    "Above": 1,
    "Cooldown": 0,
    "MaxRuns": 1000,
    "Action": {"Service": "hello", "Command": "exec"},
}


def test_a_table_of_handlers_in_several_files(local):
    m = local(
        files={
            "a.py": """
                def low(metric):
                    if metric.type_instance == "low" and metric.values[0] < 10:
                        return {"service": "hello", "command": "exec"}

                def high(metric):
                    if metric.type_instance == "high" and metric.values[0] > 90:
                        return {"service": "other", "command": "run"}

                metric_handlers = {"low_value": low, "high_value": high}
            """,
            "b.py": """
                def never(metric):
                    return None

                metric_handlers = {"never": never}
            """,
        },
        services={
            "hello": {"Commands": {"exec": "echo low"}},
            "other": {"Commands": {"run": "echo high; exit 3"}},
        },
    )
    m.putval("app/gauge-low", 5)
    m.putval("app/gauge-high", 95)
    notes = {n["type_instance"]: n for n in m.wait_ours(2)}
    assert set(notes) == {"a.py::metric::low_value", "a.py::metric::high_value"}
    assert notes["a.py::metric::low_value"]["severity"] == "OKAY"
    assert notes["a.py::metric::low_value"]["json"]["message"] == "low"
    assert notes["a.py::metric::high_value"]["severity"] == "FAILURE"
    assert notes["a.py::metric::high_value"]["json"]["code"] == 3
    assert "1 rule file" not in m.log() and "3 metric handler(s)" in m.log()


THRESHOLD = """
    LoadPlugin threshold
    <Plugin threshold>
      <Plugin "app">
        <Type "gauge">
          Instance "load"
          FailureMax 90
        </Type>
      </Plugin>
    </Plugin>
"""


def test_notification_handler_fed_by_the_threshold_plugin(local):
    m = local(
        files={
            "notes.py": """
                def on_threshold(n):
                    if n.plugin == "app" and n.severity == 1 and "above" in n.message:
                        assert n.type == "gauge" and n.type_instance == "load"
                        return {"service": "hello", "command": "exec"}

                notification_handlers = {"app_overload": on_threshold}
            """
        },
        extra_conf=THRESHOLD,
    )
    m.putval("app/gauge-load", 50)
    m.putval("app/gauge-load", 95)
    note = m.wait_ours()[0]
    assert note["type_instance"] == "notes.py::notification::app_overload"
    assert note["severity"] == "OKAY"
    assert note["json"]["message"] == "Hello World!"
    assert "no rule needs values: write callback not registered" in m.log()


def test_declarative_notification_rule_repairs_what_threshold_detects(local):
    rule = {
        "Name": "overload",
        "Plugin": "app",
        "Type": "gauge",
        "TypeInstance": "load",
        "Action": {"Service": "hello", "Command": "exec"},
        "Cooldown": 0,
    }
    m = local(rules={"Notifications": [rule]}, extra_conf=THRESHOLD)
    m.putval("app/gauge-load", 95)
    note = m.wait_ours()[0]
    assert note["type_instance"] == "config.json::notification::overload"
    assert note["json"]["code"] == 0
    m.putval("app/gauge-load", 10)  # threshold sends OKAY: the fault is cleared
    m.collectd.wait_log(r"notification::overload: recovered", SLOW)


def test_broken_rule_files_are_reported_and_the_others_still_work(local):
    m = local(
        files={
            "a_syntax.py": "x = 1\ndef broken(:\n    pass\n",
            "b_raises.py": "import os\n\nraise RuntimeError('no config here')\n",
            "c_wrong.py": "metric_handlers = 42\n",
            "d_good.py": HELLO_FILE,
        }
    )
    log = m.log()
    assert re.search(r"a_syntax\.py line 2: syntax error", log), log
    assert re.search(r"b_raises\.py line 3: RuntimeError: no config here; file skipped", log)
    assert "c_wrong.py: TypeError: metric_handlers must be a function or a mapping" in log
    m.putval("app/gauge-free", 1)
    assert m.wait_ours()[0]["type_instance"] == "d_good.py::metric::memory_free_is_low"


def test_a_raising_handler_is_reported_with_its_line_and_isolated(local):
    m = local(
        files={
            "raiser.py": """
                def divide(metric):
                    return 1 / 0

                def bad_return(metric):
                    return "restart please"

                metric_handlers = {"divide": divide, "bad_return": bad_return}
            """,
            "z_good.py": HELLO_FILE,
        }
    )
    for _ in range(20):
        m.putval("app/gauge-free", 50)
    m.putval("app/gauge-free", 1)
    assert m.wait_ours()[0]["type_instance"] == "z_good.py::metric::memory_free_is_low"
    log = m.log()
    assert re.search(r"raiser\.py line 3: raiser\.py::metric::divide raised ZeroDivisionError", log)
    assert re.search(r"raiser\.py line 5: raiser\.py::metric::bad_return returned 'restart", log)
    # Reported once, not once per value (collectd would drown in it).
    assert log.count("raised ZeroDivisionError") == 1
    assert m.collectd.pid() is not None


@pytest.mark.parametrize(
    ("limit", "bad", "good"),
    [({"Above": 90}, 95, 50), ({"Below": 10}, 5, 50)],
    ids=["above", "below"],
)
def test_declarative_limit_fires_after_consecutive_hits(local, limit, bad, good):
    rule = value_rule("limit", TypeInstance="x", Hits=3, **limit)
    m = local(rules={"Values": [rule, MARKER]})
    for value in (bad, bad, good, bad, bad, good):  # never three in a row
        m.putval("app/gauge-x", value)
    marker(m)
    assert fired(m, "config.json::metric::limit") == 0
    for value in (bad, bad, bad):
        m.putval("app/gauge-x", value)
    note = m.wait_ours(type_instance="config.json::metric::limit")[0]
    assert note["json"]["message"] == "Hello World!"
    assert "config.json::metric::limit" in m.log()


def test_hysteresis_keeps_a_rule_firing_until_well_inside_the_limit(local):
    name = "config.json::metric::hot"
    rule = value_rule("hot", Above=90, Hysteresis=10, Hits=2, MaxRuns=100)
    m = local(rules={"Values": [rule, MARKER]})
    m.putval("app/gauge", 95)
    m.putval("app/gauge", 95)
    m.wait_ours(1, name)
    m.putval("app/gauge", 85)  # below 90 but inside the band: still at fault, runs again
    m.wait_ours(2, name)
    m.putval("app/gauge", 79)  # 10 below the limit: recovered
    m.collectd.wait_log(rf"{re.escape(name)}: recovered", SLOW)
    m.putval("app/gauge", 95)  # one hit after recovery: Hits=2 not reached
    marker(m)
    assert fired(m, name) == 2


def test_missing_data_is_a_fault(local):
    gone = value_rule("gone", TypeInstance="beat", Missing=2)
    never = value_rule("never", TypeInstance="nothing", Missing=2, Interval=0.5)
    m = local(rules={"Values": [gone, never]})
    for _ in range(3):
        m.putval("app/gauge-beat", 1)
    m.wait_ours(1, "config.json::metric::gone")
    m.wait_ours(1, "config.json::metric::never")
    log = m.log()
    running = r"task \d+: running hello/exec"
    assert re.search(rf"metric::gone: {running} \(no value from .*app/gauge-beat", log)
    assert re.search(rf"metric::never: {running} \(no value at all", log)


def test_cooldown_allows_one_run_for_a_lasting_fault(local):
    name = "config.json::metric::hot"
    m = local(rules={"Values": [value_rule("hot", Above=90, Cooldown=3600), MARKER]})
    m.putval("app/gauge", 95)
    m.wait_ours(1, name)
    for _ in range(10):
        m.putval("app/gauge", 95)
    marker(m)
    assert fired(m, name) == 1
    assert len([n for n in m.ours() if n["type_instance"] == name]) == 1


def test_circuit_breaker_suspends_notifies_and_resumes(local):
    name = "config.json::metric::flappy"
    rule = value_rule("flappy", Above=90, Cooldown=0, MaxRuns=2, Window=3600, ResumeAfter=1)
    m = local(rules={"Values": [rule, MARKER]})
    m.putval("app/gauge", 95)
    m.wait_ours(1, name)
    m.putval("app/gauge", 95)
    m.wait_ours(2, name)
    m.putval("app/gauge", 95)  # a third run is wanted: the breaker opens instead
    suspended = m.wait_ours(3, name)[2]
    assert suspended["severity"] == "FAILURE"
    assert suspended["json"]["code"] == notify.SUSPENDED
    assert "circuit breaker open: 2 runs within 3600 s" in suspended["json"]["message"]
    assert suspended["json"]["task_id"] == m.wait_ours(2, name)[1]["json"]["task_id"]
    for _ in range(5):
        m.putval("app/gauge", 95)
    marker(m)
    assert fired(m, name) == 2
    m.putval("app/gauge", 50)  # OK now; after ResumeAfter without a fault it closes
    resumed = m.wait_ours(4, name)[3]
    assert resumed["severity"] == "OKAY"
    assert "circuit breaker closed" in resumed["json"]["message"]
    m.putval("app/gauge", 95)
    m.wait_ours(5, name)
    assert fired(m, name) == 3


def test_own_notifications_never_trigger_own_rules(local):
    m = local(
        services={"hello": {"Commands": {"exec": "echo one", "again": "echo two"}}},
        files={
            "echo.py": f"""
                def every(n):
                    with open({str(Path("seen.txt"))!r}, "a") as out:
                        out.write(n.plugin + "\\n")
                    return {{"service": "hello", "command": "exec"}}

                notification_handlers = every
            """
        },
        rules={
            "Defaults": {"Cooldown": 0, "MaxRuns": 1000},
            "Notifications": [
                {
                    "Name": "all",
                    "Plugin": "*",
                    "Severity": ["failure", "warning", "okay"],
                    "Recover": False,
                    "Action": {"Service": "hello", "Command": "again"},
                }
            ],
        },
    )
    m.putnotif("failure", "first", plugin="outside", type="gauge")
    m.wait_ours(2)
    m.putnotif("warning", "second", plugin="outside", type="gauge")
    m.wait_ours(4)
    assert fired(m, "echo.py::notification::every") == 2
    assert fired(m, "config.json::notification::all") == 2
    seen = (m.collectd.directory / "seen.txt").read_text().split()
    assert seen == ["outside", "outside"]


def test_a_slow_command_does_not_delay_other_rules(local):
    services = {
        "slow": {"Commands": {"run": "sleep 60"}},
        "hello": {"Commands": {"exec": 'echo "Hello World!"'}},
    }
    slow = value_rule("slow", TypeInstance="slow", Above=1)
    slow["Action"] = {"Service": "slow", "Command": "run"}
    twin = value_rule("twin", TypeInstance="twin", Above=1)
    twin["Action"] = {"Service": "slow", "Command": "run"}
    fast = value_rule("fast", TypeInstance="fast", Above=1)
    m = local(rules={"Values": [slow, twin, fast]}, services=services)
    m.putval("app/gauge-slow", 5)
    m.collectd.wait_log(r"metric::slow: task \d+: running slow/run", SLOW)
    m.putval("app/gauge-twin", 5)  # same command: one run at a time
    m.putval("app/gauge-fast", 5)
    note = m.wait_ours(1)[0]
    assert note["type_instance"] == "config.json::metric::fast"
    assert "metric::twin: slow/run is already running; not started again" in m.log()
    assert fired(m, "config.json::metric::twin") == 0


def test_long_output_is_cut_to_255_characters_of_valid_json(local):
    services = {"hello": {"Commands": {"exec": "printf 'é\"%.0s' $(seq 1 400)"}}}
    m = local(rules={"Values": [value_rule("chatty", Above=1)]}, services=services)
    m.putval("app/gauge", 5)
    note = m.wait_ours()[0]
    assert len(note["message"]) <= 255
    assert note["json"]["message"].endswith("[cut, 800 chars]")
    assert note["json"]["message"].startswith('é"é"')


# --------------------------------------------------------------------------- handler isolation

HANG_FILE = """
    import threading

    def hang(item):
        if getattr(item, "type_instance", "") == "hang" or getattr(item, "message", "") == "hang":
            threading.Event().wait()  # never returns

    def spin(metric):
        while metric.type_instance == "spin":  # never returns either, and keeps a core busy
            pass

    metric_handlers = {"hang": hang, "spin": spin}
    notification_handlers = {"hang": hang}
"""


def test_a_hung_handler_stalls_neither_collectd_nor_declarative_rules(local, tmp_path):
    csv = tmp_path / "csv"
    after = value_rule("after", TypeInstance="after", Above=1)
    note_rule = {
        "Name": "outside",
        "Plugin": "outside",
        "Action": {"Service": "hello", "Command": "exec"},
        "Cooldown": 0,
    }
    m = local(
        files={"hang.py": HANG_FILE},
        rules={
            "Defaults": {"HandlerTimeBudget": 0.2},
            "Values": [after],
            "Notifications": [note_rule],
        },
        extra_conf=f'LoadPlugin csv\n<Plugin csv>\n  DataDir "{csv}"\n</Plugin>\n',
    )
    m.putval("app/gauge-hang", 5)  # the metric handler "hang" never returns from this one
    m.putnotif("failure", "hang", plugin="other", type="gauge")  # nor from this one
    m.putval("app/gauge-spin", 5)  # nor does "spin", which never lets go of the CPU
    # A series dispatched after the hangs began still reaches the csv plugin ...
    m.putval("app/gauge-after", 5)
    series = csv / m.hostname / "app"
    wait_for(
        lambda: any(p.name.startswith("gauge-after") for p in series.glob("*")),
        SLOW,
        what="csv file of the series sent after the hang",
    )
    # ... and declarative value and notification rules still fire.
    m.wait_ours(1, "config.json::metric::after")
    m.putnotif("failure", "still here", plugin="outside", type="gauge")
    m.wait_ours(1, "config.json::notification::outside")
    # Each stuck call is abandoned in turn, so every handler got its event.
    for name in ("hang.py::metric::hang", "hang.py::notification::hang", "hang.py::metric::spin"):
        overrun = m.wait_ours(1, name)[0]
        assert overrun["json"]["code"] == ResultCode.HANDLER_OVERRUN
        assert "its thread is abandoned" in overrun["json"]["message"]
    proc = m.collectd.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"collectd still runs 5 s after SIGTERM\n{m.log()[-3000:]}") from None


SLOW_FILE = """
    import time

    def sluggish(metric):
        if metric.type_instance == "slow":
            time.sleep(0.6)

    metric_handlers = {"sluggish": sluggish}
"""


def test_a_slow_handler_is_reported_suspended_and_resumed(local):
    name = "slow.py::metric::sluggish"
    m = local(
        files={"slow.py": SLOW_FILE},
        rules={"Defaults": {"HandlerTimeBudget": 0.2, "ResumeAfter": 1}},
    )

    def suspended() -> bool:
        m.putval("app/gauge-slow", 1)  # keep calling it until it is suspended
        return any(n["json"]["code"] == notify.SUSPENDED for n in m.ours())

    wait_for(suspended, 3 * SLOW, interval=0.1, what="suspension of the slow handler")
    notes = [n for n in m.ours() if n["type_instance"] == name]
    overruns = [n for n in notes if n["json"]["code"] == ResultCode.HANDLER_OVERRUN]
    assert len(overruns) == 3, notes
    assert all(n["severity"] == "WARNING" for n in overruns)
    assert "0.2 s" in overruns[0]["json"]["message"]
    stop = notes[3]
    assert stop["severity"] == "FAILURE" and stop["json"]["code"] == notify.SUSPENDED
    assert "3 overruns" in stop["json"]["message"]
    assert re.search(rf"{re.escape(name)}: .*over its 0\.2 s time budget", m.log())
    resumed = m.wait_ours(5, name)[4]  # after ResumeAfter, it is called again
    assert resumed["severity"] == "OKAY" and "resumed" in resumed["json"]["message"]
