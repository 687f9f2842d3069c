from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from distributed_tasks import cli


class Command(BaseCommand):
    help = (
        "Run a small local cluster: start worker nodes and two orchestrator beats as "
        "subprocesses, start named runs of the seed's compile example (and refused "
        "duplicates), show their states live per node, SIGKILL a node and the leader "
        "mid-run and time the recovery, and stop everything it started."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=cli.positive_int, default=3)
        parser.add_argument("--tasks", type=cli.positive_int, default=30)
        parser.add_argument("--duplicates", type=int, default=5)
        parser.add_argument("--beats", type=cli.positive_int, default=2)
        parser.add_argument(
            "--no-faults",
            action="store_false",
            dest="faults",
            help="Do not kill a node and the leader mid-run.",
        )
        parser.add_argument(
            "--function",
            default="testproject.builds.tasks.compile",
            help="Registered function to run (takes an id and seconds=).",
        )
        parser.add_argument("--callback", default="testproject.builds.tasks.store_artefact")
        parser.add_argument(
            "--state-dir", type=Path, default=Path(getattr(settings, "STATE_DIR", ".demo"))
        )

    def handle(self, *args, **options):
        from distributed_tasks.demo import Demo, DemoOptions, manage_py
        from distributed_tasks.registry import resolve

        try:
            resolve(options["function"])
            if options["callback"]:
                resolve(options["callback"])
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        demo = Demo(
            DemoOptions(
                workers=options["workers"],
                tasks=options["tasks"],
                duplicates=options["duplicates"],
                beats=options["beats"],
                faults=options["faults"],
                function=options["function"],
                callback=options["callback"] or None,
                state_dir=options["state_dir"],
                manage_py=manage_py(),
            ),
            out=self.stdout._out,
        )
        try:
            report = demo.run()
        except KeyboardInterrupt:
            raise CommandError("Interrupted; every process the demo started was stopped.") from None
        if report.done + report.failed < report.started:
            raise CommandError("Not every run finished before the demo's deadline.")
