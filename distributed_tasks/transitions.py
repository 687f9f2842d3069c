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

from django.db import connections, transaction
from django.db.models import F
from django.db.models.sql.subqueries import UpdateQuery
from django.utils import timezone

from distributed_tasks import inserts
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.types import Outcome, State

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


_FIELDS = {f.attname: f for f in TaskRun._meta.concrete_fields}
statements = inserts.per_connection(Transitions.compile)


def prepared(connection: Any, values: list[tuple[str, Any]]) -> list[Any]:
    """``(attname, value)`` pairs, in the statement's order, as the database takes them."""
    return [_FIELDS[name].get_db_prep_save(value, connection) for name, value in values]


def update_returns(conn: Any) -> bool:
    """Whether ``UPDATE ... RETURNING`` works on this connection (not MySQL/MariaDB)."""
    if conn.vendor == "postgresql":
        return True
    if conn.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False


class WorkerWrites:
    """The store's fenced writes of one attempt on the worker: its start and its outcome.

    A mixin of ``OrmStore`` (which provides ``alias`` and ``runs``): the two statements
    a run costs, kept beside the SQL they execute.
    """

    alias: str

    def mark_running(self, msg: RunMessage, incarnation: str) -> TaskRun | None:
        conn = connections[self.alias]
        if update_returns(conn):  # one statement written once per connection (transitions)
            now = timezone.now()
            params = prepared(conn, [
                ("state", State.RUNNING), ("started_at", now), ("incarnation", incarnation),
                ("id", msg.run_id), ("attempt", msg.attempt), ("node", msg.node),
                ("state", State.QUEUED),
            ])  # fmt: skip
            return self._returning(conn, statements(conn).start, params)
        rows = self.runs.filter(
            id=msg.run_id, attempt=msg.attempt, node=msg.node, state=State.QUEUED
        )
        values = {
            "state": State.RUNNING,
            "started_at": timezone.now(),
            "incarnation": incarnation,
            "executions": F("executions") + 1,
        }
        return self._update_returning(rows, values, msg.run_id)

    def _update_returning(self, rows, values: dict[str, Any], pk: Any) -> TaskRun | None:
        """``rows.update(**values)`` on at most one row, returning it as updated.

        One ``UPDATE ... RETURNING`` where the database has it (PostgreSQL, SQLite
        3.35+); MySQL/MariaDB update and then read the row in the same transaction,
        under the row lock the update took.
        """
        conn = connections[self.alias]
        if not update_returns(conn):
            with transaction.atomic(using=self.alias, savepoint=False):
                if not rows.update(**values):
                    return None
                return self.runs.get(pk=pk)
        query = rows.query.chain(UpdateQuery)
        query.add_update_values(values)
        sql, params = query.get_compiler(self.alias).as_sql()
        return self._returning(conn, sql, params)

    def _returning(self, conn: Any, sql: str, params: list[Any]) -> TaskRun | None:
        """Run ``sql`` (an UPDATE of at most one row) with ``RETURNING`` every column."""
        read = inserts.reader(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"{sql} RETURNING {read.columns}", params)
            row = cursor.fetchone()
        return None if row is None else read.load(row, self.alias)

    def mark_finished(self, msg: RunMessage, outcome: Outcome) -> bool:
        conn = connections[self.alias]
        fields = outcome.row_fields()
        params = prepared(conn, [
            ("finished_at", timezone.now()),
            *((f, fields[f]) for f in FINISH_FIELDS[1:]),
            ("id", msg.run_id), ("attempt", msg.attempt), ("state", State.RUNNING),
        ])  # fmt: skip
        with conn.cursor() as cursor:
            cursor.execute(statements(conn).finish, params)
            return cursor.rowcount > 0
