"""A real PostgreSQL for the history tests, from Debian's ``postgresql`` package.

``postgres_server`` (session): ``initdb`` + ``postgres`` on a free loopback
port, in a directory of its own under /tmp, run as the ``postgres`` user when
we are root (the server refuses to run as root), stopped afterwards.
``postgres_url``: a fresh database on it for each test, as a URL with a password.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.testing.sandbox import LOOPBACK, free_port, wait_for

PG_USER = "cmtest"
PG_PASSWORD = "pg-Secr3t-w0rd"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"no PostgreSQL {name} under /usr/lib/postgresql: install Debian's postgresql "
            "package (./run.sh setup does)"
        )
    return found[-1]


@dataclass
class PostgresServer:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres", password: str = PG_PASSWORD) -> str:
        return f"postgresql://{PG_USER}:{password}@{LOOPBACK}:{self.port}/{database}"

    def _as_owner(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            entry = pwd.getpwnam("nobody")
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        owner = self._as_owner()
        if owner:
            os.chown(self.directory, owner["user"], owner["group"])
        data = self.directory / "data"
        pwfile = self.directory / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if owner:
            os.chown(pwfile, owner["user"], owner["group"])
        subprocess.run(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            cwd=self.directory,
            **owner,
        )
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - the server's stdout
        with log:
            self.proc = subprocess.Popen(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(data),
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.directory),
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=50",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                **owner,
            )
        wait_for(self._ready, 30, interval=0.05, what="PostgreSQL to accept connections")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.directory / "postgres.log").read_text(errors="replace")
            raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{log[-2000:]}")
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def create_database(self) -> str:
        import psycopg

        name = f"history_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a name of ours, not input
        return self.url(name)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGINT)  # "fast" shutdown: disconnects clients
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="cm-postgres-"))
    server = PostgresServer(directory, free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
