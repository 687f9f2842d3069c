"""The hot statements on psycopg's own cursor, bound by the server, when nothing watches.

Django's PostgreSQL backend binds parameters on the client by default (psycopg's
``ClientCursor``): every call quotes each parameter into the SQL text in Python. For
the worker's fenced start (15 parameters) that, with Django's cursor wrapper around
it, was half the statement's CPU: 200 us, against 100 us on psycopg's plain cursor,
which sends the parameters beside the SQL, dumped by its C adapters, in the same round
trip. The statement is never prepared (``prepare=False``: an unnamed statement), so
PgBouncer in transaction mode and a connection that another process reuses behave as
with Django's own cursor.

That cursor is taken only where Django's would add nothing: PostgreSQL through psycopg
3, outside an atomic block, no ``execute_wrapper`` installed, queries not being logged
(``DEBUG``, ``assertNumQueries``, ``CaptureQueriesContext``), Django's own backend class
(not one that does more per cursor, such as setting a tenant's ``search_path``), its own
cursor class (no ``cursor_factory`` of an instrumentation) and an unpatched
``CursorWrapper.execute`` (an SDK that wraps it sees every query). Anywhere else the
statement goes through ``connection.cursor()`` as any ORM query. Its errors are Django's
either way (``wrap_database_errors``), so a broken connection is closed as usual. Only
this library's fixed statements come here, whose every parameter has a type the server
can tell; the ORM's expressions keep Django's cursor.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

_CURSOR = BaseDatabaseWrapper._cursor  # type: ignore[attr-defined]  # Django-internal


def _direct(connection: Any) -> bool:
    """Whether ``connection`` may skip Django's cursor for one autocommit statement
    (before it connects: ``_plain`` checks the connection itself)."""
    if (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or connection.execute_wrappers
        or connection.queries_logged
    ):
        return False
    from django.db.backends.postgresql import base
    from django.db.backends.utils import CursorWrapper

    if not getattr(base, "is_psycopg3", False) or hasattr(CursorWrapper.execute, "__wrapped__"):
        return False  # psycopg2, or an SDK that patched Django's cursor (Sentry...)
    # Not a backend that does more per cursor (sets a tenant's search_path, counts...).
    create = base.DatabaseWrapper.create_cursor
    return connection._cursor.__func__ is _CURSOR and connection.create_cursor.__func__ is create


def _plain(connection: Any) -> bool:
    """Whether the open connection's cursors are Django's own and read timestamps in
    Django's time zone (``create_cursor`` registers another loader where they do not)."""
    from django.db.backends.postgresql import base
    from psycopg.pq import Format

    raw = connection.connection
    if raw.cursor_factory not in (base.Cursor, base.ServerBindingCursor):
        return False  # a cursor_factory in OPTIONS, an instrumentation's traced cursor
    adapters = raw.adapters
    loader = adapters.get_loader(adapters.types["timestamptz"].oid, Format.TEXT)
    return getattr(loader, "timezone", None) == connection.timezone


def execute(
    connection: Any, sql: str, params: list[Any], *, fetch: bool = False, direct: bool = True
) -> Any:
    """Execute ``sql`` (``%s`` placeholders); its first row when ``fetch``, else its row
    count. ``direct=False``: always on Django's cursor (SQL the ORM compiled, whose
    parameters the server may not be able to type)."""
    if direct and _direct(connection):
        connection.close_if_health_check_failed()  # as Django's cursor() does first
        connection.ensure_connection()
        connection.validate_thread_sharing()
        if _plain(connection):
            import psycopg

            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=False)
                return cursor.fetchone() if fetch else cursor.rowcount
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if fetch else cursor.rowcount
