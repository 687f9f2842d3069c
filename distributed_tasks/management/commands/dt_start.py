"""``manage.py dt_start``: start a registered function by name from a shell."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import api, cli
from distributed_tasks.types import OnConflict, Reuse


class Command(BaseCommand):
    help = (
        "Start a registered distributed task under a unique name and print its handle. "
        "Only functions decorated with @distributed_task can be started; arguments are JSON."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "function", type=cli.registered_task, help="Dotted path of a registered function."
        )
        parser.add_argument(
            "call_args",  # Django keeps "args" for itself
            metavar="args",
            nargs="?",
            type=cli.json_list,
            default=[],
            help="Positional arguments as a JSON list, e.g. '[42, \"fast\"]'.",
        )
        parser.add_argument(
            "--kwargs", type=cli.json_object, default=None, help="Keyword arguments as JSON."
        )
        parser.add_argument(
            "--name", type=cli.run_name, default=None, help="Unique run name (default: a uuid)."
        )
        cli.add_task_list(parser, "Task list to start in (default: 'default').")
        parser.add_argument(
            "--callback",
            type=cli.registered_task,
            default=None,
            help="Registered function called as callback(name, result) after success.",
        )
        parser.add_argument(
            "--on-conflict",
            choices=[c.value for c in OnConflict],
            default=OnConflict.FAIL.value,
            help="When the name is active: fail (default) or return_existing.",
        )
        parser.add_argument(
            "--reuse",
            choices=[c.value for c in Reuse],
            default=Reuse.ALLOW.value,
            help="Whether a name that finished within CLEANUP_TIMEOUT may start again.",
        )
        parser.add_argument(
            "--timeout", type=cli.positive_float, default=None, help="Seconds the run may take."
        )
        parser.add_argument(
            "--max-attempts",
            type=cli.positive_int,
            default=None,
            help="Executions allowed: a failed or lost attempt is retried until they are used.",
        )
        parser.add_argument(
            "--retry-backoff",
            type=cli.positive_float,
            default=None,
            help="Seconds before the first retry, doubled after each failed execution.",
        )
        cli.add_json_flag(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        with cli.api_errors():
            handle = api.start_async(
                options["function"],
                options["call_args"],
                options["kwargs"],
                name=options["name"],
                task_list=options["task_list"],
                callback=options["callback"],
                on_conflict=options["on_conflict"],
                reuse=options["reuse"],
                timeout=options["timeout"],
                max_attempts=options["max_attempts"],
                retry_backoff=options["retry_backoff"],
            )
        if options["json"]:
            self.stdout.write(cli.dumps(asdict(handle)))
            return
        what = "Already active" if handle.existing else "Started"
        self.stdout.write(
            f"{what}: {handle.name!r} in task list {handle.task_list!r}, run {handle.run_id} "
            f"(attempt {handle.attempt}) on node {cli.printable(handle.node)}. "
            f"Follow it with: manage.py dt_status {handle.name!r} --task-list {handle.task_list!r}"
        )
