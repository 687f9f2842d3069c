"""The Celery app the peers run on: the app ``distributed_tasks`` builds, plus plain tasks.

``celery -A benchmarks.celeryapp worker|beat`` starts plain Celery processes on the same
app, broker and settings (JSON, ``acks_late``, prefetch 1) as ``dt_worker``, so the
comparisons differ only in what each library adds:

- ``bench.plain_noop``: raw Celery; ``bench.plain_mixed``: a sleep that journals its queue wait;
- ``bench.once_noop`` / ``bench.once_hold``: celery-once's ``QueueOnce`` (lock at enqueue,
  released after the run, expiring after its ``default_timeout``);
- ``bench.singleton_noop`` / ``bench.singleton_hold``: celery-singleton's ``Singleton``
  (lock at enqueue, released after the run, no expiry by default).
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

from celery_once import QueueOnce  # noqa: E402
from celery_singleton import Singleton  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks.tasks import count, timed_sleep, wait_for_release  # noqa: E402
from distributed_tasks.celery import get_app  # noqa: E402

app = get_app()
# celery-once as its README configures it (default_timeout: its own default, one hour).
app.conf.ONCE = {"backend": "celery_once.backends.Redis", "settings": {"url": settings.REDIS_URL}}
# celery-singleton defaults to the broker URL; raise on duplicates so refusals are visible.
app.conf.singleton_backend_url = settings.REDIS_URL
app.conf.singleton_raise_on_duplicate = True


@app.task(name="bench.plain_noop")
def plain_noop(counter: str | None = None) -> None:
    count(counter)


@app.task(name="bench.plain_mixed", bind=True)
def plain_mixed(self, seconds: float, sent_at: float, journal: str) -> None:
    timed_sleep(seconds, sent_at, journal, self.request.hostname or "")


@app.task(name="bench.once_noop", base=QueueOnce)
def once_noop(name: str) -> None:
    """Unique on ``name`` (celery-once keys on the task name and its arguments)."""


@app.task(name="bench.singleton_noop", base=Singleton)
def singleton_noop(name: str) -> None:
    """Unique on ``name`` (celery-singleton keys on the task name and its arguments)."""


@app.task(name="bench.once_hold", base=QueueOnce, once={"keys": ["name"]})
def once_hold(name: str, release_key: str, started_key: str) -> str:
    return wait_for_release(release_key, started_key)


@app.task(name="bench.singleton_hold", base=Singleton, unique_on=["name"])
def singleton_hold(name: str, release_key: str, started_key: str) -> str:
    return wait_for_release(release_key, started_key)
