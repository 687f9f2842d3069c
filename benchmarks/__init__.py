"""Benchmarks of django-distributed-tasks (``make bench``); never imported by the tests.

Each ``bench_*`` module is a script (``python -m benchmarks.bench_<name> [--quick]``)
that prints a table and writes ``benchmarks/results/<name>.json``. The package is also
a Django app (``benchmarks.settings`` installs it) so that workers started for the
benchmarks discover the registered functions of ``benchmarks.tasks``.
"""
