"""``manage.py dt_status``: the state of a name, as ``get_status`` reports it."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import api, cli
from distributed_tasks.types import State


class Command(BaseCommand):
    help = (
        "Show the newest run of a name: QUEUED, RUNNING, DONE or FAILED with its node, "
        "result or error. Finished names report NOT_FOUND after CLEANUP_TIMEOUT."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_name_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        with cli.api_errors():
            status = api.get_status(options["name"], options["task_list"])
        if options["json"]:
            self.stdout.write(cli.dumps(asdict(status)))
            return
        if status.state == State.NOT_FOUND:
            self.stdout.write(
                f"{status.name!r} in task list {status.task_list!r}: NOT_FOUND (it never ran, "
                "or it finished more than CLEANUP_TIMEOUT ago; dt_list shows its history)."
            )
            return
        lines = [
            ("name", status.name),
            ("task list", status.task_list),
            ("state", status.state.value),
            ("run", status.run_id),
            ("node", status.node),
            ("attempt", status.attempt),
            ("queued", cli.when(status.queued_at)),
            ("started", cli.when(status.started_at)),
            ("finished", cli.when(status.finished_at)),
        ]
        if status.state == State.DONE:
            lines.append(("result", cli.dumps(status.result)))
        if status.state == State.FAILED:
            lines += [("reason", status.reason), ("error", f"{status.error_type}: {status.error}")]
        width = max(len(label) for label, _ in lines)
        for label, value in lines:
            self.stdout.write(f"{label.ljust(width)}  {'-' if value is None else value}")
