"""The README's Quickstart, followed literally by a new user: the built wheel in a fresh
virtualenv (install requirements only: no dev extras, no editable install), a project from
``django-admin startproject``, two ``dt_worker`` nodes and a ``dt_beat``, one run by name.

Once on SQLite (with the options the Quickstart gives) and once on PostgreSQL (database
``<DT_PG_NAME>_quickstart``, dropped at the end). The wheel and the virtualenv are built
once for both. Redis is the suite's own database; everything started is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.install import quickstart
from tests.support import ROOT, poll_until

pytestmark = [pytest.mark.slow]

README_REDIS_URL = "redis://127.0.0.1:6379/0"
PG = {
    "host": os.environ.get("DT_PG_HOST", "127.0.0.1"),
    "port": os.environ.get("DT_PG_PORT", "5432"),
    "user": os.environ.get("DT_PG_USER", "postgres"),
}
PG_NAME = f"{os.environ.get('DT_PG_NAME', 'test')}_quickstart"

# What each command must show before the next step: polled, as a user would rerun it.
EXPECT: dict[str, Callable[[str], bool]] = {
    "dt_nodes": lambda out: "node1@" in out and "node2@" in out and "leader: beat-" in out,
    "dt_status": lambda out: "DONE" in out,
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-5000:]
    assert "Package would be ignored" not in log, log  # setuptools' package-data warning
    assert "absent from" not in log, log
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv holding the wheel and its install requirements, nothing else."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip(path, "install", str(wheel))
    return path


def pip(venv: Path, *args: str) -> None:
    # Not the suite's PYTHONWARNINGS (make test turns DeprecationWarning into errors):
    # the venv's own pip warns about its vendored pkg_resources, as a user's would.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--quiet", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def user_env(venv: Path) -> dict[str, str]:
    """A shell with the virtualenv activated and none of the test suite's settings."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1"
    )
    return env


class Shell:
    """Runs the Quickstart's commands as a user would, in one directory that ``cd`` moves."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.env, self.logs = cwd, env, logs
        self.background: list[tuple[str, subprocess.Popen, Path]] = []
        self.outputs: dict[str, str] = {}

    def run(self, command: str) -> None:
        if command.startswith("pip install django-distributed-tasks"):
            return  # the wheel is installed already (the fixture), as this line would do
        if command.startswith("cd "):
            self.cwd = self.cwd / command[3:].strip()
            return
        if command.endswith("&"):
            self.start(command[:-1].strip())
            return
        expect = next((v for k, v in EXPECT.items() if f" {k}" in command), None)
        if expect is None:
            self.outputs[command] = self.once(command)
        else:

            def shows() -> str | None:
                out = self.once(command, check=False)
                return out if expect(out) else None

            self.outputs[command] = poll_until(
                shows,
                timeout=60,
                interval=0.5,
                message=lambda: f"{command!r} to show what the README says\n{self.all_logs()}",
            )

    def once(self, command: str, *, check: bool = True) -> str:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = done.stdout + done.stderr
        assert not check or done.returncode == 0, f"{command!r} failed:\n{out}"
        return out

    def start(self, command: str) -> None:
        log_path = self.logs / f"{len(self.background)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((command, proc, log_path))

    def stop_all(self) -> None:
        for _, proc, _ in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in self.background:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # pool children

    def all_logs(self) -> str:
        return "\n".join(
            f"--- {command}\n{path.read_text(errors='replace')[-3000:]}"
            for command, _, path in self.background
        )


def apply(step: quickstart.Step, shell: Shell, substitutions: dict[str, str]) -> None:
    if step.lang == "sh":
        for command in step.commands:
            shell.run(command)
        return
    body = step.body
    for old, new in substitutions.items():
        body = body.replace(old, new)
    with open(shell.cwd / step.path, "a") as target:
        target.write(f"\n\n{body}\n")


def follow(variant: str, venv: Path, tmp_path: Path, substitutions: dict[str, str]) -> Shell:
    steps = quickstart.steps(variant)
    text = "\n".join(step.body for step in steps)
    for old in substitutions:  # the README still says what the test replaces
        assert old in text, f"the Quickstart no longer contains {old!r}"
    (tmp_path / "logs").mkdir()
    shell = Shell(tmp_path, user_env(venv), tmp_path / "logs")
    try:
        for step in steps:
            apply(step, shell, substitutions)
        shell.once("python manage.py check --fail-level WARNING")  # no W003 left
    except BaseException:
        shell.stop_all()
        raise
    return shell


@contextlib.contextmanager
def quickstart_run(variant: str, venv: Path, tmp_path: Path, **subs: str) -> Iterator[Shell]:
    from distributed_tasks.connection import get_redis

    get_redis().flushdb()  # the suite's own Redis database: a run of one variant at a time
    redis_url = settings.DISTRIBUTED_TASKS["REDIS_URL"]
    shell = follow(variant, venv, tmp_path, {README_REDIS_URL: redis_url, **subs})
    try:
        yield shell
    finally:
        shell.stop_all()
        assert all(proc.poll() is not None for _, proc, _ in shell.background)


def assert_cluster_worked(shell: Shell) -> None:
    nodes = next(out for cmd, out in shell.outputs.items() if "dt_nodes" in cmd)
    status = next(out for cmd, out in shell.outputs.items() if "dt_status" in cmd)
    assert "node1@" in nodes and "node2@" in nodes, nodes
    assert "DONE" in status and "app-42.tar.gz" in status, status
    started = next(out for cmd, out in shell.outputs.items() if "dt_start" in cmd)
    assert "Started: 'compile-42'" in started, started


def test_quickstart_on_sqlite(venv, tmp_path):
    with quickstart_run("sqlite", venv, tmp_path) as shell:
        assert_cluster_worked(shell)
    assert (tmp_path / "mysite" / "db.sqlite3").exists()


@pytest.fixture
def pg_database(venv, wheel) -> Iterator[str]:
    """The README's PostgreSQL line: the wheel's ``postgres`` extra, and a database."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("the suite runs without PostgreSQL (DT_TEST_DB): its Quickstart too")
    import psycopg

    pip(venv, "install", f"{wheel}[postgres]")

    def admin(sql: str) -> None:
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(sql)

    admin(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{PG_NAME}"')
    yield PG_NAME
    admin(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')


def test_quickstart_on_postgresql(venv, pg_database, tmp_path):
    subs = {'"NAME": "mysite"': f'"NAME": "{pg_database}"'}
    with quickstart_run("postgres", venv, tmp_path, **subs) as shell:
        assert_cluster_worked(shell)
    assert not (tmp_path / "mysite" / "db.sqlite3").exists()
