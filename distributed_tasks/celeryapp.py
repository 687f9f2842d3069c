"""The cluster's Celery app as a module attribute, for Celery's own tools.

``celery -A`` needs a module holding an app; ours is built from settings on first
use (``celery.get_app``), so this module sets Django up and exposes it::

    DJANGO_SETTINGS_MODULE=mysite.settings celery -A distributed_tasks.celeryapp inspect ping

Nodes answer only with ``DISTRIBUTED_TASKS["REMOTE_CONTROL"] = True``
(docs/observability.md says what that exposes). A project with its own
``CELERY_APP`` points ``-A`` at that app instead.
"""

from __future__ import annotations

import django

django.setup()

from distributed_tasks.celery import get_app  # noqa: E402 (needs the settings)

app = get_app()
