"""The ``DISTRIBUTED_TASKS`` setting: each value's type, and how the values fit together.

Unknown keys get a did-you-mean suggestion, as Oban does; values that cannot work
together (a heartbeat slower than the node timeout, a Redis Cluster as the Celery
broker, a database alias that names nothing) are errors with the fix in the hint.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core import checks

from distributed_tasks.checks import ids
from distributed_tasks.checks.ids import error
from distributed_tasks.checks.sqlite import check_sqlite
from distributed_tasks.checks.values import CLUSTER_SCHEMES, VALIDATORS
from distributed_tasks.conf import DEFAULTS, SETTING_NAME, user_settings


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    raw = getattr(settings, SETTING_NAME, {})
    if not isinstance(raw, dict):
        return [
            error(
                f"{SETTING_NAME} must be a dict, got {type(raw).__name__}.",
                f"Write {SETTING_NAME} = {{...}} with keys from the README's settings table.",
                ids.E001,
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
                    id=ids.W001,
                )
            )
    merged = {**DEFAULTS, **user_settings()}
    for key, validate in VALIDATORS.items():
        if key in raw and (problem := validate(raw[key])):
            default = DEFAULTS[key]
            messages.append(
                error(
                    f"{SETTING_NAME}[{key!r}] {problem} (got {raw[key]!r}).",
                    f"Fix the value, or remove the key to use the default ({default!r}).",
                    ids.E003 if "scheme" in problem else ids.E002,
                )
            )
    if messages:
        return messages
    return messages + _check_relations(merged)


def _check_relations(conf: dict[str, Any]) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if not settings.USE_TZ:
        messages.append(
            checks.Error(
                "USE_TZ is False: runs record and compare aware datetimes (queued, started, "
                "finished, due), which SQLite and MySQL refuse to store then (every start "
                "fails) and which naive times read back cannot be compared with.",
                hint="Set USE_TZ = True (Django's default since 5.0); TIME_ZONE still sets "
                "the time zone the admin shows.",
                obj="USE_TZ",
                id=ids.E015,
            )
        )
    if conf["HEARTBEAT_INTERVAL"] >= conf["NODE_TIMEOUT"]:
        messages.append(
            error(
                f"HEARTBEAT_INTERVAL ({conf['HEARTBEAT_INTERVAL']:g} s) must be shorter than "
                f"NODE_TIMEOUT ({conf['NODE_TIMEOUT']:g} s), or live nodes look dead.",
                "Keep NODE_TIMEOUT at 3-5 heartbeats, e.g. HEARTBEAT_INTERVAL=1, NODE_TIMEOUT=5.",
                ids.E004,
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
                id=ids.W002,
            )
        )
    if conf["DATABASE_ALIAS"] not in settings.DATABASES:
        messages.append(
            error(
                f"DATABASE_ALIAS {conf['DATABASE_ALIAS']!r} is not in DATABASES.",
                f"Use one of {', '.join(settings.DATABASES)}.",
                ids.E005,
            )
        )
    elif settings.DATABASES[conf["DATABASE_ALIAS"]].get("AUTOCOMMIT", True) is False:
        messages.append(
            error(
                f"DATABASES[{conf['DATABASE_ALIAS']!r}] has AUTOCOMMIT False: the workers' "
                "and the orchestrator's writes would wait for a commit that nothing makes, "
                "and every start outside atomic() is refused.",
                "Remove AUTOCOMMIT (Django's default is True), or point DATABASE_ALIAS at an "
                "alias of the same database with autocommit on.",
                ids.E016,
            )
        )
    caches = getattr(settings, "CACHES", {})
    if conf["CACHE_ALIAS"] and conf["CACHE_ALIAS"] not in caches:
        messages.append(
            error(
                f"CACHE_ALIAS {conf['CACHE_ALIAS']!r} is not in CACHES.",
                "Name a django-redis cache, or remove CACHE_ALIAS to use REDIS_URL.",
                ids.E005,
            )
        )
    broker = conf["BROKER_URL"] or (None if conf["CELERY_APP"] else conf["REDIS_URL"])
    if urlparse(str(broker)).scheme in CLUSTER_SCHEMES:
        messages.append(
            error(
                "The Celery broker would be a Redis Cluster, which Celery's Redis transport "
                "does not support.",
                "Keep REDIS_URL on the cluster and set BROKER_URL to a plain Redis (or "
                "sentinel://) or to RabbitMQ (amqp://).",
                ids.E014,
            )
        )
    for key in ("CELERY_APP", "BACKEND", "STORE"):
        if conf[key]:
            messages += _check_import(key, conf[key])
    for name, entry in conf["PERIODIC"].items():
        messages += _check_periodic(name, entry)
    alias = conf["DATABASE_ALIAS"]
    return messages + check_sqlite(alias, settings.DATABASES.get(alias, {}))


def _check_periodic(name: str, entry: Any) -> list[checks.CheckMessage]:
    from django.utils.module_loading import import_string

    from distributed_tasks.exceptions import InvalidConfiguration
    from distributed_tasks.periodic import PeriodicTask, spec_from_settings

    hint = "Each entry: {'task': 'app.tasks.MyTask', 'interval': 10, ...} (see the README)."
    try:
        spec = spec_from_settings(name, entry)
        task = import_string(spec.task)
    except (InvalidConfiguration, ImportError) as exc:
        return [error(f"PERIODIC[{name!r}]: {exc}", hint, ids.E007)]
    if not (isinstance(task, type) and issubclass(task, PeriodicTask)):
        problem = f"PERIODIC[{name!r}]: {spec.task} is not a PeriodicTask subclass."
        return [error(problem, hint, ids.E007)]
    return []


def _check_import(key: str, path: str) -> list[checks.CheckMessage]:
    from django.utils.module_loading import import_string

    try:
        import_string(path)
    except ImportError as exc:
        return [
            error(
                f"{key} {path!r} cannot be imported: {exc}.",
                "Give the dotted path of an object, e.g. 'proj.celery.app'.",
                ids.E006,
            )
        ]
    return []
