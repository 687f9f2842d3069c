"""The admin of ``distributed_tasks``: runs, their actions, and the cluster page.

One concept per module, as in the rest of the package:

- ``runs``: :class:`TaskRunAdmin`, the read-only list and page of runs, and the URL of
  the cluster page (it hangs off the runs admin, so it needs no model and no migration);
- ``actions``: cancel, retry and re-run, each through the public API and each behind a
  permission, reporting what was done and what was skipped and why;
- ``runlist``: what the runs list loads (large fields deferred) and its state filter;
- ``cluster``: the cluster page, built from the same health reading as ``dt_check``;
- ``periodic``: :class:`PeriodicTaskStateAdmin`: enable, disable, run now, reset state;
- ``display``: how every page shows a state, a time, an error or JSON.

The cluster page template has an empty ``cluster_extra`` block for project additions.
"""

from django.contrib import admin

from distributed_tasks.admin.periodic import PeriodicTaskStateAdmin
from distributed_tasks.admin.runs import TaskRunAdmin
from distributed_tasks.models import PeriodicTaskState, TaskRun

__all__ = ["PeriodicTaskStateAdmin", "TaskRunAdmin"]

admin.site.register(TaskRun, TaskRunAdmin)
admin.site.register(PeriodicTaskState, PeriodicTaskStateAdmin)
