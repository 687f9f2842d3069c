"""``manage.py dt_nodes``: the live nodes, their share of the ring and their load."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from distributed_tasks import cli
from distributed_tasks.health import check_health

HEADERS = (
    "NODE",
    "HEARTBEAT",
    "WEIGHT",
    "EXECUTING",
    "TASK LISTS",
    "RING",
    "ACTIVE",
    "QUEUE",
    "HOST/PID",
)


class Command(BaseCommand):
    help = (
        "List live nodes (fresh heartbeats): heartbeat age, weight, runs executing out of "
        "its slots (pool concurrency x weight), task lists served, "
        "share of the placement ring over all live nodes, active runs placed on each "
        "(database) and messages waiting in its queue dt.node.<node> (broker)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_json_flag(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        health = check_health(with_queue_depths=True)
        if not health.redis.ok:
            raise CommandError(cli.printable(health.problems[0]))
        if options["json"]:
            data = health.as_dict()
            keys = ("nodes", "stale_nodes", "leader", "problems")
            self.stdout.write(cli.dumps({k: data[k] for k in keys}))
            return
        if not health.nodes:
            self.stdout.write("No live node: start one with `manage.py dt_worker`.")
        else:
            table = cli.Table(self.stdout, HEADERS)
            for n in health.nodes:
                table.add(
                    (
                        n.name,
                        cli.seconds(n.heartbeat_age),
                        n.weight,
                        f"{n.executing}/{n.slots}",
                        ",".join(n.task_lists),  # every cell is escaped by the table
                        f"{n.share:.1%}",
                        "?" if n.active_runs is None else n.active_runs,
                        "?" if n.queue_depth is None else n.queue_depth,
                        f"{n.host}/{n.pid}",
                    )
                )
            table.close()
        leader = health.leader
        self.stdout.write(
            f"Orchestrator leader: {cli.printable(leader.holder)} (epoch {leader.epoch})"
            if leader
            else "Orchestrator leader: none (start `manage.py dt_beat`)"
        )
        if health.stale_nodes:
            self.stdout.write(
                "Stopped heartbeating, not yet declared lost: "
                + cli.printable(", ".join(health.stale_nodes))
            )
        if health.orphaned_runs:
            self.stdout.write(
                f"Active runs on nodes that stopped heartbeating: {health.orphaned_runs}"
            )
        if health.parked_runs:
            self.stdout.write(
                f"Runs waiting for a node that serves their task list: {health.parked_runs}"
            )
