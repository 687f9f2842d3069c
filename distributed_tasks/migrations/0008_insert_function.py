"""PostgreSQL: a function that inserts one run unless an active run holds its name.

A single start's ``INSERT ... SELECT ... FROM json_populate_record(...) ON CONFLICT DO
NOTHING`` took the server longer to plan than to run: ~150 us of a start's wall time on
the benchmark machine. In a PL/pgSQL function the statement is prepared once per
session and kept, behind any pooler (PgBouncer in transaction mode included), which a
client's prepared statement is not. Other databases have no such function and keep the
plain statement (``distributed_tasks/insert_one.py``).

The row is the table's own type, every column in the table's order: a column added
later needs no new function (a row the app leaves it out of takes NULL, as the base
record of ``json_populate_record`` gives every key it lacks).
"""

from django.db import migrations

FUNCTION = "distributed_tasks_insert_run"
TABLE = "distributed_tasks_taskrun"

# ``defaults``: the columns' plain defaults; ``run``: the new row's values (JSON objects
# keyed by column). True when the row went in, False when the name was taken.
CREATE = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(defaults json, run json) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "{TABLE}"
  SELECT * FROM json_populate_record(json_populate_record(NULL::"{TABLE}", defaults), run)
  ON CONFLICT ("task_list", "active_name") DO NOTHING;
  RETURN FOUND;
END
$$"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(json, json)")


class Migration(migrations.Migration):
    dependencies = [
        ("distributed_tasks", "0007_node_queue_index"),
    ]

    # The hint lets a database router send it where TaskRun's table is.
    operations = [migrations.RunPython(create, drop, hints={"model_name": "taskrun"})]
