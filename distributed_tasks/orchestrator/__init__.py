"""The orchestrator: the leader's duties, run once per tick while it holds the lease.

Any number of ``dt_beat`` processes run an ``Orchestrator``; a keeper thread
(``keeper.py``) competes for the lease and renews it, and the beat loop calls
``tick()``, which does nothing unless this process is the leader *and* has
registered its epoch in the database. ``tick()`` is just the list of duties,
each one module of the same shape (Oban's plugins): options with defaults,
"act only if leader", a bounded batch, and a report of counts.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from django.db import close_old_connections
from django.utils import timezone

from distributed_tasks import fencing, signals
from distributed_tasks.conf import get_settings
from distributed_tasks.lease import Lease
from distributed_tasks.nodes import ClusterView, live_nodes
from distributed_tasks.outage import DEPENDENCY_ERRORS, Outage

logger = logging.getLogger("distributed_tasks.orchestrator")


@dataclass(frozen=True, slots=True)
class TickContext:
    """What every duty of one tick shares: who leads, which nodes live, and when."""

    epoch: int
    holder: str
    view: ClusterView
    now: Any  # aware datetime
    batch: int
    redis_settling: bool  # Redis lost its data recently: nodes are still re-registering


class Duty(abc.ABC):
    """One leader-only job. ``run`` handles at most ``ctx.batch`` items and returns counts."""

    name: ClassVar[str]

    def reset(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Forget in-memory cursors: called each time this process becomes the leader."""

    @abc.abstractmethod
    def run(self, ctx: TickContext) -> dict[str, int]: ...


def default_duties() -> list[Duty]:
    from distributed_tasks.orchestrator.dispatcher import Dispatcher
    from distributed_tasks.orchestrator.lifeline import Lifeline
    from distributed_tasks.orchestrator.reaper import Reaper
    from distributed_tasks.orchestrator.rebalancer import Rebalancer
    from distributed_tasks.orchestrator.releaser import Releaser
    from distributed_tasks.orchestrator.resync import Resync
    from distributed_tasks.orchestrator.watchdog import Watchdog

    return [
        Resync(),
        Lifeline(),
        Watchdog(),
        Reaper(),
        Rebalancer(),
        Releaser(),
        Dispatcher(),
    ]


class Orchestrator:
    def __init__(
        self, holder: str, duties: list[Duty] | None = None, *, lease: Lease | None = None
    ) -> None:
        self.holder = holder
        self.lease = lease or Lease(holder)
        self.duties = default_duties() if duties is None else list(duties)
        self._ready_epoch = 0
        self._redis_lost_at: float | None = None
        self.ticks = 0
        self.outage = Outage("Orchestrator tick", logger)
        self.last_report: dict[str, dict[str, int]] = {}

    @property
    def epoch(self) -> int:
        return self._ready_epoch

    def is_leader(self) -> bool:
        """Leader = lease certainly held *and* its epoch registered in the database."""
        return self.lease.is_held() and self._ready_epoch == self.lease.epoch != 0

    def on_acquired(self) -> bool:
        """Register the new epoch in the database (raising it past a lost Redis counter)."""
        epoch = self.lease.epoch
        for _ in range(3):
            seen = fencing.claim_epoch(epoch, self.holder)
            if seen is None:
                break
            epoch = self.lease.raise_epoch(seen + 1)
            if not epoch:
                return False
        else:
            return False
        for duty in self.duties:
            duty.reset()
        self._ready_epoch = epoch
        logger.info(
            "%s leads the cluster with epoch %s", self.holder, epoch, extra={"action": "elected"}
        )
        signals.leader_elected.send(sender=Orchestrator, holder=self.holder, epoch=epoch)
        return True

    def _settling(self, view: ClusterView) -> bool:
        if not view.intact and self._redis_lost_at is None:
            logger.warning(
                "Redis holds no resync marker (first start, flush or restart): rebuilding "
                "its state from the database",
                extra={"action": "redis_lost"},
            )
            self._redis_lost_at = time.monotonic()
        if self._redis_lost_at is None:
            return False
        if time.monotonic() - self._redis_lost_at < get_settings().NODE_TIMEOUT:
            return True
        if view.intact:
            self._redis_lost_at = None
        return False

    def duty(self, name: str) -> Duty | None:
        return next((d for d in self.duties if d.name == name), None)

    def tick(self, only: str | None = None) -> dict[str, dict[str, int]] | None:
        """Run every duty (or just ``only``) once if this process leads; None otherwise.

        Never raises: a dependency that fails (the database locked or gone, Redis away)
        is logged once by ``self.outage`` and the next tick waits ``retry_in()``; the
        leader keeps its lease and resumes by itself when the dependency answers.
        """
        try:
            if not self.is_leader():
                # An outage of its ticks is not a follower's: the next one is logged anew,
                # not as a "works again" counted from this one.
                self.outage.forget()
                return None
            if not self.lease.verify():
                return None
            close_old_connections()
            view = live_nodes()
        except Exception as exc:
            self.outage.failed(exc, during="cluster view")
            return None
        epoch = self._ready_epoch
        ctx = TickContext(
            epoch=epoch,
            holder=self.holder,
            view=view,
            now=timezone.now(),
            batch=get_settings().BATCH_SIZE,
            redis_settling=self._settling(view),
        )
        report: dict[str, dict[str, int]] = {}
        failure: tuple[str, Exception] | None = None
        for duty in self.duties:
            if only is not None and duty.name != only:
                continue
            if not self.is_leader():
                break
            try:
                report[duty.name] = duty.run(ctx)
            except fencing.Fenced as exc:
                logger.warning("%s", exc, extra={"action": "fenced"})
                self._step_down(epoch)
                return report
            except DEPENDENCY_ERRORS as exc:
                # The database or Redis failed: the next duties would wait for it too
                # (a locked SQLite makes each wait its busy timeout). Retry after backoff.
                report[duty.name] = {"errors": 1}
                failure = failure or (duty.name, exc)
                break
            except Exception as exc:
                # A bug in one duty must not stop the others or the beat.
                report[duty.name] = {"errors": 1}
                failure = failure or (duty.name, exc)
        try:
            if failure is None or not isinstance(failure[1], DEPENDENCY_ERRORS):
                fencing.record_tick(epoch)
        except fencing.Fenced:
            self._step_down(epoch)
        except Exception as exc:
            failure = failure or ("record_tick", exc)
        if failure is None:
            self.outage.ok()
        else:
            self.outage.failed(failure[1], during=failure[0])
        self.ticks += 1
        self.last_report = report
        return report

    def _step_down(self, epoch: int) -> None:
        """A write of ``epoch`` was fenced: stop leading under it, but keep a newer epoch
        the lease keeper registered meanwhile (this process was elected again)."""
        if self._ready_epoch == epoch:
            self._ready_epoch = 0

    def retry_in(self) -> float:
        """Seconds the next tick should wait for a failing dependency (0 when all is well)."""
        return self.outage.remaining()

    def stop(self) -> None:
        """Give the lease up at once (graceful stop), so a follower takes over within its poll."""
        self._ready_epoch = 0
        self.lease.release()
