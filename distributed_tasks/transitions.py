"""The worker's two writes per run as SQL written once per connection, not per run.

Building them with the ORM (``filter()`` then ``update()``) costs more CPU than the
database takes to execute them: every run compiles the same ``WHERE`` and ``SET``
again. The statements here are the same ones, fenced the same way (invariant 2: the
run, its attempt, and for a start its node and QUEUED state), with values prepared by
each field's own ``get_db_prep_save`` for the database in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributed_tasks.models import TaskRun

# What a finished attempt writes besides active_name = NULL (Outcome.row_fields's keys).
FINISH_FIELDS = ("finished_at", "state", "result", "reason", "error_type", "error", "traceback")
START_FIELDS = ("state", "started_at", "incarnation")


@dataclass(frozen=True, slots=True)
class Transitions:
    start: str  # UPDATE ... SET state, started_at, incarnation, executions + 1 WHERE fenced
    finish: str  # UPDATE ... SET active_name NULL, outcome fields WHERE id, attempt, RUNNING

    @classmethod
    def compile(cls, connection: Any) -> Transitions:
        q = connection.ops.quote_name
        table = q(TaskRun._meta.db_table)
        col = {f.attname: q(f.column) for f in TaskRun._meta.concrete_fields}
        start_set = ", ".join(f"{col[f]} = %s" for f in START_FIELDS)
        start = (
            f"UPDATE {table} SET {start_set}, {col['executions']} = {col['executions']} + 1 "
            f"WHERE {col['id']} = %s AND {col['attempt']} = %s AND {col['node']} = %s "
            f"AND {col['state']} = %s"
        )
        finish_set = ", ".join(f"{col[f]} = %s" for f in FINISH_FIELDS)
        finish = (
            f"UPDATE {table} SET {col['active_name']} = NULL, {finish_set} "
            f"WHERE {col['id']} = %s AND {col['attempt']} = %s AND {col['state']} = %s"
        )
        return cls(start=start, finish=finish)


_compiled: dict[tuple[str, str], Transitions] = {}
_FIELDS = {f.attname: f for f in TaskRun._meta.concrete_fields}


def statements(connection: Any) -> Transitions:
    key = (connection.alias, connection.vendor)
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = Transitions.compile(connection)
    return found


def prepared(connection: Any, values: list[tuple[str, Any]]) -> list[Any]:
    """``(attname, value)`` pairs, in the statement's order, as the database takes them."""
    return [_FIELDS[name].get_db_prep_save(value, connection) for name, value in values]
