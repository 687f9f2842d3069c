"""``manage.py dt_reap``: what the leader's reaper does every tick, now, in batches."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand
from django.utils import timezone

from distributed_tasks import cli


class Command(BaseCommand):
    help = (
        "Reap now what the orchestrator leader reaps every tick: cached statuses of runs "
        "finished more than CLEANUP_TIMEOUT ago, and rows older than HISTORY_RETENTION, "
        "in batches. --dry-run only counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")
        parser.add_argument(
            "--batch", type=cli.positive_int, default=1000, help="Rows per batch (default 1000)."
        )
        cli.add_json_flag(parser)

    def handle(self, *args, **options):
        from distributed_tasks.conf import get_settings
        from distributed_tasks.orchestrator.reaper import Reaper
        from distributed_tasks.store import get_store

        reaper, batch, now = Reaper(lookback=None), options["batch"], timezone.now()
        retention = now - timezone.timedelta(seconds=get_settings().HISTORY_RETENTION)
        old_rows = get_store().runs.reapable(retention).count()
        totals = {"names_reaped": 0, "history_deleted": 0}
        if options["dry_run"]:  # the same plans a real reap walks, each counted, none applied
            names = 0
            while (plan := reaper.plan(now, batch)).names:
                names += reaper.would_reap(plan)
                reaper.watermark = plan.until
            totals = {"names_to_reap": names, "history_to_delete": old_rows}
        else:
            progress = cli.Progress(
                old_rows,
                self.stderr,
                label="deleting history",
                enabled=sys.stderr.isatty() and not options["json"],
            )
            while (plan := reaper.plan(now, batch)).names or plan.history_rows:
                done = reaper.apply(plan, now, batch)
                for key, value in done.items():
                    totals[key] += value
                progress.advance(done["history_deleted"])
            progress.close()
        if options["json"]:
            cli.emit(self.stdout, cli.dumps(totals) + "\n")
        else:
            line = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in totals.items())
            cli.emit(self.stdout, line + "\n")
