"""Global periodic tasks (Clerk): once per interval slot, on one node, state kept between runs.

```python
@periodic(interval=10, timeout=30, instant=False, enabled=True, args={"source": "api"})
class PollApi(PeriodicTask):
    def init(self, args): return {"cursor": None}      # state on first run / after loss
    def execute(self, state): ...; return state         # the state for the next run
    def nodes(self, live_nodes): return live_nodes      # optional: where it may run
```

Clerk keeps no shared storage, so its intervals drift, its state is lost on
failover and a split can run a task twice. Here slots are aligned to the clock
(multiples of ``interval``), the orchestrator leader claims each slot once in
the database (fenced by its epoch), a run is a unique named run
(``periodic:<name>``) so two never overlap, and the state lives in the database.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from django.utils.module_loading import import_string

from distributed_tasks.exceptions import InvalidConfiguration
from distributed_tasks.messages import strict_json
from distributed_tasks.registry import DistributedTask, RunInfo, path_of
from distributed_tasks.types import MAX_SECONDS

logger = logging.getLogger("distributed_tasks.periodic")

RUN_PREFIX = "periodic:"


class PeriodicTask:
    """Base class of a periodic task. A fresh instance serves each run."""

    spec: ClassVar[PeriodicSpec | None] = None

    def init(self, args: dict[str, Any]) -> Any:
        """The state of the first run, and after the stored state was lost or unreadable."""
        return None

    def execute(self, state: Any) -> Any:
        """Do the work; return the state for the next run (JSON)."""
        raise NotImplementedError(f"{type(self).__name__} must define execute(state)")

    def nodes(self, live_nodes: list[str]) -> list[str]:
        """Nodes this task may run on (a random one is picked each slot)."""
        return live_nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class PeriodicSpec:
    """A declaration, from ``@periodic`` or ``DISTRIBUTED_TASKS["PERIODIC"]``."""

    name: str
    task: str
    interval: float
    timeout: float | None = None
    instant: bool = False
    enabled: bool = True
    args: dict[str, Any] = field(default_factory=dict)
    task_list: str = "default"

    def declared(self) -> dict[str, Any]:
        return asdict(self)


PARAMETERS = ("interval", "timeout", "instant", "enabled", "args", "task_list", "name")

_specs: dict[str, PeriodicSpec] = {}


def validate(spec: PeriodicSpec) -> PeriodicSpec:
    """Raise ``InvalidConfiguration`` naming the broken rule; the checks report the same."""
    problems = []
    if not isinstance(spec.name, str) or not 1 <= len(spec.name) <= 190:
        problems.append("name must be a string of 1 to 190 characters")
    if isinstance(spec.interval, bool) or not isinstance(spec.interval, int | float):
        problems.append("interval must be a number of seconds")
    elif spec.interval <= 0:
        problems.append("interval must be greater than 0")
    if spec.timeout is not None and (
        isinstance(spec.timeout, bool) or not isinstance(spec.timeout, int | float)
        or not 0 < spec.timeout <= MAX_SECONDS  # NaN too
    ):  # fmt: skip
        problems.append(f"timeout must be a number greater than 0 and at most {MAX_SECONDS:g}, "
                        "or None")  # fmt: skip
    if not isinstance(spec.instant, bool) or not isinstance(spec.enabled, bool):
        problems.append("instant and enabled must be True or False")
    if not isinstance(spec.args, dict):
        problems.append("args must be a dict")
    else:
        try:
            strict_json(spec.args)
        except ValueError:
            problems.append("args must be JSON-serializable")
    if problems:
        raise InvalidConfiguration(
            f"Periodic task {spec.name!r}: {'; '.join(problems)}. "
            "Fix the @periodic(...) arguments or the DISTRIBUTED_TASKS['PERIODIC'] entry."
        )
    return spec


def periodic(
    cls: type[PeriodicTask] | None = None,
    /,
    *,
    interval: float,
    timeout: float | None = None,
    instant: bool = False,
    enabled: bool = True,
    args: dict[str, Any] | None = None,
    name: str | None = None,
    task_list: str = "default",
):
    """Declare ``cls`` a global periodic task (named by its dotted path unless ``name``)."""

    def decorate(klass: type[PeriodicTask]) -> type[PeriodicTask]:
        if not (isinstance(klass, type) and issubclass(klass, PeriodicTask)):
            raise InvalidConfiguration(
                f"@periodic decorates PeriodicTask subclasses, not {klass!r}"
            )
        spec = PeriodicSpec(
            name=name or path_of(klass),
            task=path_of(klass),
            interval=interval,
            timeout=timeout,
            instant=instant,
            enabled=enabled,
            args=dict(args or {}),
            task_list=task_list,
        )
        _specs[spec.name] = validate(spec)
        klass.spec = spec
        return klass

    return decorate(cls) if cls is not None else decorate


def spec_from_settings(name: str, entry: dict[str, Any]) -> PeriodicSpec:
    """A ``PERIODIC`` settings entry: ``{"task": "dotted.Class", "interval": 10, ...}``."""
    if not isinstance(entry, dict) or "task" not in entry or "interval" not in entry:
        raise InvalidConfiguration(
            f"PERIODIC[{name!r}] must be a dict with at least 'task' and 'interval'."
        )
    unknown = set(entry) - set(PARAMETERS) - {"task"}
    if unknown:
        raise InvalidConfiguration(
            f"PERIODIC[{name!r}] has unknown keys {sorted(unknown)}; allowed: task, "
            f"{', '.join(PARAMETERS[:-1])}."
        )
    return validate(PeriodicSpec(**{"name": name, **entry}))


def declared_specs() -> dict[str, PeriodicSpec]:
    """Every declared periodic task: decorators, then settings (settings win on a clash)."""
    from distributed_tasks.conf import get_settings

    specs = dict(_specs)
    for name, entry in get_settings().PERIODIC.items():
        specs[name] = spec_from_settings(name, entry)
    return specs


def task_class(path: str) -> type[PeriodicTask]:
    """The class of a declared periodic task; only declared classes are ever imported."""
    declared = {spec.task for spec in declared_specs().values()}
    if path not in declared:
        raise InvalidConfiguration(f"{path!r} is not a declared periodic task.")
    klass = import_string(path)
    if not (isinstance(klass, type) and issubclass(klass, PeriodicTask)):
        raise InvalidConfiguration(f"{path!r} is not a PeriodicTask subclass.")
    return klass


def states():
    """``PeriodicTaskState`` rows on ``DATABASE_ALIAS``: where the leader's fenced
    transaction runs, so a slot claim is fenced with any database alias."""
    from distributed_tasks.conf import get_settings
    from distributed_tasks.models import PeriodicTaskState

    return PeriodicTaskState.objects.using(get_settings().DATABASE_ALIAS)


class PeriodicRun(DistributedTask):
    """The run of one slot: loads the state, executes, stores the new state.

    A failing ``execute`` keeps the previous state; an unreadable or missing state
    is recreated by ``init(args)``, the seed's contract.
    """

    # Its hooks after a lost run are called by the leader inline, not on the hook thread
    # (hooks.py): the failure must be counted before the next slot's run is current.
    inline_hooks: ClassVar[bool] = True

    def run(self, name: str, slot: str = "") -> dict[str, Any]:
        row = states().get(name=name)
        instance = task_class(row.task)()
        state = row.state
        if state is None:
            state = instance.init(row.args)
        new_state = instance.execute(state)
        try:
            strict_json(new_state)
        except ValueError as exc:
            raise InvalidConfiguration(
                f"{row.task}.execute returned a state that is not JSON ({exc}); the previous "
                "state is kept."
            ) from None
        self.new_state = new_state
        return {"periodic": name, "slot": slot}

    def on_success(self, run: RunInfo, result: Any) -> None:
        _record(run, outcome="DONE", state=getattr(self, "new_state", None))

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        _record(run, outcome="FAILED", error=f"{type(exc).__name__}: {exc}")

    def on_timeout(self, run: RunInfo) -> None:
        _record(run, outcome="FAILED", error="timed out")


def _record(run: RunInfo, *, outcome: str, state: Any = None, error: str = "") -> None:
    """Count the outcome, and store the new state, only for the task's current run.

    The leader records the run id just after the start, and may claim (and skip)
    later slots while a long run goes on: the run is current when either its id
    or its slot is the task's latest, so a fast run and a slow one both count.
    """
    from django.db.models import Exists, F, Q

    from distributed_tasks.models import TaskRun
    from distributed_tasks.types import State

    name, slot = [*run.args, "", ""][:2]
    current = Q(last_run_id=run.run_id) | Q(last_slot=slot) if slot else Q()
    rows = states().filter(current, name=name)
    if outcome == "DONE":
        # Only while this attempt still runs: one the leader ended or moved (its node was
        # taken for lost) must not overwrite the state its successor carries on.
        still_running = TaskRun.objects.by_key(run.run_id, attempt=run.attempt, state=State.RUNNING)
        rows = rows.filter(Exists(still_running))
        rows.update(state=state, runs=F("runs") + 1, last_outcome=outcome, last_error="")
    else:
        rows.update(failures=F("failures") + 1, last_outcome=outcome, last_error=error[:2000])
