"""W101: a project's own Celery app that cannot order runs by all priority levels."""

import pytest
from celery import Celery
from django.test import override_settings

from distributed_tasks.backends import W101, DistributedTasksBackend

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
