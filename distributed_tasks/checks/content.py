"""The Celery app's accepted content: JSON only on node queues."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from distributed_tasks.checks.ids import E010, error
from distributed_tasks.conf import SETTING_NAME


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
        error(
            problem,
            f"Set accept_content = ['json'] on {get_settings().CELERY_APP or 'the Celery app'} "
            "(Celery's default), or give DISTRIBUTED_TASKS['CELERY_APP'] an app of its own.",
            E010,
        )
    ]
