"""``manage.py dt_status``: the state of a name, as ``get_status`` reports it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import api, cli
from distributed_tasks.store import get_store
from distributed_tasks.types import State

# Values printed over several lines: the result as indented JSON, an error's message.
MULTILINE = ("result", "error")


class Command(BaseCommand):
    help = (
        "Show the newest run of a name: QUEUED, RUNNING, DONE or FAILED with its node, "
        "result or error. Finished names report NOT_FOUND after CLEANUP_TIMEOUT."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_name_arguments(parser)
        parser.add_argument(
            "--history",
            action="store_true",
            help="Also list every attempt of the newest run: node, outcome, times, error.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with cli.api_errors():
            status = api.get_status(options["name"], options["task_list"])
        history = self._history(options) if options["history"] else None
        if options["json"]:
            data = asdict(status) if history is None else {**asdict(status), "history": history}
            self.stdout.write(cli.dumps(data))
            return
        self._write_status(status)
        if history is not None:
            self._write_history(history)

    def _history(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        """The attempts of the newest run; the database keeps them past CLEANUP_TIMEOUT."""
        run = get_store().newest(options["task_list"], options["name"])
        return run.history() if run is not None else []

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        self.stdout.write("")
        if not history:
            self.stdout.write("history    none: no run of this name is recorded")
            return
        table = cli.Table(
            self.stdout, ["attempt", "node", "state", "reason", "started", "ended", "error"], cap=60
        )
        for entry in history:
            error = entry["error"].splitlines()[0] if entry["error"] else ""
            kind = entry["error_type"]
            table.add(
                [
                    entry["attempt"],
                    entry["node"],
                    entry["state"],
                    entry["reason"],
                    cli.iso_when(entry["started_at"]),
                    cli.iso_when(entry["ended_at"]),
                    f"{kind}: {error}" if kind else error,
                ]
            )
        table.close()

    def _write_status(self, status: Any) -> None:
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
        if status.progress is not None or status.progress_message:
            lines.append(("progress", _progress(status)))
        if status.cancel_requested_at is not None:
            who = f" by {status.cancel_requested_by}" if status.cancel_requested_by else ""
            lines.append(("cancel", f"asked{who} at {cli.when(status.cancel_requested_at)}"))
        if status.state == State.DONE:
            lines.append(("result", cli.dumps(status.result, readable=True)))
        if status.state == State.FAILED:
            lines += [("reason", status.reason), ("error", f"{status.error_type}: {status.error}")]
        width = max(len(label) for label, _ in lines)
        margin = "\n" + " " * (width + 2)  # a multi-line value's later lines, under its first
        for label, value in lines:
            shown = "-" if value is None else cli.printable(value, newlines=label in MULTILINE)
            self.stdout.write(f"{label.ljust(width)}  " + shown.replace("\n", margin))


def _progress(status: Any) -> str:
    """``42% half way {"items": 21}``: what the run last reported."""
    parts = [] if status.progress is None else [f"{status.progress:.0%}"]
    parts += [status.progress_message] if status.progress_message else []
    data = status.progress_data
    parts += [json.dumps(data, ensure_ascii=False)] if data is not None else []
    return " ".join(parts)
