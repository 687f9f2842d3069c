"""The store's inserts of new runs: a name an active run holds answers with that run.

A mixin of ``OrmStore`` (which provides ``alias`` and ``active``). The database's unique
active name decides: PostgreSQL and SQLite skip a taken name in the INSERT itself
(``insert_one``), MySQL/MariaDB refuse it with an IntegrityError inside a savepoint;
either way the start is then answered with the run that holds the name, read next.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import IntegrityError, connections, transaction

from distributed_tasks import insert_one, inserts
from distributed_tasks.exceptions import AlreadyRunning
from distributed_tasks.models import TaskRun


class NewRuns:
    """``insert`` and ``insert_many`` of ``OrmStore``, whose ``active`` reads the holder."""

    alias: str
    active: Callable[[str, str], TaskRun | None]  # the store's

    def insert(self, run: TaskRun) -> None:
        """Insert ``run``; ``AlreadyRunning`` naming the holder when its name is taken."""
        try:
            self._insert_row(inserts.row_of(run), connections[self.alias])
        except IntegrityError:
            raise self._conflict(run.task_list, run.name) from None
        run._state.adding, run._state.db = False, self.alias  # as save() leaves it

    def _conflict(self, task_list: str, name: str) -> AlreadyRunning:
        """The unique active-name constraint refused a new run of ``name``: which run holds it.

        Called in an ``except IntegrityError``; re-raises it when no run holds the name
        (the integrity error was about something else).
        """
        holder = self._holder(task_list, name)
        if holder is None:
            raise  # the IntegrityError being handled by the caller
        return holder

    def _holder(self, task_list: str, name: str) -> AlreadyRunning | None:
        """The refusal naming the active run of ``name``; None when no run holds it."""
        existing = self.active(task_list, name)
        if existing is None:
            return None
        return AlreadyRunning(name, existing.run_id, existing.node or None,
                              task_list=task_list, state=existing.state)  # fmt: skip

    def insert_many(self, rows: list[inserts.Row]) -> list[AlreadyRunning | None]:
        """Insert a batch in one statement; on a conflict, fall back to one by one.

        The fallback is one transaction (a savepoint per row): a database that goes away
        half-way leaves no row behind that the caller could not delete. A single row
        needs no fallback: ``_insert_one`` answers its conflict (no ``TaskRun`` built)."""
        connection = connections[self.alias]
        if len(rows) == 1:
            return [self._insert_one(rows[0], connection)]
        try:
            with self._savepoint():
                inserts.insert(rows, connection)
            return [None] * len(rows)
        except IntegrityError:
            errors: list[AlreadyRunning | None] = []
            with transaction.atomic(using=self.alias):
                for row in rows:
                    try:
                        self.insert(inserts.run_of(row))
                        errors.append(None)
                    except AlreadyRunning as exc:
                        errors.append(exc)
            return errors

    def _savepoint(self) -> AbstractContextManager[Any]:
        """A savepoint keeps a caller's transaction usable after a conflict; outside one
        the INSERT is atomic by itself, without BEGIN and COMMIT round trips."""
        if connections[self.alias].in_atomic_block:
            return transaction.atomic(using=self.alias)
        return nullcontext()

    def _insert_row(self, row: inserts.Row, connection: Any) -> None:
        """Insert ``row`` as it is: a taken name raises ``IntegrityError`` (after rolling
        back to a savepoint inside a caller's transaction, which stays usable)."""
        with self._savepoint():
            inserts.insert([row], connection)

    def _insert_one(self, row: inserts.Row, connection: Any) -> AlreadyRunning | None:
        """One row without an error for a taken name: None, or the run that holds it."""
        task_list = row.get("task_list", inserts.plain_defaults()["task_list"])
        name, error = row["name"], None
        for _ in range(3):
            inserted, error = self._insert_unless_taken(row, connection)
            if inserted:
                return None
            if (holder := self._holder(task_list, name)) is not None:
                return holder
            # The run that held the name ended between the two statements: again.
        raise error or IntegrityError(f"the active run of {name!r} kept changing while read")

    def _insert_unless_taken(
        self, row: inserts.Row, connection: Any
    ) -> tuple[bool, IntegrityError | None]:
        """Whether the row went in; where a taken name is an error (MySQL/MariaDB), also
        that error, raised at last if no run turns out to hold the name."""
        if insert_one.skips_conflicts(connection):
            return insert_one.insert_unless_taken(row, connection), None
        try:
            self._insert_row(row, connection)
        except IntegrityError as exc:
            return False, exc
        return True, None
