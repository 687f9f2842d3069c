"""One OS process of the concurrency tests: start the same name many times at once.

Run as ``python -m tests.racer NAME COUNT THREADS GO_FILE``. It sets Django up,
opens its connections, then waits for ``GO_FILE`` to exist so every racer fires
at the same moment (a file, because the tests flush Redis while racing), and
prints one JSON line of what happened to its starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    name, count, threads, go_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connection

    from distributed_tasks import AlreadyRunning, ClusterUnavailable, start_async
    from distributed_tasks.api import get_client

    connection.ensure_connection()
    get_client().placement.view()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file) and time.monotonic() < deadline:
        time.sleep(0.001)

    def attempt(_: int) -> str:
        try:
            start_async("tests.tasks.wait_for", [f"release:{name}"], name=name)
            return "started"
        except AlreadyRunning:
            return "refused"
        except ClusterUnavailable:
            return "unavailable"
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(attempt, range(count)))
    print(json.dumps({k: outcomes.count(k) for k in ("started", "refused", "unavailable")}))


if __name__ == "__main__":
    main()
