"""Watchdog: a RUNNING run that its live node no longer executes ends (or is retried).

The lifeline covers nodes that die or restart. A node can also stay alive and
simply stop executing a run without storing its outcome: the pool process died
and the main process could not reach the database, the outcome write kept
failing, a bug of ours. Nothing would ever end such a run, and its name would
stay taken. So each node reports, with every heartbeat, the attempts it holds
(``keys.node_running_key``), and the leader ends every RUNNING attempt on a live
node (same incarnation) that the node's reports have left out for NODE_TIMEOUT,
as FAILED(``worker_lost``), or retries it when the run has executions left.

"Left out for NODE_TIMEOUT" is measured in Redis time (the heartbeat's own, so
no host clocks are compared): from the last report the leader saw with the
attempt, or, for an attempt it never saw reported, from the first report it saw
without it, to the newest report. A node with no report at all (Redis lost its
data, or a node of an older version) is not judged: its runs wait until it
reports again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from distributed_tasks import keys
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis, text
from distributed_tasks.fencing import fenced
from distributed_tasks.orchestrator import Duty, TickContext
from distributed_tasks.orchestrator.lifeline import end_running
from distributed_tasks.store import get_store
from distributed_tasks.types import Outcome, Reason, State

logger = logging.getLogger("distributed_tasks.orchestrator.watchdog")

Attempt = tuple[str, int]  # (run id as hex, attempt)


class WorkerLost(Exception):
    """What ``on_failure`` receives for a run its live node stopped executing."""


class Watchdog(Duty):
    name = "watchdog"

    def __init__(self) -> None:
        # Attempt -> Redis time (ms) since which its node has not reported it.
        self.unreported_since: dict[Attempt, int] = {}
        # Attempt -> Redis time (ms) of the last report seen with it.
        self.reported_at: dict[Attempt, int] = {}

    def reset(self) -> None:
        self.unreported_since.clear()
        self.reported_at.clear()

    def reports(self, ctx: TickContext) -> dict[str, set[Attempt]]:
        """What each live node reported it executes; nodes without a report are left out."""
        names = sorted(ctx.view.nodes)
        if not names:
            return {}
        raw = get_redis().mget([keys.node_running_key(n) for n in names])
        out: dict[str, set[Attempt]] = {}
        for name, value in zip(names, raw, strict=True):
            if value is None:
                continue
            try:
                out[name] = {_attempt(task_id) for task_id in json.loads(text(value))}
            except (ValueError, TypeError):
                logger.warning("Ignoring an unreadable run report of node %s: %r", name, value)
        return out

    def run(self, ctx: TickContext) -> dict[str, int]:
        # No pause while Redis settles after losing its data (the lifeline pauses): a
        # node's report exists only once the node has written it again, and is then true.
        reports = self.reports(ctx)
        live = ctx.view.nodes
        running = (
            get_store()
            .runs.filter(state=State.RUNNING, node__in=list(reports))
            .values_list("id", "attempt", "node", "incarnation")
        )
        timeout_ms = get_settings().NODE_TIMEOUT * 1000
        since: dict[Attempt, int] = {}
        reported_at: dict[Attempt, int] = {}
        overdue: list[Attempt] = []
        for run_id, attempt, node, incarnation in running:
            if incarnation != live[node].incarnation:
                continue  # a restarted node's run: the lifeline's
            key, report_ms = (run_id.hex, attempt), live[node].last_seen_ms
            if key in reports[node]:
                reported_at[key] = report_ms
                continue
            first = self.unreported_since.get(key) or self.reported_at.get(key) or report_ms
            since[key] = first
            if report_ms - first >= timeout_ms:
                overdue.append(key)
        self.unreported_since, self.reported_at = since, reported_at
        if not overdue:
            return {"unreported": len(since)} if since else {}
        counts: Counter[str] = Counter(unreported=len(since) - len(overdue))
        self._end(ctx, overdue[: ctx.batch], counts)
        return +counts

    def _end(self, ctx: TickContext, overdue: list[Attempt], counts: Counter[str]) -> None:
        timeout = get_settings().NODE_TIMEOUT
        wanted = dict(overdue)
        with fenced(ctx.epoch):
            runs = get_store().runs.by_keys(wanted, state=State.RUNNING)
            for run in runs:
                if wanted.get(run.id.hex) != run.attempt:
                    counts["fenced"] += 1
                    continue
                outcome = Outcome.failed(
                    Reason.WORKER_LOST,
                    message=(
                        f"node {run.node} is alive but stopped executing this run (attempt "
                        f"{run.attempt}) without storing its outcome: it has not reported it for "
                        f"{timeout:g} s. Its pool process may have died while the database was "
                        "unreachable; see the node's log."
                    ),
                )
                counts[end_running(run, outcome, ctx, WorkerLost)] += 1
                self.unreported_since.pop((run.id.hex, run.attempt), None)


def _attempt(task_id: Any) -> Attempt:
    """``"<run_id>:<attempt>"`` (a Celery task id of ours) as a key."""
    run_id, _, attempt = str(task_id).rpartition(":")
    return run_id, int(attempt)
