"""The INSERT of new runs, compiled once per database connection instead of per start.

``Model.save()`` and ``bulk_create`` rebuild the statement for every call: an
``InsertQuery``, its compiler, and ``get_db_prep_save`` on each of the row's ~35 fields,
which cost more CPU than the rest of a start. The statement of a run never changes, so
Django's own compiler writes it once (for one row; a batch repeats its ``VALUES``
group) and each start only lines up its values: plain text and numbers go as they are
(what ``get_db_prep_save`` would return for them), and JSON, dates and ids still go
through the field's own ``get_db_prep_save`` for the database in use.

On PostgreSQL the rows go as one JSON parameter instead (``RecordsetInsert``):
psycopg parses any statement with more than 50 placeholders anew on every call (its
cache skips them), which cost ~150 us per row of a 1,000-row ``VALUES`` list, more
than the rest of ``start_many``; ``json_populate_recordset`` takes the rows as one
JSON array that the C encoder writes, the fields a row leaves out from a base
record of their defaults.

The statement runs through Django's cursor wrapper, so query logging, execute
wrappers and the caller's transaction work as for any ORM query. A single start's
INSERT, which skips a taken name, is ``insert_one``'s.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models, transaction
from django.db.models.sql.subqueries import InsertQuery

from distributed_tasks.models import TaskRun

T = TypeVar("T")
# A TaskRun row: attname -> value. A field with a plain default (not a callable) may be
# left out: every insert below fills it in (``plain_defaults``).
Row = Mapping[str, Any]

# Field classes whose get_db_prep_save returns a value of the right type unchanged.
PLAIN = (models.CharField, models.TextField, models.IntegerField, models.FloatField,
         models.BooleanField)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompiledInsert:
    head: str  # INSERT INTO ... (columns) VALUES
    group: str  # (%s, %s, ...): one row's placeholders
    # (attname, field to prepare through or None, whether NULL stands for None, default)
    fields: tuple[tuple[str, Any, bool, Any], ...]
    batch: int  # rows per statement the database accepts

    @classmethod
    def compile(cls, connection: Any) -> CompiledInsert:
        fields = TaskRun._meta.local_concrete_fields
        query = InsertQuery(TaskRun)
        query.insert_values(fields, [TaskRun()])
        ((sql, _params),) = query.get_compiler(connection=connection).as_sql()
        head, sep, group = sql.partition(" VALUES ")
        if not sep or not group.startswith("(") or not group.endswith(")"):
            raise RuntimeError(f"unexpected INSERT shape for {connection.vendor}: {sql}")
        defaults = plain_defaults()
        prepared = tuple(
            (
                f.attname,
                None if isinstance(f, PLAIN) and not f.is_relation else f,
                f.null,
                defaults.get(f.attname),
            )
            for f in fields
        )
        batch = max(1, connection.ops.bulk_batch_size(list(fields), [TaskRun()] * 10_000))
        return cls(head=f"{head} VALUES ", group=group, fields=prepared, batch=batch)

    def params(self, row: Row, connection: Any) -> list[Any]:
        out = []
        for attname, field, nullable, default in self.fields:
            value = row.get(attname, default)
            if field is None or (value is None and nullable):  # as get_db_prep_save returns
                out.append(value)
            else:
                out.append(field.get_db_prep_save(value, connection))
        return out

    def execute(self, rows: Sequence[Row], connection: Any) -> None:
        """Insert ``rows``: one statement per ``batch`` rows, all or none."""
        several = len(rows) > self.batch
        with transaction.atomic(using=connection.alias) if several else nullcontext():
            self._execute(rows, connection)

    def _execute(self, rows: Sequence[Row], connection: Any) -> None:
        with connection.cursor() as cursor:
            for i in range(0, len(rows), self.batch):
                chunk = rows[i : i + self.batch]
                params: list[Any] = []
                for row in chunk:
                    params += self.params(row, connection)
                sql = self.head + ", ".join([self.group] * len(chunk))
                cursor.execute(sql, params)


@functools.cache
def plain_defaults() -> dict[str, Any]:
    """Each field's default that is a plain value (read once the models are ready)."""
    fields = TaskRun._meta.concrete_fields
    return {
        f.attname: f.get_default() for f in fields if not (f.has_default() and callable(f.default))
    }


@functools.cache
def _computed() -> tuple[tuple[str, Callable[[], Any]], ...]:
    """Each field whose default is a callable (``uuid4``, ``now``, ``list``), and it."""
    return tuple((f.attname, f.get_default) for f in TaskRun._meta.concrete_fields
                 if f.has_default() and callable(f.default))  # fmt: skip


def new_row(**values: Any) -> dict[str, Any]:
    """A new run's row: ``values``, and the callable defaults of the fields not given
    (per row: no two rows share an id or a mutable default). Plain defaults stay out.

    A batch inserts these as they are: building a ``TaskRun`` per start (its
    ``__init__`` matches ~35 fields and evaluates each default) cost more than the
    INSERT itself.
    """
    if not _known().issuperset(values):
        raise TypeError(f"TaskRun has no field(s) {sorted(values.keys() - _known())}")
    for attname, default in _computed():
        if attname not in values:
            values[attname] = default()
    return values


def run_of(row: Row) -> TaskRun:
    """The unsaved ``TaskRun`` of a row (built positionally, as ``from_db`` builds them)."""
    defaults = plain_defaults()
    return TaskRun(*[row[a] if a in row else defaults[a] for a in _attnames()])


def row_of(run: TaskRun) -> dict[str, Any]:
    return {a: getattr(run, a) for a in _attnames()}


@functools.cache
def _attnames() -> tuple[str, ...]:
    return tuple(f.attname for f in TaskRun._meta.concrete_fields)


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(_attnames())


def per_connection(compile: Callable[[Any], T]) -> Callable[[Any], T]:
    """``compile(connection)`` once per database alias and vendor, then from a cache."""
    cache: dict[tuple[str, str], T] = {}

    def compiled(connection: Any) -> T:
        key = (connection.alias, connection.vendor)
        found = cache.get(key)
        if found is None:
            found = cache[key] = compile(connection)
        return found

    return compiled


def _json_value(value: Any) -> str:
    """Dates and ids in the text form PostgreSQL reads them in (the rest is plain JSON)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a TaskRun column value")


# Field classes whose value goes into the JSON rows as it is (dates and ids as text).
AS_JSON = (*PLAIN, models.JSONField, models.DateTimeField, models.UUIDField)


@dataclass(frozen=True, slots=True)
class RecordsetInsert:
    """PostgreSQL: ``INSERT ... SELECT ... FROM json_populate_recordset(<defaults>, %s)``.

    Two parameters whatever the batch size (the defaults, the rows), so psycopg's
    query cache holds the statement; each column's value reaches the database as the JSON of what
    ``get_db_prep_save`` would have sent (checked per field class at compile time).
    """

    sql: str
    defaults: str  # the plain defaults as JSON: the base record of the rows

    @classmethod
    def compile(cls, connection: Any) -> RecordsetInsert | CompiledInsert:
        fields = TaskRun._meta.local_concrete_fields
        plain = all(
            isinstance(f, AS_JSON)
            and not f.is_relation
            and f.column == f.attname  # the rows' keys name the columns as they are
            and getattr(f, "encoder", None) is None
            for f in fields
        )
        if connection.vendor != "postgresql" or not plain:
            return CompiledInsert.compile(connection)
        quote = connection.ops.quote_name
        table = quote(TaskRun._meta.db_table)
        columns = ", ".join(quote(f.column) for f in fields)
        # A column a row leaves out takes the base record's value: its plain default.
        base = f"json_populate_record(NULL::{table}, %s)"
        sql = (f"INSERT INTO {table} ({columns}) SELECT {columns} "
               f"FROM json_populate_recordset({base}, %s)")  # fmt: skip
        return cls(sql=sql, defaults=encode_rows(plain_defaults()))

    def execute(self, rows: Sequence[Row], connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [self.defaults, encode_rows(rows)])


encode_rows = json.JSONEncoder(
    allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_json_value
).encode


def insert(rows: Sequence[Row], connection: Any) -> None:
    """Insert ``rows`` (from ``new_row`` or ``row_of``), all or none (one statement, or
    one transaction for several)."""
    insert_for(connection).execute(rows, connection)


insert_for = per_connection(RecordsetInsert.compile)


def postgres_or_sqlite(connection: Any, sqlite: tuple[int, int]) -> bool:
    """Whether ``connection`` is PostgreSQL, or SQLite at least at version ``sqlite``: the
    SQL that MySQL/MariaDB lack (``RETURNING`` from 3.35, ``ON CONFLICT`` from 3.24)."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= sqlite
    return False


# -- reading a row back from RETURNING ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowReader:
    """Turns a ``RETURNING <every column>`` row into a ``TaskRun`` as a queryset would
    (the same converters, from Django's compiler), without a queryset per call."""

    columns: str  # the RETURNING list, in concrete field order
    attnames: tuple[str, ...]
    converters: dict[int, Any]  # column index -> (converters, expression)
    compiler: Any

    @classmethod
    def compile(cls, connection: Any, only: tuple[str, ...] = ()) -> RowReader:
        """Every column, or ``only`` those fields (and the key): the others are deferred."""
        rows = TaskRun.objects.only(*only) if only else TaskRun.objects.all()
        compiler = rows.query.get_compiler(connection=connection)
        compiler.setup_query()
        expressions = [col for col, _sql, _alias in compiler.select]
        fields = [e.target for e in expressions]
        wanted = [f for f in TaskRun._meta.concrete_fields if not only or f in fields]
        if fields != wanted:
            raise RuntimeError("TaskRun's select list is not its concrete fields")
        quote = connection.ops.quote_name
        return cls(
            columns=", ".join(quote(f.column) for f in fields),
            attnames=tuple(f.attname for f in fields),
            converters=compiler.get_converters(expressions),
            compiler=compiler,
        )

    def load(self, row: Any, alias: str) -> TaskRun:
        if self.converters:
            (row,) = self.compiler.apply_converters([list(row)], self.converters)
        return TaskRun.from_db(alias, self.attnames, tuple(row))


reader = per_connection(RowReader.compile)


def partial_reader(only: tuple[str, ...]) -> Callable[[Any], RowReader]:
    """A ``reader`` of ``only`` these fields: less to send, parse and convert per row."""
    return per_connection(lambda connection: RowReader.compile(connection, only))
