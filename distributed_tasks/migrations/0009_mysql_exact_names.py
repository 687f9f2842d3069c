"""MySQL/MariaDB: names compare exactly, as on PostgreSQL, SQLite and in Redis.

Their default collations ignore case and accents, and, PAD SPACE, trailing spaces:
"Build" and "build" were one name to the unique active name, so a start of one was
refused with the other's run, and a status read from the database found the other's
run. The task list, name and active name columns take their character set's binary
no-pad collation: MariaDB's ``<charset>_nopad_bin``, MySQL 8's ``utf8mb4_0900_bin``;
else ``<charset>_bin`` (exact but for trailing spaces). Other databases already
compare exactly: nothing changes there.

Django's migration state does not know this collation: a later migration that alters
one of these columns on MySQL must set it again.
"""

from django.db import migrations

TABLE = "distributed_tasks_taskrun"
COLUMNS = ("task_list", "name", "active_name")


def _columns(cursor) -> list[tuple[str, str, str, str]]:
    """(column, character set, type, nullable) of the name columns."""
    cursor.execute(
        "SELECT column_name, character_set_name, column_type, is_nullable "
        "FROM information_schema.columns WHERE table_schema = DATABASE() "
        "AND table_name = %s AND column_name IN (%s, %s, %s) ORDER BY ordinal_position",
        [TABLE, *COLUMNS],
    )
    return list(cursor.fetchall())


def _exact(cursor, connection, charset: str) -> str:
    """The binary collation of ``charset`` that keeps trailing spaces, if the server has one."""
    wanted = [f"{charset}_nopad_bin"] if connection.mysql_is_mariadb else []
    if charset == "utf8mb4" and not connection.mysql_is_mariadb:
        wanted.append("utf8mb4_0900_bin")
    for name in wanted:
        cursor.execute(
            "SELECT 1 FROM information_schema.collations WHERE collation_name = %s", [name]
        )
        if cursor.fetchone():
            return name
    return f"{charset}_bin"


def _modify(schema_editor, collation_of) -> None:
    connection = schema_editor.connection
    if connection.vendor != "mysql":
        return
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        changes = [
            f"MODIFY {q(column)} {kind} CHARACTER SET {charset} "
            f"COLLATE {collation_of(cursor, connection, charset)} "
            f"{'NULL' if nullable == 'YES' else 'NOT NULL'}"
            for column, charset, kind, nullable in _columns(cursor)
        ]
    if changes:
        schema_editor.execute(f"ALTER TABLE {q(TABLE)} {', '.join(changes)}")


def forwards(apps, schema_editor):
    _modify(schema_editor, _exact)


def backwards(apps, schema_editor):
    def table_default(cursor, connection, charset: str) -> str:
        """The table's collation where it is of ``charset``, else the charset's default."""
        cursor.execute(
            "SELECT table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [TABLE],
        )
        (collation,) = cursor.fetchone()
        if collation and collation.startswith(f"{charset}_"):
            return collation
        cursor.execute(
            "SELECT default_collate_name FROM information_schema.character_sets "
            "WHERE character_set_name = %s",
            [charset],
        )
        return cursor.fetchone()[0]

    _modify(schema_editor, table_default)


class Migration(migrations.Migration):
    dependencies = [
        ("distributed_tasks", "0008_insert_function"),
    ]

    # The hint lets a database router send it where TaskRun's table is. Not atomic: MySQL
    # cannot roll back DDL, and Django refuses DDL inside a transaction there.
    operations = [
        migrations.RunPython(
            forwards, backwards, atomic=False, hints={"model_name": "taskrun"}
        )
    ]
