"""One start's INSERT, which skips a name an active run holds instead of failing.

``INSERT ... ON CONFLICT (task_list, active_name) DO NOTHING`` (PostgreSQL, SQLite 3.24+):
a refused start raises no error, so PostgreSQL logs none and keeps no dead row, and a
caller's transaction stays usable without a savepoint. MySQL/MariaDB have no such
clause: the store catches their IntegrityError instead.

On PostgreSQL the statement is a function that migration 0008 created: the server then
plans the INSERT once per session instead of once per start (about 150 us each on the
benchmark machine). Outside a transaction the call goes on psycopg's own cursor
(``bound``).
"""

from __future__ import annotations

from typing import Any

from distributed_tasks import bound
from distributed_tasks.inserts import (
    RecordsetInsert,
    Row,
    encode_rows,
    insert_for,
    per_connection,
    postgres_or_sqlite,
)
from distributed_tasks.models import TaskRun

FUNCTION = "distributed_tasks_insert_run"  # migrations/0008_insert_function.py


def skips_conflicts(connection: Any) -> bool:
    """Whether an INSERT here can skip a taken name: ``ON CONFLICT (...) DO NOTHING``."""
    return postgres_or_sqlite(connection, (3, 24))


def _statement(connection: Any) -> str:
    """The call of the function where the database has it, else the INSERT itself."""
    compiled = insert_for(connection)
    if isinstance(compiled, RecordsetInsert):  # PostgreSQL
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [f"{FUNCTION}(json, json)"])
            if cursor.fetchone()[0]:
                return f"SELECT {FUNCTION}(%s, %s)"
        return compiled.sql + _skip_clause(connection)
    return compiled.head + compiled.group + _skip_clause(connection)


def _skip_clause(connection: Any) -> str:
    quote = connection.ops.quote_name
    meta = TaskRun._meta
    target = ", ".join(quote(meta.get_field(f).column) for f in ("task_list", "active_name"))
    return f" ON CONFLICT ({target}) DO NOTHING"


_statement_for = per_connection(_statement)


def insert_unless_taken(row: Row, connection: Any) -> bool:
    """Insert one row unless an active run holds its name; False then. Only where
    ``skips_conflicts``."""
    sql = _statement_for(connection)
    compiled = insert_for(connection)
    if not isinstance(compiled, RecordsetInsert):
        return bound.execute(connection, sql, compiled.params(row, connection)) > 0
    if sql.startswith("SELECT"):  # the function: the row as one JSON object
        return bound.execute(connection, sql, [compiled.defaults, encode_rows(row)], fetch=True)[0]
    return bound.execute(connection, sql, [compiled.defaults, encode_rows([row])]) > 0
