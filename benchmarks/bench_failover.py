"""Failover: SIGKILL of the leading beat until the next leader acts, vs RedBeat's lock.

distributed_tasks: two ``dt_beat`` processes; each trial kills the lease holder's
process group and measures, polling every 10 ms,

- ``lease``: until another holder owns the lease ``dt:{orchestrator}:lease``;
- ``acting``: until the new leader sends its first HA-beat probe (the settings'
  ``CELERY_BEAT_SCHEDULE`` entry, every second, into a queue nobody consumes).

A fresh follower replaces the killed one before the next trial.

RedBeat (celery-redbeat, default settings) on the same Redis: two ``celery beat -S
redbeat.RedBeatScheduler`` processes; the one sending the probe is killed, and we wait
(up to a bound) for the other to send one. The lock's TTL right after the kill is
read from Redis.

Target: acting <= LEASE_TTL + 1 s (median and max).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks import common

NAME = "failover"
POLL = 0.01
READY_LINE = "beat: Starting..."


def probes() -> int:
    from django.conf import settings

    from distributed_tasks.connection import get_redis

    return int(get_redis().llen(settings.BEAT_PROBE_QUEUE))


def wait_probe(timeout: float) -> float | None:
    """Seconds until a new probe message arrives, or None within ``timeout``."""
    base, start = probes(), time.monotonic()
    while time.monotonic() - start < timeout:
        if probes() > base:
            return time.monotonic() - start
        time.sleep(POLL)
    return None


class DtBeats:
    def __init__(self, procs: common.BenchCluster) -> None:
        self.procs = procs
        self.started = 0
        for _ in range(2):
            self.spawn()

    def spawn(self) -> str:
        self.started += 1
        key = f"{common.NODE_PREFIX}beat-{self.started}"
        self.procs.start_beat(key)
        return key

    def ready(self) -> None:
        for key in list(self.procs.procs):
            self.procs.wait_log(key, READY_LINE)

    def trial(self) -> dict[str, Any]:
        from distributed_tasks.lease import current_leader

        self.ready()
        leader = self.procs.wait_leader().holder
        if wait_probe(10.0) is None:
            raise RuntimeError(f"leader {leader} sends no probe")
        killed_at = time.monotonic()
        self.procs.kill(leader)
        lease = acting = None
        base = probes()
        while acting is None and time.monotonic() - killed_at < 60:
            now = time.monotonic() - killed_at
            info = current_leader()
            if lease is None and info and info.holder != leader:
                lease = now
            if probes() > base:
                acting = now
            time.sleep(POLL)
        self.procs.stop(leader)
        self.spawn()
        return {"killed": leader, "lease_s": lease, "acting_s": acting}


def redbeat_trial(procs: common.BenchCluster, bound: float) -> dict[str, Any]:
    """Kill the RedBeat leader; wait up to ``bound`` for the follower to act."""
    from distributed_tasks.connection import get_redis

    argv = ["beat", "-S", "redbeat.RedBeatScheduler", "-l", "INFO", "--pidfile="]
    procs.spawn_celery("redbeat-a", argv)
    procs.wait_log("redbeat-a", READY_LINE)
    if wait_probe(30.0) is None:
        raise RuntimeError("the first RedBeat process sends no probe")
    procs.spawn_celery("redbeat-b", argv)
    procs.wait_log("redbeat-b", READY_LINE)
    time.sleep(1.0)  # let it reach its blocking lock acquisition (no observable event)
    procs.kill("redbeat-a")
    lock_ttl = get_redis().pttl("redbeat::lock") / 1000
    acting = wait_probe(bound)
    return {"acting_s": acting, "bound_s": bound, "lock_ttl_after_kill_s": lock_ttl}


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trials", type=int, help="distributed_tasks trials (default 10, quick 3)")
        p.add_argument("--bound", type=float, help="RedBeat wait (default 60 s, quick 15 s)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    trials = common.sized(args, "trials", 10, 3)
    bound = args.bound or (15.0 if args.quick else 60.0)
    common.setup()
    from distributed_tasks.conf import get_settings

    lease_ttl = get_settings().LEASE_TTL
    try:
        with common.cluster(NAME) as procs:
            beats = DtBeats(procs)
            results = [beats.trial() for _ in range(trials)]
            procs.stop_all()
            redbeat = redbeat_trial(procs, bound)
    finally:
        common.reset_state()
    acting = [r["acting_s"] if r["acting_s"] is not None else float("inf") for r in results]
    lease = [r["lease_s"] if r["lease_s"] is not None else float("inf") for r in results]
    redbeat_text = (
        f"{redbeat['acting_s']:.2f} s"
        if redbeat["acting_s"] is not None
        else f"never within {bound:g} s (lock TTL {redbeat['lock_ttl_after_kill_s']:,.0f} s)"
    )
    common.print_table(
        f"Failover after SIGKILL of the leader ({trials} trials; LEASE_TTL {lease_ttl:g} s)",
        ["", "lease taken (s)", "new leader acting (s)"],
        [
            ("median", statistics.median(lease), statistics.median(acting)),
            ("max", max(lease), max(acting)),
            ("min", min(lease), min(acting)),
            ("RedBeat (default settings)", "", redbeat_text),
        ],
    )
    limit = lease_ttl + 1.0
    checks = [
        common.Check.at_most("acting, median (s)", statistics.median(acting), limit, " s"),
        common.Check.at_most("acting, max (s)", max(acting), limit, " s"),
        common.Check("RedBeat: next leader acting", redbeat_text),
    ]
    data = {"lease_ttl_s": lease_ttl, "trials": results, "redbeat": redbeat}
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
