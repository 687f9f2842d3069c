"""get_status latency: cache hit and database fallback vs a raw Redis GET on the same pool.

All calls go through the process's one Redis client (``distributed_tasks.connection``),
so the raw GET and HGETALL rows show the floor that the network and redis-py set;
the ``get_status`` rows add validation, decoding and, on a miss, the database.

- hit: the name's status hash is in Redis (a QUEUED run; a DONE run with a result);
- DB fallback: the hash was lost (deleted, untimed, before each call): one HGETALL miss,
  the newest row from PostgreSQL, and the cache warmed again;
- NOT_FOUND: a name that never ran (HGETALL miss + an empty query).

Targets (cache hit): p50 <= 2x raw GET p50; p99 < 1 ms.
"""

from __future__ import annotations

import argparse

from benchmarks import common

NAME = "get_status"
RAW_KEY = "bench:raw-get"


def prepare() -> dict[str, str]:
    """A QUEUED name, and a DONE one executed in-process; returns their names."""
    from benchmarks.tasks import echo
    from distributed_tasks import runner, start_async
    from distributed_tasks.models import TaskRun
    from distributed_tasks.store import message_for

    start_async(echo, args=[{"status": "queued"}], name="status-queued")
    done = start_async(echo, args=[{"artefact": "a" * 64}], name="status-done")
    runner.execute(message_for(TaskRun.objects.get(id=done.run_id)).to_body())
    return {"queued": "status-queued", "done": "status-done"}


def calls(names: dict[str, str]) -> tuple[dict[str, common.Timed], dict[str, common.Timed]]:
    """(cheap calls, database calls): the latter are sampled fewer times."""
    from distributed_tasks import get_status, keys
    from distributed_tasks.connection import get_redis

    redis = get_redis()
    redis.set(RAW_KEY, "x" * 100)
    done_key = keys.run_key("default", names["done"])

    def lose_done() -> None:
        redis.delete(done_key)

    fast = {
        "raw GET": common.Timed(lambda: redis.get(RAW_KEY)),
        "raw HGETALL": common.Timed(lambda: redis.hgetall(done_key)),
        "get_status hit (QUEUED)": common.Timed(lambda: get_status(names["queued"])),
        "get_status hit (DONE + result)": common.Timed(lambda: get_status(names["done"])),
    }
    slow = {
        "get_status DB fallback (DONE)": common.Timed(
            lambda: get_status(names["done"]), before=lose_done
        ),
        "get_status NOT_FOUND (no row)": common.Timed(lambda: get_status("status-never-started")),
    }
    return fast, slow


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="cache-path calls (default 20000, quick 2000)")
        p.add_argument("--n-db", type=int, help="database-path calls (default 3000, quick 300)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 20000, 2000)
    n_db = common.sized(args, "n_db", 3000, 300)
    common.setup()
    try:
        with common.idle_node("status"):
            names = prepare()
        fast, slow = calls(names)
        common.interleaved({**fast, **slow}, 200, rounds=1)  # warm-up
        samples = common.interleaved(fast, n, rounds=10)
        samples.update(common.interleaved(slow, n_db, rounds=10))
    finally:
        common.reset_state()
    stats = {label: common.summarize_us(s) for label, s in samples.items()}
    raw = stats["raw GET"]
    common.print_table(
        "get_status latency (microseconds)",
        ["call", "n", "p50", "p90", "p99", "max", "p50 x raw GET"],
        [
            (
                k,
                s["n"],
                s["p50_us"],
                s["p90_us"],
                s["p99_us"],
                s["max_us"],
                s["p50_us"] / raw["p50_us"],
            )
            for k, s in stats.items()
        ],
    )
    hit = stats["get_status hit (DONE + result)"]
    checks = [
        common.Check.at_most("hit p50 / raw GET p50", hit["p50_us"] / raw["p50_us"], 2.0, "x"),
        common.Check.at_most("hit p99 (us)", hit["p99_us"], 1000.0, " us"),
        common.Check("DB fallback p50 (us)", stats["get_status DB fallback (DONE)"]["p50_us"]),
    ]
    common.write_result(NAME, args=args, data={"latency_us": stats}, checks=checks)


if __name__ == "__main__":
    main()
