"""PostgreSQL: a function that inserts one run unless an active run holds its name.

A single start's ``INSERT ... SELECT ... FROM json_populate_record(...) ON CONFLICT DO
NOTHING`` took the server longer to plan than to run: ~150 us of a start's wall time on
the benchmark machine. In a PL/pgSQL function the plan is made once per session and
kept, behind any pooler (PgBouncer in transaction mode included), which a prepared
statement is not. Other databases have no such function and keep the plain statement
(``distributed_tasks/inserts.py``).

The column list is this migration's. A later migration that changes TaskRun's columns
replaces the function (``tests/integration/test_insert_function.py`` checks they agree).
"""

from django.db import migrations

FUNCTION = "distributed_tasks_insert_run"
TABLE = "distributed_tasks_taskrun"
COLUMNS = (
    "id", "task_list", "name", "active_name", "function", "args", "kwargs", "callback",
    "data", "state", "reason", "node", "incarnation", "attempt", "executions",
    "max_attempts", "priority", "retry_backoff", "timeout", "result", "error_type",
    "error", "traceback", "queued_at", "run_after", "orchestrator_epoch", "started_at",
    "finished_at", "attempts", "progress", "progress_message", "progress_data",
    "cancel_requested_at", "cancel_requested_by", "cancel_deadline",
)  # fmt: skip


def function_sql(columns: tuple[str, ...] = COLUMNS) -> str:
    """``defaults``: the columns' plain defaults; ``run``: the new row's values (JSON
    objects keyed by column). True when the row went in, False when the name was taken."""
    names = ", ".join(f'"{c}"' for c in columns)
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(defaults json, run json) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "{TABLE}" ({names})
  SELECT {names} FROM json_populate_record(json_populate_record(NULL::"{TABLE}", defaults), run)
  ON CONFLICT ("task_list", "active_name") DO NOTHING;
  RETURN FOUND;
END
$$"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(function_sql())


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(json, json)")


class Migration(migrations.Migration):
    dependencies = [
        ("distributed_tasks", "0007_node_queue_index"),
    ]

    operations = [migrations.RunPython(create, drop)]
