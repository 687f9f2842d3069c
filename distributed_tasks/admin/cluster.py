"""The cluster page: live nodes, ring shares, loads, the orchestrator, runs by state.

It is built from ``check_health(with_queue_depths=True)``, the reading behind
``dt_check``, ``dt_nodes`` and the health view, so the page, the probe and the
operator's terminal never disagree about what "degraded" means. Its problems become
the page's banner. On top of it the page reads two things health does not: the
``Leadership`` row (the newest epoch the database has fenced, and the last tick) and
the count of every stored state. Rendered server-side with Django templates only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Count
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from distributed_tasks.conf import get_settings
from distributed_tasks.fencing import leadership
from distributed_tasks.health import NodeHealth, check_health
from distributed_tasks.models import Leadership, TaskRun
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.types import STORED_STATES

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

TEMPLATE = "admin/distributed_tasks/cluster.html"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRow:
    """One live node, with what the template cannot compute itself."""

    node: NodeHealth
    share_percent: float
    started: dt.datetime
    active_url: str  # the runs list, filtered to the node's active runs


@dataclass(frozen=True, slots=True, kw_only=True)
class StateCount:
    state: str
    label: str
    count: int
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadershipRow:
    """The database side of the orchestrator: the fence every leader write goes through."""

    record: Leadership
    tick_age: float | None  # seconds since the leader's last recorded tick


def filtered(url: str, **params: str) -> str:
    return f"{url}?{urlencode(params)}"


def node_rows(nodes: tuple[NodeHealth, ...], runs_url: str) -> list[NodeRow]:
    return [
        NodeRow(
            node=node,
            share_percent=round(node.share * 100, 1),
            started=dt.datetime.fromtimestamp(node.started_at, tz=dt.UTC),
            active_url=filtered(runs_url, node=node.name, state="active"),
        )
        for node in nodes
    ]


def state_counts(runs_url: str) -> list[StateCount]:
    """Every stored state with its number of runs (one grouped query)."""
    rows = (
        TaskRun.objects.using(get_settings().DATABASE_ALIAS)
        .order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
    )
    counts = dict(rows)
    return [
        StateCount(
            state=state,
            label=label,
            count=counts.get(state, 0),
            url=filtered(runs_url, state=state),
        )
        for state, label in STORED_STATES
    ]


def leadership_row() -> LeadershipRow | None:
    record = leadership()
    if record is None:
        return None
    age = (timezone.now() - record.ticked_at).total_seconds() if record.ticked_at else None
    return LeadershipRow(record=record, tick_age=round(age, 1) if age is not None else None)


def render(request: HttpRequest, model_admin: ModelAdmin) -> TemplateResponse:
    """The page; a database that does not answer leaves its parts empty, never a 500."""
    site, opts = model_admin.admin_site, model_admin.opts
    health = check_health(with_queue_depths=True)
    runs_url = reverse(f"{site.name}:{opts.app_label}_{opts.model_name}_changelist")
    states: list[StateCount] | None = None
    record: LeadershipRow | None = None
    if health.database.ok:
        try:
            states, record = state_counts(runs_url), leadership_row()
        except DB_ERRORS:  # it went away between the probe and these reads
            states, record = None, None
    leader = health.leader
    context = {
        **site.each_context(request),
        "title": "Cluster",
        "opts": opts,
        "app_label": opts.app_label,
        "health": health,
        "nodes": node_rows(health.nodes, runs_url),
        "leader": leader,
        "leader_ttl": round(leader.ttl_ms / 1000, 1) if leader else None,
        "leadership": record,
        "epoch_pending": bool(leader and record and record.record.epoch < leader.epoch),
        "states": states,
        "runs_url": runs_url,
    }
    request.current_app = site.name
    return TemplateResponse(request, TEMPLATE, context)
