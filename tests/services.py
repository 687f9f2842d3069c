"""Make sure Redis and the database server answer; start them with the machine's
commands if not (PostgreSQL by default, MariaDB with ``DT_TEST_DB=mariadb``).

Run as a script by ``make test`` and ``.ci/run``, and imported by ``conftest.py``.
A service that cannot be started fails the run loudly: a missing service never
turns into skipped tests.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time

REDIS = ("127.0.0.1", int(os.environ.get("DT_REDIS_PORT", "6379")))
POSTGRES = ("127.0.0.1", int(os.environ.get("DT_PG_PORT", "5432")))
MARIADB = ("127.0.0.1", int(os.environ.get("DT_MARIADB_PORT", "3306")))
START_MARIADB = ["start-stop-daemon", "--start", "--oknodo", "--background",
                 "--exec", "/usr/sbin/mariadbd"]  # fmt: skip

START_REDIS = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def _start_postgres() -> list[str]:
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    version = versions[-1] if versions else "15"
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def postgres_answers() -> bool:
    try:
        with socket.create_connection(POSTGRES, timeout=1):
            pass
    except OSError:
        return False
    probe = subprocess.run(
        ["pg_isready", "-h", POSTGRES[0], "-p", str(POSTGRES[1])],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def mariadb_answers() -> bool:
    """Whether the server sends its handshake (it does on connect, before any login)."""
    try:
        with socket.create_connection(MARIADB, timeout=1) as sock:
            return len(sock.recv(64)) > 4
    except OSError:
        return False


def _ensure(name: str, answers, command: list[str], deadline: float = 30.0) -> None:
    if answers():
        return
    print(f"[services] {name} does not answer; starting it: {' '.join(command)}", file=sys.stderr)
    try:
        subprocess.run(command, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"[services] could not start {name}: {exc}") from exc
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if answers():
            print(f"[services] {name} is up", file=sys.stderr)
            return
        time.sleep(0.2)
    raise SystemExit(f"[services] {name} still does not answer after {deadline:g} s")


def ensure(database: str = "postgres") -> None:
    """Redis, and the server of ``database`` (``DT_TEST_DB``: postgres, mariadb, sqlite)."""
    _ensure("Redis", redis_answers, START_REDIS)
    if database == "mariadb":
        _ensure("MariaDB", mariadb_answers, START_MARIADB)
    elif database != "sqlite":
        _ensure("PostgreSQL", postgres_answers, _start_postgres())


if __name__ == "__main__":
    ensure(os.environ.get("DT_TEST_DB", "postgres"))
    print("[services] Redis and the database answer")
