"""A small cluster of local processes: ``dt_worker`` (and ``dt_beat``) subprocesses.

Used by ``dt_demo`` and by the test suite, so both start, wait for, kill and
stop nodes the same way. Each process gets its own session, so a SIGKILL of
the group also takes its pool children, as a host crash would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")


def poll_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """The first truthy value of ``predicate()``; ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


class LocalCluster:
    """Processes started from one ``manage.py``; each logs to ``log_dir/<key>.log``."""

    def __init__(self, manage_py: Path, log_dir: Path, env: dict[str, str] | None = None):
        self.manage_py = Path(manage_py).resolve()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.base_env.pop("PYTHONWARNINGS", None)
        self.procs: dict[str, subprocess.Popen] = {}
        # key -> (program, argv, env), to start a process again as it was first started
        self.specs: dict[str, tuple[list[str], list[str], dict[str, str]]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **extra}

    def _log_path(self, key: str) -> Path:
        return self.log_dir / f"{key.replace('@', '_').replace('/', '_')}.log"

    def spawn(
        self, key: str, argv: list[str], *, program: list[str] | None = None, **env: str
    ) -> subprocess.Popen:
        """Start ``program argv`` (default: this ``manage.py``) logging to ``<key>.log``."""
        program = program or [sys.executable, str(self.manage_py)]
        log = open(self._log_path(key), "ab")  # noqa: SIM115 - closed in stop()
        self._logs[key] = log
        self.specs[key] = (list(program), list(argv), dict(env))
        proc = subprocess.Popen(
            [*program, *argv],
            cwd=self.manage_py.parent,
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[key] = proc
        return proc

    def start_worker(self, node: str, *, concurrency: int = 1, args: tuple = (), **env: str):
        argv = ["dt_worker", "-n", node, "-c", str(concurrency), *args]
        return self.spawn(node, argv, **env)

    def start_beat(self, name: str, **env: str) -> subprocess.Popen:
        return self.spawn(name, ["dt_beat", "--name", name], **env)

    def wait_leader(self, *, timeout: float = 30.0, other_than: str | None = None):
        """The current lease holder, once there is one (and it is not ``other_than``)."""
        from distributed_tasks.lease import current_leader

        def leader():
            info = current_leader()
            return info if info and info.holder != other_than else None

        return poll_until(leader, timeout=timeout, interval=0.02, message="a new leader")

    def revive(self, *keys: str) -> list[str]:
        """Start again, as first started, every process (or each of ``keys``) that died."""
        revived = []
        for key in keys or list(self.specs):
            if not self.running(key):
                self.stop(key)
                program, argv, env = self.specs[key]
                self.spawn(key, argv, program=program, **env)
                revived.append(key)
        return revived

    def running(self, key: str) -> bool:
        proc = self.procs.get(key)
        return proc is not None and proc.poll() is None

    def wait_live(self, *nodes: str, timeout: float = 60.0) -> None:
        """Wait until every named node (default: every worker started) heartbeats."""
        from distributed_tasks.nodes import live_nodes

        wanted = set(nodes or [k for k in self.procs if "@" in k])

        def ready() -> bool:
            for key in wanted:
                proc = self.procs.get(key)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{key} exited with {proc.returncode}:\n{self.log(key)}")
            return wanted <= set(live_nodes().nodes)

        poll_until(ready, timeout=timeout, interval=0.1, message=f"nodes {sorted(wanted)} live")

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        """SIGKILL takes the whole process group (pool children too); other signals the main."""
        proc = self.procs[key]
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    def stop(self, key: str, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the group's leftovers."""
        proc = self.procs.pop(key, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log = self._logs.pop(key, None)
        if log:
            log.close()
        return proc.returncode

    def stop_all(self) -> None:
        for key in list(self.procs):
            self.stop(key)

    def log(self, key: str, tail: int = 4000) -> str:
        path = self._log_path(key)
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def all_logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"----- {p.name} -----\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )
