"""Settings of the test suite: the example project plus the fixture app ``tests``.

PostgreSQL database ``test`` on 127.0.0.1 by default (pytest-django creates
``test_test``); ``DT_TEST_DB=sqlite`` uses a SQLite file instead. Worker
subprocesses started by the tests get ``DT_TEST_DB_NAME`` so they open the test
database itself. Redis database 15 keeps tests away from a demo on database 0.
"""

import json
import os
import tempfile
from pathlib import Path

from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests"]

_TEST_DB_NAME = os.environ.get("DT_TEST_DB_NAME")

if os.environ.get("DT_TEST_DB") == "sqlite":
    _dir = Path(tempfile.gettempdir()) / f"dt-tests-{os.getuid()}"
    _dir.mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _TEST_DB_NAME or str(_dir / "db.sqlite3"),
            # DT_TEST_SQLITE_OPTIONS=none: startproject's defaults (the fault tests' worst case).
            "OPTIONS": {}
            if os.environ.get("DT_TEST_SQLITE_OPTIONS") == "none"
            else {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not :memory:, so worker subprocesses share it.
            "TEST": {"NAME": str(_dir / "test_db.sqlite3")},
        }
    }
else:

    def _server(engine: str, env: str, port: str, user: str, **options) -> dict:
        """A database server on 127.0.0.1 whose address DT_<env>_HOST/PORT/USER can move."""
        return {
            "default": {
                "ENGINE": engine,
                "NAME": _TEST_DB_NAME or os.environ.get("DT_PG_NAME", "test"),
                "HOST": os.environ.get(f"DT_{env}_HOST", "127.0.0.1"),
                "PORT": os.environ.get(f"DT_{env}_PORT", port),
                "USER": os.environ.get(f"DT_{env}_USER", user),
                **options,
            }
        }

    if os.environ.get("DT_TEST_DB") == "mariadb":  # CI's MariaDB leg (.ci/run), and by hand
        try:
            import MySQLdb  # noqa: F401
        except ImportError:  # PyMySQL stands in when mysqlclient cannot be built
            import pymysql

            pymysql.version_info = (2, 2, 1, "final", 0)  # the mysqlclient Django asks for
            pymysql.install_as_MySQLdb()
        _options = {
            "charset": "utf8mb4",
            "isolation_level": "read committed",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
        }
        DATABASES = _server("django.db.backends.mysql", "MARIADB", "3306", "root", OPTIONS=_options)
    else:
        DATABASES = _server("django.db.backends.postgresql", "PG", "5432", "postgres")

REDIS_URL = os.environ.get("DT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

DISTRIBUTED_TASKS = {
    "REDIS_URL": REDIS_URL,
    # The engine tests (tests/engines) point their subprocesses at another broker.
    "BROKER_URL": os.environ.get("DT_TEST_BROKER_URL") or None,
    "KEY_PREFIX": "dt",
    # Periodic tasks run only where a test declares them (its beat processes get this).
    "PERIODIC": json.loads(os.environ.get("DT_TEST_PERIODIC", "{}")),
    # Celery remote control (inspect, Flower) on the nodes a test starts with this set.
    "REMOTE_CONTROL": os.environ.get("DT_TEST_REMOTE_CONTROL") == "1",
    # 0 on the nodes of a test that must see a slot freed by a finished run do the stealing.
    "STEAL_INTERVAL": float(os.environ.get("DT_TEST_STEAL_INTERVAL", "0.05")),
}

# Django's task framework (django.tasks; the django_tasks backport on Django 5.2) runs on
# the cluster, in the test process and in worker subprocesses alike.
TASKS = {
    "default": {
        "BACKEND": "distributed_tasks.backends.DistributedTasksBackend",
        "QUEUES": ["default", "builds", "priority"],
    }
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# An ordinary beat entry: only the orchestrator leader may send it (HA beat). Nothing
# consumes its queue, so the tests count and inspect the messages themselves.
CELERY_BEAT_SCHEDULE = {
    "ha-beat-probe": {
        "task": "tests.ha_beat_probe",
        "schedule": 1.0,
        "options": {"queue": "ha-beat-probe"},
    },
}

if os.environ.get("DT_LOG_JSON"):
    # The JSON logging config README.md documents: one object per line, run fields on
    # every record emitted while a run executes (cluster tests read worker logs this way).
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"run": {"()": "distributed_tasks.logs.RunContextFilter"}},
        "formatters": {"json": {"()": "distributed_tasks.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["run"]}
        },
        "root": {"handlers": ["console"], "level": os.environ.get("DT_LOG_LEVEL", "WARNING")},
    }

if os.environ.get("DT_TEST_SPANS_FILE"):
    # A node's spans, as JSON lines a cluster test reads (tests/spans.py).
    from tests import spans

    spans.install(os.environ["DT_TEST_SPANS_FILE"])
