"""The SQLite warning (W003): startproject's defaults fail concurrent writers at once."""

import pytest

from distributed_tasks.checks import SQLITE_OPTIONS, W003, check_sqlite

SQLITE = "django.db.backends.sqlite3"


def test_startproject_defaults_get_one_warning_naming_every_missing_option():
    (warning,) = check_sqlite("default", {"ENGINE": SQLITE, "NAME": "db.sqlite3"})
    assert warning.id == W003
    assert "WAL" in warning.msg
    assert "IMMEDIATE" in warning.msg
    assert '"timeout" of 20 s' in warning.msg
    assert "database is locked" in warning.msg
    assert repr(SQLITE_OPTIONS) in warning.hint
    assert "PostgreSQL, MySQL or MariaDB in production" in warning.hint


def test_the_documented_options_pass():
    assert check_sqlite("default", {"ENGINE": SQLITE, "OPTIONS": SQLITE_OPTIONS}) == []


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"init_command": "PRAGMA synchronous=NORMAL;"}, "WAL"),
        ({"transaction_mode": "DEFERRED"}, "IMMEDIATE"),
        ({"timeout": 5}, "timeout"),
    ],
)
def test_each_missing_option_is_named_alone(override, named):
    (warning,) = check_sqlite(
        "tasks", {"ENGINE": SQLITE, "OPTIONS": {**SQLITE_OPTIONS, **override}}
    )
    assert [word for word in ("WAL", "IMMEDIATE", "timeout") if word in warning.msg] == [named]
    assert "DATABASES['tasks']" in warning.msg


def test_other_engines_are_not_checked():
    assert check_sqlite("default", {"ENGINE": "django.db.backends.postgresql"}) == []
