"""The Redis side of a name: its claim and its cached status (one hash, see keys.py).

Every write is a Lua script from ``scripts.py`` that checks who holds the name
first, so no caller ever deletes or overwrites a claim it does not own. Redis
may lose all of this at any moment; ``get_status`` then reads the database and
warms the cache again, and the orchestrator's resync rebuilds it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from distributed_tasks import keys, scripts
from distributed_tasks.conf import get_settings
from distributed_tasks.connection import as_dict, get_redis, text
from distributed_tasks.messages import RunMessage
from distributed_tasks.types import State, TaskStatus

logger = logging.getLogger("distributed_tasks.claims")

# A QUEUED claim older than this whose run has no active row is stale: its owner
# died between claim and insert (or its transaction rolled back). Starts may take it.
CLAIM_GRACE = 10.0
# Results larger than this stay in the database only; the cache marks them.
RESULT_CACHE_LIMIT = 64 * 1024


class ClaimOutcome(enum.IntEnum):
    ACTIVE = 0  # a run holds the name
    CLAIMED = 1
    RESERVED = 2  # a finished run holds it and the reuse policy forbids taking it


@dataclass(frozen=True, slots=True)
class ClaimReply:
    outcome: ClaimOutcome
    run_id: str | None = None
    node: str | None = None
    state: str | None = None
    queued_at: float | None = None
    attempt: int | None = None

    @classmethod
    def parse(cls, reply: Any) -> ClaimReply:
        outcome = ClaimOutcome(int(reply[0]))
        if outcome is ClaimOutcome.CLAIMED:
            return cls(outcome)
        run_id, node, state, queued_at, attempt = text(reply[1][:5])
        return cls(
            outcome,
            run_id=run_id,
            node=node or None,
            state=state,
            queued_at=finite_number(queued_at, float),
            attempt=finite_number(attempt, int),
        )

    def is_stale(self, now: float) -> bool:
        """Old enough that its run must be checked against the database."""
        return self.queued_at is None or now - self.queued_at > CLAIM_GRACE


def finite_number(value: str | None, kind: Callable[[str], Any]) -> Any:
    """``value`` (a field read from Redis) as a finite number; None when absent or not
    one, NaN and infinities included (not written by us: a claim then counts as stale
    and is checked against the database; a forced cancel's deadline is dropped)."""
    try:
        number = kind(value) if value else None
    except ValueError:
        return None
    return number if number is None or math.isfinite(number) else None


def past_grace(queued_at: str | None, now: float) -> bool:
    """Whether a claim stored as queued at ``queued_at`` must be checked against the
    database (``ClaimReply.is_stale`` on the raw field): a claim with no time, or one
    that is not a finite number, was not written by a start and counts as past it."""
    then = finite_number(queued_at, float)
    return then is None or now - then > CLAIM_GRACE


def flat(fields: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in fields.items():
        if value is None or value == "":
            continue
        out += [key, str(value)]
    return out


def encode_result(result: Any) -> dict[str, str]:
    """The cache fields for a result: inline JSON, or a marker that it is in the database."""
    if result is None:
        return {}
    raw = json.dumps(result, separators=(",", ":"))
    if len(raw) > RESULT_CACHE_LIMIT:
        return {"result_in_db": "1"}
    return {"result": raw}


def ttl_ms(state: str, finished_at: float | None, now: float) -> int:
    """How long the cache keeps a status: for ever while active, CLEANUP_TIMEOUT once finished."""
    if state in (State.QUEUED, State.RUNNING) or finished_at is None:
        return 0
    left = finished_at + get_settings().CLEANUP_TIMEOUT - now
    return max(1, int(left * 1000))


def claim(
    task_list: str,
    name: str,
    fields: Mapping[str, Any],
    *,
    reuse: str,
    replace_run_id: str = "",
    client: Any = None,
) -> Any:
    """Claim ``name`` and publish its QUEUED status in one step (pipelined via ``client``)."""
    cutoff = time.time() - get_settings().CLEANUP_TIMEOUT
    return scripts.script(scripts.CLAIM)(
        keys=[keys.run_key(task_list, name)],
        args=[task_list, name, reuse, replace_run_id, cutoff, *flat(fields)],
        client=client or get_redis(),
    )


def update(
    task_list: str,
    name: str,
    run_id: str,
    attempt: int,
    fields: Mapping[str, Any],
    *,
    ttl: int = 0,
    client: Any = None,
    active_only: bool = False,
) -> Any:
    """Replace the status of ``run_id`` unless a newer run or attempt holds the name
    (``active_only``: or this attempt's outcome is already there)."""
    return scripts.script(scripts.UPDATE_ACTIVE if active_only else scripts.UPDATE)(
        keys=[keys.run_key(task_list, name)],
        args=[task_list, name, run_id, attempt, ttl, *flat(fields)],
        client=client or get_redis(),
    )


def fill(task_list: str, name: str, fields: Mapping[str, Any], *, ttl: int = 0) -> Any:
    """Warm the cache from the database, only where Redis has nothing for the name."""
    return scripts.script(scripts.FILL)(
        keys=[keys.run_key(task_list, name)],
        args=[task_list, name, ttl, *flat(fields)],
        client=get_redis(),
    )


def release(task_list: str, name: str, run_id: str, *, client: Any = None) -> Any:
    """Drop ``run_id``'s claim (compare-and-delete) after its start could not complete."""
    return scripts.script(scripts.RELEASE)(
        keys=[keys.run_key(task_list, name)], args=[run_id], client=client or get_redis()
    )


def read(task_list: str, name: str) -> dict[str, str]:
    """The cached fields of a name; ``{}`` when Redis holds none for it.

    A hash whose stored task list and name differ (a key of the old, ambiguous
    format) reads as a miss, so the caller falls back to the database.
    """
    fields = as_dict(get_redis().hgetall(keys.run_key(task_list, name)))
    if fields.get("task_list") != task_list or fields.get("name") != name:
        return {}
    return fields


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC) if value else None


def decode(fields: Mapping[str, str], name: str, task_list: str) -> TaskStatus:
    """A ``TaskStatus`` from cached fields (the result may still have to come from the database)."""
    return TaskStatus(
        name=name,
        task_list=task_list,
        state=State(fields["state"]),
        run_id=fields.get("run_id"),
        node=fields.get("node") or None,
        attempt=int(fields["attempt"]) if fields.get("attempt") else None,
        result=json.loads(fields["result"]) if "result" in fields else None,
        # "" as None: the row keeps "" where the cache keeps nothing (flat() drops it),
        # and one status must read the same from either.
        error=fields.get("error") or None,
        error_type=fields.get("error_type") or None,
        reason=fields.get("reason") or None,
        queued_at=_when(fields.get("queued_at")),
        started_at=_when(fields.get("started_at")),
        finished_at=_when(fields.get("finished_at")),
        progress=float(fields["progress"]) if fields.get("progress") else None,
        progress_message=fields.get("progress_message") or None,
        progress_data=json.loads(fields["progress_data"]) if fields.get("progress_data") else None,
        cancel_requested_at=_when(fields.get("cancel_requested_at")),
        cancel_requested_by=fields.get("cancel_requested_by") or None,
    )


def with_result(status: TaskStatus, result: Any) -> TaskStatus:
    return replace(status, result=result)


def fields_for_run(run: Any) -> dict[str, Any]:
    """The cache fields of a ``TaskRun`` row (used to rebuild the cache from the database)."""

    def ts(value: dt.datetime | None) -> float | None:
        return value.timestamp() if value else None

    return {
        "state": run.state,
        "run_id": run.run_id,
        "node": run.node,
        "attempt": run.attempt,
        "function": run.function,
        "queued_at": ts(run.queued_at),
        "started_at": ts(run.started_at),
        "finished_at": ts(run.finished_at),
        "reason": run.reason,
        "error": (run.error or "")[:500],
        "error_type": run.error_type,
        **(encode_result(run.result) if run.state == State.DONE else {}),
        **running_fields(run),
    }


def running_fields(run: Any) -> dict[str, Any]:
    """Progress and a cancel request of a row, as cache fields (rebuilt after a flush)."""
    return {
        "progress": run.progress,
        "progress_message": run.progress_message,
        "progress_data": None if run.progress_data is None else json.dumps(run.progress_data),
        "cancel_requested_at": run.cancel_requested_at.timestamp()
        if run.cancel_requested_at
        else None,
        "cancel_requested_by": run.cancel_requested_by,
    }


def set_if_attempt(
    task_list: str, name: str, run_id: str, attempt: int, fields: Mapping[str, Any]
) -> bool:
    """Add ``fields`` to the status of this active attempt; False when it is not (any more)
    the attempt Redis holds for the name. Raises ``RedisError``."""
    pairs = flat(fields)
    if not pairs:
        return False
    return bool(
        scripts.script(scripts.SET_IF_ATTEMPT)(
            keys=[keys.run_key(task_list, name)],
            args=[task_list, name, run_id, attempt, *pairs],
            client=get_redis(),
        )
    )


def message_fields(msg: RunMessage, state: State, **extra: Any) -> dict[str, Any]:
    """The cache fields of one attempt, as its message describes it."""
    return {
        "state": state.value,
        "run_id": msg.run_id,
        "node": msg.node,
        "attempt": msg.attempt,
        "function": msg.function,
        "queued_at": msg.queued_at,
        **extra,
    }


def message_pairs(msg: RunMessage, state: State) -> list[str]:
    """``message_fields`` as the flat field/value list a claim script takes."""
    return flat(message_fields(msg, state))
