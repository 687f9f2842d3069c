"""Node queues are JSON only: a Celery app that accepts more fails the check, and
``dt_worker`` refuses to start with it (issue 11 item 3)."""

import pytest
from celery import Celery
from django.core.management import CommandError, call_command
from django.test import override_settings

from distributed_tasks.checks import E010, check_celery_content

# A project's app that also accepts pickle (what the check and dt_worker refuse).
pickle_app = Celery("pickle-accepting", set_as_current=False)
pickle_app.conf.update(broker_url="memory://", accept_content=["json", "pickle"])

json_app = Celery("json-only", set_as_current=False)
json_app.conf.update(broker_url="memory://", accept_content=["application/json"])


def using(app_path: str):
    from django.conf import settings

    return override_settings(
        DISTRIBUTED_TASKS={**settings.DISTRIBUTED_TASKS, "CELERY_APP": app_path}
    )


def test_an_app_that_accepts_pickle_fails_the_check():
    with using("tests.unit.test_worker_content.pickle_app"):
        (error,) = check_celery_content()
    assert error.id == E010 and "'pickle'" in error.msg and "accept_content" in error.hint


def test_json_only_apps_pass_the_check():
    assert check_celery_content() == []  # the app built from BROKER_URL
    with using("tests.unit.test_worker_content.json_app"):
        assert check_celery_content() == []


def test_dt_worker_refuses_to_start_with_it():
    from distributed_tasks.nodes import current_node

    with (
        using("tests.unit.test_worker_content.pickle_app"),
        pytest.raises(CommandError, match="accepts 'pickle' besides JSON"),
    ):
        call_command("dt_worker", "--node", "refused@test", "--skip-checks")
    assert current_node() is None
