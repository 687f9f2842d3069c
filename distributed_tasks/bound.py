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
3, outside an atomic block, no ``execute_wrapper`` installed and queries not being
logged (``DEBUG``, ``assertNumQueries``, ``CaptureQueriesContext``). Anywhere else the
statement goes through ``connection.cursor()`` as any ORM query. Its errors are Django's
either way (``wrap_database_errors``), so a broken connection is closed as usual.
"""

from __future__ import annotations

from typing import Any


def _direct(connection: Any) -> bool:
    """Whether ``connection`` may skip Django's cursor for one autocommit statement."""
    if (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or connection.execute_wrappers
        or connection.queries_logged
    ):
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def _agrees(connection: Any) -> bool:
    """Whether the connection reads timestamps in Django's time zone, as Django's cursor
    would (``create_cursor`` registers another loader on a cursor where it does not)."""
    from psycopg.pq import Format

    adapters = connection.connection.adapters
    loader = adapters.get_loader(adapters.types["timestamptz"].oid, Format.TEXT)
    return getattr(loader, "timezone", None) == connection.timezone


def execute(connection: Any, sql: str, params: list[Any], *, fetch: bool = False) -> Any:
    """Execute ``sql`` (``%s`` placeholders); its first row when ``fetch``, else its row
    count."""
    if _direct(connection):
        connection.close_if_health_check_failed()  # as Django's cursor() does first
        connection.ensure_connection()
        connection.validate_thread_sharing()
        if _agrees(connection):
            import psycopg

            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=False)
                return cursor.fetchone() if fetch else cursor.rowcount
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if fetch else cursor.rowcount
