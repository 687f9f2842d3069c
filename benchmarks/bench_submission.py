"""Submission: unique named starts vs raw Celery, celery-once and celery-singleton.

Every variant sends N messages to the same broker (Redis database 9), into queues
nobody consumes, so only the submitting side is measured. Variants run interleaved in
rounds (A B C ... A B C ...) so that noise from other processes on the machine spreads
over all of them, after an untimed warm-up of each.

- ``raw apply_async``: ``task.apply_async()`` of a plain Celery task (the baseline);
- ``start_async``: a unique named start: Redis claim, ``TaskRun`` insert, publish;
- ``start_many (B)``: the same in batches of B;
- ``celery-once``: ``QueueOnce.apply_async`` (a Redis lock per call, then publish);
- ``celery-singleton``: ``Singleton.apply_async`` (a Redis lock per call, then publish);
- the durable peers of ``peers.py``: django-tasks-db ``enqueue``, Celery +
  django-celery-results (``task_track_started``) ``apply_async``, Procrastinate
  ``defer(queueing_lock=...)``.

Besides the rate, each variant's producer CPU per message (``time.process_time``: what
the submitting process itself spent, which a loaded machine inflates less than wall
time). Targets (issue 13): ``start_async`` >= 0.75x raw; ``start_many`` >= 2.5x raw;
producer CPU per ``start_async`` <= 300 us.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks import common

SINK = "bench.sink"  # a queue nobody consumes
NAME = "submission"


@dataclass(slots=True)
class Variant:
    """One way of submitting: ``submit(names)`` sends one message per name."""

    label: str
    submit: Callable[[list[str]], None]
    batch: int = 1
    seconds: float = 0.0
    cpu: float = 0.0  # producer CPU seconds
    count: int = 0
    samples_ns: list[int] = field(default_factory=list)

    def run(self, names: list[str]) -> None:
        clock, cpu = time.perf_counter_ns, time.process_time
        for i in range(0, len(names), self.batch):
            chunk = names[i : i + self.batch]
            start, cpu_start = clock(), cpu()
            self.submit(chunk)
            elapsed = clock() - start
            self.cpu += cpu() - cpu_start
            self.samples_ns.append(elapsed)
            self.seconds += elapsed / 1e9
            self.count += len(chunk)

    @property
    def rate(self) -> float:
        return common.rate(self.count, self.seconds)

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.count * 1e6 if self.count else 0.0


def variants(batches: list[int], procrastinate: Any = None) -> list[Variant]:
    from benchmarks import peers
    from benchmarks.celeryapp import once_noop, plain_noop, singleton_noop
    from benchmarks.tasks import noop
    from distributed_tasks import start_async, start_many

    def raw(names: list[str]) -> None:
        plain_noop.apply_async(args=[None], queue=SINK)

    def unique(names: list[str]) -> None:
        start_async(noop, name=names[0])

    def many(names: list[str]) -> None:
        start_many([{"func": noop, "name": n} for n in names])

    def once(names: list[str]) -> None:
        once_noop.apply_async(args=[names[0]], queue=SINK)

    def singleton(names: list[str]) -> None:
        singleton_noop.apply_async(args=[names[0]], queue=SINK)

    durable = []
    if peers.installed("django_tasks_db"):
        durable.append(Variant("django-tasks-db enqueue", peers.dtdb_submit()))
    if peers.installed("django_celery_results"):
        durable.append(Variant("Celery + django-celery-results", peers.dcr_submit()))
    if procrastinate is not None:
        submit = peers.procrastinate_submit(procrastinate)
        durable.append(Variant("Procrastinate defer(queueing_lock)", submit))
    return [
        Variant("raw apply_async", raw),
        Variant("start_async", unique),
        *(Variant(f"start_many ({b})", many, batch=b) for b in batches),
        Variant("celery-once QueueOnce", once),
        Variant("celery-singleton Singleton", singleton),
        *durable,
    ]


def measure(
    n: int, rounds: int, warmup: int, batches: list[int], procrastinate: Any = None
) -> list[Variant]:
    timed = variants(batches, procrastinate)
    per_round = max(1, n // rounds)
    for v in variants(batches, procrastinate):  # untimed warm-up: connections, scripts, ...
        v.run([f"warm-{v.label}-{i}" for i in range(max(warmup, v.batch))])
    for r in range(rounds):
        for v in timed:
            v.run([f"{v.label}-{r}-{i}" for i in range(per_round)])
    return timed


def report(timed: list[Variant], args: argparse.Namespace, n: int) -> None:
    raw = timed[0].rate
    rows = []
    for v in timed:
        stats = common.summarize_us(v.samples_ns)
        rows.append((v.label, v.count, v.rate, v.rate / raw, 1e6 / v.rate, v.cpu_us,
                     stats["p50_us"], stats["p99_us"]))  # fmt: skip
    common.print_table(
        f"Submission of {n} messages per variant (same broker, interleaved rounds)",
        ["variant", "n", "per s", "x raw", "us/msg", "CPU us/msg", "p50 us/call", "p99 us/call"],
        rows,
    )
    by = {v.label: v for v in timed}
    many = [v for v in timed if v.label.startswith("start_many")]
    best_many = max(many, key=lambda v: v.rate)
    checks = [
        common.Check.at_least("start_async / raw apply_async", by["start_async"].rate / raw, 0.75),
        common.Check.at_least(f"{best_many.label} / raw apply_async", best_many.rate / raw, 2.5),
        common.Check.at_most("start_async producer CPU us", by["start_async"].cpu_us, 300),
        common.Check("celery-once / raw", by["celery-once QueueOnce"].rate / raw),
        common.Check("celery-singleton / raw", by["celery-singleton Singleton"].rate / raw),
    ]
    data = {
        "n": n,
        "variants": {
            v.label: {
                "count": v.count,
                "seconds": v.seconds,
                "per_second": v.rate,
                "cpu_us_per_message": v.cpu_us,
                "ratio_to_raw": v.rate / raw,
                "batch": v.batch,
                "per_call": common.summarize_us(v.samples_ns),
            }
            for v in timed
        },
    }
    common.write_result(NAME, args=args, data=data, checks=checks)


@contextlib.contextmanager
def _procrastinate() -> Iterator[Any]:
    from benchmarks import peers

    if not peers.installed("procrastinate"):
        yield None
        return
    with peers.procrastinate_app() as app:
        yield app


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="messages per variant (default 5000, quick 500)")
        p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
        p.add_argument("--batch", type=int, action="append", help="start_many batch size(s)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 5000, 500)
    common.setup()
    try:
        with common.idle_node("submit"), _procrastinate() as app:
            timed = measure(n, args.rounds, warmup=100, batches=args.batch or [100, 1000],
                            procrastinate=app)  # fmt: skip
        report(timed, args, n)
    finally:
        common.reset_state()


if __name__ == "__main__":
    main()
