"""Django settings of the benchmarks: the example project on data of their own.

PostgreSQL database ``dt_bench`` (created and migrated by ``common.setup``) and Redis
database 9, so a benchmark never touches the test suite's (``test``, Redis 15) or the
demo's (SQLite, Redis 0) data. Worker and beat subprocesses get the same settings
through ``DJANGO_SETTINGS_MODULE=benchmarks.settings``.
"""

import importlib.util
import json
import os

import django

from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS

DEBUG = False  # DEBUG keeps every query in memory: never measure with it
INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks"]
# The durable peers of the submission benchmark (benchmarks/peers.py), when installed.
_TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"  # or backport
_PEER_APPS = ["django_tasks", "django_tasks_db", "django_celery_results"]
if _TASKS_MODULE == "django.tasks":
    _PEER_APPS.remove("django_tasks")
INSTALLED_APPS += [a for a in _PEER_APPS if importlib.util.find_spec(a) is not None]
TASKS = {
    "default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"},
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DT_BENCH_PG_NAME", "dt_bench"),
        "HOST": os.environ.get("DT_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DT_PG_PORT", "5432"),
        "USER": os.environ.get("DT_PG_USER", "postgres"),
    }
}

# Diagnostic only (never a recommendation): how much of a run's cost is the WAL flush
# of each commit. DT_BENCH_PG_ASYNC_COMMIT=1 turns synchronous_commit off.
if os.environ.get("DT_BENCH_PG_ASYNC_COMMIT") == "1":
    DATABASES["default"]["OPTIONS"] = {"options": "-c synchronous_commit=off"}

REDIS_URL = os.environ.get("DT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")

DISTRIBUTED_TASKS = {
    "REDIS_URL": REDIS_URL,
    # Another broker (e.g. amqp://guest:guest@127.0.0.1:5672/<vhost>); None: REDIS_URL.
    "BROKER_URL": os.environ.get("DT_BENCH_BROKER_URL") or None,
    "NODE_TIMEOUT": float(os.environ.get("DT_BENCH_NODE_TIMEOUT", "5")),
    # Overrides of any other setting, as JSON (e.g. '{"REBALANCE_AFTER": 0.05}').
    **json.loads(os.environ.get("DT_BENCH_SETTINGS", "{}")),
}

# The HA-beat probe: only the orchestrator leader sends it, into a queue nobody
# consumes, so the failover benchmark sees the moment a new leader acts.
BEAT_PROBE_QUEUE = "bench.beat-probe"
CELERY_BEAT_SCHEDULE = {
    "bench-beat-probe": {
        "task": "benchmarks.beat_probe",
        "schedule": 1.0,
        "options": {"queue": BEAT_PROBE_QUEUE},
    },
}
