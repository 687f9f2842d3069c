"""Helpers of the admin and browser tests: runs in every state, and posting actions.

Runs are made the way the cluster makes them: ``start_async`` on the idle ``node``
fixture (it consumes nothing, so a run stays QUEUED); for a finished run, the worker's
own ``runner.execute`` in this process, so states, errors and tracebacks are real.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.messages import get_messages
from django.test import Client, override_settings
from django.urls import reverse

from distributed_tasks import runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks

CHANGELIST = "admin:distributed_tasks_taskrun_changelist"
CLUSTER = "admin:distributed_tasks_cluster"
# Settings whose Redis answers nothing (a closed port): pages must still render.
REDIS_DOWN = {**settings.DISTRIBUTED_TASKS, "REDIS_URL": "redis://127.0.0.1:1/0"}


def page_while_redis_is_down(client: Client, url_name: str) -> str:
    """The page rendered while Redis does not answer: a 200 with the "down" banner."""
    with override_settings(DISTRIBUTED_TASKS=REDIS_DOWN):
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<strong>The cluster is down.</strong>" in html
    assert '<li class="error">Redis does not answer' in html
    return html


def fetch(run: TaskRun) -> TaskRun:
    return TaskRun.objects.get(pk=run.pk)


def queued(name: str, func: Any = tasks.add, args: Any = (1, 2), **options: Any) -> TaskRun:
    handle = start_async(func, list(args), name=name, **options)
    return TaskRun.objects.get(pk=handle.run_id)


def executed(run: TaskRun) -> TaskRun:
    """The run after a worker executed its current attempt (as dt_worker's pool does)."""
    assert runner.execute(message_for(run).to_body()) is not None
    return fetch(run)


def failed(name: str, message: str = "boom", **options: Any) -> TaskRun:
    return executed(queued(name, tasks.fail, [message], **options))


def done(name: str, **options: Any) -> TaskRun:
    return executed(queued(name, **options))


def running(name: str) -> TaskRun:
    run = queued(name)
    assert get_store().mark_running(message_for(run), "incarnation")
    return fetch(run)


def run_action(client: Client, action: str, selected: list[TaskRun]) -> list[tuple[str, str]]:
    """POST an action as the changelist form does; the messages it left, as (level, text).

    An action runs and redirects (302); a user offered no action at all gets the list
    again (200) and nothing runs.
    """
    response = client.post(
        reverse(CHANGELIST),
        {
            "action": action,
            "index": 0,
            "select_across": 0,
            "_selected_action": [str(run.pk) for run in selected],
        },
    )
    assert response.status_code in (200, 302), response.content[:500]
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def action_names(response) -> set[str]:
    """The actions the changelist offers this user."""
    form = response.context["action_form"]
    if form is None:  # no action is allowed at all
        return set()
    return {name for name, _label in form.fields["action"].choices if name}
