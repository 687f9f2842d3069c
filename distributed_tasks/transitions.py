"""The worker's two writes per run as SQL written once per connection, not per run.

Building them with the ORM (``filter()`` then ``update()``) costs more CPU than the
database takes to execute them: every run compiles the same ``WHERE`` and ``SET``
again. The statements here are the same ones, fenced the same way (invariant 2: the
run, its attempt, and for a start its node and QUEUED state), with values prepared by
each field's own ``get_db_prep_save`` for the database in use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import F
from django.db.models.sql.subqueries import UpdateQuery
from django.utils import timezone

from distributed_tasks import bound, inserts
from distributed_tasks.by_key import unindexed
from distributed_tasks.messages import RunMessage
from distributed_tasks.models import TaskRun
from distributed_tasks.types import Outcome, State

# What a finished attempt writes besides active_name = NULL (Outcome.row_fields's keys).
FINISH_FIELDS = ("finished_at", "state", "result", "reason", "error_type", "error", "traceback")
START_FIELDS = ("state", "started_at", "incarnation")
# What a start returns: what the attempt executes (store.message_for) and what it set.
# Not the history, outcome, progress or cancel columns (deferred on the object).
START_RETURNS = (
    "attempt", "node", "task_list", "name", "function", "args", "kwargs", "callback",
    "queued_at", "timeout", "data", "priority", "executions", *START_FIELDS,
)  # fmt: skip


# The call fields (messages.CALL_FIELDS) a start "as sent" requires of the row, compared as
# RunMessage.differences compares them (a falsy value counts as none).
AS_SENT = ("task_list", "name", "function", "callback", "timeout", "args", "kwargs", "data")
TEXT_FIELDS = ("task_list", "name", "function", "callback")


@dataclass(frozen=True, slots=True)
class Transitions:
    start: str  # UPDATE ... SET state, started_at, incarnation, executions + 1 WHERE fenced
    finish: str  # UPDATE ... SET active_name NULL, outcome fields WHERE id, attempt, RUNNING
    start_as_sent: str  # start, where the row's call is also the message's (PostgreSQL)

    @classmethod
    def compile(cls, connection: Any) -> Transitions:
        q = connection.ops.quote_name
        table = q(TaskRun._meta.db_table)
        col = {f.attname: q(f.column) for f in TaskRun._meta.concrete_fields}
        start_set = ", ".join(f"{col[f]} = %s" for f in START_FIELDS)
        # Each row by its key alone (by_key.py): the fence's columns lead other indexes.
        fence = [f"{col[f]} = %s" for f in ("attempt", "node", "state")]
        start = (
            f"UPDATE {table} SET {start_set}, {col['executions']} = {col['executions']} + 1 "
            f"WHERE {col['id']} = %s AND "
        )
        finish_set = ", ".join(f"{col[f]} = %s" for f in FINISH_FIELDS)
        finish = (
            f"UPDATE {table} SET {col['active_name']} = NULL, {finish_set} "
            f"WHERE {col['id']} = %s AND {unindexed(f'{fence[0]} AND {fence[2]}')}"
        )
        as_sent = [f"{col[f]} = %s" for f in AS_SENT]
        as_sent[AS_SENT.index("timeout")] = f"NULLIF({col['timeout']}, 0) IS NOT DISTINCT FROM %s"
        return cls(
            start=start + unindexed(" AND ".join(fence)),
            finish=finish,
            start_as_sent=start + unindexed(" AND ".join(fence + as_sent)),
        )


# Each field's get_db_prep_save, None where it returns a plain value unchanged.
_PREP = {
    f.attname: None if isinstance(f, inserts.PLAIN) and not f.is_relation else f.get_db_prep_save
    for f in TaskRun._meta.concrete_fields
}
statements = inserts.per_connection(Transitions.compile)
started = inserts.partial_reader(START_RETURNS)


def prepared(connection: Any, values: list[tuple[str, Any]]) -> list[Any]:
    """``(attname, value)`` pairs, in the statement's order, as the database takes them."""
    return [v if (prep := _PREP[name]) is None else prep(v, connection) for name, v in values]


def comparable(msg: RunMessage) -> bool:
    """Whether ``msg``'s call fields can go into SQL as they are: text that UTF-8 can
    encode (no lone surrogate) with no NUL (which PostgreSQL refuses), and a number or
    nothing as timeout. Anything else is forged (the general path says so)."""
    for field in TEXT_FIELDS:
        text = getattr(msg, field)
        if text is None:
            continue
        if not isinstance(text, str) or "\x00" in text:
            return False
        try:
            text.encode()
        except UnicodeEncodeError:
            return False
    timeout = msg.timeout
    return timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool))


def update_returns(conn: Any) -> bool:
    """Whether ``UPDATE ... RETURNING`` works on this connection (not MySQL/MariaDB)."""
    return inserts.postgres_or_sqlite(conn, (3, 35))


class WorkerWrites:
    """The store's fenced writes of one attempt on the worker: its start and its outcome.

    A mixin of ``OrmStore`` (which provides ``alias`` and ``runs``): the two statements
    a run costs, kept beside the SQL they execute.
    """

    alias: str
    runs: Any  # the store's queryset of runs on ``alias``

    def mark_running(
        self, msg: RunMessage, incarnation: str, *, started_at: dt.datetime | None = None
    ) -> TaskRun | None:
        conn = connections[self.alias]
        now = started_at or timezone.now()
        if update_returns(conn):  # one statement written once per connection (transitions)
            params = prepared(conn, [
                ("state", State.RUNNING), ("started_at", now), ("incarnation", incarnation),
                ("id", msg.run_id), ("attempt", msg.attempt), ("node", msg.node),
                ("state", State.QUEUED),
            ])  # fmt: skip
            return self._returning(conn, statements(conn).start, params, started(conn))
        rows = self.runs.by_key(msg.run_id, attempt=msg.attempt, node=msg.node, state=State.QUEUED)
        values = {
            "state": State.RUNNING,
            "started_at": now,
            "incarnation": incarnation,
            "executions": F("executions") + 1,
        }
        return self._update_returning(rows, values, msg.run_id)

    def start_as_sent(
        self, msg: RunMessage, incarnation: str, *, started_at: dt.datetime | None = None
    ) -> TaskRun | None:
        """``mark_running`` in one autocommit statement that also requires the row's call
        (``RunMessage.CALL_FIELDS``) to be the message's, on PostgreSQL: the worker's
        start with no transaction around it (a BEGIN and a COMMIT less per run).

        None when nothing matched: a stale message, or one that disagrees with its row
        (in a way this comparison sees: jsonb compares numbers by value, so ``1e23`` and
        ``10**23`` match here where ``differences`` tells them apart; either way the
        worker executes the row's values), or
        ``NotImplemented`` where this does not apply (another database, or a message
        whose fields cannot be compared in SQL): the caller then takes the general path,
        which tells these apart.
        """
        conn = connections[self.alias]
        if conn.vendor != "postgresql" or not comparable(msg):
            return NotImplemented
        params = prepared(conn, [
            ("state", State.RUNNING), ("started_at", started_at or timezone.now()),
            ("incarnation", incarnation),
            ("id", msg.run_id), ("attempt", msg.attempt), ("node", msg.node),
            ("state", State.QUEUED),
            *((f, getattr(msg, f) or "") for f in TEXT_FIELDS),
            ("timeout", msg.timeout or None), ("args", msg.args), ("kwargs", msg.kwargs),
            ("data", msg.data or {}),
        ])  # fmt: skip
        # Inside a caller's transaction (the in-process backend, tests) a value PostgreSQL
        # refuses must not abort it: a savepoint there; in a pool process, autocommit.
        with transaction.atomic(using=self.alias) if conn.in_atomic_block else nullcontext():
            return self._returning(conn, statements(conn).start_as_sent, params, started(conn))

    def started_by(
        self, msg: RunMessage, incarnation: str, stamps: Sequence[dt.datetime]
    ) -> TaskRun | None:
        """The attempt of ``msg`` RUNNING as started by ``incarnation`` at one of
        ``stamps``: a start of this worker that committed though its reply was lost."""
        mine = {"incarnation": incarnation, "started_at__in": stamps, "state": State.RUNNING}
        return self.runs.by_key(msg.run_id, attempt=msg.attempt, node=msg.node, **mine).first()

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
        return self._returning(conn, sql, params, inserts.reader(conn), direct=False)

    def _returning(
        self, conn: Any, sql: str, params: list[Any], read: inserts.RowReader, *, direct=True
    ) -> TaskRun | None:
        """Run ``sql`` (an UPDATE of at most one row) with ``RETURNING`` the columns of
        ``read``. ``direct``: one of this module's statements, whose parameters all have
        a type the server can tell (``bound``); the ORM's expressions take Django's cursor."""
        row = bound.execute(
            conn, f"{sql} RETURNING {read.columns}", params, fetch=True, direct=direct
        )
        return None if row is None else read.load(row, self.alias)

    def finished_by(self, msg: RunMessage, outcome: Outcome, stamps: Sequence[dt.datetime]) -> bool:
        """Whether ``msg``'s attempt ended with ``outcome``'s state at one of ``stamps``:
        an outcome this process stored though the reply to its write was lost."""
        at = {"state": outcome.state, "finished_at__in": stamps}
        return self.runs.by_key(msg.run_id, attempt=msg.attempt, **at).exists()

    def requeued_by(self, msg: RunMessage, stamps: Sequence[dt.datetime]) -> TaskRun | None:
        """The run, if a retry ended ``msg``'s attempt at one of ``stamps`` (its entry in
        ``attempts`` says so): a ``requeue`` of this process whose reply was lost."""
        run = self.runs.by_key(msg.run_id, attempt__gt=msg.attempt).first()
        entry = run.ended(msg.attempt) if run is not None else None
        if entry is None or entry.get("node") != msg.node:
            return None
        return run if str(entry.get("ended_at")) in {s.isoformat() for s in stamps} else None

    def mark_finished(
        self, msg: RunMessage, outcome: Outcome, *, finished_at: dt.datetime | None = None
    ) -> bool:
        conn = connections[self.alias]
        fields = outcome.row_fields()
        params = prepared(conn, [
            ("finished_at", finished_at or timezone.now()),
            *((f, fields[f]) for f in FINISH_FIELDS[1:]),
            ("id", msg.run_id), ("attempt", msg.attempt), ("state", State.RUNNING),
        ])  # fmt: skip
        return bound.execute(conn, statements(conn).finish, params) > 0
