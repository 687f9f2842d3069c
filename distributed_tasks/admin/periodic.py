"""The admin of periodic tasks: enable, disable, run now, reset state, last outcome.

Schedules come from code and settings (the orchestrator copies them in); the admin
switches ``enabled`` at runtime (the next tick honours it), starts a run at once
outside the slots, and resets the state so the next run starts from ``init(args)``.
Rows are never added or deleted here: a task no longer declared is disabled by the
orchestrator and keeps its record.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from distributed_tasks import api
from distributed_tasks.admin.actions import Tally, apply
from distributed_tasks.admin.display import (
    OUTCOME_COLOURS,
    error_summary,
    format_seconds,
    pretty_json,
    time_column,
)
from distributed_tasks.models import PeriodicTaskState
from distributed_tasks.periodic import PeriodicRun


class PeriodicTaskStateAdmin(admin.ModelAdmin):
    # Fits a 1366 px screen beside the filters: times with their age, the outcome with
    # the error's first line, and the three counters in one column.
    list_display = ("name", "enabled", "every", "last_slot_at", "last_node", "outcome",
                    "counts", "next_run")  # fmt: skip
    list_filter = ("enabled", "last_outcome", "task_list")
    search_fields = ("name", "task")
    actions = ("enable", "disable", "run_now", "reset_state")
    readonly_fields = (
        "name", "task", "task_list", "interval", "timeout", "instant", "args_json", "state_json",
        "last_slot_at", "last_run_id", "last_node", "outcome", "last_error", "next_run", "runs",
        "skips", "failures", "updated",
    )  # fmt: skip
    fields = ("name", "task", "enabled", *readonly_fields[2:])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="interval", ordering="interval")
    def every(self, row: PeriodicTaskState) -> str:
        return format_seconds(row.interval)

    last_slot_at = time_column("last_slot", "last slot")
    next_run = time_column("next_run_at", "next run")
    updated = time_column("updated_at", "updated")

    @admin.display(description="runs · skips · failures")
    def counts(self, row: PeriodicTaskState) -> str:
        return f"{row.runs} · {row.skips} · {row.failures}"

    @admin.display(description="last outcome", ordering="last_outcome")
    def outcome(self, row: PeriodicTaskState) -> str:
        if not row.last_outcome:
            return "-"
        colour = OUTCOME_COLOURS.get(row.last_outcome, "inherit")
        badge = format_html('<strong style="color: {}" title="{}">{}</strong>', colour,
                            row.last_error, row.last_outcome)  # fmt: skip
        if not row.last_error:
            return badge
        return format_html("{} {}", badge, error_summary("", row.last_error, limit=40))

    @admin.display(description="args")
    def args_json(self, row: PeriodicTaskState) -> str | None:
        return pretty_json(row.args)

    @admin.display(description="state")
    def state_json(self, row: PeriodicTaskState) -> str | None:
        return pretty_json(row.state)

    def _switch(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        changed = queryset.exclude(enabled=enabled).update(enabled=enabled)
        verb = "Enabled" if enabled else "Disabled"
        self.message_user(request, f"{verb} {changed} periodic task(s); the next tick applies it.",
                          messages.SUCCESS)  # fmt: skip

    @admin.action(description="Enable the selected periodic tasks", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Disable the selected periodic tasks", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._switch(request, queryset, False)

    @admin.action(description="Reset the state (the next run calls init)", permissions=["change"])
    def reset_state(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(state=None)
        self.message_user(request, f"Reset the state of {count} periodic task(s).",
                          messages.SUCCESS)  # fmt: skip

    @admin.action(description="Run the selected periodic tasks now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        def start(row: PeriodicTaskState) -> str:
            handle = api.start_async(PeriodicRun, [row.name, ""], name=row.run_name,
                                     task_list=row.task_list, timeout=row.timeout)  # fmt: skip
            return f"Run now: run {handle.run_id} on {handle.node}"

        apply(self, request, Tally("Started"), list(queryset), start)
