"""A concurrent process for the SQLite fault tests: admin reads and held write locks.

Run as ``python -m tests.sqlite_load SECONDS`` with the settings of the processes under
test (``DT_TEST_DB=sqlite DT_TEST_DB_NAME=...``). Until the deadline it alternates the
admin's heaviest pages (the runs and periodic lists, the cluster page) with a write
transaction that holds SQLite's write lock for up to 1.5 s, as an operator's bulk action
would; then prints what it did as JSON. Its own errors are counted, not raised.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

PAGES = (
    "/admin/distributed_tasks/taskrun/",
    "/admin/distributed_tasks/taskrun/?state__exact=DONE",
    "/admin/distributed_tasks/periodictaskstate/",
    "/admin/distributed_tasks/taskrun/cluster/",
)
LONGEST_LOCK = 1.5


def main(seconds: float) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.db import DatabaseError, transaction
    from django.test import Client
    from django.utils import timezone

    user, _ = User.objects.get_or_create(
        username="sqlite-load", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    done = {"reads": 0, "locks": 0, "locked_seconds": 0.0, "errors": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for page in PAGES:
            try:
                status = client.get(page).status_code
            except DatabaseError as exc:
                done["errors"].append(f"GET {page}: {exc}")
                continue
            if status != 200:
                done["errors"].append(f"GET {page}: {status}")
            done["reads"] += 1
        hold = random.uniform(0.2, LONGEST_LOCK)
        try:
            with transaction.atomic():
                User.objects.filter(pk=user.pk).update(last_login=timezone.now())
                time.sleep(hold)  # the fault: a writer that keeps the lock
        except DatabaseError as exc:
            done["errors"].append(f"write: {exc}")
            continue
        done["locks"] += 1
        done["locked_seconds"] = round(done["locked_seconds"] + hold, 1)
    return done


if __name__ == "__main__":
    print(json.dumps(main(float(sys.argv[1]))))
