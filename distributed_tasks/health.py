"""Cluster health: one reading shared by the JSON view, ``dt_check`` and ``dt_nodes``.

One function decides what "degraded" means, so the container probe, the health
page and an operator's terminal never disagree. The reading is read-only and
bounded: one Lua call for the live nodes, one GET for the lease, one grouped
query over active runs, and (only when asked) one passive queue declare per node.

Status rules:

- ``down`` (exit 2): Redis or the database does not answer; nothing can start.
- ``degraded`` (exit 1): the cluster answers but cannot do all its work: no
  orchestrator leader (names are not reaped, lost nodes' runs never end), no
  live node (every start is refused), active runs sit on nodes that stopped
  heartbeating, or Redis lost its data and the leader has not rebuilt it yet.
- ``healthy`` (exit 0): everything else.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Count

from distributed_tasks.conf import get_settings
from distributed_tasks.lease import LeaderInfo, current_leader
from distributed_tasks.models import TaskRun
from distributed_tasks.nodes import PARKED, ClusterView, live_nodes
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.ring import Ring
from distributed_tasks.types import State


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def exit_code(self) -> int:
        """Process exit code for probes: 0 healthy, 1 degraded, 2 down."""
        return {"healthy": 0, "degraded": 1, "down": 2}[self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """Whether one service answered, how fast, and what it said when it did not."""

    ok: bool
    latency_ms: float
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeHealth:
    """One live node as the cluster page shows it."""

    name: str
    heartbeat_age: float  # seconds since its last heartbeat (Redis server time)
    weight: int
    slots: int  # runs it executes at once (capacity: concurrency x weight)
    executing: int  # runs executing at its last heartbeat
    task_lists: tuple[str, ...]
    host: str
    pid: int
    incarnation: str
    started_at: float
    share: float  # fraction of the ring over every live node (weights included)
    active_runs: int | None  # QUEUED + RUNNING rows placed on it; None if the database is down
    queue_depth: int | None = None  # messages waiting in dt.node.<name>; None if not read


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """A snapshot of the cluster; ``status`` and ``problems`` say what to fix."""

    status: Status
    redis: Probe
    database: Probe
    nodes: tuple[NodeHealth, ...] = ()
    leader: LeaderInfo | None = None
    runs: Mapping[str, int] = field(default_factory=dict)  # active runs by state
    orphaned_runs: int = 0  # active runs on nodes that no longer heartbeat
    parked_runs: int = 0  # runs waiting for a live node that serves their task list
    stale_nodes: tuple[str, ...] = ()  # stopped heartbeating, not yet declared lost
    redis_intact: bool = True  # False after Redis lost its data, until the leader resyncs
    problems: tuple[str, ...] = ()
    checked_at: dt.datetime

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types only, so views and commands encode it the same way."""
        return {
            "status": self.status.value,
            "checked_at": self.checked_at.isoformat(),
            "redis": asdict(self.redis),
            "database": asdict(self.database),
            "leader": asdict(self.leader) if self.leader else None,
            "nodes": [{**asdict(n), "task_lists": list(n.task_lists)} for n in self.nodes],
            "runs": dict(self.runs),
            "orphaned_runs": self.orphaned_runs,
            "parked_runs": self.parked_runs,
            "stale_nodes": list(self.stale_nodes),
            "redis_intact": self.redis_intact,
            "problems": list(self.problems),
        }


def _timed(func: Any) -> tuple[Any, Probe]:
    """Call ``func``; the probe records success, latency and the error it raised."""
    start = time.perf_counter()
    try:
        value = func()
    except (*REDIS_ERRORS, *DB_ERRORS, OSError) as exc:
        elapsed = (time.perf_counter() - start) * 1000
        return None, Probe(ok=False, latency_ms=round(elapsed, 2), error=f"{exc}".strip())
    elapsed = (time.perf_counter() - start) * 1000
    return value, Probe(ok=True, latency_ms=round(elapsed, 2))


def active_counts() -> Counter[tuple[str, str]]:
    """Active runs grouped by (state, node), in one query on ``DATABASE_ALIAS``."""
    rows = (
        TaskRun.objects.using(get_settings().DATABASE_ALIAS)
        .active()
        .order_by()
        .values_list("state", "node")
        .annotate(n=Count("id"))
    )
    return Counter({(state, node): n for state, node, n in rows})


def queue_depths(nodes: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting in each node's queue (None when the broker does not answer)."""
    from distributed_tasks.brokers import get_broker

    return get_broker().depths(nodes)


def _nodes(
    view: ClusterView, counts: Counter[tuple[str, str]] | None, depths: Mapping[str, int | None]
) -> tuple[NodeHealth, ...]:
    shares = Ring({name: info.weight for name, info in view.nodes.items()}).shares()
    per_node: Counter[str] = Counter()
    for (_state, node), n in (counts or {}).items():
        per_node[node] += n
    out = []
    for name in sorted(view.nodes):
        info = view.nodes[name]
        active = per_node[name] if counts is not None else None
        out.append(
            NodeHealth(
                name=name,
                heartbeat_age=round(view.age(name), 3),
                weight=info.weight,
                slots=info.slots,
                executing=info.active,
                task_lists=info.task_lists,
                host=info.host,
                pid=info.pid,
                incarnation=info.incarnation,
                started_at=info.started_at,
                share=round(shares.get(name, 0.0), 4),
                active_runs=active,
                queue_depth=depths.get(name),
            )
        )
    return tuple(out)


def _problems(
    redis: Probe,
    database: Probe,
    view: ClusterView | None,
    leader: LeaderInfo | None,
    runs: Mapping[str, int],
    orphaned: int,
    parked: int,
) -> list[str]:
    problems = []
    if not redis.ok:
        problems.append(
            f"Redis does not answer ({redis.error}): no run can start or report its state. "
            "Check REDIS_URL and that the server is up."
        )
    if not database.ok:
        problems.append(
            f"The database does not answer ({database.error}): runs cannot be recorded. "
            "Check DATABASE_ALIAS and that the server is up."
        )
    if not redis.ok:
        return problems  # leader and nodes are unknown, not missing
    if leader is None:
        problems.append(
            "No orchestrator holds the lease: finished names are not reaped and runs of lost "
            "nodes never end. Start `manage.py dt_beat` on at least one host."
        )
    if view is not None and not view.intact:
        problems.append(
            "Redis lost its data (restart or flush) and claims and statuses are not rebuilt "
            "from the database yet; the orchestrator leader does it within a few ticks."
        )
    if view is not None and not view.nodes:
        queued = runs.get(State.QUEUED.value, 0)
        what = f"{queued} run(s) are QUEUED but no node is live to run them" if queued else ""
        problems.append(
            f"{what or 'No node is live'}, and every new start is refused. "
            "Start `manage.py dt_worker` on a worker host."
        )
    if orphaned:
        problems.append(
            f"{orphaned} active run(s) are placed on nodes that stopped heartbeating; the "
            "orchestrator leader ends or re-dispatches them within a tick once it runs."
        )
    if parked and view is not None and view.nodes:
        problems.append(
            f"{parked} run(s) wait for a node that serves their task list: the leader moves "
            "them once one is live. If none is, start `manage.py dt_worker --task-list "
            "<list>` (dt_status shows each run's task list)."
        )
    return problems


def check_health(*, with_queue_depths: bool = False) -> Health:
    """Read the cluster once and judge it; never raises for a service that is down."""
    view, redis = _timed(live_nodes)
    counts, database = _timed(active_counts)
    leader = current_leader() if redis.ok else None
    runs: dict[str, int] = {}
    orphaned = parked = 0
    if counts is not None:
        runs = {state.value: 0 for state in (State.QUEUED, State.RUNNING)}
        for (state, node), n in counts.items():
            runs[state] = runs.get(state, 0) + n
            if node == PARKED:
                parked += n
            elif view is not None and node not in view.nodes:
                orphaned += n
    nodes: tuple[NodeHealth, ...] = ()
    if view is not None:
        depths = queue_depths(view.nodes) if with_queue_depths else {}
        nodes = _nodes(view, counts, depths)
    problems = _problems(redis, database, view, leader, runs, orphaned, parked)
    if not (redis.ok and database.ok):
        status = Status.DOWN
    else:
        status = Status.DEGRADED if problems else Status.HEALTHY
    return Health(
        status=status,
        redis=redis,
        database=database,
        nodes=nodes,
        leader=leader,
        runs=runs,
        orphaned_runs=orphaned,
        parked_runs=parked,
        stale_nodes=view.stale if view is not None else (),
        redis_intact=view.intact if view is not None else True,
        problems=tuple(problems),
        checked_at=dt.datetime.now(tz=dt.UTC),
    )


VIEW_PERMISSION = "distributed_tasks.view_taskrun"
CHANGE_PERMISSION = "distributed_tasks.change_taskrun"


def may_see_cluster(user: Any) -> bool:
    """Who may see the cluster's internals (hosts, pids, incarnations, leader, counts).

    One rule for the health view's details, the admin cluster page and the metrics: an
    active staff user who may view runs (``view_taskrun``, or ``change_taskrun``, which
    the admin counts as viewing too). Anyone else gets the bare status.
    """
    if not (getattr(user, "is_active", False) and getattr(user, "is_staff", False)):
        return False
    return user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION)
