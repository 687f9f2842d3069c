"""Durable records: the database is the source of truth for every run.

``TaskRun.active_name`` holds the name only while the run is QUEUED or RUNNING
and is NULL afterwards; a plain unique constraint on ``(task_list,
active_name)`` then allows one active run per name on every backend (NULLs
never collide, and MySQL/MariaDB, which ignore conditional constraints, still
enforce it). Redis claims reject duplicates fast; this constraint decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import models
from django.utils import timezone

from distributed_tasks import by_key
from distributed_tasks.records import TaskRecord
from distributed_tasks.types import (
    ACTIVE_STATES,
    FINISHED_STATES,
    STORED_STATES,
    Outcome,
    Reason,
    State,
)

NAME_MAX_LENGTH = 200
PROGRESS_MESSAGE_LIMIT = 500
# An earlier attempt keeps the tail of its traceback only: the history stays small.
HISTORY_TRACEBACK_LIMIT = 4096
# What a new attempt starts without: the status describes the current attempt only.
CLEARED_OUTCOME: dict[str, Any] = {
    "result": None,
    "reason": "",
    "error_type": "",
    "error": "",
    "traceback": "",
    "started_at": None,
    "finished_at": None,
    "incarnation": "",
    "progress": None,
    "progress_message": "",
    "progress_data": None,
    "cancel_requested_at": None,
    "cancel_requested_by": "",
    "cancel_deadline": None,
}


def attempt_record(
    *, attempt: int, node: str, started_at: Any, ended_at: Any, outcome: Outcome | None
) -> dict[str, Any]:
    """One entry of ``TaskRun.attempts``: how an earlier attempt ended (JSON-ready).

    ``outcome`` is None for an attempt moved before it started (its node was lost
    while it was still QUEUED): nothing ran, so nothing failed.
    """

    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "attempt": attempt,
        "node": node,
        "state": outcome.state.value if outcome else "MOVED",
        "reason": outcome.reason if outcome else "",
        "error_type": outcome.error_type if outcome else "",
        "error": outcome.error if outcome else "",
        "traceback": outcome.traceback[-HISTORY_TRACEBACK_LIMIT:] if outcome else "",
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
    }


class TaskRunQuerySet(models.QuerySet):
    def active(self) -> TaskRunQuerySet:
        return self.filter(active_name__isnull=False)

    def finished(self) -> TaskRunQuerySet:
        return self.filter(state__in=FINISHED_STATES)

    def named(self, name: str, task_list: str = "default") -> TaskRunQuerySet:
        return self.filter(task_list=task_list, name=name)

    def on_node(self, node: str) -> TaskRunQuerySet:
        return self.filter(node=node)

    def by_key(self, pk: Any, **conditions: Any) -> TaskRunQuerySet:
        """The run ``pk`` if it meets ``conditions``, found by its key alone (``by_key``)."""
        return by_key.by_key(self, pk, **conditions)

    def by_keys(self, pks: Iterable[Any], **conditions: Any) -> TaskRunQuerySet:
        """The runs among ``pks`` that meet ``conditions``, found by their keys alone."""
        return by_key.by_keys(self, pks, **conditions)

    def reapable(self, before: Any) -> TaskRunQuerySet:
        """Finished runs whose history is older than ``before``."""
        return self.filter(state__in=FINISHED_STATES, finished_at__lt=before)


class TaskRun(TaskRecord, models.Model):
    """One run of a named task: the record, the claim backstop, and the outcome."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_list = models.CharField(max_length=NAME_MAX_LENGTH, default="default")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    active_name = models.CharField(  # noqa: DJ001 - NULL means "not active" and never collides
        max_length=NAME_MAX_LENGTH,
        null=True,
        blank=True,
        editable=False,
        help_text="The name while the run is QUEUED or RUNNING, NULL afterwards.",
    )
    function = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    callback = models.CharField(max_length=255, blank=True, default="")
    data = models.JSONField(default=dict, blank=True, help_text="Free key-values of the record.")
    state = models.CharField(max_length=9, choices=STORED_STATES, default=State.QUEUED)
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True, default="")
    node = models.CharField(max_length=255, blank=True, default="")
    incarnation = models.CharField(max_length=32, blank=True, default="")
    attempt = models.PositiveIntegerField(default=1)
    executions = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    priority = models.SmallIntegerField(
        default=0, help_text="-100 to 100: higher runs first among the runs waiting on a node."
    )
    retry_backoff = models.FloatField(
        default=0.0, help_text="Seconds before a retry; doubled after each failed execution."
    )
    timeout = models.FloatField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    queued_at = models.DateTimeField(default=timezone.now)
    run_after = models.DateTimeField(
        default=timezone.now, help_text="When the current attempt may start (countdown, backoff)."
    )
    orchestrator_epoch = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Epoch of the orchestrator leader that last changed it."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="Earlier attempts of this run and how each ended, oldest first.",
    )
    # Live progress of the current attempt (progress.py): written by its pool process,
    # throttled, and once more when it ends.
    progress = models.FloatField(null=True, blank=True, help_text="0 to 1, as last reported.")
    progress_message = models.CharField(max_length=PROGRESS_MESSAGE_LIMIT, blank=True, default="")
    progress_data = models.JSONField(null=True, blank=True)
    # A cancel asked of the running attempt (cancellation.py): the source of truth
    # the node reads back after Redis lost its copy.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=255, blank=True, default="")
    cancel_deadline = models.DateTimeField(
        null=True, blank=True, help_text="When a forced cancel ends the run's pool process."
    )

    objects = TaskRunQuerySet.as_manager()

    class Meta:
        verbose_name = "task run"
        ordering = ["-queued_at"]
        permissions = [("force_cancel_taskrun", "Can force the cancel of a running run")]
        constraints = [
            models.UniqueConstraint(
                fields=["task_list", "active_name"], name="dt_taskrun_one_active_per_name"
            ),
        ]
        indexes = [
            models.Index(fields=["task_list", "name", "-queued_at"], name="dt_taskrun_name_idx"),
            # A node's runs by state, and its queue in serving order: a steal or overtake
            # reads each node's first few waiting runs without sorting all of them.
            models.Index(
                fields=["node", "state", "-priority", "run_after"], name="dt_taskrun_node_queue_idx"
            ),
            models.Index(fields=["state", "finished_at"], name="dt_taskrun_finished_idx"),
            models.Index(fields=["state", "run_after"], name="dt_taskrun_queued_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.state}]"

    @property
    def run_id(self) -> str:
        """The run id as the API shows it: 32 hex digits."""
        return self.id.hex if isinstance(self.id, uuid.UUID) else uuid.UUID(str(self.id)).hex

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def outcome(self) -> Outcome:
        """The stored outcome of the current attempt (meaningful once it finished)."""
        return Outcome(
            state=State(self.state),
            result=self.result,
            reason=self.reason,
            error_type=self.error_type,
            error=self.error,
            traceback=self.traceback,
        )

    def ended(self, attempt: int) -> dict[str, Any] | None:
        """The entry of an earlier ``attempt`` in ``attempts`` (how it ended), if any."""
        for entry in self.attempts:
            if isinstance(entry, dict) and entry.get("attempt") == attempt:
                return entry
        return None

    def history(self) -> list[dict[str, Any]]:
        """Every attempt, oldest first: the earlier ones (``attempts``), then the current one."""
        finished = self.state in FINISHED_STATES
        current = attempt_record(
            attempt=self.attempt,
            node=self.node,
            started_at=self.started_at,
            ended_at=self.finished_at,
            outcome=self.outcome() if finished else None,
        )
        return [*self.attempts, {**current, "state": self.state}]

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Leadership(models.Model):
    """The newest orchestrator epoch the database has seen: the fence of leader writes.

    A new leader raises ``epoch`` before its first write; every later write of a
    leader locks this row and is refused when the epoch it carries is lower, so
    a paused or partitioned former leader changes nothing once it wakes up.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    epoch = models.PositiveBigIntegerField(default=0)
    holder = models.CharField(max_length=255, blank=True, default="")
    elected_at = models.DateTimeField(null=True, blank=True)
    ticked_at = models.DateTimeField(null=True, blank=True)
    beat_sent = models.JSONField(
        default=dict,
        blank=True,
        help_text="CELERY_BEAT_SCHEDULE entry name -> when a leader last sent it (ISO 8601).",
    )

    class Meta:
        verbose_name = "orchestrator leadership"

    def __str__(self) -> str:
        return f"{self.holder or 'nobody'} (epoch {self.epoch})"


class PeriodicTaskStateQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        """Every write moves ``updated_at``: ``QuerySet.update`` skips ``auto_now`` fields,
        and the leader and the workers write these rows with conditional updates only."""
        kwargs.setdefault("updated_at", timezone.now())
        return super().update(**kwargs)


class PeriodicTaskState(models.Model):
    """One global periodic task: its schedule, its state between runs, and its record.

    Code (``@periodic``) and settings (``PERIODIC``) declare a task; the leader
    copies a changed declaration here (``declared`` remembers the last one), while
    ``enabled`` switched from the admin stays as set until the declaration changes
    it. ``last_slot`` is the claim of a slot: the leader moves it forward with a
    conditional update, so each slot is dispatched at most once, even across
    leaders.
    """

    name = models.CharField(max_length=NAME_MAX_LENGTH, primary_key=True)
    task = models.CharField(max_length=255, help_text="Dotted path of the PeriodicTask class.")
    task_list = models.CharField(max_length=NAME_MAX_LENGTH, default="default")
    interval = models.FloatField(help_text="Seconds between two slots.")
    timeout = models.FloatField(null=True, blank=True, help_text="Seconds a run may take.")
    instant = models.BooleanField(default=False, help_text="Run at once when first seen.")
    enabled = models.BooleanField(default=True)
    args = models.JSONField(default=dict, blank=True)
    declared = models.JSONField(default=dict, blank=True, editable=False)
    state = models.JSONField(null=True, blank=True, help_text="Handed to the next run.")
    last_slot = models.DateTimeField(null=True, blank=True)
    last_run_id = models.UUIDField(null=True, blank=True)
    last_node = models.CharField(max_length=255, blank=True, default="")
    last_outcome = models.CharField(max_length=16, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    next_run_at = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)
    skips = models.PositiveIntegerField(default=0, help_text="Slots skipped: previous run busy.")
    failures = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PeriodicTaskStateQuerySet.as_manager()

    class Meta:
        verbose_name = "periodic task"
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="dt_periodic_due_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def run_name(self) -> str:
        return f"periodic:{self.name}"
