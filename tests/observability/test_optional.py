"""Without prometheus_client and opentelemetry: nothing of them imported, no receiver,
and a metrics port asked for is refused with the way out."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT

ABSENT = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed: import fails
sys.modules["opentelemetry"] = None
import django
django.setup()
from celery import signals as celery_signals
from distributed_tasks import metrics, signals, tracing

assert not metrics.enabled() and not tracing.enabled()
ours = [
    key
    for signal in (*vars(signals).values(), celery_signals.before_task_publish)
    if hasattr(signal, "receivers")
    for (key, *_rest) in signal.receivers
    if str(key[0]).startswith(("dt-metrics", "dt-tracing"))
]
assert ours == [], ours
loaded = [m for m, mod in sys.modules.items() if mod is not None
          and m.startswith(("prometheus_client", "opentelemetry"))]
assert loaded == [], loaded

from django.core.management import call_command
from django.core.management.base import CommandError

try:
    call_command("dt_worker", "-n", "absent@test", "--metrics-port", "1")
except CommandError as exc:
    assert "needs prometheus_client" in str(exc), exc
else:
    raise AssertionError("dt_worker --metrics-port started without prometheus_client")
print("absent ok")
"""


def test_absent_packages_import_nothing_and_connect_nothing():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    proc = subprocess.run(
        [sys.executable, "-c", ABSENT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "absent ok"
