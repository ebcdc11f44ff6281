"""Throwaway mosquitto and collectd processes on 127.0.0.1, under a directory.

The demo, the test fixtures and the benchmarks all use these, so what the
tests exercise is exactly what the demo shows. Every process is started in
its own session and stopped (its whole group) by ``stop()``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.confblock import python_block
from collectd_monitor.plugin_support import process_alive as process_alive  # tests use it

LOOPBACK = "127.0.0.1"
COLLECTD = shutil.which("collectd") or "/usr/sbin/collectd"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
TYPES_DB = "/usr/share/collectd/types.db"
PLUGIN_DIR = "/usr/lib/collectd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it is truthy; raise TimeoutError after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting only it must make TLS fail."""


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        run(
            "req",
            "-x509",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.crt",
            "-days",
            "3",
            "-subj",
            f"/CN=collectd-monitor test {name}",
        )
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "collectd-monitor-client")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "3",
            "-extfile",
            f"{name}.ext",
        )
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return Certs(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


# --------------------------------------------------------------------------- processes


class _Process:
    proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _end(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Broker(_Process):
    """mosquitto with four loopback listeners: anonymous, password, TLS, mutual TLS."""

    directory: Path
    certs: Certs | None = None
    user: str = "monitor"
    password: str = "s3cret-pa55"
    port: int = field(default_factory=free_port)
    password_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    extra_conf: str = ""
    persistence: bool = False
    """Keep sessions and queued messages across a restart of the broker."""
    max_packet_size: int | None = None
    """mosquitto's ``max_packet_size``: a client sending a larger packet is disconnected
    (announced to MQTT 5 clients in CONNACK)."""

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        passwd = self.directory / "passwd"
        passwd.write_text("")
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(passwd), self.user, self.password],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o600)
        conf = [
            "per_listener_settings true",
            "persistence true" if self.persistence else "persistence false",
            f"persistence_location {self.directory}/",
            "user root" if os.geteuid() == 0 else "",
            "set_tcp_nodelay true",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_queued_messages 1000",
            f"max_packet_size {self.max_packet_size}" if self.max_packet_size else "",
            "",
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            "",
            f"listener {self.password_port} {LOOPBACK}",
            "allow_anonymous false",
            f"password_file {passwd}",
        ]
        if self.certs is not None:
            tls = [
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
            ]
            conf += ["", f"listener {self.tls_port} {LOOPBACK}", "allow_anonymous true", *tls]
            conf += [
                "",
                f"listener {self.mtls_port} {LOOPBACK}",
                "allow_anonymous true",
                *tls,
                "require_certificate true",
            ]
        conf += ["", self.extra_conf]
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> Broker:
        conf = self.write_config()
        self._spawn([MOSQUITTO, "-c", str(conf)], self.log_path)
        ports = [self.port, self.password_port] + (
            [self.tls_port, self.mtls_port] if self.certs else []
        )
        wait_for(
            lambda: all(port_open(p) for p in ports) or self._died(), timeout, what="mosquitto"
        )
        if self._died():
            raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        self._end()

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def wait_subscribed(self, client_id: str, topic: str, timeout: float = 10.0) -> None:
        """Wait until this broker has taken ``client_id``'s subscription to ``topic``.

        A client logs "connected" before its SUBSCRIBE reaches the broker; a
        message published in between finds no subscriber and is dropped.
        """
        line = re.compile(rf"^\S+ {re.escape(client_id)} \d+ {re.escape(topic)}$", re.MULTILINE)
        wait_for(
            lambda: line.search(self.log_path.read_text(errors="replace")),
            timeout,
            what=f"the subscription of {client_id} to {topic}",
        )


@dataclass
class Collectd(_Process):
    """A real collectd with our plugins, its files under ``directory``."""

    directory: Path
    modules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hostname: str = "sandbox"
    interval: float = 10.0
    extra_conf: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def conf_path(self) -> Path:
        return self.directory / "collectd.conf"

    @property
    def pid_path(self) -> Path:
        return self.directory / "collectd.pid"

    @property
    def log_path(self) -> Path:
        return self.directory / "collectd.log"

    def render_config(self) -> str:
        return "\n".join(
            [
                f'Hostname "{self.hostname}"',
                "FQDNLookup false",
                f'BaseDir "{self.directory}"',
                f'PIDFile "{self.pid_path}"',
                f'PluginDir "{PLUGIN_DIR}"',
                f'TypesDB "{TYPES_DB}"',
                f"Interval {self.interval}",
                "",
                "LoadPlugin logfile",
                "<Plugin logfile>",
                "  LogLevel info",
                f'  File "{self.log_path}"',
                "  Timestamp true",
                "  PrintSeverity true",
                "</Plugin>",
                "",
                self.extra_conf,
                python_block(self.modules) if self.modules else "",
            ]
        )

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render_config())
        return self.conf_path

    def start(
        self, *, daemon: bool = False, wait_log: str | None = None, timeout: float = 15.0
    ) -> Collectd:
        """Start collectd in the foreground (default) or daemonized with a pid file."""
        if not self.conf_path.exists():
            self.write_config()
        env = {**os.environ, **self.env}
        argv = [COLLECTD, "-C", str(self.conf_path)]
        if daemon:
            argv += ["-P", str(self.pid_path)]
            subprocess.run(argv, env=env, check=True, capture_output=True, timeout=timeout)
            wait_for(self.pid, timeout, what="collectd pid file")
        else:
            with open(self.directory / "collectd.stdout", "ab") as out:
                self.proc = subprocess.Popen(
                    [*argv, "-f"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
        if wait_log is not None:
            self.wait_log(wait_log, timeout)
        return self

    def pid(self) -> int | None:
        """The running daemon's pid: the foreground child, or the pid file's."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = regex.search(self.log_text(), start)
            if match is None and self.pid() is None:
                raise RuntimeError(f"collectd is not running; log:\n{self.log_text()[-3000:]}")
            return match

        try:
            return wait_for(found, timeout, what=f"{pattern!r} in collectd's log")  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log:\n{self.log_text()[-3000:]}") from None

    def stop(self, timeout: float = 10.0) -> float:
        """Stop collectd (SIGTERM, then SIGKILL) and return how long it took to exit."""
        started = time.monotonic()
        if self.proc is not None:
            proc = self.proc
            self._end(timeout)
            return time.monotonic() - started if proc.returncode is not None else -1.0
        pid = self.pid()
        if pid is None:
            return 0.0
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return 0.0
        try:
            wait_for(lambda: not process_alive(pid), timeout, interval=0.005, what="collectd exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
        return time.monotonic() - started
