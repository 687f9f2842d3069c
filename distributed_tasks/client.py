"""The real client: a start is claim -> record -> publish, readable as one walk.

1. validate (``validation.prepare``): a bad input changes nothing;
2. place: pick a node on the ring of live nodes (bounded loads);
3. claim the name in Redis, which also publishes the QUEUED status (one round trip;
   a batch claims in one script call, see ``batches.py``);
4. insert the ``TaskRun`` row: the unique active-name constraint decides races that
   Redis missed (after a flush, say); on conflict the claim is released;
5. publish the message to ``dt.node.<node>`` (after commit when called inside a
   transaction, so the worker can see the row).

A single plain start outside a transaction skips the claim (``database_first.py``): the
INSERT decides, then its status, load and message go to Redis in one call.

A start that fails after its claim (the database, Redis or the broker stops
answering) is rolled back entry by entry: its row, its claim and its node-load
count are removed, and the caller gets a ``DistributedTasksError``
(``ClusterUnavailable``), never a driver's exception.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connections, transaction

from distributed_tasks import (
    celery,
    claims,
    database_first,
    lifecycle,
    signals,
    status,
)
from distributed_tasks.claim_first import ClaimFirst
from distributed_tasks.claims import ClaimOutcome, ClaimReply
from distributed_tasks.exceptions import AlreadyRunning
from distributed_tasks.models import TaskRun
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.placement import Placement
from distributed_tasks.resilience import DB_ERRORS, unanswered
from distributed_tasks.starts import Start, failure, manual_transaction, restated, unavailable
from distributed_tasks.store import get_store
from distributed_tasks.types import TaskHandle, TaskStatus
from distributed_tasks.validation import StartRequest, prepare, prepare_many

logger = logging.getLogger("distributed_tasks.client")


class ClusterClient(ClaimFirst):
    """``start_async`` / ``start_many`` / ``get_status`` against the real cluster."""

    def __init__(self) -> None:
        self.placement = Placement()

    # -- starting --------------------------------------------------------------------

    def start_async(self, func: Any, args: Any = (), kwargs: Any = None, **options: Any):
        (outcome,) = self._start([prepare(func, args, kwargs, **options)])
        if isinstance(outcome, AlreadyRunning):
            raise outcome
        return outcome

    def start_many(self, calls: Iterable[Mapping[str, Any]]) -> list[TaskHandle | AlreadyRunning]:
        """Start a batch; each entry takes ``start_async``'s arguments as keys (``func`` required).

        Every entry is validated before anything is written. The result lists, in
        order, a ``TaskHandle`` or the ``AlreadyRunning`` that refused that entry.
        """
        requests = prepare_many(calls)
        return self._start(requests) if requests else []

    def start_on(self, node: str, func: Any, args: Any = (), kwargs: Any = None, **options: Any):
        """``start_async`` on a node the caller picked (periodic tasks pick a random one)."""
        outcome = self.offer_on(node, func, args, kwargs, **options)
        if isinstance(outcome, AlreadyRunning):
            signals.send_refusals(TaskRun, [outcome])
            raise outcome
        return outcome

    def offer_on(
        self, node: str, func: Any, args: Any = (), kwargs: Any = None, **options: Any
    ) -> TaskHandle | AlreadyRunning:
        """``start_on`` that returns a refusal instead of raising it, and sends no
        ``run_refused`` for it: the leader's periodic slot, which sends it once its
        transaction committed (and not for a slot that waits to be tried again)."""
        (outcome,) = self._start([prepare(func, args, kwargs, **options)], node=node, quiet=True)
        return outcome

    def _start(
        self, requests: list[StartRequest], *, node: str | None = None, quiet: bool = False
    ) -> list[TaskHandle | AlreadyRunning]:
        """Start ``requests``; ``quiet``: without ``run_refused`` for the refused ones."""
        connection = connections[get_store().alias]
        manual_transaction(connection)
        now = time.time()
        starts = [
            Start.new(r, node or self.placement.choose(r.task_list, r.name), now) for r in requests
        ]
        try:
            if redis := database_first.applies(starts, connection.alias):
                self._insert_first(redis, starts[0])
            else:
                claimed = self._claim(starts, now)
                self._check_reuse(claimed)
                recorded = self._insert([s for s in claimed if s.outcome is None])
                self._publish(recorded)
        except BaseException as exc:
            kept = self._roll_back(starts)
            if isinstance(exc, Exception) and all(s.outcome is not None for s in starts):
                return self._answer(starts, quiet)  # every entry went out after all
            if connection.in_atomic_block:  # inside one, no row outlives the rollback
                kept = []
            error = restated(failure(exc), sent=[s for s in starts if s.sent], kept=kept)
            if error is exc:
                raise
            raise error from exc
        return self._answer(starts, quiet)

    def _insert_first(self, redis: Any, s: Start) -> None:
        """The database decides, then Redis takes status, load and message in one call."""
        if not self._insert([s], repair=False):  # the cache is not what refused it
            self.placement.unchoose(s.message.node)
            return
        database_first.queue(redis, s)
        s.outcome, s.sent = s.handle, True
        signals.run_queued.send(sender=TaskRun, handle=s.outcome)

    def _answer(self, starts: list[Start], quiet: bool) -> list[TaskHandle | AlreadyRunning]:
        if not quiet:
            signals.send_refusals(TaskRun, (s.outcome for s in starts))
        return [s.outcome for s in starts]  # type: ignore[misc]

    def _roll_back(self, starts: list[Start]) -> list[Start]:
        """Undo every entry a failure stopped half-way: its row, its claim and its load.
        Returns the entries whose row may remain: the database went away before it
        could be deleted.

        The claim goes even when the row cannot be deleted (the database is away): the
        unique active name still backs the name, and the orchestrator publishes such
        a row once ORPHAN_AFTER passed, so it is never stuck."""
        database_away, kept = False, []
        for s in starts:
            if s.sent:
                continue
            if s.recorded and not database_away:
                try:
                    if self._went_out(s):
                        continue
                except DB_ERRORS as exc:
                    database_away = True
                    logger.warning("Could not delete the row(s) of a failed start: %s", exc)
            if s.recorded and database_away:
                kept.append(s)
            self._abandon(s)
        return kept

    def _went_out(self, s: Start) -> bool:
        """Delete the row of a start whose publish failed, unless a worker already started
        it (the message reached the broker, its reply did not): that start was sent."""
        store = get_store()
        if store.delete(s.message.run_id) or store.get(s.message.run_id) is None:
            return False
        s.outcome, s.sent = s.handle, True  # its claim and load count stay with the run
        signals.run_queued.send(sender=TaskRun, handle=s.outcome)
        return True

    def _insert(self, starts: list[Start], *, repair: bool = True) -> list[Start]:
        if not starts:
            return []
        store = get_store()
        # Until the database answers, each row may exist: an INSERT can commit and its
        # reply be lost, and a batch inserts one by one after a conflict. A failure
        # then deletes what is there (a start the caller is told failed must not run).
        for s in starts:
            s.recorded = True
        errors = store.insert_many([s.row() for s in starts])
        recorded = []
        for s, error in zip(starts, errors, strict=True):
            s.recorded = error is None
            if error is None:
                recorded.append(s)
                continue
            # The database has an active run: Redis lost it (claim first) or never decided.
            self._abandon(s)
            if repair:
                self._repair(s.message.task_list, s.message.name)
            s.outcome = s.refusal(
                ClaimReply(
                    ClaimOutcome.ACTIVE, run_id=error.run_id, node=error.node, state=error.state
                )
            )
        return recorded

    def _repair(self, task_list: str, name: str) -> None:
        run = get_store().active(task_list, name)
        if run is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                claims.fill(task_list, name, claims.fields_for_run(run))

    def _publish(self, starts: list[Start]) -> None:
        if not starts:
            return
        alias = get_store().alias
        if connections[alias].in_atomic_block:
            # The worker must see the row: publish once the caller's transaction commits.
            batch = list(starts)
            transaction.on_commit(lambda: self._send(batch, deferred=True), using=alias)
            for s in starts:
                s.outcome, s.sent = s.handle, True
            return
        self._send(starts)

    def _send(self, starts: list[Start], *, deferred: bool = False) -> None:
        try:
            celery.publish([(s.message, s.request.countdown) for s in starts])
            failure = None
        except celery.PublishFailed as exc:
            failure = exc
        sent = failure.sent if failure else len(starts)
        for s in starts[:sent]:
            s.outcome, s.sent = s.handle, True
            signals.run_queued.send(sender=TaskRun, handle=s.outcome)
        if failure is None:
            return
        if deferred:
            # The caller already holds handles: keep the QUEUED rows for the orchestrator
            # to re-publish rather than make runs vanish after a commit.
            unsent = len(starts) - sent
            logger.error("Broker refused %d start(s) after commit: %s", unsent, failure)
            return
        # _start rolls back the unsent entries (rows, claims, loads).
        raise unavailable("The Celery broker", failure.__cause__ or failure) from failure

    # -- acting on an existing run (see lifecycle.py) ---------------------------------

    def cancel(self, name: str, task_list: str = "default", **how: Any) -> TaskStatus:
        """``lifecycle.cancel``; ``how``: ``force``, ``by``, ``grace``."""
        alias = get_store().alias
        with unanswered(alias, f"the cancel of {name!r} may not be recorded: check "
                        f"get_status({name!r}) and cancel again if it still runs."):  # fmt: skip
            lifecycle.cancel(name, task_list, **how)
            if connections[alias].in_atomic_block:
                return status.stored(name, task_list)  # the cache waits for the commit
        return self.get_status(name, task_list)

    def retry(self, name: str, task_list: str = "default") -> TaskHandle:
        with unanswered(get_store().alias, f"the retry of {name!r} may not be recorded: "
                        f"check get_status({name!r}) before retrying it again."):  # fmt: skip
            return lifecycle.retry(name, task_list, self.placement)

    # -- reading (see status.py) ----------------------------------------------------

    def get_status(self, name: str, task_list: str = "default") -> TaskStatus:
        then = f"the status of {name!r} cannot be read now: try again once it answers."
        with unanswered(get_store().alias, then):
            return status.read(name, task_list)
