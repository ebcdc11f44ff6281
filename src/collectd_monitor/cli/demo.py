"""``demo``: the whole loop on loopback, in a temporary directory.

Starts a throwaway mosquitto and a real collectd with the remote plugin, sends
``hello exec`` with ``send-command``, prints the result, and stops everything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from collectd_monitor.testing.sandbox import Broker, Collectd

EXAMPLE_SERVICES = {
    "hello": {"commands": {"exec": 'echo "Hello World!"'}},
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        description="Start a throwaway mosquitto and collectd (with the remote plugin) on "
        "127.0.0.1 under a temporary directory, send 'hello exec', print the result, stop.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.set_defaults(handler=run)


def say(text: str) -> None:
    try:
        print(f"demo: {text}", file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):  # stderr went away; cleanup must still run
        pass


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="collectd-monitor-demo-"))
    broker = Broker(workdir / "broker")
    collectd: Collectd | None = None
    try:
        broker.start()
        say(f"mosquitto listening on {broker.host}")
        config = workdir / "config.json"
        config.write_text(
            json.dumps(
                {
                    "Host": broker.host,
                    "CommandTopic": "collectd-monitor/demo/command",
                    "CommandResultTopic": "collectd-monitor/demo/result",
                    "ClientId": "collectd-monitor-demo",
                    "StateDir": str(workdir / "state"),
                    # The default, spelled out: a config push is root on the host.
                    "AllowConfigReplace": False,
                    "Services": EXAMPLE_SERVICES,
                },
                indent=2,
            )
        )
        config.chmod(0o600)
        collectd = Collectd(
            workdir / "collectd",
            hostname="demo",
            modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config)}},
        )
        collectd.start(wait_log=r"connected to 127\.0\.0\.1")
        say(f"collectd running (pid {collectd.pid()}) with collectd_monitor.remote")
        argv = [
            sys.executable,
            "-m",
            "collectd_monitor",
            "send-command",
            "hello",
            "exec",
            "--host",
            broker.host,
            "--topic",
            "collectd-monitor/demo/command",
            "--result-topic",
            "collectd-monitor/demo/result",
            "--timeout",
            "10",
            "--no-history",  # a throwaway broker's tasks do not belong in the user's history
        ]
        say("$ collectd-monitor send-command hello exec --host " + broker.host + " ...")
        started = time.monotonic()
        sent = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - started
        print(sent.stdout, end="")
        say(
            f"send-command exited {sent.returncode} after {elapsed * 1000:.0f} ms "
            "(process start included)"
        )
        try:  # the task's end line follows its result by a few milliseconds
            collectd.wait_log(r"hello/exec ended with code", timeout=5)
        except TimeoutError:
            say("the plugin has not logged the end of the task")
        log_lines = [
            line for line in collectd.log_text().splitlines() if "collectd_monitor" in line
        ]
        say("collectd's log from the plugin:\n  " + "\n  ".join(log_lines))
        return sent.returncode
    finally:
        if collectd is not None:
            took = collectd.stop()
            say(f"collectd stopped in {took * 1000:.0f} ms")
        broker.stop()
        say("mosquitto stopped")
        if args.keep:
            say(f"files kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
