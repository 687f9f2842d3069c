"""Admin actions on runs: cancel, retry and re-run, each through the public API.

The admin never writes a run itself. The API's fenced transitions decide, so an action
that races a worker or the orchestrator ends the way the API says, and the action
reports that run as skipped with the reason instead of forcing it. Each action:

1. sorts out the selected runs it cannot apply to (a FAILED run cannot be cancelled),
2. calls the API once per remaining run, mapping the API's refusals to skip reasons,
3. stops at the first error that concerns the whole cluster (Redis, the broker or the
   database does not answer, no live node) instead of repeating it for every run,
4. reports one admin message: how many were done, skipped (why), and not tried.

An action applies to at most ``MAX_ACTION_RUNS`` selected runs: each run is a fenced
transition with its own history entry (a few ms), and "select all" over thousands
must not hold one request for seconds. A larger selection is refused before anything
is done, with a message that says how to narrow it.

Permissions (checked by Django before the action runs, and used to hide it): cancel
and retry need the change permission on runs ("control"), re-run the add permission
("start"), a forced cancel its own ``force_cancel_taskrun`` ("force_cancel"); see
``TaskRunAdmin.has_control_permission`` / ``has_start_permission`` /
``has_force_cancel_permission``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from distributed_tasks import api
from distributed_tasks.exceptions import (
    AlreadyRunning,
    ClusterUnavailable,
    DistributedTasksError,
    InvalidState,
    NameReserved,
    NotCancellable,
    NotRegistered,
    TaskNotFound,
)
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.types import ACTIVE_STATES, State

# The most runs one action request may change (cancelling 3,000 took 7 s).
MAX_ACTION_RUNS = 500

Action = Callable[[admin.ModelAdmin, HttpRequest, QuerySet], None]

# Errors about the cluster, not the run: the next run would fail the same way.
CLUSTER_ERRORS = (ClusterUnavailable, *REDIS_ERRORS, *DB_ERRORS)

# The API's refusals, as the reason a run was skipped; each reads after a count
# ("2 started meanwhile"). First match wins, so subclasses come first.
SKIP_REASONS: tuple[tuple[type[DistributedTasksError], str], ...] = (
    (NameReserved, "with a name the reuse policy still reserves"),
    (AlreadyRunning, "with a run of the same name active"),
    (TaskNotFound, "no longer found"),
    (InvalidState, "no longer FAILED"),
    (NotRegistered, "with a function that is not registered"),
)


def runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def cluster_error(exc: Exception) -> str:
    if isinstance(exc, REDIS_ERRORS):
        return f"Redis does not answer ({exc}). Check REDIS_URL and that the server is up."
    if isinstance(exc, DB_ERRORS):
        return f"The database does not answer ({exc})."
    return str(exc)  # ClusterUnavailable states the rule and the way out itself


def skip_reason(exc: DistributedTasksError, overrides: Mapping[type, str]) -> str:
    for kind, reason in (*overrides.items(), *SKIP_REASONS):
        if isinstance(exc, kind):
            return reason
    return f"refused ({type(exc).__name__}: {exc})"


@dataclass
class Tally:
    """What one action did, turned into the one message the admin shows."""

    done_verb: str  # "Cancelled"
    done: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    stopped_at: str = ""  # the run whose cluster error stopped the action
    error: str = ""
    not_tried: int = 0

    def keep(self, candidates: Iterable[TaskRun], test: Callable[[TaskRun], bool], reason: str):
        """The runs that pass ``test``; the others are counted as skipped for ``reason``."""
        kept = []
        for run in candidates:
            if test(run):
                kept.append(run)
            else:
                self.skipped[reason] += 1
        return kept

    def stop(self, run: TaskRun, exc: Exception, not_tried: int) -> None:
        self.stopped_at, self.error, self.not_tried = run.name, cluster_error(exc), not_tried

    @property
    def level(self) -> int:
        if self.error:
            return messages.ERROR
        return messages.WARNING if self.skipped else messages.SUCCESS

    def message(self) -> str:
        parts = [f"{self.done_verb} {runs(self.done)}."]
        if self.skipped:
            why = "; ".join(f"{n} {reason}" for reason, n in self.skipped.items())
            parts.append(f"Skipped {self.skipped.total()}: {why}.")
        if self.error:
            # The run it stopped at is not counted as done or not: the API may have
            # written part of it (the orchestrator's resync repairs Redis afterwards).
            parts.append(f"Stopped at {self.stopped_at!r}: {self.error}")
            if self.not_tried:
                parts.append(f"{self.not_tried} more not tried.")
        return " ".join(parts)


def apply(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    tally: Tally,
    selected: list[TaskRun],
    act: Callable[[TaskRun], str],
    overrides: Mapping[type, str] | None = None,
) -> None:
    """Call ``act`` on each run (it returns the history note), then report the tally."""
    for index, run in enumerate(selected):
        try:
            note = act(run)
        except CLUSTER_ERRORS as exc:
            tally.stop(run, exc, not_tried=len(selected) - index - 1)
            break
        except DistributedTasksError as exc:
            tally.skipped[skip_reason(exc, overrides or {})] += 1
        else:
            tally.done += 1
            modeladmin.log_change(request, run, note)
    modeladmin.message_user(request, tally.message(), tally.level)


def capped(action: Action) -> Action:
    """Refuse a selection larger than ``MAX_ACTION_RUNS`` with one message, doing nothing."""

    @functools.wraps(action)
    def wrapper(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        selected = queryset.count()
        if selected > MAX_ACTION_RUNS:
            modeladmin.message_user(
                request,
                f"{selected} runs are selected; an action applies to at most "
                f"{MAX_ACTION_RUNS} at a time, so nothing was done. Narrow the list with its "
                "filters (state, task list, node, search) and select again, or use the API "
                "(distributed_tasks.cancel / retry) from a script for bulk changes.",
                messages.ERROR,
            )
            return
        action(modeladmin, request, queryset)

    return wrapper


def _cancel(
    request: HttpRequest, queryset: QuerySet, *, force: bool
) -> tuple[Tally, list[TaskRun], Callable[[TaskRun], str], dict[type, str]]:
    """QUEUED runs end FAILED (cancelled); RUNNING ones are asked to stop (``force``: and
    killed after CANCEL_GRACE), in the name of the admin user."""
    tally = Tally("Force-cancelled" if force else "Cancelled")
    active = tally.keep(queryset, lambda run: run.state in ACTIVE_STATES, "already finished")
    by = request.user.get_username()

    def cancel(run: TaskRun) -> str:
        api.cancel(run.name, run.task_list, force=force, by=by)
        if run.state == State.QUEUED:
            return "Cancelled in the admin."
        return "Asked to stop in the admin" + (" (forced)." if force else ".")

    overrides = {NotCancellable: "ended meanwhile", TaskNotFound: "no longer found"}
    return tally, active, cancel, overrides


@admin.action(
    description="Cancel selected runs (running ones are asked to stop)", permissions=["control"]
)
@capped
def cancel_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """End QUEUED runs as FAILED (cancelled); ask RUNNING ones to stop (cancel_requested())."""
    apply(modeladmin, request, *_cancel(request, queryset, force=False))


@admin.action(
    description="Force-cancel selected runs (killed after the grace period)",
    permissions=["force_cancel"],
)
@capped
def force_cancel_runs(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    """As ``cancel_runs``, and a RUNNING run still running after CANCEL_GRACE is killed."""
    apply(modeladmin, request, *_cancel(request, queryset, force=True))


def _is_newest(run: TaskRun) -> bool:
    """Whether ``run`` is its name's newest (``newest_pk``, annotated by ``retry_runs``)."""
    return run.newest_pk == run.pk  # type: ignore[attr-defined]


@admin.action(description="Retry selected failed runs", permissions=["control"])
@capped
def retry_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Run FAILED runs again as their next attempt (``retry``).

    ``retry`` acts on the newest run of a name, so an older FAILED run of a name that
    ran again since is skipped: retrying it would retry a different run.
    """
    newest = (
        TaskRun.objects.filter(task_list=OuterRef("task_list"), name=OuterRef("name"))
        .order_by("-queued_at")
        .values("pk")[:1]
    )
    tally = Tally("Retried")
    failed = tally.keep(
        queryset.annotate(newest_pk=Subquery(newest)),
        lambda run: run.state == State.FAILED,
        "not FAILED",
    )
    latest = tally.keep(failed, _is_newest, "superseded by a newer run of the same name")

    def retry(run: TaskRun) -> str:
        handle = api.retry(run.name, run.task_list)
        return f"Retried in the admin as attempt {handle.attempt} on {handle.node}."

    apply(modeladmin, request, tally, latest, retry)


@admin.action(
    description="Re-run selected runs (same function, arguments and name)", permissions=["start"]
)
@capped
def rerun_runs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Start each run's function again with its arguments, callback, task list and name.

    It is a new run (``start_async``), so the name's uniqueness holds: a name that is
    active again is skipped. The timeout is kept; attempts start from one.
    """
    tally = Tally("Re-ran")
    finished = tally.keep(
        queryset.defer(None),  # the list leaves args and kwargs out; a re-run needs them
        lambda run: run.state not in ACTIVE_STATES,
        "still active",
    )

    def rerun(run: TaskRun) -> str:
        handle = api.start_async(
            run.function,
            run.args,
            run.kwargs,
            name=run.name,
            callback=run.callback or None,
            task_list=run.task_list,
            timeout=run.timeout,
        )
        return f"Re-run in the admin as run {handle.run_id} on {handle.node}."

    apply(modeladmin, request, tally, finished, rerun)
