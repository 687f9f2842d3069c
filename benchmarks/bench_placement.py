"""Placement: queue wait and makespan of mixed runs vs plain Celery's one shared queue.

Three ``dt_worker`` nodes x 2 processes (and one ``dt_beat``, whose rebalancer moves
runs that wait behind a busy node, as do nodes that free a slot) and three plain
``celery worker`` x 2 processes that consume one shared queue (the work-conserving
reference: no process idles while work waits) run the same work, one side at a time:

- burst: N runs submitted at once, shuffled: 85 % short (50 ms), 15 % long (1 s);
- steady: the same mix arriving at a fixed rate, 60 % of the pool's capacity.

Each run notes in Redis its queue wait (function start - submission, same host clock)
and its end; makespan = last end - first submission; spread = how far apart the
workers' last runs end (work conservation: 0 when no worker idles while work waits).
Also reported: runs moved (rebalancer and stealing), runs per node, and the
capacity-aware ring's balance for a burst and its churn when 1 of 10 nodes leaves
(pure, as ``bench_ring``).

Target: queue wait p99 <= 1.5x plain Celery's on the same work (goal: equal).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from typing import Any

from benchmarks import common
from benchmarks.bench_ring import balance, ring_of
from distributed_tasks.conf import DEFAULTS
from distributed_tasks.ring import Ring

NAME = "placement"
SHARED_QUEUE = "bench.shared"
NODES, CONCURRENCY = 3, 2
SHORT, LONG, LONG_SHARE = 0.05, 1.0, 0.15
LOAD = 0.6  # steady arrivals, as a share of the pool's capacity


def workload(n: int, seed: int = 15) -> list[float]:
    rng = random.Random(seed)
    durations = [LONG if i < round(n * LONG_SHARE) else SHORT for i in range(n)]
    rng.shuffle(durations)
    return durations


def arrivals(durations: list[float], steady: bool) -> list[float]:
    """Offsets (s) of each submission: all at 0 for a burst, evenly spaced when steady."""
    if not steady:
        return [0.0] * len(durations)
    mean = sum(durations) / len(durations)
    rate = LOAD * NODES * CONCURRENCY / mean
    return [i / rate for i in range(len(durations))]


def submit(durations: list[float], offsets: list[float], send) -> float:
    """Call ``send(batch of (index, seconds, sent_at))`` on schedule; returns the first send."""
    began = time.time()
    pending = list(range(len(durations)))
    while pending:
        due = [i for i in pending if offsets[i] <= time.time() - began]
        if not due:
            time.sleep(max(0.0, offsets[pending[0]] - (time.time() - began)))
            continue
        for chunk in range(0, len(due), 200):
            now = time.time()
            send([(i, durations[i], now) for i in due[chunk : chunk + 200]])
        pending = pending[len(due) :]
    return began


def collect(journal: str, n: int, began: float) -> dict[str, Any]:
    from distributed_tasks.connection import get_redis

    redis = get_redis()
    common.poll_until(lambda: redis.llen(journal) >= n, timeout=600, interval=0.05)
    rows = [line.decode().split(" ") for line in redis.lrange(journal, 0, -1)]
    waits = sorted(float(w) for w, _end, _node in rows)
    last: dict[str, float] = {}
    for _w, end, node in rows:
        last[node] = max(last.get(node, 0.0), float(end))
    return {
        "n": n,
        "wait_p50_s": common.percentile(waits, 50),
        "wait_p90_s": common.percentile(waits, 90),
        "wait_p99_s": common.percentile(waits, 99),
        "wait_max_s": waits[-1],
        "makespan_s": max(float(end) for _w, end, _node in rows) - began,
        "runs_per_node": dict(sorted(Counter(node for _w, _e, node in rows).items())),
        # Work conservation: how far apart the workers' last runs end (0: none idles early).
        "idle_spread_s": max(last.values()) - min(last.values()),
    }


class Sides:
    """Both pools, and how to run one scenario on each."""

    def __init__(self, procs: common.BenchCluster) -> None:
        self.nodes = [common.node_name("placement", i) for i in range(1, NODES + 1)]
        plain = [f"{common.NODE_PREFIX}shared-{i}@bench" for i in range(1, NODES + 1)]
        for node in self.nodes:
            procs.start_worker(node, concurrency=CONCURRENCY)
        for key in plain:
            procs.start_plain_worker(key, SHARED_QUEUE, concurrency=CONCURRENCY)
        procs.start_beat(f"{common.NODE_PREFIX}placement-beat")
        procs.wait_live(*self.nodes)
        procs.wait_leader()
        for key in plain:
            procs.wait_log(key, "ready.")

    @staticmethod
    def run_dt(tag: str, durations: list[float], offsets: list[float]) -> dict[str, Any]:
        from benchmarks.tasks import mixed
        from distributed_tasks import start_many
        from distributed_tasks.models import TaskRun

        journal = f"bench:placement:{tag}"

        def send(batch):
            start_many(
                [
                    {"func": mixed, "args": [s, at, journal], "name": f"{tag}-{i}"}
                    for i, s, at in batch
                ]
            )

        result = collect(journal, len(durations), submit(durations, offsets, send))
        runs = TaskRun.objects.filter(name__startswith=f"{tag}-")
        common.poll_until(lambda: not runs.filter(finished_at__isnull=True).exists(), timeout=60)
        result["moved_by_rebalancer"] = runs.filter(attempt__gt=1).count()
        return result

    @staticmethod
    def run_plain(tag: str, durations: list[float], offsets: list[float]) -> dict[str, Any]:
        from benchmarks.celeryapp import app, plain_mixed

        journal = f"bench:placement:{tag}"

        def send(batch):
            with app.producer_or_acquire() as producer:
                for _i, s, at in batch:
                    plain_mixed.apply_async(
                        args=[s, at, journal], queue=SHARED_QUEUE, producer=producer
                    )

        return collect(journal, len(durations), submit(durations, offsets, send))


def ring_figures(n: int) -> dict[str, Any]:
    """The capacity-aware ring alone: a burst's balance, and churn when 1 of 10 leaves."""
    factor = float(DEFAULTS["BALANCE_FACTOR"])
    keys = [f"default:placement-{i}" for i in range(n)]

    def burst(size: int) -> list[str]:
        ring, loads, out = ring_of(size), Counter(), []
        slots = dict.fromkeys(ring.members, CONCURRENCY)
        for key in keys:
            node = ring.place(key, loads, factor, slots) or ""
            loads[node] += 1
            out.append(node)
        return out

    before = ring_of(10)
    after = Ring({m: 1 for m in before.members if m != "node-0"})
    slots = dict.fromkeys(before.members, CONCURRENCY)
    moved = sum(
        before.place(k, {}, factor, slots) != after.place(k, {}, factor, slots) for k in keys
    )
    return {
        "burst_max_over_mean_3_nodes": balance(burst(3), 3),
        "burst_max_over_mean_10_nodes": balance(burst(10), 10),
        "moved_when_1_of_10_leaves_pct": moved / n * 100,
    }


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="runs per scenario (default 300, quick 60)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 300, 60)
    durations = workload(n)
    results: dict[str, dict[str, Any]] = {}
    common.setup()
    try:
        with common.cluster(NAME) as procs:
            sides = Sides(procs)
            sides.run_dt("warm-dt", [SHORT] * 12, [0.0] * 12)
            sides.run_plain("warm-plain", [SHORT] * 12, [0.0] * 12)
            for scenario in ("burst", "steady"):
                offsets = arrivals(durations, scenario == "steady")
                results[f"{scenario}/distributed_tasks"] = sides.run_dt(
                    f"dt-{scenario}", durations, offsets
                )
                results[f"{scenario}/plain_celery"] = sides.run_plain(
                    f"plain-{scenario}", durations, offsets
                )
    finally:
        common.reset_state()
    ring = ring_figures(10_000 if args.quick else 100_000)
    common.print_table(
        f"Queue wait and makespan: {n} runs ({LONG_SHARE:.0%} of {LONG:g} s, the rest "
        f"{SHORT * 1000:g} ms), {NODES} workers x {CONCURRENCY} processes",
        [
            "scenario / side",
            "wait p50 s",
            "p90 s",
            "p99 s",
            "max s",
            "makespan s",
            "spread s",
            "moved",
        ],
        [
            (
                label,
                r["wait_p50_s"],
                r["wait_p90_s"],
                r["wait_p99_s"],
                r["wait_max_s"],
                r["makespan_s"],
                r["idle_spread_s"],
                r.get("moved_by_rebalancer", ""),
            )
            for label, r in results.items()
        ],
    )
    common.print_table("Capacity-aware ring (pure)", ["figure", "value"], list(ring.items()))
    checks = []
    for scenario in ("burst", "steady"):
        ours, plain = results[f"{scenario}/distributed_tasks"], results[f"{scenario}/plain_celery"]
        ratio = ours["wait_p99_s"] / max(plain["wait_p99_s"], 1e-3)
        checks += [
            common.Check.at_most(f"{scenario}: wait p99 / plain Celery's", ratio, 1.5, "x"),
            common.Check(f"{scenario}: wait p99 s (ours / plain)", _pair(ours, plain, "p99")),
            common.Check(f"{scenario}: wait p50 s (ours / plain)", _pair(ours, plain, "p50")),
            common.Check(
                f"{scenario}: makespan s (ours / plain)",
                f"{ours['makespan_s']:.2f} / {plain['makespan_s']:.2f}",
            ),
            common.Check(
                f"{scenario}: last run ends spread over s (ours / plain)",
                f"{ours['idle_spread_s']:.2f} / {plain['idle_spread_s']:.2f}",
            ),
            common.Check(
                f"{scenario}: runs moved (rebalancer, stealing)", ours["moved_by_rebalancer"]
            ),
        ]
    checks += [common.Check(k, v) for k, v in ring.items()]
    data = {
        "n": n,
        "nodes": NODES,
        "concurrency": CONCURRENCY,
        "short_s": SHORT,
        "long_s": LONG,
        "long_share": LONG_SHARE,
        "steady_load": LOAD,
        "scenarios": results,
        "ring": ring,
    }
    common.write_result(NAME, args=args, data=data, checks=checks)


def _pair(ours: dict[str, Any], plain: dict[str, Any], q: str) -> str:
    return f"{ours[f'wait_{q}_s']:.3f} / {plain[f'wait_{q}_s']:.3f}"


if __name__ == "__main__":
    main()
