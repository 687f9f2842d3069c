"""Helpers of the test suite: waiting with deadlines and real cluster processes."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from distributed_tasks.compat import TaskResultStatus
from distributed_tasks.localcluster import LocalCluster
from distributed_tasks.localcluster import poll_until as _poll_until

ROOT = Path(__file__).resolve().parent.parent

# The environment variable that moves the test settings' database port, per engine.
_PORT_VARIABLE = {"postgresql": "DT_PG_PORT", "mysql": "DT_MARIADB_PORT"}


def database_port_variable() -> str | None:
    """What moves the test database's port in a subprocess (tests/settings.py); None on
    SQLite, which has no server to take away."""
    from django.conf import settings

    return _PORT_VARIABLE.get(settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1])


def needs_a_database_server():
    """Skip a test that takes the database server away through TCP: SQLite has none."""
    import pytest

    return pytest.mark.skipif(database_port_variable() is None, reason="TCP")


def poll_until(predicate, *, timeout=10.0, interval=0.05, message="condition"):
    """Like the library's, but a missed deadline fails the test as an assertion."""
    try:
        return _poll_until(predicate, timeout=timeout, interval=interval, message=message)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def queued(redis, node: str) -> list[bytes]:
    """The raw messages waiting in a node's queue on Redis, every priority level's list."""
    from distributed_tasks import keys

    return [raw for key in keys.queue_keys(node) for raw in redis.lrange(key, 0, -1)]


def assert_backend_fail_result(result) -> None:
    """``tests.tasks.backend_fail``'s result: FAILED with its one ValueError and traceback."""
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert (error.exception_class_path, error.exception_class) == (
        "builtins.ValueError",
        ValueError,
    )
    assert "raise ValueError(message)" in error.traceback


class Cluster(LocalCluster):
    """Worker subprocesses that open the test database and log at INFO for diagnosis."""

    def __init__(self, log_dir: Path, db_name: str) -> None:
        super().__init__(
            ROOT / "manage.py",
            log_dir,
            env={
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DT_TEST_DB_NAME": db_name,
                "DT_LOG_LEVEL": "INFO",
            },
        )

    def wait_live(self, *nodes: str, timeout: float = 60.0) -> None:
        try:
            super().wait_live(*nodes, timeout=timeout)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(str(exc)) from None

    def wait_leader(self, *, timeout: float = 30.0, other_than: str | None = None):
        try:
            return super().wait_leader(timeout=timeout, other_than=other_than)
        except TimeoutError as exc:
            raise AssertionError(str(exc)) from None

    def stacks(self, tail: int = 12000) -> str:
        """Every running process's Python stacks, pool children included (``py-spy dump``):
        what a hung process was doing, for the report of a failed test."""
        out = []
        for key, proc in sorted(self.procs.items()):
            if proc.poll() is not None:
                continue
            try:
                dump = subprocess.run(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "dump",
                        "--subprocesses",
                        "--pid",
                        str(proc.pid),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                text = dump.stdout + dump.stderr
            except (OSError, subprocess.TimeoutExpired) as exc:
                text = f"py-spy dump failed: {exc}"
            out.append(f"----- {key} (pid {proc.pid}) -----\n{text[-tail:]}")
        return "\n".join(out)


def progress_of(run) -> tuple:
    """What a run last reported of its progress, from a ``TaskStatus`` or a ``TaskRun`` row."""
    return (run.progress, run.progress_message, run.progress_data)


# Column values that an INSERT must store exactly as the ORM does: big and negative
# numbers, float rounding, quotes, backslashes, escapes as text, non-ASCII, nesting.
WHEN = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC)
TRICKY = {
    "task_list": "liste-é",
    "function": "tests.tasks.add",
    "args": [2**70, 0.1 + 0.2, -0.0, 'quo"te', "back\\slash", "\\u0000 as text", "🙂", None],
    "kwargs": {"nested": {"deep": [[], {}, [1, [2, [3]]]]}, "ü": True},
    "data": {"k": "v" * 300},
    "callback": "tests.tasks.add",
    "node": "w1@h",
    "timeout": 1e-7,
    "retry_backoff": 12.5,
    "max_attempts": 2**31 - 1,
    "priority": -100,
    "queued_at": WHEN,
    "run_after": WHEN + dt.timedelta(seconds=1.5),
}
