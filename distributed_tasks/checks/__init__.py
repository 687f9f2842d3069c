"""System checks for ``DISTRIBUTED_TASKS``: bad settings fail at start-up, not at 3 a.m.

Each check has an id (``distributed_tasks.E0xx`` errors, ``W0xx`` warnings, in
``ids``), a message that says what is wrong and a hint that names the fix. One
module per area:

- ``values``: the type and range of each setting (one validator per key);
- ``settings``: unknown keys (did-you-mean), how the values fit together, and the
  Django settings they need (``USE_TZ``);
- ``sqlite``: the SQLite options concurrent writers need;
- ``content``: the Celery app accepts JSON only.

Importing this package registers the checks (``apps.ready`` does).
"""

from distributed_tasks.checks.content import check_celery_content
from distributed_tasks.checks.ids import (
    E001,
    E002,
    E003,
    E004,
    E005,
    E006,
    E007,
    E010,
    E014,
    E015,
    E016,
    W001,
    W002,
    W003,
)
from distributed_tasks.checks.settings import check_settings
from distributed_tasks.checks.sqlite import SQLITE_OPTIONS, SQLITE_TIMEOUT, check_sqlite
from distributed_tasks.checks.values import VALIDATORS

__all__ = [
    "E001",
    "E002",
    "E003",
    "E004",
    "E005",
    "E006",
    "E007",
    "E010",
    "E014",
    "E015",
    "E016",
    "SQLITE_OPTIONS",
    "SQLITE_TIMEOUT",
    "VALIDATORS",
    "W001",
    "W002",
    "W003",
    "check_celery_content",
    "check_settings",
    "check_sqlite",
]
