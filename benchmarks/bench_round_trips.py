"""Round trips per operation: what one start, one run, one status read, one heartbeat and
one idle leader tick cost Redis and PostgreSQL, counted rather than timed.

Redis: one round trip per request sent (a pipeline or a Lua script is one). PostgreSQL:
one per statement, plus BEGIN and COMMIT of each explicit transaction (psycopg sends
them as statements of their own). These counts, not this machine's latencies, are what
docs/scaling.md multiplies out for bigger clusters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks import common

NAME = "round_trips"
SAMPLES = 20


@dataclass
class Counts:
    redis: int = 0
    sql: int = 0
    commits: int = 0

    @property
    def postgres(self) -> int:
        return self.sql + 2 * self.commits  # BEGIN and COMMIT of each transaction


@contextlib.contextmanager
def counting() -> Iterator[Counts]:
    """Count requests sent to Redis and statements and commits sent to PostgreSQL."""
    from django.db import connections
    from redis.connection import AbstractConnection

    connection = connections["default"]
    counts = Counts()
    send = AbstractConnection.send_packed_command
    commit = type(connection).commit

    def counted_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts.redis += 1
        return send(self, *args, **kwargs)

    def counted_commit(self: Any) -> Any:
        counts.commits += 1
        return commit(self)

    def statement(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts.sql += 1
        return execute(sql, params, many, context)

    AbstractConnection.send_packed_command = counted_send
    type(connection).commit = counted_commit
    try:
        with connection.execute_wrapper(statement):
            yield counts
    finally:
        AbstractConnection.send_packed_command = send
        type(connection).commit = commit


def per_call(call: Callable[[int], Any], before: Callable[[int], Any] | None = None) -> Counts:
    """Mean counts of ``call(i)`` over SAMPLES calls (after one uncounted warm-up)."""
    if before:
        before(-1)
    call(-1)
    total = Counts()
    for i in range(SAMPLES):
        if before:
            before(i)
        with counting() as counts:
            call(i)
        total.redis += counts.redis
        total.sql += counts.sql
        total.commits += counts.commits
    return Counts(total.redis / SAMPLES, total.sql / SAMPLES, total.commits / SAMPLES)


def measure(node: Any) -> dict[str, Counts]:
    from benchmarks.tasks import echo
    from distributed_tasks import get_status, keys, runner, start_async
    from distributed_tasks.connection import get_redis
    from distributed_tasks.models import TaskRun
    from distributed_tasks.nodes import Heartbeat, NodeInfo
    from distributed_tasks.orchestrator import Orchestrator
    from distributed_tasks.store import message_for

    handles: dict[int, Any] = {}

    def start(i: int) -> None:
        handles[i] = start_async(echo, args=[i], name=f"rt-{i}")

    def body(i: int) -> dict:
        return message_for(TaskRun.objects.get(id=handles[i].run_id)).to_body()

    bodies: dict[int, dict] = {}
    out = {"start_async (one unique run)": per_call(start)}
    out["worker: one run, QUEUED to DONE"] = per_call(
        lambda i: runner.execute(bodies[i]), before=lambda i: bodies.__setitem__(i, body(i))
    )
    out["get_status, cache hit"] = per_call(lambda i: get_status(f"rt-{i}"))
    out["get_status, database fallback"] = per_call(
        lambda i: get_status(f"rt-{i}"),
        before=lambda i: get_redis().delete(keys.run_key("default", f"rt-{i}")),
    )
    beat = Heartbeat(NodeInfo(name=common.node_name("rt-beat")))
    out["one heartbeat"] = per_call(lambda i: beat.beat())
    leader = Orchestrator(common.node_name("rt-leader"))
    assert leader.lease.try_acquire() and leader.on_acquired()
    leader.tick()  # the first tick rebuilds Redis from the database
    out["one leader tick, nothing to do"] = per_call(lambda i: leader.tick())
    leader.lease.release()
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    common.setup()
    try:
        with common.idle_node("rt") as node:
            counts = measure(node)
    finally:
        common.reset_state()
    rows = [(k, c.redis, c.sql, c.commits, c.postgres) for k, c in counts.items()]
    common.print_table(
        "round trips per operation (mean)",
        ["operation", "Redis", "SQL statements", "transactions", "PostgreSQL round trips"],
        rows,
    )
    data = {
        k: {"redis": c.redis, "sql": c.sql, "transactions": c.commits, "postgres": c.postgres}
        for k, c in counts.items()
    }
    checks = [common.Check(f"{k}: Redis / PostgreSQL", f"{r} / {p}") for k, r, _, _, p in rows]
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
