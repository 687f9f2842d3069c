"""The runs admin: a read-only history with filters, and permissioned actions.

Read-only on purpose (STYLE do/don't #10). Every transition of a run is a fenced,
conditional update owned by the API, the worker or the orchestrator; a change form
that saves a whole row could write back a state a worker has just replaced. So the
run page shows every field read-only (``has_change_permission`` is False), and the
only ways to act are the actions in ``actions.py``, which go through the API.

Deleting runs is disabled entirely: the orchestrator reaps history after
``HISTORY_RETENTION``; deleting an active run would orphan its Redis claim and its
broker message, and Django's bulk delete checks the permission without the rows, so
"finished runs only" could not be enforced there anyway.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from django.db.models.functions import Lower, Substr
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils.text import smart_split, unescape_string_literal

from distributed_tasks import progress
from distributed_tasks.admin import actions, cluster
from distributed_tasks.admin.display import (
    cancel_summary,
    dotted_tail,
    error_summary,
    format_seconds,
    history_table,
    preformatted,
    pretty_json,
    run_progress,
    run_state,
    shortened,
    state_badge,
    time_column,
)
from distributed_tasks.admin.runlist import ERROR_HEAD, RunChangeList, StateFilter
from distributed_tasks.conf import get_settings
from distributed_tasks.health import check_health, may_see_cluster
from distributed_tasks.models import TaskRun

CLUSTER_URL_NAME = "distributed_tasks_cluster"

NAME_WIDTH = 40  # characters of a name the list shows (the whole name on hover)


class TaskRunAdmin(admin.ModelAdmin):
    # Fits a 1366 px screen beside the filters: one time (queued, with its age) and the
    # duration instead of three timestamps, the function's last two parts, the error's
    # first line; the rest is on the run's page.
    list_display = (
        "short_name",
        "task_list",
        "state_colour",
        "short_function",
        "node",
        "queued",
        "duration",
        "error_line",
    )
    list_filter = (StateFilter, "node", "task_list", "function")
    search_fields = ("name",)
    search_help_text = "A name (or part of one), or a run id."
    date_hierarchy = "queued_at"
    list_select_related = False  # TaskRun has no relations: one query per page
    show_full_result_count = False  # no second COUNT(*) over the whole history
    list_per_page = 50
    actions = (
        actions.cancel_runs, actions.force_cancel_runs, actions.retry_runs, actions.rerun_runs,
    )  # fmt: skip
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "task_list",
                    "run_id",
                    "function",
                    "args_json",
                    "kwargs_json",
                    "callback",
                    "data_json",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "state_only",
                    "progress_bar",
                    "cancel_request",
                    "reason",
                    "node",
                    "incarnation",
                    "attempt",
                    "executions",
                    "max_attempts",
                    "retry_backoff",
                    "timeout",
                    "orchestrator_epoch",
                )
            },
        ),
        ("Times", {"fields": ("queued", "run_after_at", "started", "finished", "duration")}),
        ("Outcome", {"fields": ("result_json", "error_type", "error", "traceback_pre")}),
        ("Attempts", {"fields": ("history",)}),
    )
    readonly_fields = tuple(name for _title, fieldset in fieldsets for name in fieldset["fields"])

    # -- permissions: read-only, actions by permission ------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start through start_async (or the re-run action), never a form

    def has_change_permission(self, request: HttpRequest, obj: TaskRun | None = None) -> bool:
        return False  # see the module docstring: no form may save a row

    def has_delete_permission(self, request: HttpRequest, obj: TaskRun | None = None) -> bool:
        return False  # see the module docstring: the reaper owns deletion

    def _has_model_perm(self, request: HttpRequest, action: str) -> bool:
        codename = get_permission_codename(action, self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_control_permission(self, request: HttpRequest) -> bool:
        """Cancel and retry change an existing run: Django's change permission on runs."""
        return self._has_model_perm(request, "change")

    def has_force_cancel_permission(self, request: HttpRequest) -> bool:
        """Killing a running run's pool process: a permission of its own."""
        return self._has_model_perm(request, "force_cancel")

    def has_start_permission(self, request: HttpRequest) -> bool:
        """Re-run creates a new run: Django's add permission on runs."""
        return self._has_model_perm(request, "add")

    # -- queries ----------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        return (
            super()
            .get_queryset(request)
            .using(get_settings().DATABASE_ALIAS)
            .annotate(duration_value=duration, error_head=Substr("error", 1, ERROR_HEAD))
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RunChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Names by substring in any case, and a run id (as handles and ``dt_status`` show
        it) exactly. On MySQL/MariaDB names compare exactly (migration 0009), so Django's
        ``icontains`` would not ignore case there: their lower case is searched."""
        if connections[queryset.db].vendor == "mysql":
            results, may_have_duplicates = queryset.annotate(lower_name=Lower("name")), False
            for bit in smart_split(search_term):
                if len(bit) > 1 and bit[0] in "\"'" and bit[-1] == bit[0]:
                    bit = unescape_string_literal(bit)
                results = results.filter(lower_name__contains=bit.lower())
        else:
            results, may_have_duplicates = super().get_search_results(
                request, queryset, search_term
            )
        try:
            run_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=run_id), may_have_duplicates

    # -- columns and read-only fields ---------------------------------------------------

    @admin.display(description="name", ordering="name")
    def short_name(self, run: TaskRun) -> str:
        return shortened(run.name, NAME_WIDTH)

    @admin.display(description="function", ordering="function")
    def short_function(self, run: TaskRun) -> str:
        return dotted_tail(run.function)

    @admin.display(description="state", ordering="state")
    def state_colour(self, run: TaskRun) -> str:
        return run_state(run)

    @admin.display(description="state")
    def state_only(self, run: TaskRun) -> str:
        return state_badge(run.state, run.reason)  # the run's page shows the attempt apart

    @admin.display(description="progress")
    def progress_bar(self, run: TaskRun) -> str:
        progress.live([run])  # the row's progress is written only now and then
        return run_progress(run) or self.get_empty_value_display()

    @admin.display(description="cancel requested")
    def cancel_request(self, run: TaskRun) -> str:
        return cancel_summary(run) or self.get_empty_value_display()

    queued = time_column("queued_at", "queued")
    run_after_at = time_column("run_after", "may start")
    started = time_column("started_at", "started")
    finished = time_column("finished_at", "finished")

    @admin.display(description="error")
    def error_line(self, run: TaskRun) -> str:
        error = getattr(run, "error_head", None)
        return error_summary(run.error_type, run.error if error is None else error)

    @admin.display(description="attempts")
    def history(self, run: TaskRun) -> str:
        return history_table(run.history())

    @admin.display(description="duration", ordering="duration_value")
    def duration(self, run: TaskRun) -> str:
        value = getattr(run, "duration_value", None)
        seconds = value.total_seconds() if value is not None else run.duration
        return format_seconds(seconds) if seconds is not None else self.get_empty_value_display()

    @admin.display(description="run id")
    def run_id(self, run: TaskRun) -> str:
        return run.run_id

    @admin.display(description="args")
    def args_json(self, run: TaskRun) -> str:
        return pretty_json(run.args) or self.get_empty_value_display()

    @admin.display(description="kwargs")
    def kwargs_json(self, run: TaskRun) -> str:
        return pretty_json(run.kwargs) or self.get_empty_value_display()

    @admin.display(description="data")
    def data_json(self, run: TaskRun) -> str:
        return pretty_json(run.data) or self.get_empty_value_display()

    @admin.display(description="result")
    def result_json(self, run: TaskRun) -> str:
        return pretty_json(run.result) or self.get_empty_value_display()

    @admin.display(description="traceback")
    def traceback_pre(self, run: TaskRun) -> str:
        return preformatted(run.traceback) or self.get_empty_value_display()

    # -- views --------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, with a banner when the cluster is degraded or down (never on POST)."""
        if request.method == "GET":
            extra_context = {"cluster_health": check_health(), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.cluster_view)
        return [path("cluster/", view, name=CLUSTER_URL_NAME), *super().get_urls()]

    def cluster_view(self, request: HttpRequest) -> HttpResponse:
        """The cluster page: the rule of the health view's details (``may_see_cluster``)."""
        if not may_see_cluster(request.user):
            raise PermissionDenied
        return cluster.render(request, self)
