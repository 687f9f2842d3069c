"""dt_worker --metrics-port refuses a metrics directory another node of its name holds,
and its pool processes can count whatever its threads were counting when they forked."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys

from tests.support import ROOT


def test_a_second_node_of_the_same_name_on_the_host_is_refused(tmp_path):
    with open(tmp_path / "twin@test.lock", "w") as lock:  # as a running twin holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        }
        env.pop("PYTHONWARNINGS", None)
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "dt_worker", "-n", "twin@test", "--metrics-port", "1"],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            _out, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # it started after all: stop it and its pool
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 1, stderr
    assert "twin@test is in use by another process" in stderr
    assert "Give each its own PROMETHEUS_MULTIPROC_DIR" in stderr
    assert not (tmp_path / "twin@test").exists()  # nothing of the twin's was emptied


# A node's main process counts in threads too (a run its stealer took over): a pool
# process forked while one held the multiprocess values' lock must still count (issue 17).
FORK_WHILE_COUNTING = """
import os, sys, threading
from pathlib import Path

import django

django.setup()
from prometheus_client import Counter, mmap_dict

from distributed_tasks import scrape

scrape.use_multiprocess(Path(sys.argv[1]) / "node")
counter = Counter("dt_test_forks", "Counted around a fork.", ["where"])
holding, done = threading.Event(), threading.Event()
write = mmap_dict.MmapedDict.write_value


def write_slowly(self, *args):  # the holder stops here, inside the values' lock
    if threading.current_thread().name == "holder":
        holding.set()
        done.wait()
    return write(self, *args)


mmap_dict.MmapedDict.write_value = write_slowly
holder = threading.Thread(target=counter.labels("parent").inc, name="holder", daemon=True)
holder.start()
assert holding.wait(5)
pid = os.fork()
if pid == 0:
    counter.labels("child").inc()
    os._exit(0)
done.set()
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_pool_process_forked_while_a_thread_counts_can_count(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env.pop("PYTHONWARNINGS", None)  # Python 3.12 warns of a fork with threads: the case
    proc = subprocess.Popen(
        [sys.executable, "-c", FORK_WHILE_COUNTING, str(tmp_path)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _out, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child hangs on the lock, and its parent
        _out, stderr = proc.communicate()
    assert proc.returncode == 0, stderr or "the forked child never counted"
