"""``manage.py dt_list``: a table of runs from the database, newest first."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import cli
from distributed_tasks.conf import get_settings
from distributed_tasks.models import TaskRun

FIELDS = (
    "id", "task_list", "name", "function", "state", "reason", "node", "attempt",
    "queued_at", "started_at", "finished_at",
)  # fmt: skip
HEADERS = ("NAME", "LIST", "STATE", "NODE", "TRY", "FUNCTION", "QUEUED", "TOOK", "REASON")


def as_row(run: TaskRun) -> tuple[Any, ...]:
    return (
        run.name, run.task_list, run.state, run.node, run.attempt, run.function,
        cli.when(run.queued_at), cli.seconds(run.duration), run.reason,
    )  # fmt: skip


def as_item(run: TaskRun) -> dict[str, Any]:
    item = {f: getattr(run, f) for f in FIELDS if f != "id"}
    return {"run_id": run.run_id, **item, "duration": run.duration}


class Command(BaseCommand):
    help = (
        "List runs recorded in the database (every state, kept for HISTORY_RETENTION), "
        "newest first. Rows stream as they are read; --json prints a JSON array."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--state",
            type=cli.run_states,
            action="append",
            help="QUEUED, RUNNING, DONE, FAILED, active or finished (repeatable).",
        )
        parser.add_argument(
            "--task-list", type=cli.task_list_name, default=None, help="Only this task list."
        )
        parser.add_argument("--node", default=None, help="Only runs placed on this node.")
        parser.add_argument(
            "--limit", type=cli.positive_int, default=100, help="Most rows to show (default 100)."
        )
        cli.add_json_flag(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        runs = TaskRun.objects.using(get_settings().DATABASE_ALIAS).order_by("-queued_at")
        if options["state"]:
            runs = runs.filter(state__in={s for group in options["state"] for s in group})
        if options["task_list"]:
            runs = runs.filter(task_list=options["task_list"])
        if options["node"]:
            runs = runs.filter(node=options["node"])
        total = runs.count()
        shown = min(total, options["limit"])
        progress = cli.Progress(
            shown,
            self.stderr,
            label="runs",
            enabled=self.stderr.isatty() and not self.stdout.isatty(),
        )
        rows = self._stream(runs.only(*FIELDS)[:shown], progress)
        if options["json"]:
            cli.write_json_array(self.stdout, (as_item(run) for run in rows))
            progress.close()
            return
        if not total:
            self.stdout.write("No runs match.")
            return
        table = cli.Table(self.stdout, HEADERS)
        for run in rows:
            table.add(as_row(run))
        table.close()
        progress.close()
        if shown < total:
            self.stdout.write(
                f"Showing the newest {shown} of {total} runs; raise --limit to see more."
            )

    def _stream(self, runs: Any, progress: cli.Progress) -> Iterator[TaskRun]:
        for run in runs.iterator(chunk_size=500):
            yield run
            progress.advance()
