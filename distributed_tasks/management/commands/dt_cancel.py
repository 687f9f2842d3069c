"""``manage.py dt_cancel``: end a QUEUED run before it starts."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import api, cli


class Command(BaseCommand):
    help = (
        "Cancel the QUEUED run of a name: it ends FAILED (reason 'cancelled') and its "
        "message, if delivered later, runs nothing. A RUNNING run is never interrupted, and a "
        "finished one has nothing left to cancel: both are refused with their state."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_name_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        name, task_list = options["name"], options["task_list"]
        with cli.api_errors():  # NotCancellable and TaskNotFound state the rule themselves
            status = api.cancel(name, task_list)
        if options["json"]:
            self.stdout.write(cli.dumps(asdict(status)))
            return
        self.stdout.write(
            cli.printable(
                f"Cancelled {name!r} in task list {task_list!r} (run {status.run_id}): "
                f"{status.state.value} ({status.reason})."
            )
        )
