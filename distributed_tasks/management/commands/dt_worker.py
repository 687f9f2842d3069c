from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError

from distributed_tasks import cli, scrape
from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import InvalidConfiguration


class Command(BaseCommand):
    help = (
        "Run one node of the cluster: a Celery worker that consumes only its own queue "
        "dt.node.<node> and heartbeats to Redis. Stop it with SIGTERM (warm shutdown)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "-n",
            "--node",
            type=cli.node_name,
            help="Node name, name@host style; %%h is the host name (default: NODE_NAME or dt@%%h).",
        )
        parser.add_argument(
            "-c",
            "--concurrency",
            type=cli.positive_int,
            default=2,
            help="Pool processes (default 2).",
        )
        parser.add_argument(
            "-P",
            "--pool",
            default="prefork",
            choices=["prefork", "threads", "solo"],
            help="Celery pool; time limits need prefork (default).",
        )
        parser.add_argument(
            "--weight",
            type=cli.positive_int,
            default=1,
            help="Share of the ring relative to other nodes (default 1).",
        )
        parser.add_argument(
            "--task-list",
            action="append",
            dest="task_lists",
            type=cli.task_list_name,  # what start_async accepts: printable, 1-200 characters
            help="Task list this node serves (repeatable; default: all).",
        )
        parser.add_argument("-l", "--loglevel", default="INFO")
        parser.add_argument("--max-tasks-per-child", type=cli.positive_int, default=None)
        scrape.add_arguments(parser)  # --metrics-port, --metrics-addr

    def handle(self, *args, **options) -> None:
        from distributed_tasks.worker import WorkerNode, WorkerOptions

        node = options["node"] or get_settings().default_node_name
        worker = WorkerNode(
            WorkerOptions(
                node=node,
                concurrency=options["concurrency"],
                pool=options["pool"],
                weight=options["weight"],
                task_lists=tuple(options["task_lists"] or ("*",)),
                loglevel=options["loglevel"],
                max_tasks_per_child=options["max_tasks_per_child"],
            )
        )
        scrape.serve_from_command(options, scrape.ClusterCollector(node, options["concurrency"]))
        try:
            code = worker.run()
        except InvalidConfiguration as exc:
            raise CommandError(str(exc)) from exc
        if code:
            raise SystemExit(code)
