"""The demo's fault phase: SIGKILL one worker node and the leader beat mid-run, then time
how long the cluster takes to notice and recover."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from django.utils import timezone

from distributed_tasks.conf import get_settings
from distributed_tasks.demo.screen import Screen
from distributed_tasks.lease import current_leader
from distributed_tasks.localcluster import LocalCluster
from distributed_tasks.models import TaskRun
from distributed_tasks.types import State


@dataclass
class FaultPhase:
    cluster: LocalCluster
    screen: Screen
    victim: str | None = None
    leader: str | None = None
    new_leader: str | None = None
    injected_at: float | None = None
    lost: list[str] = field(default_factory=list)
    failover: float | None = None
    rescue: float | None = None

    def due(self, per_node: dict[str, Counter], total: int) -> bool:
        finished = sum(c["DONE"] + c["FAILED"] for c in per_node.values())
        running = max((c["RUNNING"] for c in per_node.values()), default=0)
        return self.injected_at is None and finished >= total // 4 and running > 0

    def inject(self, run_ids: list[str]) -> None:
        rows = TaskRun.objects.filter(id__in=run_ids, state=State.RUNNING)
        busiest = Counter(rows.values_list("node", flat=True)).most_common(1)
        leader = current_leader()
        if not busiest or leader is None:
            return
        self.victim, self.leader = busiest[0][0], leader.holder
        self.lost = [r.hex for r in rows.filter(node=self.victim).values_list("id", flat=True)]
        self.cluster.kill(self.victim, signal.SIGKILL)
        self.cluster.kill(self.leader, signal.SIGKILL)
        self.injected_at = time.monotonic()
        self.screen.phase(
            f"Fault: SIGKILL of node {self.victim} (running {len(self.lost)} runs) "
            f"and of the leader {self.leader} (epoch {leader.epoch})"
        )

    def observe(self) -> None:
        if self.injected_at is None:
            return
        elapsed = time.monotonic() - self.injected_at
        if self.failover is None:
            info = current_leader()
            if info and info.holder != self.leader:
                self.failover, self.new_leader = elapsed, info.holder
                self.screen.say(
                    f"   {info.holder} took over as leader (epoch {info.epoch}) after "
                    f"{elapsed:.1f} s (LEASE_TTL {get_settings().LEASE_TTL:g} s)"
                )
        if self.rescue is None:
            stuck = TaskRun.objects.filter(id__in=self.lost, node=self.victim, state=State.RUNNING)
            if not stuck.exists():
                self.rescue = elapsed
                self.screen.say(
                    f"   the lost node was detected and its {len(self.lost)} running runs "
                    f"re-dispatched after {elapsed:.1f} s "
                    f"(NODE_TIMEOUT {get_settings().NODE_TIMEOUT:g} s)"
                )

    def notes(self) -> dict[str, str]:
        return {self.victim: "<- killed"} if self.victim else {}

    def footer(self) -> str:
        """Who leads. The killed leader's lease outlives it by up to LEASE_TTL: the demo
        knows it is dead, so it says "failing over" rather than naming it until then."""
        info = current_leader()
        killed = self.injected_at is not None and self.failover is None
        if info is None:
            return "orchestrator: none (failing over)" if killed else "orchestrator: none"
        if killed and info.holder == self.leader:
            return (
                f"orchestrator: failing over ({info.holder} was killed; its lease "
                f"expires in {info.ttl_ms / 1000:.1f} s)"
            )
        return f"orchestrator: {info.holder} (epoch {info.epoch})"


def _clock(value: dt.datetime) -> str:
    return f"{timezone.localtime(value):%H:%M:%S}"


def periodic_line(row, ran: dict | None) -> str:
    """A periodic task: the last slot that ran (node, state), a later slot it skipped."""
    ran_slot = ran["args"][1] if ran and len(ran["args"]) > 1 and ran["args"][1] else None
    ran_at = dt.datetime.fromisoformat(ran_slot) if ran_slot else None
    if ran is None:
        text = "no slot ran yet"
    else:
        slot = f"slot {_clock(ran_at)}" if ran_at else "a run outside the slots"
        text = f"last ran {slot} on {ran['node']} ({ran['state']})"
    later = row.last_slot is not None and (ran_at is None or row.last_slot > ran_at)
    if row.last_outcome == "SKIPPED" and later:
        text += f"; slot {_clock(row.last_slot)} skipped ({row.last_error})"
    return (
        f"periodic {row.name}: {text}; state {row.state}; "
        f"{row.runs} runs, {row.skips} skipped, {row.failures} failed"
    )


def periodic_lines() -> list[str]:
    """One line per enabled periodic task (see ``periodic_line``)."""
    from distributed_tasks.models import PeriodicTaskState

    rows = list(PeriodicTaskState.objects.filter(enabled=True))
    ids = [row.last_run_id for row in rows if row.last_run_id]
    found = TaskRun.objects.filter(id__in=ids).values("id", "args", "node", "state")
    runs = {run["id"]: run for run in found}
    return [periodic_line(row, runs.get(row.last_run_id)) for row in rows]
