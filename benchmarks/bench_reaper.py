"""Reaper: N finished rows past HISTORY_RETENTION deleted by the leader's reaper duty.

N DONE rows that finished before the retention cut-off (plus N/10 recent ones that
must stay) are inserted untimed, then the ``Reaper`` duty runs tick after tick, as the
leader would (bounded by ``BATCH_SIZE`` per tick, fenced by its epoch), until a tick
deletes nothing. Reported: total time, rows per second, per-tick time (a tick must
stay short whatever the backlog), and the peak memory growth of the process while
reaping (the kernel's high-water mark of resident memory, reset after seeding).
The same ticks also reap the N/10 recent finished *names* (their cached status in Redis,
past CLEANUP_TIMEOUT), whose rows stay.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "reaper"
CHUNK = 5000


def seed(count: int, finished: dt.datetime, prefix: str) -> None:
    from distributed_tasks.models import TaskRun
    from distributed_tasks.types import State

    for start in range(0, count, CHUNK):
        TaskRun.objects.bulk_create(
            TaskRun(
                id=uuid.uuid4(),
                name=f"{prefix}-{i}",
                function="benchmarks.tasks.noop",
                state=State.DONE,
                node=common.node_name("reaper"),
                queued_at=finished - dt.timedelta(seconds=1),
                started_at=finished - dt.timedelta(seconds=1),
                finished_at=finished - dt.timedelta(microseconds=i),
                executions=1,
            )
            for i in range(start, min(count, start + CHUNK))
        )


def cache_statuses(prefix: str, count: int) -> None:
    """Cached DONE statuses for the rows named ``prefix-*`` (what workers leave behind)."""
    from distributed_tasks import claims, keys
    from distributed_tasks.connection import get_redis
    from distributed_tasks.models import TaskRun

    pipe = get_redis().pipeline(transaction=False)
    for run in TaskRun.objects.filter(name__startswith=f"{prefix}-").iterator(chunk_size=CHUNK):
        fields = {k: str(v) for k, v in claims.fields_for_run(run).items() if v not in (None, "")}
        fields.update(task_list=run.task_list, name=run.name)  # as the claim scripts write it
        pipe.hset(keys.run_key(run.task_list, run.name), mapping=fields)
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> int:
    """Reset the resident-memory high-water mark; returns the current RSS in KiB."""
    gc.collect()
    with contextlib.suppress(OSError):  # then the peak includes seeding: an upper bound
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def reap() -> dict[str, Any]:
    """Run the reaper duty until a tick reaps nothing; totals per report counter."""
    from django.utils import timezone

    from distributed_tasks import fencing
    from distributed_tasks.conf import get_settings
    from distributed_tasks.nodes import live_nodes
    from distributed_tasks.orchestrator import TickContext
    from distributed_tasks.orchestrator.reaper import Reaper

    holder, epoch = "bench-reaper", 1
    while fencing.claim_epoch(epoch, holder) is not None:
        epoch += 1
    duty, ticks, totals = Reaper(), [], Counter[str]()
    rss = reset_peak()
    started = time.perf_counter()
    while True:
        ctx = TickContext(
            epoch=epoch,
            holder=holder,
            view=live_nodes(),
            now=timezone.now(),
            batch=get_settings().BATCH_SIZE,
            redis_settling=False,
        )
        tick = time.perf_counter()
        report = duty.run(ctx)
        ticks.append(time.perf_counter() - tick)
        totals.update(report)
        if not any(report.values()):
            break
    seconds = time.perf_counter() - started
    ordered = sorted(ticks)
    return {
        "history_deleted": totals["history_deleted"],
        "names_reaped": totals["names_reaped"],
        "seconds": seconds,
        "rows_per_second": common.rate(totals["history_deleted"], seconds),
        "ticks": len(ticks),
        "tick_p50_ms": common.percentile(ordered, 50) * 1000,
        "tick_max_ms": ordered[-1] * 1000,
        "peak_rss_growth_mib": (_status_kb("VmHWM") - rss) / 1024,
    }


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="rows past retention (default 100000, quick 10000)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 100_000, 10_000)
    common.setup()
    from django.utils import timezone

    from distributed_tasks.conf import get_settings
    from distributed_tasks.models import TaskRun

    conf, now = get_settings(), timezone.now()
    try:
        t0 = time.perf_counter()
        seed(n, now - dt.timedelta(seconds=conf.HISTORY_RETENTION + 3600), "old")
        seed(n // 10, now - dt.timedelta(seconds=conf.CLEANUP_TIMEOUT + 60), "recent")
        cache_statuses("recent", n // 10)
        seeding = time.perf_counter() - t0
        result = reap()
        kept = TaskRun.objects.count()
    finally:
        common.reset_state()
    columns = {
        "rows deleted": "history_deleted",
        "names reaped": "names_reaped",
        "seconds": "seconds",
        "rows/s": "rows_per_second",
        "ticks": "ticks",
        "tick p50 ms": "tick_p50_ms",
        "tick max ms": "tick_max_ms",
        "peak MiB": "peak_rss_growth_mib",
    }
    common.print_table(
        f"Reaper: {n} rows past retention, {n // 10} finished names (BATCH_SIZE {conf.BATCH_SIZE})",
        list(columns),
        [[result[key] for key in columns.values()]],
    )
    deleted, names = result["history_deleted"], result["names_reaped"]
    checks = [
        common.Check("history rows deleted", deleted, f"== {n}", deleted == n),
        common.Check("finished names reaped", names, f"== {n // 10}", names == n // 10),
        common.Check("recent rows kept", kept, f"== {n // 10}", kept == n // 10),
        common.Check("seconds for all", result["seconds"]),
        common.Check("peak memory growth (MiB)", result["peak_rss_growth_mib"]),
        common.Check("slowest tick (ms)", result["tick_max_ms"]),
    ]
    data = {"n": n, "seeding_s": seeding, "reaping": result, "kept": kept}
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
