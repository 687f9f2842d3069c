"""The django.tasks backend's checks: each TASKS entry's options and queues (E101-E103),
and W101, a project's own Celery app that cannot order runs by all priority levels."""

import pytest
from celery import Celery
from django.core import checks
from django.test import override_settings

from distributed_tasks.backends import E101, E102, E103, W101, DistributedTasksBackend

BACKEND = "distributed_tasks.backends.DistributedTasksBackend"

redis_default = Celery("redis-default", set_as_current=False)
redis_default.conf.update(broker_url="redis://127.0.0.1:6379/0")

redis_levels = Celery("redis-levels", set_as_current=False)
redis_levels.conf.update(
    broker_url="redis://127.0.0.1:6379/0",
    broker_transport_options={"priority_steps": list(range(10))},
)

amqp_plain = Celery("amqp-plain", set_as_current=False)
amqp_plain.conf.update(broker_url="amqp://guest:guest@127.0.0.1:5672//")

amqp_levels = Celery("amqp-levels", set_as_current=False)
amqp_levels.conf.update(broker_url="amqp://guest:guest@127.0.0.1:5672//", task_queue_max_priority=9)


def warnings_with(app: str | None) -> list:
    from django.conf import settings

    with override_settings(DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "CELERY_APP": app}):
        messages = list(DistributedTasksBackend("jobs", {}).check())
    return [m for m in messages if m.id == W101]


@pytest.mark.parametrize(
    ("app", "levels", "setting"),
    [
        ("redis_default", 4, 'broker_transport_options["priority_steps"] = list(range(10))'),
        ("amqp_plain", 1, "task_queue_max_priority = 9"),
    ],
)
def test_an_app_without_priority_levels_is_warned_about(app, levels, setting):
    (warning,) = warnings_with(f"tests.unit.test_backend_checks.{app}")
    assert f"node queues have {levels} priority level(s) of the 10" in warning.msg
    assert warning.hint.startswith(f"Set {setting} on tests.unit.test_backend_checks.{app}")


@pytest.mark.parametrize("app", ["redis_levels", "amqp_levels", None])
def test_apps_with_every_level_pass(app):
    assert warnings_with(app and f"tests.unit.test_backend_checks.{app}") == []


def check(params) -> list:
    return list(DistributedTasksBackend("jobs", params).check())


def test_valid_configuration_passes_the_checks():
    options = {"ON_CONFLICT": "return_existing", "REUSE": "reject", "TIMEOUT": 2.5}
    assert check({"QUEUES": ["default", "builds"], "OPTIONS": options}) == []
    assert check({"OPTIONS": {"MAX_ATTEMPTS": 3, "TIMEOUT": None}}) == []


def test_unknown_option_is_reported_with_a_suggestion():
    assert check({"OPTIONS": {"TIMOUT": 3}}) == [
        checks.Error(
            "TASKS['jobs']['OPTIONS'] has an unknown key 'TIMOUT'.",
            hint="Did you mean 'TIMEOUT'? DistributedTasksBackend reads ON_CONFLICT, REUSE, "
            "TIMEOUT, MAX_ATTEMPTS, RETRY_BACKOFF.",
            id=E101,
        )
    ]


def test_options_must_be_a_dict():
    assert check({"OPTIONS": ["TIMEOUT"]}) == [
        checks.Error(
            "TASKS['jobs']['OPTIONS'] must be a dict, got list.",
            hint="Write it as a dict with keys among ON_CONFLICT, REUSE, TIMEOUT, MAX_ATTEMPTS, "
            "RETRY_BACKOFF, or leave it out.",
            id=E101,
        )
    ]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("ON_CONFLICT", "skip", "must be one of ['fail', 'return_existing']"),
        ("REUSE", None, "must be one of ['allow', 'allow_failed_only', 'reject']"),
        ("TIMEOUT", 0, "must be a number greater than 0 or None"),
        ("MAX_ATTEMPTS", 1.5, "must be a whole number greater than 0 or None"),
        ("MAX_ATTEMPTS", True, "must be a whole number greater than 0 or None"),
        ("RETRY_BACKOFF", "1s", "must be a number greater than 0 or None"),
    ],
)
def test_bad_option_value_is_reported(key, value, problem):
    assert check({"OPTIONS": {key: value}}) == [
        checks.Error(
            f"TASKS['jobs']['OPTIONS'][{key!r}] {problem}, got {value!r}.",
            hint="Fix the value, or remove the key to use start_async()'s default.",
            id=E102,
        )
    ]


def test_queue_that_cannot_be_a_task_list_is_reported():
    (error,) = check({"QUEUES": ["default", "q" * 201]})
    assert (error.id, error.hint) == (
        E103,
        "Each queue is a task list: use 1 to 200 printable characters.",
    )
    assert error.msg.startswith(f"TASKS['jobs']['QUEUES'] has {'q' * 201!r}, which cannot be")


def test_checks_run_through_djangos_check_framework(settings):
    settings.TASKS = {"default": {"BACKEND": BACKEND, "OPTIONS": {"RETRIES": 2}}}
    ids = [message.id for message in checks.run_checks() if message.id.startswith("distributed")]
    assert ids == [E101]
