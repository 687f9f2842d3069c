"""Fencing of the orchestrator's database writes by its lease epoch.

A leader registers its epoch in the ``Leadership`` row before its first write
(``claim_epoch``), and wraps every write in ``fenced(epoch)``: a transaction
that locks that row and refuses to go on if a newer epoch was registered. The
lock orders leaders' writes, so a former leader that wakes up after a pause
either finishes before the new leader registered (and is overtaken) or is
refused; it can never write in between. A leader paused while it holds the lock
loses its session (``_bound_pause``) before a successor can be elected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import DistributedTasksError
from distributed_tasks.models import Leadership
from distributed_tasks.resilience import DB_ERRORS


class Fenced(DistributedTasksError):
    """A write carried an epoch older than the newest leader's: it was refused."""

    def __init__(self, epoch: int, current: int) -> None:
        self.epoch, self.current = epoch, current
        super().__init__(
            f"Orchestrator write with epoch {epoch} refused: epoch {current} leads now."
        )


def _rows():
    return Leadership.objects.using(get_settings().DATABASE_ALIAS)


def _ensure_row() -> None:
    # INSERT ... ON CONFLICT DO NOTHING on every backend: two beats may race here.
    _rows().bulk_create([Leadership(id=1)], ignore_conflicts=True)


def claim_epoch(epoch: int, holder: str) -> int | None:
    """Register ``epoch`` as the newest: None when done, else the database's epoch.

    A number back means the database already saw this epoch or a higher one:
    Redis lost its counter (flush, failover) and handed out an old number. The
    caller raises the Redis epoch past it and tries again.
    """
    _ensure_row()
    now = timezone.now()
    newer = _rows().filter(id=1, epoch__lt=epoch)
    if newer.update(epoch=epoch, holder=holder, elected_at=now, ticked_at=now):
        return None
    return _rows().values_list("epoch", flat=True).get(id=1)


@contextlib.contextmanager
def fenced(epoch: int) -> Iterator[None]:
    """A transaction in which ``epoch`` is, and stays, the newest registered epoch."""
    alias = get_settings().DATABASE_ALIAS
    outermost = not connections[alias].in_atomic_block  # a caller's transaction: its own rules
    with _bound_pause(alias) if outermost else transaction.atomic(using=alias):
        current = _rows().select_for_update().filter(id=1).values_list("epoch", flat=True).first()
        if current is None:  # the row was deleted (a test flushed tables): register again
            claim_epoch(epoch, "")
            current = epoch
        if current != epoch:
            raise Fenced(epoch, current)
        yield


@contextlib.contextmanager
def _bound_pause(alias: str) -> Iterator[None]:
    """A transaction that a pause cannot stretch.

    A leader paused inside its transaction (a stalled VM, a long GC pause, SIGSTOP)
    would hold the row's lock, and block every later leader, until it resumes. Its
    session ends once it has been idle in the transaction for half a LEASE_TTL: before
    its lease can expire and another beat be elected, the lock is free (the paused
    leader, when it resumes, finds its connection closed and its lease gone).

    PostgreSQL's timeout is the transaction's own. MariaDB's (whole seconds, at least
    one) is the session's: it is set before the transaction and its own value put back
    after it, when no lock is held. MySQL has none.
    """
    connection = connections[alias]
    half = get_settings().LEASE_TTL / 2
    mariadb = connection.vendor == "mysql" and getattr(connection, "mysql_is_mariadb", False)
    if mariadb:
        with connection.cursor() as cursor:
            cursor.execute(
                "SET @dt_idle = @@session.idle_transaction_timeout, "
                "SESSION idle_transaction_timeout = %s",
                [max(1, int(half))],
            )
    try:
        with transaction.atomic(using=alias):
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                        [str(max(1, int(half * 1000)))],
                    )
            yield
    finally:
        if mariadb:  # a connection the timeout ended is replaced anyway
            with contextlib.suppress(*DB_ERRORS), connection.cursor() as cursor:
                cursor.execute("SET SESSION idle_transaction_timeout = @dt_idle")


def record_tick(epoch: int) -> None:
    """Show the leader is alive (admin, dt_nodes) — fenced like any other write."""
    with fenced(epoch):
        _rows().filter(id=1).update(ticked_at=timezone.now())


def record_sent(epoch: int, entry: str, sent: str) -> None:
    """Remember when the leader sent a ``CELERY_BEAT_SCHEDULE`` entry (HA beat), fenced.

    In the database, not in Redis: a flush must not make the next leader send again
    what was just sent (SPEC invariant 4). The fence's row lock serialises the update.
    """
    with fenced(epoch):
        _rows().filter(id=1).update(beat_sent={**beat_sent(), entry: sent})


def beat_sent() -> dict[str, str]:
    """Entry name -> ISO time the cluster's leaders last sent it (``record_sent``)."""
    return _as_map(_rows().filter(id=1).values_list("beat_sent", flat=True).first())


def _as_map(stored: Any) -> dict[str, str]:
    """The stored sends, or none when the column holds something else (a hand edit)."""
    return stored if isinstance(stored, dict) else {}


def leadership() -> Leadership | None:
    return _rows().filter(id=1).first()
