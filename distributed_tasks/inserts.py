"""The INSERT of new runs, compiled once per database connection instead of per start.

``Model.save()`` and ``bulk_create`` rebuild the statement for every call: an
``InsertQuery``, its compiler, and ``get_db_prep_save`` on each of the row's ~35 fields,
which cost more CPU than the rest of a start. The statement of a run never changes, so
Django's own compiler writes it once (for one row; a batch repeats its ``VALUES``
group) and each start only lines up its values: plain text and numbers go as they are
(what ``get_db_prep_save`` would return for them), and JSON, dates and ids still go
through the field's own ``get_db_prep_save`` for the database in use.

The statement runs through Django's cursor wrapper, so query logging, execute
wrappers and the caller's transaction work as for any ORM query.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models
from django.db.models.sql.subqueries import InsertQuery

from distributed_tasks.models import TaskRun

T = TypeVar("T")

# Field classes whose get_db_prep_save returns a value of the right type unchanged.
PLAIN = (models.CharField, models.TextField, models.IntegerField, models.FloatField,
         models.BooleanField)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CompiledInsert:
    head: str  # INSERT INTO ... (columns) VALUES
    group: str  # (%s, %s, ...): one row's placeholders
    # (attname, field to prepare through or None, whether NULL stands for None)
    fields: tuple[tuple[str, Any, bool], ...]
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
        prepared = tuple(
            (f.attname, None if isinstance(f, PLAIN) and not f.is_relation else f, f.null)
            for f in fields
        )
        batch = max(1, connection.ops.bulk_batch_size(list(fields), [TaskRun()] * 10_000))
        return cls(head=f"{head} VALUES ", group=group, fields=prepared, batch=batch)

    def params(self, run: TaskRun, connection: Any) -> list[Any]:
        out = []
        for attname, field, nullable in self.fields:
            value = getattr(run, attname)
            if field is None or (value is None and nullable):  # as get_db_prep_save returns
                out.append(value)
            else:
                out.append(field.get_db_prep_save(value, connection))
        return out

    def execute(self, runs: Sequence[TaskRun], connection: Any) -> None:
        """Insert ``runs``: one statement per ``batch`` rows."""
        with connection.cursor() as cursor:
            for i in range(0, len(runs), self.batch):
                chunk = runs[i : i + self.batch]
                params: list[Any] = []
                for run in chunk:
                    params += self.params(run, connection)
                sql = self.head + ", ".join([self.group] * len(chunk))
                cursor.execute(sql, params)
        for run in runs:  # as save() leaves them: saved rows
            run._state.adding = False
            run._state.db = connection.alias


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


def insert(runs: Sequence[TaskRun], connection: Any) -> None:
    _insert_for(connection).execute(runs, connection)


_insert_for = per_connection(CompiledInsert.compile)


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
    def compile(cls, connection: Any) -> RowReader:
        fields = TaskRun._meta.concrete_fields
        compiler = TaskRun.objects.all().query.get_compiler(connection=connection)
        compiler.setup_query()
        expressions = [col for col, _sql, _alias in compiler.select]
        if [e.target for e in expressions] != list(fields):
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
