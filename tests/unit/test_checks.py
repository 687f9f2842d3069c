from django.core import checks
from django.test import override_settings

from distributed_tasks.checks import E002, E003, E004, E005, E006, E015, E016, W001, check_settings


def run(**conf):
    with override_settings(DISTRIBUTED_TASKS=conf):
        return check_settings()


def test_test_settings_pass():
    assert check_settings() == []


def test_not_a_dict():
    with override_settings(DISTRIBUTED_TASKS=["REDIS_URL"]):
        (error,) = check_settings()
    assert error.id == "distributed_tasks.E001"
    assert "must be a dict" in error.msg


def test_unknown_key_suggests_the_close_one():
    assert run(NODE_TIMOUT=3) == [
        checks.Warning(
            "DISTRIBUTED_TASKS has an unknown key 'NODE_TIMOUT'.".replace(
                "NODE_TIMEOUT", "NODE_TIMOUT"
            ),
            hint="Did you mean 'NODE_TIMEOUT'?",
            obj="DISTRIBUTED_TASKS",
            id=W001,
        )
    ]


def test_bad_number():
    assert run(NODE_TIMEOUT=-1) == [
        checks.Error(
            "DISTRIBUTED_TASKS['NODE_TIMEOUT'] must be a number greater than 0 (got -1).",
            hint="Fix the value, or remove the key to use the default (5.0).",
            obj="DISTRIBUTED_TASKS",
            id=E002,
        )
    ]


def test_bools_are_not_numbers():
    (error,) = run(MAX_PAYLOAD_BYTES=True)
    assert error.id == E002


def test_balance_factor_must_exceed_one():
    (error,) = run(BALANCE_FACTOR=0.9)
    assert error.id == E002
    assert "greater than 1" in error.msg


def test_url_scheme():
    (error,) = run(REDIS_URL="http://localhost:6379")
    assert error.id == E003
    assert "scheme 'http'" in error.msg


def test_heartbeat_must_be_shorter_than_node_timeout():
    (error,) = run(HEARTBEAT_INTERVAL=5, NODE_TIMEOUT=5)
    assert error.id == E004
    assert "HEARTBEAT_INTERVAL" in error.hint


def test_unknown_aliases():
    errors = run(DATABASE_ALIAS="nope", CACHE_ALIAS="missing")
    assert [e.id for e in errors] == [E005, E005]


def test_unimportable_paths():
    (error,) = run(CELERY_APP="nowhere.celery.app")
    assert error.id == E006
    assert "nowhere.celery.app" in error.msg


def test_periodic_entries_are_checked():
    errors = run(
        PERIODIC={
            "ok": {"task": "tests.tasks.Counter", "interval": 5},
            "no-interval": {"task": "tests.tasks.Counter"},
            "bad-interval": {"task": "tests.tasks.Counter", "interval": -1},
            "missing": {"task": "tests.tasks.Nope", "interval": 5},
            "not-periodic": {"task": "tests.tasks.add", "interval": 5},
        }
    )
    assert [e.id for e in errors] == ["distributed_tasks.E007"] * 4
    assert "'no-interval'" in errors[0].msg and "interval" in errors[0].msg
    assert "interval must be greater than 0" in errors[1].msg
    assert "not a PeriodicTask subclass" in errors[3].msg


def test_use_tz_false_is_an_error_that_names_the_fix():
    with override_settings(USE_TZ=False):
        (error,) = check_settings()
    assert (error.id, error.obj) == (E015, "USE_TZ")
    assert "every start fails" in error.msg
    assert "USE_TZ = True" in error.hint


def test_autocommit_off_on_the_database_alias_is_an_error_that_names_the_fix(monkeypatch):
    from django.conf import settings

    monkeypatch.setitem(settings.DATABASES["default"], "AUTOCOMMIT", False)  # read at connect
    (error,) = check_settings()
    assert error.id == E016
    assert "AUTOCOMMIT False" in error.msg and "Remove AUTOCOMMIT" in error.hint
