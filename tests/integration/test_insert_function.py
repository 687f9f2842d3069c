"""A single start's INSERT on PostgreSQL, and statements on psycopg's own cursor.

- a single insert goes through migration 0008's function, which inserts the table's own
  row type (a column added later needs no new function); a process that finds it gone
  goes back to the plain INSERT;
- it stores every value as the ORM does, inside a transaction and outside one (where the
  call skips Django's cursor), and refuses a taken name without an error;
- a statement skips Django's cursor only outside a transaction with nothing watching
  (no execute wrapper, no captured queries), is never prepared there, and its errors
  are still Django's.
"""

import functools
import importlib
import uuid

import psycopg
import pytest
from django.db import DataError, ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext

from distributed_tasks import AlreadyRunning, bound, insert_one, inserts
from distributed_tasks.insert_one import FUNCTION
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from tests.support import TRICKY

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's own")

migration = importlib.import_module("distributed_tasks.migrations.0008_insert_function")


@pytest.fixture
def spy(monkeypatch):
    """Each statement psycopg's own cursor executes (not Django's client-side one), with
    its ``prepare`` argument."""
    seen: list[tuple[str, object]] = []
    execute = psycopg.Cursor.execute

    def recording(self, query, params=None, **kwargs):
        if type(self) is psycopg.Cursor:
            seen.append((str(query), kwargs.get("prepare")))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return seen


def test_the_code_calls_the_function_the_migration_makes_on_the_models_table():
    """The migration is frozen (no import of the app's code): its names must still agree."""
    assert (FUNCTION, TaskRun._meta.db_table) == (migration.FUNCTION, migration.TABLE)


@pytest.mark.django_db(transaction=True)
def test_a_column_added_to_the_table_later_needs_no_new_function():
    """The function inserts the table's own row type: a column a later migration adds
    (here by hand) is there, NULL where the app does not know it yet."""
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{migration.TABLE}" ADD COLUMN later text')
    try:
        row = inserts.new_row(id=uuid.uuid4(), name="a", active_name="a", **TRICKY)
        assert get_store().insert_many([row]) == [None]
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT name, later FROM "{migration.TABLE}"')
            assert cursor.fetchall() == [("a", None)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{migration.TABLE}" DROP COLUMN later')


@pytest.fixture
def function_dropped():
    """The function gone (migrated back, a restored database), made again afterwards."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION {FUNCTION}(json, json)")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(migration.CREATE)
        insert_one._callable.clear()


@pytest.mark.django_db(transaction=True)
def test_a_process_that_finds_the_function_gone_goes_back_to_the_plain_insert(function_dropped):
    insert_one._callable[connection.alias] = True  # looked up before it was dropped
    first = inserts.new_row(id=uuid.uuid4(), name="a", active_name="a", function="f")
    assert get_store().insert_many([first]) == [None]  # the call failed: the plain INSERT
    assert connection.alias not in insert_one._callable
    second = inserts.new_row(id=uuid.uuid4(), name="b", active_name="b", function="f")
    assert get_store().insert_many([second]) == [None]
    assert insert_one._callable[connection.alias] is False  # looked up again: gone
    assert sorted(TaskRun.objects.values_list("name", flat=True)) == ["a", "b"]


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_missing_function_is_the_error_the_caller_sees(function_dropped):
    insert_one._callable[connection.alias] = True
    row = inserts.new_row(id=uuid.uuid4(), name="a", active_name="a", function="f")
    with pytest.raises(ProgrammingError, match=FUNCTION), transaction.atomic():
        get_store().insert_many([row])
    assert connection.alias not in insert_one._callable  # the next start looks again
    assert get_store().insert_many([row]) == [None]
    assert TaskRun.objects.get().name == "a"


def _stored_alike() -> None:
    """A single insert (``insert_many`` of one row: the function) against bulk_create."""
    row = inserts.new_row(id=uuid.uuid4(), name="a", active_name="a", **TRICKY)
    assert get_store().insert_many([row]) == [None]
    TaskRun.objects.bulk_create([TaskRun(id=uuid.uuid4(), name="b", active_name="b", **TRICKY)])
    skip = {"id", "name", "active_name"}
    columns = [f.attname for f in TaskRun._meta.concrete_fields if f.attname not in skip]
    stored = {r.name: [getattr(r, c) for c in columns] for r in TaskRun.objects.all()}
    assert stored["a"] == stored["b"]
    assert [repr(v) for v in stored["a"]] == [repr(v) for v in stored["b"]]


@pytest.mark.django_db
def test_a_single_insert_in_a_transaction_calls_the_function_and_stores_as_the_orm():
    with CaptureQueriesContext(connection) as queries:
        _stored_alike()
    calls = [q["sql"] for q in queries if q["sql"].startswith(f"SELECT {FUNCTION}(")]
    assert len(calls) == 1


@pytest.mark.django_db(transaction=True)
def test_a_single_insert_outside_a_transaction_skips_djangos_cursor(spy):
    _stored_alike()
    assert [(q.split("(")[0], prepare) for q, prepare in spy] == [(f"SELECT {FUNCTION}", False)]


@pytest.mark.django_db(transaction=True)
def test_a_taken_name_is_refused_through_the_function_without_an_error(spy):
    row = inserts.new_row(id=uuid.uuid4(), name="held", active_name="held", function="f")
    assert get_store().insert_many([row]) == [None]
    again = inserts.new_row(id=uuid.uuid4(), name="held", active_name="held", function="f")
    (refused,) = get_store().insert_many([again])
    assert isinstance(refused, AlreadyRunning) and refused.run_id == row["id"].hex
    assert TaskRun.objects.filter(name="held").count() == 1


@pytest.mark.django_db(transaction=True)
def test_djangos_cursor_is_kept_where_something_watches_or_a_transaction_is_open(spy):
    seen: list[str] = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        assert bound.execute(connection, "SELECT %s + 1", [1], fetch=True) == (2,)
    with CaptureQueriesContext(connection) as captured:
        assert bound.execute(connection, "SELECT %s + 2", [1], fetch=True) == (3,)
    with transaction.atomic():
        assert bound.execute(connection, "SELECT %s + 3", [1], fetch=True) == (4,)
    assert seen == ["SELECT %s + 1"] and len(captured) == 1
    assert spy == []  # all three through Django's cursor
    assert bound.execute(connection, "SELECT %s + 4", [1], fetch=True) == (5,)
    assert spy == [("SELECT %s + 4", False)]


@pytest.mark.django_db(transaction=True)
def test_an_error_on_psycopgs_own_cursor_is_djangos_and_leaves_the_connection_usable(spy):
    with pytest.raises(DataError):
        bound.execute(connection, "SELECT 1 / %s", [0], fetch=True)
    assert spy  # it did take the direct path
    assert bound.execute(connection, "SELECT %s::int", [7], fetch=True) == (7,)
    assert connection.is_usable()


@pytest.mark.django_db(transaction=True)
def test_djangos_cursor_is_kept_under_an_sdk_or_a_cursor_factory_of_its_own(spy, monkeypatch):
    """An SDK that wraps ``CursorWrapper.execute`` (Sentry), an instrumentation's cursor
    class, another backend class: each would miss a statement on psycopg's own cursor."""
    from django.db.backends.postgresql import base
    from django.db.backends.utils import CursorWrapper

    seen: list[str] = []
    real = CursorWrapper.execute

    @functools.wraps(real)
    def patched(self, sql, params=None):
        seen.append(sql)
        return real(self, sql, params)

    with monkeypatch.context() as m:
        m.setattr(CursorWrapper, "execute", patched)
        assert bound.execute(connection, "SELECT %s + 1", [1], fetch=True) == (2,)
    connection.ensure_connection()
    traced = type("TracedCursor", (base.Cursor,), {})
    with monkeypatch.context() as m:
        m.setattr(connection.connection, "cursor_factory", traced)
        assert bound.execute(connection, "SELECT %s + 2", [1], fetch=True) == (3,)
    tenants = type("TenantWrapper", (base.DatabaseWrapper,), {"_cursor": lambda *a, **k: None})
    assert not bound._direct(tenants(connection.settings_dict, alias="other"))
    assert seen == ["SELECT %s + 1"] and spy == []
