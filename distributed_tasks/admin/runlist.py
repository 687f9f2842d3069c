"""The runs list's queries: its state filter, and a page that loads only what it shows.

A run's arguments, result and traceback may be large (a traceback alone may be
32 KB), so the list defers them and reads the first line of the error cut in the
database instead; live progress is read for the rows of the page only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest

from distributed_tasks import progress
from distributed_tasks.types import STORED_STATES, State

# Not loaded for the list; a traceback alone may be 32 KB. The list shows the first
# line of ``error`` instead, cut in the database (``error_head``).
HEAVY_FIELDS = (
    "args", "kwargs", "data", "result", "error", "traceback", "attempts", "progress_data",
)  # fmt: skip
ERROR_HEAD = 200  # characters of the error the list loads


class StateFilter(admin.SimpleListFilter):
    """Each state, plus "active" and "finished" as ``dt_list --state`` has them."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active (queued or running)"), *STORED_STATES, ("finished", "Finished")]

    def value(self) -> str | None:
        """The parameter in any case: ``?state=failed`` is ``FAILED``, ``?state=Active`` active."""
        value = super().value()
        if value is None:
            return None
        return value.lower() if value.lower() in ("active", "finished") else value.upper()

    def queryset(self, request: HttpRequest, queryset: Any) -> QuerySet | None:  # TaskRun's
        value = self.value()
        if value == "active":
            return queryset.active()
        if value == "finished":
            return queryset.finished()
        if value in State.values:
            return queryset.filter(state=value)
        return None


class RunChangeList(ChangeList):
    """The list of runs, without the large fields it never shows."""

    def get_queryset(self, request: HttpRequest, *args: Any, **kwargs: Any) -> QuerySet:
        return super().get_queryset(request, *args, **kwargs).defer(*HEAVY_FIELDS)

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        progress.live(self.result_list)  # the row's progress is written only now and then
