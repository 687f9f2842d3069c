"""dt_worker --metrics-port refuses a metrics directory another node of its name holds."""

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
