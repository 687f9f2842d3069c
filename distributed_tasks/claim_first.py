"""The claim-first walk of a start: the name is claimed in Redis before its row exists.

A batch (``start_many``), a start inside the caller's transaction and a start whose
reuse policy or broker needs it (``database_first.applies`` says which) claim every
name first, in one script call (``batches.py``), and count each node's load with it.
A claim refuses a duplicate without asking the database; one that found the name held
by a claim whose run never got a row (its start died, its transaction rolled back) takes
it over once it is ``CLAIM_GRACE`` old. ``ClusterClient`` (``client.py``) mixes this in.
"""

from __future__ import annotations

import contextlib
import logging

from django.utils import timezone

from distributed_tasks import batches, claims, logs
from distributed_tasks.claims import ClaimOutcome, ClaimReply
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import get_redis
from distributed_tasks.exceptions import NameReserved
from distributed_tasks.messages import run_hex
from distributed_tasks.outage import REDIS_ERRORS
from distributed_tasks.placement import Placement
from distributed_tasks.starts import Start, unavailable
from distributed_tasks.store import get_store
from distributed_tasks.types import Reuse, State, TaskHandle

logger = logging.getLogger("distributed_tasks.client")


class ClaimFirst:
    """Claiming, refusing and giving back the claims and node loads of starts."""

    placement: Placement

    def _claim(self, starts: list[Start], now: float) -> list[Start]:
        try:
            replies = batches.claim([s.claim_entry() for s in starts], self._nodes(starts))
        except REDIS_ERRORS as exc:
            self._undo_claims(starts)
            raise unavailable("Redis", exc) from exc
        for s in starts:  # each holds a load count, and maybe its claim: undone on failure
            s.claimed = True
        claimed, refused = [], []
        for s, reply in zip(starts, replies, strict=True):
            if reply.outcome is not ClaimOutcome.CLAIMED:
                reply = self._retry_stale(s, reply, now)
            if reply.outcome is ClaimOutcome.CLAIMED:
                claimed.append(s)
            else:
                refused.append(s)
                s.outcome = s.refusal(reply)
        self._unload(refused)
        return claimed

    @staticmethod
    def _nodes(starts: list[Start]) -> list[str]:
        return [s.message.node for s in starts]

    def _undo_claims(self, starts: list[Start]) -> None:
        """The claim pipeline may have run before its reply was lost: take back its claims
        (compare-and-delete by run id: no other start's claim goes) and load counts."""
        for s in starts:
            self.placement.unchoose(s.message.node)
        self.forget([s.handle for s in starts])

    @staticmethod
    def forget(handles: list[TaskHandle]) -> None:
        """Take back the claims and load counts of ``handles``: starts whose transaction
        rolled back after they returned (their rows and messages went with it)."""
        with contextlib.suppress(*REDIS_ERRORS):  # loads are approximate, rebuilt every tick
            pipe = get_redis().pipeline(transaction=False)
            for h in handles:
                claims.release(h.task_list, h.name, h.run_id, client=pipe)
            batches.count(pipe, [h.node for h in handles if h.node], -1)
            pipe.execute()

    def _retry_stale(self, s: Start, reply: ClaimReply, now: float) -> ClaimReply:
        """Take over a claim whose owner never backed it with an active row."""
        if reply.outcome is not ClaimOutcome.ACTIVE or not reply.is_stale(now):
            return reply
        if run_hex(reply.run_id) and get_store().is_active(reply.run_id):
            return reply
        m = s.message
        logger.info(
            "Replacing stale claim of %s (run %s)",
            m.name,
            reply.run_id,
            extra=logs.run_extra(m, "stale_claim"),
        )
        raw = claims.claim(
            m.task_list,
            m.name,
            s.status_fields(),
            reuse=s.request.reuse,
            replace_run_id=reply.run_id or "",
        )
        return ClaimReply.parse(raw)

    def _unload(self, starts: list[Start]) -> None:
        """Take back the node-load counts of starts that will not run (once each)."""
        starts = [s for s in starts if s.claimed]
        if not starts:
            return
        for s in starts:
            s.claimed = False
            self.placement.unchoose(s.message.node)
        with contextlib.suppress(*REDIS_ERRORS):  # approximate; the orchestrator rebuilds them
            pipe = get_redis().pipeline(transaction=False)
            batches.count(pipe, self._nodes(starts), -1)
            pipe.execute()

    def _check_reuse(self, claimed: list[Start]) -> None:
        """Redis may have lost a finished status: ask the database before reusing a name."""
        cleanup = get_settings().CLEANUP_TIMEOUT
        for s in claimed:
            if s.request.reuse == Reuse.ALLOW:
                continue
            m = s.message
            last = get_store().latest(m.task_list, m.name)
            if last is None or last.finished_at is None:
                continue
            if (timezone.now() - last.finished_at).total_seconds() > cleanup:
                continue
            if s.request.reuse == Reuse.REJECT or last.state == State.DONE:
                self._abandon(s)
                s.outcome = NameReserved(
                    m.name, last.run_id, last.node or None, task_list=m.task_list, state=last.state
                )

    def _abandon(self, s: Start) -> None:
        """Release the claim and the load count of a start that will not run."""
        if not s.claimed:
            return
        m = s.message
        with contextlib.suppress(*REDIS_ERRORS):  # a QUEUED claim with no row is stale, replaced
            claims.release(m.task_list, m.name, m.run_id)
        self._unload([s])
