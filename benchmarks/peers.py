"""The durable peers a Django team could pick instead, set up for the submission benchmark.

- **django-tasks-db** (``django_tasks_db.DatabaseBackend``, backend alias ``db``):
  ``Task.enqueue()`` inserts a row; its worker polls the table;
- **Celery + django-celery-results** (``task_track_started``): raw Celery whose results,
  STARTED included, a worker writes to the database (a second app on the same broker);
- **Procrastinate** (``defer`` with ``queueing_lock``: durable and unique while queued),
  on a PostgreSQL database of its own (``<bench db>_procrastinate``), created with its
  schema at setup and dropped at teardown.

Each peer is optional: one whose package is missing is left out of the table (the
``bench`` extra installs them all).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

SINK = "bench.sink"  # a queue nobody consumes


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- django-tasks-db ----------------------------------------------------------------------


def _task_decorator() -> Any:
    try:
        from django.tasks import task
    except ImportError:  # Django 5.2: the backport
        from django_tasks import task
    return task


def dtdb_noop() -> None:
    """A no-op task for django-tasks-db (a module attribute: its worker finds it by path)."""


if installed("django_tasks_db"):
    dtdb_noop = _task_decorator()(backend="db")(dtdb_noop)


def dtdb_submit() -> Callable[[list[str]], None]:
    return lambda names: dtdb_noop.enqueue()


# -- Celery + django-celery-results -------------------------------------------------------


DCR_QUEUE = "bench.dcr"


@functools.cache
def dcr_app() -> Any:
    """A Celery app on the same broker whose results, STARTED too, go to the database."""
    from celery import Celery
    from django.conf import settings

    app = Celery("bench-dcr", set_as_current=False)
    app.conf.update(
        broker_url=settings.DISTRIBUTED_TASKS.get("BROKER_URL") or settings.REDIS_URL,
        result_backend="django-db",
        task_track_started=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        worker_hijack_root_logger=False,
    )
    app.task(name="bench.dcr_noop")(_dcr_noop)
    return app


def _dcr_noop(counter: str | None = None) -> None:
    return None


def dcr_submit(queue: str = SINK) -> Callable[[list[str]], None]:
    noop = dcr_app().tasks["bench.dcr_noop"]
    return lambda names: noop.apply_async(args=[None], queue=queue)


# -- Procrastinate ----------------------------------------------------------------------


def _pg(dbname: str) -> dict[str, Any]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": dbname}


@contextlib.contextmanager
def procrastinate_app() -> Iterator[Any]:
    """A Procrastinate app on a fresh database of its own, dropped afterwards."""
    import procrastinate
    import psycopg
    from django.conf import settings

    name = f"{settings.DATABASES['default']['NAME']}_procrastinate"
    with psycopg.connect(**_pg("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    conninfo = " ".join(f"{k}={v}" for k, v in _pg(name).items())
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=conninfo))
    app.conninfo = conninfo  # for worker processes
    try:
        with app.open():
            app.schema_manager.apply_schema()
            yield app
    finally:
        with psycopg.connect(**_pg("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _procrastinate_noop() -> None:
    return None


def procrastinate_submit(app: Any) -> Callable[[list[str]], None]:
    noop = app.tasks.get("bench_noop") or app.task(name="bench_noop", queue="sink")(
        _procrastinate_noop
    )
    return lambda names: noop.configure(queueing_lock=names[0]).defer()
