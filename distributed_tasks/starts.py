"""One start in flight through the client's walk (``client.py``).

A ``Start`` records what it holds so far (a claim and a node-load count, a row, a
sent message), so a failure half-way undoes exactly that for each entry of a batch;
it builds its row and turns a claim that found the name taken into the caller's
answer. ``failure`` says what a start that failed after its claim raises: always a
``DistributedTasksError``, never a driver's exception.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import DataError, IntegrityError

from distributed_tasks import claims, inserts
from distributed_tasks.claims import ClaimOutcome, ClaimReply
from distributed_tasks.exceptions import (
    AlreadyRunning,
    ClusterUnavailable,
    DistributedTasksError,
    InvalidConfiguration,
    InvalidOption,
    NameReserved,
)
from distributed_tasks.messages import RunMessage
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.types import OnConflict, State, TaskHandle
from distributed_tasks.validation import StartRequest


@dataclass(slots=True)
class Start:
    """One start in flight through the walk."""

    request: StartRequest
    message: RunMessage
    outcome: TaskHandle | AlreadyRunning | None = None
    claimed: bool = False  # holds its claim and a node-load count in Redis
    recorded: bool = False  # its row was inserted
    sent: bool = False  # its message went out (or waits for the caller's commit)

    @classmethod
    def new(cls, request: StartRequest, node: str, now: float) -> Start:
        """Attempt 1 of a new run of ``request`` on ``node``."""
        r = request
        message = RunMessage(
            run_id=uuid.uuid4().hex,
            attempt=1,
            node=node,
            task_list=r.task_list,
            name=r.name,
            function=r.function,
            args=r.args,
            kwargs=r.kwargs,
            callback=r.callback,
            queued_at=now,
            timeout=r.timeout,
            data=r.data,
            priority=r.priority,
        )
        return cls(request=request, message=message)

    @property
    def handle(self) -> TaskHandle:
        return self.message.handle()

    def status_fields(self) -> dict[str, Any]:
        return claims.message_fields(self.message, State.QUEUED)

    def claim_entry(self) -> list[str]:
        """What ``batches.claim`` takes: the name, the reuse policy, the QUEUED status."""
        m = self.message
        return [m.task_list, m.name, self.request.reuse, *claims.message_pairs(m, State.QUEUED)]

    def row(self) -> inserts.Row:
        r, m = self.request, self.message
        return inserts.new_row(
            id=m.run_id,
            task_list=m.task_list,
            name=m.name,
            active_name=m.name,
            function=m.function,
            args=m.args,
            kwargs=m.kwargs,
            callback=m.callback,
            data=m.data,
            state=State.QUEUED,
            node=m.node,
            attempt=m.attempt,
            timeout=r.timeout,
            queued_at=dt.datetime.fromtimestamp(m.queued_at, tz=dt.UTC),
            run_after=dt.datetime.fromtimestamp(m.queued_at + (r.countdown or 0), tz=dt.UTC),
            max_attempts=r.max_attempts,
            retry_backoff=r.retry_backoff,
            priority=m.priority,
        )

    def refusal(self, reply: ClaimReply) -> TaskHandle | AlreadyRunning:
        """What a claim that found the name taken becomes: the active run's handle
        (``on_conflict="return_existing"``), ``NameReserved`` or ``AlreadyRunning``."""
        m = self.message
        reserved = reply.outcome is ClaimOutcome.RESERVED
        if not reserved and self.request.on_conflict == OnConflict.RETURN_EXISTING and reply.run_id:
            return TaskHandle(
                name=m.name,
                task_list=m.task_list,
                run_id=reply.run_id,
                node=reply.node,
                attempt=reply.attempt or 1,
                existing=True,
            )
        kind, default = (NameReserved, State.DONE) if reserved else (AlreadyRunning, State.RUNNING)
        return kind(m.name, reply.run_id, reply.node, task_list=m.task_list,
                    state=reply.state or default)  # fmt: skip


NOTHING_STARTED = "nothing was started."


def unavailable(what: str, exc: BaseException) -> ClusterUnavailable:
    return ClusterUnavailable(f"{what} does not answer ({exc}); {NOTHING_STARTED}")


def _names(starts: list[Start]) -> str:
    names = ", ".join(f"{s.message.name!r} (run {s.message.run_id})" for s in starts[:3])
    return names + (f" and {len(starts) - 3} more" if len(starts) > 3 else "")


def restated(error: BaseException, *, sent: list[Start], kept: list[Start]) -> BaseException:
    """``error`` for a failed start of which something may run after all, when it says
    that nothing was started. ``sent``: entries of the batch that went out before the
    failure; they run, and the error carries their handles (``started``). ``kept``: rows
    of a start outside a transaction that could not be deleted (the database went away):
    an INSERT may have committed before its reply was lost, and such a row runs once the
    database is back (the orchestrator publishes it after ORPHAN_AFTER)."""
    text = str(error)
    if not isinstance(error, ClusterUnavailable) or not text.endswith(NOTHING_STARTED):
        return error
    said = []
    if sent:
        others = "" if kept else "; the batch's other entries were not started"
        said.append(f"{_names(sent)} went out before that and will run{others}")
    if kept:
        said.append(
            f"the start of {_names(kept)} may have been recorded before the database "
            "stopped answering: if so, it runs once the database is back. Check "
            "get_status() of that name before starting it again"
        )
    if not said:
        return error
    return ClusterUnavailable(
        f"{text.removesuffix(NOTHING_STARTED)}{'; '.join(said)}.",
        started=[s.handle for s in sent],
    )


def failure(exc: BaseException) -> BaseException:
    """The ``DistributedTasksError`` a start that failed after its claim raises."""
    if isinstance(exc, DistributedTasksError):
        return exc
    if isinstance(exc, REDIS_ERRORS):
        return unavailable("Redis", exc)
    if isinstance(exc, DataError):  # a value validation let through: say which
        return InvalidOption(f"The database refused a value of the start ({exc}); nothing was "
                             "started.")  # fmt: skip
    if isinstance(exc, IntegrityError):  # the name's active run ended between two reads
        return ClusterUnavailable(f"The database refused the start ({exc}); nothing was "
                                  "started. Try again.")  # fmt: skip
    if isinstance(exc, DB_ERRORS):
        return unavailable("The database", exc)
    return exc


def manual_transaction(connection: Any, doing: str = "Starting a run", *,
                       then: str = "its message would go out") -> None:  # fmt: skip
    """Refuse a start (or a retry, a cancel) under manual transaction management
    (``AUTOCOMMIT: False``, or ``set_autocommit(False)``) outside ``atomic()``: its row
    would not be committed when ``then`` happens, and Django has no commit hook to
    wait for then."""
    if connection.in_atomic_block:
        return
    # Not get_autocommit(), which connects: a database that is away must fail the start
    # as ClusterUnavailable, later, where the walk catches it.
    connected = connection.connection is not None
    if not (connection.autocommit if connected else connection.settings_dict["AUTOCOMMIT"]):
        raise InvalidConfiguration(
            f"{doing} with autocommit off on database {connection.alias!r} and no atomic "
            f"block: {then} before its row is committed. Do it inside "
            "transaction.atomic() (that happens when it commits), or with autocommit on."
        )
