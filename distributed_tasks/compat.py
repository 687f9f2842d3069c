"""The one version branch of the package: where Django's task framework lives.

Django 6 ships it as ``django.tasks``; on Django 5.2 the ``django-tasks`` backport
provides the same API as ``django_tasks`` (with ``InvalidTaskError`` for 6.x's
``InvalidTask``). Everything else imports these names from here, so supporting a
new Django version means editing this file only.

Only ``distributed_tasks.backends`` (and code that uses Django's ``@task``
beside it) imports this module, so the rest of the package works without the
backport installed.
"""

from __future__ import annotations

import django

from distributed_tasks.exceptions import InvalidConfiguration

if django.VERSION >= (6, 0):
    from django.tasks import task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    TASKS_MODULE = "django.tasks"  # the framework's package, also its logger's name
else:
    try:
        from django_tasks import task, task_backends  # type: ignore[no-redef, assignment]
    except ImportError as exc:
        raise InvalidConfiguration(
            f"distributed_tasks.backends needs Django's task framework: Django "
            f"{django.get_version()} has no django.tasks, so install the backport "
            "(pip install django-tasks) or upgrade to Django 6."
        ) from exc
    # Django 6 always registers the check that runs each backend's check(); the backport
    # does so only from its AppConfig, so register it here too (once: a module imports once).
    from django_tasks import checks as _checks  # noqa: F401
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

    # Also resets backends on setting_changed.
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    TASKS_MODULE = "django_tasks"

__all__ = [
    "TASKS_MODULE",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
