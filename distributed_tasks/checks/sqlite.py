"""SQLite as the runs' database: the options that keep concurrent writers from failing."""

from __future__ import annotations

from typing import Any

from django.core import checks

from distributed_tasks.checks.ids import W003

SQLITE_TIMEOUT = 20  # seconds a writer waits for another's lock before "database is locked"
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": SQLITE_TIMEOUT,
}


def check_sqlite(alias: str, db: dict[str, Any]) -> list[checks.CheckMessage]:
    """SQLite's defaults make concurrent writers fail at once with "database is locked"."""
    if not db.get("ENGINE", "").endswith("sqlite3"):
        return []
    options = db.get("OPTIONS") or {}
    missing = []
    if "journal_mode=wal" not in str(options.get("init_command", "")).lower().replace(" ", ""):
        missing.append("WAL (readers then never block the writer)")
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE" (writers queue instead of failing)')
    if not isinstance(options.get("timeout"), int | float) or options["timeout"] < SQLITE_TIMEOUT:
        missing.append(f'a "timeout" of {SQLITE_TIMEOUT} s or more (the default is 5)')
    if not missing:
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite without {'; '.join(missing)}: workers and the "
            'orchestrator write at once and SQLite answers "database is locked".',
            hint=f'Add DATABASES[{alias!r}]["OPTIONS"] = {SQLITE_OPTIONS!r} (README, '
            "Quickstart). SQLite is for trying things out: use PostgreSQL, MySQL or MariaDB "
            "in production.",
            obj=f"DATABASES[{alias!r}]",
            id=W003,
        )
    ]
