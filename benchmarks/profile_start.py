"""Profile one unique ``start_async`` beside raw ``apply_async``: CPU, wall, round trips.

    DT_BENCH_REDIS_URL=redis://127.0.0.1:6379/<db> DT_BENCH_PG_NAME=<x>_bench \\
        .venv/bin/python -m benchmarks.profile_start [--n 3000] [--top 30]

1. both variants interleaved in rounds (after an untimed warm-up): producer CPU
   (``time.process_time``) and wall microseconds per call;
2. Redis round trips (requests redis-py sends: a pipeline or a script is one) and
   PostgreSQL round trips (statements, plus BEGIN and COMMIT of a transaction) per call,
   counted as ``bench_round_trips`` counts them;
3. a cProfile of ``n`` more starts, the top functions by own time.

The quick loop for issue 13's single start (target: <= 300 us CPU, >= 0.75x raw).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any

from benchmarks import common

ROUNDS = 5
COUNTED = 200


def _variants() -> dict[str, Callable[[str], Any]]:
    from benchmarks.celeryapp import plain_noop
    from benchmarks.tasks import noop
    from distributed_tasks import start_async

    return {
        "raw apply_async": lambda name: plain_noop.apply_async(args=[None], queue="bench.sink"),
        "start_async": lambda name: start_async(noop, name=name),
    }


def _timed(variants: dict[str, Callable[[str], Any]], n: int) -> dict[str, tuple[float, float]]:
    """``{label: (cpu us, wall us)}`` per call, over ``n`` calls in interleaved rounds."""
    totals = {label: [0.0, 0.0] for label in variants}
    per_round = max(1, n // ROUNDS)
    for r in range(ROUNDS):
        for label, call in variants.items():
            names = [f"t-{r}-{i}-{time.monotonic_ns()}" for i in range(per_round)]
            cpu, wall = time.process_time(), time.perf_counter()
            for name in names:
                call(name)
            totals[label][0] += time.process_time() - cpu
            totals[label][1] += time.perf_counter() - wall
    done = per_round * ROUNDS
    return {label: (c / done * 1e6, w / done * 1e6) for label, (c, w) in totals.items()}


def _round_trips(call: Callable[[str], Any]) -> tuple[float, float]:
    from benchmarks.bench_round_trips import counting

    tag = time.monotonic_ns()
    with counting() as counts:
        for i in range(COUNTED):
            call(f"rt-{tag}-{i}")
    return counts.redis / COUNTED, counts.postgres / COUNTED


def _profile(call: Callable[[str], Any], n: int, top: int) -> str:
    tag = time.monotonic_ns()
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(n):
        call(f"p-{tag}-{i}")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    def options(p: Any) -> None:
        p.add_argument("--n", type=int, help="calls per variant (default 3000, quick 500)")
        p.add_argument("--top", type=int, default=30, help="functions in the profile")
        p.add_argument("--no-profile", action="store_true", help="skip cProfile")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 3000, 500)
    common.setup()
    try:
        with common.idle_node("profile-start"):
            variants = _variants()
            for label, call in variants.items():  # connections, scripts, caches
                for i in range(200):
                    call(f"warm-{label}-{i}")
            timed = _timed(variants, n)
            trips = {label: _round_trips(call) for label, call in variants.items()}
            profile = "" if args.no_profile else _profile(variants["start_async"], n, args.top)
    finally:
        common.reset_state()
    raw_wall = timed["raw apply_async"][1]
    rows = [
        (label, cpu, wall, raw_wall / wall, *trips[label]) for label, (cpu, wall) in timed.items()
    ]
    common.print_table(
        f"one call, {n} per variant in {ROUNDS} interleaved rounds",
        ["variant", "CPU us", "wall us", "x raw", "Redis RT", "PG RT"],
        rows,
    )
    print(profile)


if __name__ == "__main__":
    main()
