"""One start's INSERT, which skips a name an active run holds instead of failing.

``INSERT ... ON CONFLICT (task_list, active_name) DO NOTHING`` (PostgreSQL, SQLite 3.24+):
a refused start raises no error, so PostgreSQL logs none and keeps no dead row, and a
caller's transaction stays usable without a savepoint. MySQL/MariaDB have no such
clause: the store catches their IntegrityError instead.

On PostgreSQL the statement is a function that migration 0008 created: the server then
plans the INSERT once per session instead of once per start (about 150 us each on the
benchmark machine). Each process looks it up once per database alias (that it exists
and that this role may execute it); if a call finds it gone (migrated back, a restored
database), the process goes back to the plain INSERT and looks again next time.
"""

from __future__ import annotations

from typing import Any

from django.db import ProgrammingError

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
CALL = f"SELECT {FUNCTION}(%s, %s)"
# SQLSTATEs of a call that finds the function gone or not executable by this role.
MISSING = frozenset({"42883", "42501"})  # undefined_function, insufficient_privilege

_callable: dict[str, bool] = {}  # database alias -> whether this role can call FUNCTION


def skips_conflicts(connection: Any) -> bool:
    """Whether an INSERT here can skip a taken name: ``ON CONFLICT (...) DO NOTHING``."""
    return postgres_or_sqlite(connection, (3, 24))


def _skip_clause(connection: Any) -> str:
    quote = connection.ops.quote_name
    meta = TaskRun._meta
    target = ", ".join(quote(meta.get_field(f).column) for f in ("task_list", "active_name"))
    return f" ON CONFLICT ({target}) DO NOTHING"


_skip_for = per_connection(_skip_clause)


def _has_function(connection: Any) -> bool:
    found = _callable.get(connection.alias)
    if found is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COALESCE(has_function_privilege(to_regprocedure(%s), 'EXECUTE'), false)",
                [f"{FUNCTION}(json, json)"],
            )
            found = _callable[connection.alias] = bool(cursor.fetchone()[0])
    return found


def insert_unless_taken(row: Row, connection: Any) -> bool:
    """Insert one row unless an active run holds its name; False then. Only where
    ``skips_conflicts``."""
    compiled = insert_for(connection)
    skip = _skip_for(connection)
    if not isinstance(compiled, RecordsetInsert):  # SQLite
        sql = compiled.head + compiled.group + skip
        return bound.execute(connection, sql, compiled.params(row, connection)) > 0
    if _has_function(connection):
        try:
            params = [compiled.defaults, encode_rows(row)]
            return bound.execute(connection, CALL, params, fetch=True)[0]
        except ProgrammingError as exc:
            if getattr(exc.__cause__, "sqlstate", None) not in MISSING:
                raise
            _callable.pop(connection.alias, None)  # look again at the next start
            if connection.in_atomic_block:
                raise  # the caller's transaction is aborted: it must see why
    params = [compiled.defaults, encode_rows([row])]
    return bound.execute(connection, compiled.sql + skip, params) > 0
