"""Ring balance and churn: plain consistent hashing vs bounded loads (pure, no I/O).

Uses ``distributed_tasks.ring.Ring`` exactly as placement does (keys
``<task_list>:<name>``). For 3, 10 and 50 equal nodes, N names are placed one after
another; balance is max/mean of the per-node counts. Bounded loads places each name on
the first node clockwise under ``ceil(c * (placed + 1) / nodes)``, for the default
``BALANCE_FACTOR`` and tighter factors. Churn: with 10 nodes, one leaves and every name
is placed again; "moved" is the share of names whose node changed (ideal: 1/10).

Targets: max/mean <= 1.05 with bounded loads; <= 11 % moved when 1 of 10 nodes leaves.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from benchmarks import common
from distributed_tasks.conf import DEFAULTS
from distributed_tasks.ring import Ring

NAME = "ring"
DEFAULT_FACTOR = float(DEFAULTS["BALANCE_FACTOR"])
FACTORS = sorted({DEFAULT_FACTOR, 1.10, 1.05}, reverse=True)


def ring_of(size: int) -> Ring:
    return Ring({f"node-{i}": 1 for i in range(size)})


def place_all(ring: Ring, keys: list[str], factor: float | None) -> list[str]:
    """Each key's node, placed in order (``factor`` None: plain consistent hashing)."""
    if factor is None:
        return [ring.node_for(k) or "" for k in keys]
    loads: Counter[str] = Counter()
    out = []
    for key in keys:
        node = ring.place(key, loads, factor) or ""
        loads[node] += 1
        out.append(node)
    return out


def balance(assigned: list[str], size: int) -> float:
    counts = Counter(assigned)
    return max(counts.values()) / (len(assigned) / size)


def label(factor: float | None) -> str:
    return "plain" if factor is None else f"bounded c={factor:g}"


def measure_balance(keys: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        ring = ring_of(size)
        for factor in [None, *FACTORS]:
            start = time.perf_counter()
            assigned = place_all(ring, keys, factor)
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "nodes": size,
                    "mode": label(factor),
                    "max_over_mean": balance(assigned, size),
                    "us_per_placement": elapsed / len(keys) * 1e6,
                }
            )
    return rows


def measure_churn(keys: list[str], size: int = 10) -> list[dict[str, Any]]:
    before, after = ring_of(size), Ring({f"node-{i}": 1 for i in range(1, size)})
    rows = []
    for factor in [None, *FACTORS]:
        old, new = place_all(before, keys, factor), place_all(after, keys, factor)
        moved = sum(a != b for a, b in zip(old, new, strict=True)) / len(keys)
        lost = sum(a == "node-0" for a in old) / len(keys)  # names that had to move
        rows.append({"mode": label(factor), "moved": moved, "owned_by_leaver": lost})
    return rows


def main() -> None:
    def options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, help="names (default 100000, quick 10000)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    n = common.sized(args, "n", 100_000, 10_000)
    keys = [f"default:ring-{i}" for i in range(n)]
    balance_rows = measure_balance(keys, [3, 10, 50])
    churn_rows = measure_churn(keys)
    common.print_table(
        f"Balance over {n} names (max/mean of names per node)",
        ["nodes", "mode", "max/mean", "us/placement"],
        [(r["nodes"], r["mode"], r["max_over_mean"], r["us_per_placement"]) for r in balance_rows],
    )
    common.print_table(
        f"Churn: 1 of 10 nodes leaves ({n} names placed again)",
        ["mode", "moved %", "owned by the leaver %"],
        [(r["mode"], r["moved"] * 100, r["owned_by_leaver"] * 100) for r in churn_rows],
    )
    default, tight = label(DEFAULT_FACTOR), label(min(FACTORS))
    checks = [
        common.Check.at_most(f"max/mean, {r['nodes']} nodes, {r['mode']}", r["max_over_mean"], 1.05)
        for r in balance_rows
        if r["mode"] in (default, tight)
    ]
    checks += [
        common.Check.at_most(f"moved, 1 of 10 leaves, {r['mode']} (%)", r["moved"] * 100, 11.0)
        for r in churn_rows
        if r["mode"] in ("plain", default, tight)
    ]
    checks += [
        common.Check(f"max/mean, {r['nodes']} nodes, {r['mode']}", r["max_over_mean"])
        for r in balance_rows
        if r["mode"] == "plain"
    ]
    data = {"n": n, "default_factor": DEFAULT_FACTOR, "balance": balance_rows, "churn": churn_rows}
    common.write_result(NAME, args=args, data=data, checks=checks)


if __name__ == "__main__":
    main()
