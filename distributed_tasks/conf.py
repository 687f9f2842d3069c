"""The one place that reads ``settings.DISTRIBUTED_TASKS``.

Every module asks :func:`get_settings` instead of reading Django settings with a
default at each call site, so a default lives in exactly one dict (``DEFAULTS``)
and a test that overrides the setting sees the change at once (the cache is
cleared on ``setting_changed``). Validation lives in ``checks.py``: this module
never raises on a bad value, so ``manage.py check`` can report every problem.
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

SETTING_NAME = "DISTRIBUTED_TASKS"

DEFAULTS: dict[str, Any] = {
    # Redis for claims, status cache, heartbeats and the orchestrator lease.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Celery broker; None means "the same Redis as REDIS_URL".
    "BROKER_URL": None,
    # Dotted path to the project's own Celery app; None builds one from BROKER_URL.
    "CELERY_APP": None,
    # A django-redis cache alias whose connection pool is used instead of REDIS_URL.
    "CACHE_ALIAS": None,
    # The database alias that holds TaskRun rows.
    "DATABASE_ALIAS": "default",
    # Node name of a dt_worker when --node is not given ("%h" is the host name).
    "NODE_NAME": None,
    # Seconds without a heartbeat after which a node is dead.
    "NODE_TIMEOUT": 5.0,
    # Seconds between two heartbeats of a node.
    "HEARTBEAT_INTERVAL": 1.0,
    # Seconds the orchestrator lease lives without renewal.
    "LEASE_TTL": 5.0,
    # Seconds a finished name keeps reporting DONE/FAILED (the seed's cleanup_old_jobs_timeout).
    "CLEANUP_TIMEOUT": 60.0,
    # Seconds a finished run's row is kept for the admin and TaskRun.find().
    "HISTORY_RETENTION": 7 * 24 * 3600.0,
    # Bounded-loads factor (1 + epsilon) of the placement ring, against node capacity.
    "BALANCE_FACTOR": 1.25,
    # Seconds a run waits on a node with no free slot before the leader moves it to one
    # (it looks 4 times a second; a node that frees a slot takes such a run at once), and
    # how much longer a run must have waited elsewhere for a full node to take it ahead
    # of its own next one (overtake).
    "REBALANCE_AFTER": 0.02,
    # Seconds between two looks of an idle node for runs waiting elsewhere (0: only
    # when one of its pool processes finishes a run).
    "STEAL_INTERVAL": 0.05,
    # Seconds a run must have been going before its worker caches RUNNING in Redis (what
    # get_status reads; the row says RUNNING at once): shorter runs skip that round trip
    # and show QUEUED until their outcome. 0 writes it as each run starts.
    "RUNNING_STATUS_AFTER": 0.05,
    # Largest JSON payload (args + kwargs) a run may carry, in bytes.
    "MAX_PAYLOAD_BYTES": 256 * 1024,
    # Seconds a run may take when start_async() gives no timeout; None is unbounded.
    "DEFAULT_TIMEOUT": None,
    # Periodic tasks declared in settings: {"name": {"task": "dotted.Class", "interval": 10, ...}}.
    "PERIODIC": {},
    # The client behind start_async()/get_status(); the testing double swaps it.
    "BACKEND": "distributed_tasks.client.ClusterClient",
    # Where runs are stored: a distributed_tasks.store.BaseStore subclass.
    "STORE": "distributed_tasks.store.OrmStore",
    # Prefix of every Redis key; lets several projects share one Redis.
    "KEY_PREFIX": "dt",
    # Seconds between two orchestrator ticks.
    "TICK_INTERVAL": 1.0,
    # Seconds a web process reuses its view of live nodes before asking Redis again.
    "RING_CACHE_TTL": 1.0,
    # Rows handled per orchestrator duty per tick.
    "BATCH_SIZE": 1000,
    # Prometheus metrics (docs/observability.md): recorded when prometheus_client is
    # installed and this is True; False records and imports nothing.
    "METRICS": True,
    # Bearer token that may read GET <prefix>/metrics besides staff with view_taskrun.
    "METRICS_TOKEN": None,
    # OpenTelemetry spans per start and per run, when opentelemetry-api is installed.
    "TRACING": True,
    # Seconds a forced cancel (cancel(name, force=True)) waits for a RUNNING run to stop
    # by itself before its node kills the pool process running it.
    "CANCEL_GRACE": 10.0,
    # Whether dt_worker answers Celery remote control (inspect, shutdown broadcasts...).
    "REMOTE_CONTROL": False,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """A typed, read-only snapshot of ``DISTRIBUTED_TASKS`` merged over ``DEFAULTS``."""

    REDIS_URL: str
    BROKER_URL: str | None
    CELERY_APP: str | None
    CACHE_ALIAS: str | None
    DATABASE_ALIAS: str
    NODE_NAME: str | None
    NODE_TIMEOUT: float
    HEARTBEAT_INTERVAL: float
    LEASE_TTL: float
    CLEANUP_TIMEOUT: float
    HISTORY_RETENTION: float
    BALANCE_FACTOR: float
    REBALANCE_AFTER: float
    STEAL_INTERVAL: float
    RUNNING_STATUS_AFTER: float
    MAX_PAYLOAD_BYTES: int
    DEFAULT_TIMEOUT: float | None
    PERIODIC: dict[str, Any]
    BACKEND: str
    STORE: str
    KEY_PREFIX: str
    TICK_INTERVAL: float
    RING_CACHE_TTL: float
    BATCH_SIZE: int
    METRICS: bool
    METRICS_TOKEN: str | None
    TRACING: bool
    REMOTE_CONTROL: bool
    CANCEL_GRACE: float

    @property
    def broker_url(self) -> str:
        return self.BROKER_URL or self.REDIS_URL

    @property
    def default_node_name(self) -> str:
        template = self.NODE_NAME or "dt@%h"
        return template.replace("%h", socket.gethostname())


assert {f.name for f in fields(Settings)} == set(DEFAULTS), "Settings and DEFAULTS disagree"


def user_settings() -> dict[str, Any]:
    """The raw dict the project wrote (empty when it wrote none)."""
    value = getattr(settings, SETTING_NAME, None)
    return value if isinstance(value, dict) else {}


@functools.cache
def get_settings() -> Settings:
    """The merged settings; unknown keys are ignored here and reported by the checks."""
    merged = {**DEFAULTS, **{k: v for k, v in user_settings().items() if k in DEFAULTS}}
    return Settings(**merged)


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, "CACHES", "DATABASES"):
        reset_caches()


def reset_caches() -> None:
    """Forget everything built from settings: connections, the Celery app, the client."""
    get_settings.cache_clear()
    from distributed_tasks import api, attempts, celery, connection, envelope, store

    connection.reset()
    attempts.placement.cache_clear()  # the workers' ring: a cached view of the nodes
    celery.get_app.cache_clear()
    envelope._client.cache_clear()
    store.get_store.cache_clear()
    api._client_for.cache_clear()
