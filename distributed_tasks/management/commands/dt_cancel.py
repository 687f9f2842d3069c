"""``manage.py dt_cancel``: end a QUEUED run, or ask a RUNNING one to stop."""

from __future__ import annotations

import argparse
import getpass
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import api, cli


class Command(BaseCommand):
    help = (
        "Cancel the newest run of a name. A QUEUED run ends FAILED (reason 'cancelled') and "
        "its message, if delivered later, runs nothing. A RUNNING run is asked to stop: it "
        "sees cancel_requested() and ends FAILED (cancelled); with --force its node kills it "
        "if it still runs after the grace period. A finished run has nothing left to cancel "
        "and is refused with its state."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_name_arguments(parser)
        parser.add_argument(
            "--force",
            action="store_true",
            help="Kill a RUNNING run's pool process if it has not stopped after the grace "
            "period (it is not retried).",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="Seconds --force waits for the run to stop by itself (default CANCEL_GRACE).",
        )
        parser.add_argument(
            "--by", default=None, help="Who asks, as the run records it (default: your login)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name, task_list = options["name"], options["task_list"]
        by = options["by"] or _login()
        with cli.api_errors():  # NotCancellable and TaskNotFound state the rule themselves
            status = api.cancel(
                name, task_list, force=options["force"], by=by, grace=options["grace"]
            )
        if options["json"]:
            self.stdout.write(cli.dumps(asdict(status)))
            return
        if status.is_active:
            forced = " (forced after the grace period)" if options["force"] else ""
            text = (
                f"Asked {name!r} in task list {task_list!r} (run {status.run_id}, "
                f"{status.state.value} on {status.node}) to stop{forced}; dt_status shows "
                "when it ended."
            )
        else:
            text = (
                f"Cancelled {name!r} in task list {task_list!r} (run {status.run_id}): "
                f"{status.state.value} ({status.reason})."
            )
        self.stdout.write(cli.printable(text))


def _login() -> str:
    try:
        return f"{getpass.getuser()} (dt_cancel)"
    except (KeyError, OSError):
        return "dt_cancel"
