"""Run every benchmark (each in its own process) and print one summary table.

    .venv/bin/python -m benchmarks.run_all            # full sizes, about 10 minutes
    .venv/bin/python -m benchmarks.run_all --quick    # smoke run, about 2 minutes
    .venv/bin/python -m benchmarks.run_all --only ring,get_status

Each script's own tables stream through; the summary collects the checks of every
``results/<name>.json`` written by this run (``results/summary.json``). A script that
fails or overruns its time limit shows as FAILED and the others still run. Exits 1
when a script failed; missed targets are reported, not failures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.common import RESULTS_DIR, ROOT, environment, fmt, print_table, result_path


@dataclass(frozen=True, slots=True)
class Script:
    module: str
    result: str  # results/<result>.json
    limit: float  # seconds before it is stopped (full sizes)


SCRIPTS = [
    Script("bench_ring", "ring", 120),
    Script("bench_status", "get_status", 120),
    Script("bench_submission", "submission", 180),
    Script("bench_reaper", "reaper", 180),
    Script("bench_e2e", "end_to_end", 240),
    Script("bench_e2e_peers", "end_to_end_peers", 300),
    Script("bench_placement", "placement", 240),
    Script("bench_crash", "crash", 150),
    Script("bench_failover", "failover", 300),
    Script("bench_metrics", "metrics", 240),
    Script("bench_round_trips", "round_trips", 120),
    Script("bench_worker_cpu", "worker_cpu", 300),
    Script("bench_progress", "progress", 120),
]


def run(script: Script, quick: bool) -> tuple[int | str, float]:
    argv = [sys.executable, "-m", f"benchmarks.{script.module}", *(["--quick"] if quick else [])]
    print(f"\n===== {script.module} =====", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT)
    try:
        code: int | str = proc.wait(timeout=script.limit)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the script's SIGTERM handler unwinds and stops its processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = f"timed out after {script.limit:g} s"
    return code, time.monotonic() - started


def summary_rows(script: Script, code: int | str, since: float) -> list[tuple]:
    path = result_path(script.result)
    if code != 0 or not path.exists() or path.stat().st_mtime < since:
        return [(script.result, "FAILED", f"exit {code}", "", "")]
    checks = json.loads(path.read_text())["checks"]
    verdicts = {True: "ok", False: "MISS", None: ""}
    return [
        (script.result, c["metric"], fmt(c["value"]), c["target"], verdicts[c["ok"]])
        for c in checks
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--only", help="comma-separated result names (ring, get_status, ...)")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    chosen = [s for s in SCRIPTS if wanted is None or s.result in wanted]
    started, rows, timings, failed = time.time(), [], [], False
    for script in chosen:
        code, seconds = run(script, args.quick)
        failed |= code != 0
        timings.append((script.result, seconds, code))
        rows += summary_rows(script, code, started)
    print_table(
        "Summary" + (" (--quick: smoke sizes, indicative only)" if args.quick else ""),
        ["benchmark", "metric", "value", "target", ""],
        rows,
    )
    total = time.time() - started
    load = environment()["load_avg"]
    print(f"\n{len(chosen)} benchmark(s) in {total:.0f} s; load average now {load}")
    fields = ["benchmark", "metric", "value", "target", "verdict"]
    summary = {
        "quick": args.quick,
        "environment": environment(),
        "seconds": total,
        "runs": [{"benchmark": b, "seconds": s, "exit": c} for b, s, c in timings],
        "checks": [dict(zip(fields, row, strict=True)) for row in rows],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    result_path("summary").write_text(json.dumps(summary, indent=2) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
