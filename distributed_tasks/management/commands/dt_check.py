"""``manage.py dt_check``: cluster health for people and container probes."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand

from distributed_tasks import cli
from distributed_tasks.health import Health, Probe, Status, check_health


def _probe(probe: Probe) -> str:
    return f"ok ({probe.latency_ms:g} ms)" if probe.ok else f"DOWN: {probe.error}"


class Command(BaseCommand):
    help = (
        "Check Redis, the database, live nodes and the orchestrator leader. Exit code for "
        "probes: 0 healthy, 1 degraded (e.g. no leader, no live node), 2 down (Redis or "
        "the database does not answer)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        cli.add_json_flag(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        health = check_health()
        if options["json"]:
            self.stdout.write(cli.dumps(health.as_dict()))
        else:
            self._report(health)
        if health.exit_code:
            raise SystemExit(health.exit_code)

    def _report(self, health: Health) -> None:
        leader, known = health.leader, health.redis.ok
        nodes = ", ".join(f"{n.name} ({cli.seconds(n.heartbeat_age)})" for n in health.nodes)
        runs = ", ".join(f"{n} {state}" for state, n in health.runs.items())
        lines = [
            ("status", health.status.value),
            ("redis", _probe(health.redis)),
            ("database", _probe(health.database)),
            ("leader", f"{leader.holder} (epoch {leader.epoch})" if leader else "none"),
            ("nodes", f"{len(health.nodes)} live" + (f": {nodes}" if nodes else "")),
            ("active runs", runs or "unknown"),
        ]
        if not known:  # nodes and leader live in Redis: unknown, not missing
            lines[3:5] = [("leader", "unknown"), ("nodes", "unknown")]
        style = {
            Status.HEALTHY: self.style.SUCCESS,
            Status.DEGRADED: self.style.WARNING,
            Status.DOWN: self.style.ERROR,
        }[health.status]
        for label, value in lines:
            text = f"{label.ljust(11)}  {cli.printable(value)}"
            self.stdout.write(text, style if label == "status" else None)
        for problem in health.problems:
            self.stdout.write(f"- {cli.printable(problem)}")
