from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand

from distributed_tasks import cli, scrape


class Command(BaseCommand):
    help = (
        "Run an orchestrator: a celery beat whose scheduler competes for the cluster's "
        "lease. Run two or more for failover; only the leader reaps, rescues runs of lost "
        "nodes, resyncs Redis, dispatches periodic tasks and sends CELERY_BEAT_SCHEDULE. "
        "SIGTERM releases the lease at once."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--name",
            type=cli.beat_name,
            help="Holder name shown in the lease (default beat-<pid>@<host>).",
        )
        parser.add_argument("-l", "--loglevel", default="INFO")
        scrape.add_arguments(parser)  # --metrics-port, --metrics-addr

    def handle(self, *args, **options) -> None:
        from distributed_tasks.celery import get_app
        from distributed_tasks.orchestrator.scheduler import (
            DistributedScheduler,
            beat_class,
            default_holder,
        )

        scheduler = type(
            "DistributedScheduler",
            (DistributedScheduler,),
            {"holder": options["name"] or default_holder()},
        )
        app = get_app()
        beat = beat_class(app)(
            scheduler=scheduler, max_interval=1.0, loglevel=options["loglevel"], quiet=True
        )
        scrape.serve_from_command(options, scrape.ClusterCollector())  # cluster-wide gauges
        beat.run()
