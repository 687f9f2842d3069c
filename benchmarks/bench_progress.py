"""Progress cost: a run that reports progress 100 times a second, against the same run silent.

Timed in this process, as a pool process runs a run (``runner.execute``: fence to
RUNNING, call, record):

- ``paced``: a run that ticks 100 times a second for a few seconds, reporting progress
  at every tick, against the same run without reports, in interleaved rounds. The
  figure is the CPU time of the whole process (every thread: the timer that writes a
  burst's last value, the Redis and row writes) per second of run, reporting minus
  silent, as a share of one core; and the writes per second that reached Redis and the
  row.
- ``per call``: ``report_progress()`` in a tight loop inside one RUNNING run: what a
  call costs the task when it reports far more often than the writes go out.

Target (issue 18, "bounded"): reporting 100 times a second costs at most 1 % of a core.
"""

from __future__ import annotations

import statistics
import time

from benchmarks import common

NAME = "progress"
HZ = 100
TARGET_PCT = 1.0


class Writes:
    """Counts the Redis and row writes of progress while installed."""

    def __init__(self) -> None:
        self.redis = self.row = 0

    def install(self) -> None:
        from distributed_tasks import claims
        from distributed_tasks.store import OrmStore

        self.saved = claims.set_if_attempt, OrmStore.set_progress
        set_redis, set_row = self.saved

        def count_redis(*args, **kwargs):
            self.redis += 1
            return set_redis(*args, **kwargs)

        def count_row(store, *args, **kwargs):
            self.row += 1
            return set_row(store, *args, **kwargs)

        claims.set_if_attempt, OrmStore.set_progress = count_redis, count_row

    def uninstall(self) -> None:
        from distributed_tasks import claims
        from distributed_tasks.store import OrmStore

        claims.set_if_attempt, OrmStore.set_progress = self.saved


def _body(seconds: float, report: bool) -> dict:
    from benchmarks.tasks import paced
    from distributed_tasks import start_async
    from distributed_tasks.store import get_store, message_for

    handle = start_async(paced, [seconds, HZ, report])
    return message_for(get_store().get(handle.run_id)).to_body()


def paced_runs(seconds: float, rounds: int, writes: Writes) -> dict[str, list[float]]:
    """CPU seconds per second of run, per mode, one sample per round (round 0 warms up)."""
    from distributed_tasks import runner

    cpu: dict[str, list[float]] = {"silent": [], "reporting": []}
    for index in range(rounds + 1):
        for mode in ("silent", "reporting"):
            body = _body(seconds, mode == "reporting")
            if mode == "reporting" and index:
                writes.install()
            began_cpu, began = time.process_time(), time.perf_counter()
            outcome = runner.execute(body)
            took_cpu, took = time.process_time() - began_cpu, time.perf_counter() - began
            if mode == "reporting" and index:
                writes.uninstall()
            assert outcome is not None and outcome.state == "DONE", outcome
            if index:
                cpu[mode].append(took_cpu / took)
    return cpu


def per_call_ns(count: int) -> float:
    """Nanoseconds per report_progress() call in a tight loop inside a RUNNING run."""
    from benchmarks.tasks import noop
    from distributed_tasks import claims, mirror, progress, report_progress, start_async
    from distributed_tasks.store import get_store, message_for
    from distributed_tasks.types import State

    handle = start_async(noop, [None])
    msg = message_for(get_store().get(handle.run_id))
    get_store().mark_running(msg, "bench")
    mirror.publish(msg, claims.message_fields(msg, State.RUNNING))
    with progress.running(msg):
        began = time.perf_counter_ns()
        for i in range(count):
            report_progress(i / count, "item", i=i)
        took = time.perf_counter_ns() - began
    return took / count


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    common.setup()
    from distributed_tasks.nodes import set_current_node

    seconds = 1.0 if args.quick else 2.0
    rounds = common.sized(args, "rounds", full=6, quick=2)
    calls = common.sized(args, "calls", full=200_000, quick=20_000)
    writes = Writes()
    with common.idle_node("progress") as node:
        set_current_node(node)  # runner.execute fences on this node's incarnation
        cpu = paced_runs(seconds, rounds, writes)
        call_ns = per_call_ns(calls)
    silent, reporting = (statistics.median(cpu[m]) * 100 for m in ("silent", "reporting"))
    overhead = reporting - silent
    run_seconds = seconds * rounds
    data = {
        "reports_per_second": HZ,
        "cpu_pct_of_a_core": {"silent": silent, "reporting": reporting, "overhead": overhead},
        "redis_writes_per_second": writes.redis / run_seconds,
        "row_writes_per_second": writes.row / run_seconds,
        "per_call_us": call_ns / 1000,
        "samples": cpu,
    }
    common.print_table(
        f"a run reporting progress {HZ} times a second ({rounds} rounds of {seconds:g} s)",
        ["mode", "CPU (% of a core)", "Redis writes/s", "row writes/s"],
        [
            ("silent", silent, 0, 0),
            ("reporting", reporting, writes.redis / run_seconds, writes.row / run_seconds),
        ],
    )
    common.print_table(
        "report_progress() in a tight loop", ["calls", "per call (us)"], [(calls, call_ns / 1000)]
    )
    checks = [
        common.Check.at_most("CPU overhead (% of a core)", round(overhead, 3), TARGET_PCT),
        common.Check("per call (us)", round(call_ns / 1000, 2)),
    ]
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
