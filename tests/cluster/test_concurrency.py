"""Many processes starting one name at once: exactly one run, in Redis and in the database."""

import json
import subprocess
import sys
import threading

import pytest

from distributed_tasks.models import TaskRun
from tests.support import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

PROCESSES = 4
STARTS_PER_PROCESS = 50


def race(cluster, name: str, go_file) -> list[subprocess.Popen]:
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.racer", name, str(STARTS_PER_PROCESS), "8", str(go_file)],
            cwd=ROOT,
            env=cluster.env(DT_LOG_LEVEL="ERROR"),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for racer in racers:  # each prints "ready" once its connections are open
        assert "ready" in racer.stdout.readline()
    return racers


def results(racers) -> list[dict]:
    out = []
    for racer in racers:
        stdout, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_200_concurrent_starts_of_one_name_make_one_run(nodes, release, tmp_path):
    release("release:contended")
    racers = race(nodes, "contended", tmp_path / "go")
    (tmp_path / "go").touch()
    outcome = results(racers)
    assert sum(r["started"] for r in outcome) == 1
    assert sum(r["refused"] for r in outcome) == PROCESSES * STARTS_PER_PROCESS - 1
    assert TaskRun.objects.filter(name="contended").count() == 1


def test_database_decides_when_redis_keeps_losing_claims(nodes, redis, release, tmp_path):
    """FLUSHDB in a loop while racing: Redis claims vanish, the unique constraint holds."""
    release("release:flushed")
    racers = race(nodes, "flushed", tmp_path / "go")
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            redis.flushdb()
            stop.wait(0.002)

    thread = threading.Thread(target=flusher)
    thread.start()
    (tmp_path / "go").touch()
    try:
        outcome = results(racers)
    finally:
        stop.set()
        thread.join()
    started = sum(r["started"] for r in outcome)
    assert started == TaskRun.objects.filter(name="flushed").count() == 1
    assert TaskRun.objects.filter(active_name="flushed").count() == 1
