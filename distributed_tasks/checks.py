"""System checks for ``DISTRIBUTED_TASKS``: bad settings fail at start-up, not at 3 a.m.

Each check has an id (``distributed_tasks.E0xx`` errors, ``W0xx`` warnings), a
message that says what is wrong and a hint that names the fix. Unknown keys get
a did-you-mean suggestion, as Oban does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core import checks

from distributed_tasks.conf import DEFAULTS, SETTING_NAME, user_settings

E001 = "distributed_tasks.E001"  # DISTRIBUTED_TASKS is not a dict
E002 = "distributed_tasks.E002"  # a value has the wrong type or range
E003 = "distributed_tasks.E003"  # a URL has an unsupported scheme
E004 = "distributed_tasks.E004"  # HEARTBEAT_INTERVAL must be below NODE_TIMEOUT
E005 = "distributed_tasks.E005"  # DATABASE_ALIAS / CACHE_ALIAS names nothing
E006 = "distributed_tasks.E006"  # CELERY_APP / BACKEND cannot be imported
E007 = "distributed_tasks.E007"  # a PERIODIC entry cannot work
E010 = "distributed_tasks.E010"  # the Celery app accepts content other than JSON
E014 = "distributed_tasks.E014"  # the Celery broker would be a Redis Cluster
W001 = "distributed_tasks.W001"  # unknown key
W002 = "distributed_tasks.W002"  # LEASE_TTL leaves no room to renew
W003 = "distributed_tasks.W003"  # SQLite without WAL, immediate transactions and a timeout

_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_REDIS_SCHEMES = ("redis", "rediss", "unix", *_CLUSTER_SCHEMES, "sentinel", "sentinels")
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "amqp", "amqps", "pyamqp", "memory")


def _number(*, minimum: float = 0, integer: bool = False, optional: bool = False):
    def validate(value: Any) -> str | None:
        if value is None and optional:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value <= minimum:
            noun = "a whole number" if integer else "a number"
            return f"must be {noun} greater than {minimum:g}"
        return None

    return validate


def _string(*, optional: bool = False):
    def validate(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            return "must be a non-empty string"
        return None

    return validate


def _url(schemes: tuple[str, ...], *, optional: bool = False):
    def validate(value: Any) -> str | None:
        problem = _string(optional=optional)(value)
        if problem or value is None:
            return problem
        scheme = urlparse(value).scheme
        if scheme not in schemes:
            return f"has scheme {scheme!r}; expected one of {', '.join(schemes)}"
        return None

    return validate


def _dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a dict"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "REDIS_URL": _url(_REDIS_SCHEMES),
    "BROKER_URL": _url(_BROKER_SCHEMES, optional=True),
    "CELERY_APP": _string(optional=True),
    "CACHE_ALIAS": _string(optional=True),
    "DATABASE_ALIAS": _string(),
    "NODE_NAME": _string(optional=True),
    "NODE_TIMEOUT": _number(),
    "HEARTBEAT_INTERVAL": _number(),
    "LEASE_TTL": _number(),
    "CLEANUP_TIMEOUT": _number(minimum=-1e-9),
    "HISTORY_RETENTION": _number(),
    "BALANCE_FACTOR": _number(minimum=1),
    "REBALANCE_AFTER": _number(minimum=-1e-9),
    "MAX_PAYLOAD_BYTES": _number(integer=True),
    "DEFAULT_TIMEOUT": _number(optional=True),
    "PERIODIC": _dict,
    "BACKEND": _string(),
    "STORE": _string(),
    "KEY_PREFIX": _string(),
    "TICK_INTERVAL": _number(),
    "RING_CACHE_TTL": _number(minimum=-1e-9),
    "BATCH_SIZE": _number(integer=True),
    "METRICS": _bool,
    "METRICS_TOKEN": _string(optional=True),
    "TRACING": _bool,
    "REMOTE_CONTROL": _bool,
    "CANCEL_GRACE": _number(minimum=-1e-9),
}
assert set(VALIDATORS) == set(DEFAULTS), "every setting needs a validator"


def _error(msg: str, hint: str, id: str) -> checks.CheckMessage:
    return checks.Error(msg, hint=hint, obj=SETTING_NAME, id=id)


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    raw = getattr(settings, SETTING_NAME, {})
    if not isinstance(raw, dict):
        return [
            _error(
                f"{SETTING_NAME} must be a dict, got {type(raw).__name__}.",
                f"Write {SETTING_NAME} = {{...}} with keys from the README's settings table.",
                E001,
            )
        ]
    messages: list[checks.CheckMessage] = []
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f"Did you mean {close[0]!r}?" if close else "Remove it; see the README."
            messages.append(
                checks.Warning(
                    f"{SETTING_NAME} has an unknown key {key!r}.",
                    hint=hint,
                    obj=SETTING_NAME,
                    id=W001,
                )
            )
    merged = {**DEFAULTS, **user_settings()}
    for key, validate in VALIDATORS.items():
        if key in raw and (problem := validate(raw[key])):
            default = DEFAULTS[key]
            messages.append(
                _error(
                    f"{SETTING_NAME}[{key!r}] {problem} (got {raw[key]!r}).",
                    f"Fix the value, or remove the key to use the default ({default!r}).",
                    E003 if "scheme" in problem else E002,
                )
            )
    if messages:
        return messages
    return messages + _check_relations(merged)


def _check_relations(conf: dict[str, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if conf["HEARTBEAT_INTERVAL"] >= conf["NODE_TIMEOUT"]:
        messages.append(
            _error(
                f"HEARTBEAT_INTERVAL ({conf['HEARTBEAT_INTERVAL']:g} s) must be shorter than "
                f"NODE_TIMEOUT ({conf['NODE_TIMEOUT']:g} s), or live nodes look dead.",
                "Keep NODE_TIMEOUT at 3-5 heartbeats, e.g. HEARTBEAT_INTERVAL=1, NODE_TIMEOUT=5.",
                E004,
            )
        )
    if conf["LEASE_TTL"] < 3 * conf["TICK_INTERVAL"] / 2:
        messages.append(
            checks.Warning(
                f"LEASE_TTL ({conf['LEASE_TTL']:g} s) is short against TICK_INTERVAL "
                f"({conf['TICK_INTERVAL']:g} s): the leader renews every LEASE_TTL/3 and may "
                "lose the lease under load.",
                hint="Use LEASE_TTL of at least 3 ticks (the default is 5 s with 1 s ticks).",
                obj=SETTING_NAME,
                id=W002,
            )
        )
    if conf["DATABASE_ALIAS"] not in settings.DATABASES:
        messages.append(
            _error(
                f"DATABASE_ALIAS {conf['DATABASE_ALIAS']!r} is not in DATABASES.",
                f"Use one of {', '.join(settings.DATABASES)}.",
                E005,
            )
        )
    caches = getattr(settings, "CACHES", {})
    if conf["CACHE_ALIAS"] and conf["CACHE_ALIAS"] not in caches:
        messages.append(
            _error(
                f"CACHE_ALIAS {conf['CACHE_ALIAS']!r} is not in CACHES.",
                "Name a django-redis cache, or remove CACHE_ALIAS to use REDIS_URL.",
                E005,
            )
        )
    broker = conf["BROKER_URL"] or (None if conf["CELERY_APP"] else conf["REDIS_URL"])
    if urlparse(str(broker)).scheme in _CLUSTER_SCHEMES:
        messages.append(
            _error(
                "The Celery broker would be a Redis Cluster, which Celery's Redis transport "
                "does not support.",
                "Keep REDIS_URL on the cluster and set BROKER_URL to a plain Redis (or "
                "sentinel://) or to RabbitMQ (amqp://).",
                E014,
            )
        )
    for key in ("CELERY_APP", "BACKEND", "STORE"):
        if conf[key]:
            messages += _check_import(key, conf[key])
    for name, entry in conf["PERIODIC"].items():
        messages += _check_periodic(name, entry)
    alias = conf["DATABASE_ALIAS"]
    return messages + check_sqlite(alias, settings.DATABASES.get(alias, {}))


SQLITE_TIMEOUT = 20  # seconds a writer waits for another's lock before "database is locked"
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": SQLITE_TIMEOUT,
}


def check_sqlite(alias: str, db: dict[str, Any]) -> list[checks.CheckMessage]:
    """SQLite's defaults make concurrent writers fail at once with "database is locked"."""
    if not db.get("ENGINE", "").endswith("sqlite3"):
        return []
    options = db.get("OPTIONS") or {}
    missing = []
    if "journal_mode=wal" not in str(options.get("init_command", "")).lower().replace(" ", ""):
        missing.append("WAL (readers then never block the writer)")
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE" (writers queue instead of failing)')
    if not isinstance(options.get("timeout"), int | float) or options["timeout"] < SQLITE_TIMEOUT:
        missing.append(f'a "timeout" of {SQLITE_TIMEOUT} s or more (the default is 5)')
    if not missing:
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite without {'; '.join(missing)}: workers and the "
            'orchestrator write at once and SQLite answers "database is locked".',
            hint=f'Add DATABASES[{alias!r}]["OPTIONS"] = {SQLITE_OPTIONS!r} (README, '
            "Quickstart). SQLite is for trying things out: use PostgreSQL, MySQL or MariaDB "
            "in production.",
            obj=f"DATABASES[{alias!r}]",
            id=W003,
        )
    ]


def _check_periodic(name: str, entry: Any) -> list[checks.CheckMessage]:
    from django.utils.module_loading import import_string

    from distributed_tasks.exceptions import InvalidConfiguration
    from distributed_tasks.periodic import PeriodicTask, spec_from_settings

    hint = "Each entry: {'task': 'app.tasks.MyTask', 'interval': 10, ...} (see the README)."
    try:
        spec = spec_from_settings(name, entry)
        task = import_string(spec.task)
    except (InvalidConfiguration, ImportError) as exc:
        return [_error(f"PERIODIC[{name!r}]: {exc}", hint, E007)]
    if not (isinstance(task, type) and issubclass(task, PeriodicTask)):
        return [
            _error(f"PERIODIC[{name!r}]: {spec.task} is not a PeriodicTask subclass.", hint, E007)
        ]
    return []


def _check_import(key: str, path: str) -> list[checks.CheckMessage]:
    from django.utils.module_loading import import_string

    try:
        import_string(path)
    except ImportError as exc:
        return [
            _error(
                f"{key} {path!r} cannot be imported: {exc}.",
                "Give the dotted path of an object, e.g. 'proj.celery.app'.",
                E006,
            )
        ]
    return []


@checks.register()
def check_celery_content(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Node queues must accept JSON only: an app that accepts pickle makes every node
    unpickle whatever anyone with broker access sends it (``dt_worker`` refuses too)."""
    from distributed_tasks.celery import content_problem, get_app
    from distributed_tasks.conf import get_settings

    if not isinstance(getattr(settings, SETTING_NAME, {}), dict):
        return []  # check_settings reports it
    try:
        problem = content_problem(get_app())
    except Exception:  # an app that cannot be imported is E006
        return []
    if problem is None:
        return []
    return [
        _error(
            problem,
            f"Set accept_content = ['json'] on {get_settings().CELERY_APP or 'the Celery app'} "
            "(Celery's default), or give DISTRIBUTED_TASKS['CELERY_APP'] an app of its own.",
            E010,
        )
    ]
