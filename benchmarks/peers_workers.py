"""Worker processes of the durable peers for ``bench_e2e_peers`` (run as ``-m``).

    python -m benchmarks.peers_workers procrastinate <conninfo> <concurrency>

runs a Procrastinate worker on the benchmark's Procrastinate database until its queue
is empty. The Celery + django-celery-results worker is ``celery -A
benchmarks.peers_workers:dcr_app worker``; django-tasks-db's is its ``db_worker``.
"""

from __future__ import annotations

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

from benchmarks import peers  # noqa: E402

dcr_app = peers.dcr_app()


def procrastinate_worker(conninfo: str, concurrency: int) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    app.task(name="bench_noop", queue="sink")(peers._procrastinate_noop)
    app.run_worker(
        queues=["sink"], concurrency=concurrency, wait=False, install_signal_handlers=False
    )


if __name__ == "__main__":
    if sys.argv[1] == "procrastinate":
        procrastinate_worker(sys.argv[2], int(sys.argv[3]))
