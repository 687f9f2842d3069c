"""The worker's side of issue 11 in this process: the row decides, the outcome is stored.

- the fenced QUEUED -> RUNNING update returns the row (UPDATE ... RETURNING, or the
  update-then-read fallback of MySQL/MariaDB), and the worker runs what it holds;
- a message that disagrees with its row, its time limits or its task id runs nothing;
- on PostgreSQL a genuine message starts in one statement (no transaction), and one the
  statement does not match as sent still gets the general path's verdict;
- a retried failure with a NaN/infinite backoff in its row still ends its attempt;
- each outcome is logged once, at its level, with the run's fields.
"""

import dataclasses
import logging
import math
import time
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import DataError, OperationalError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from distributed_tasks import (
    State,
    claims,
    fenced_start,
    hooks,
    lost,
    outcomes,
    resilience,
    runner,
    signals,
    store,
    transitions,
)
from distributed_tasks.celery import TASK_NAME, header_limits
from distributed_tasks.conf import reset_caches
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from distributed_tasks.types import Outcome
from tests.integration.test_runner import queue, row

# Outside a transaction, as in a pool process: the statements go on psycopg's own cursor (bound.py).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["returning", "update-then-read"])
def start_path(request, monkeypatch):
    if request.param == "update-then-read":
        monkeypatch.setattr(transitions, "update_returns", lambda conn: False)
    return request.param


def test_the_fenced_start_returns_the_row_as_updated(start_path):
    msg = queue("tests.tasks.add", [1, 2])
    run = get_store().mark_running(msg, "inc-1")
    assert (run.state, run.executions, run.incarnation) == (State.RUNNING, 1, "inc-1")
    assert (run.run_id, run.args, run.function) == (msg.run_id, [1, 2], "tests.tasks.add")
    assert run.started_at is not None
    assert get_store().mark_running(msg, "inc-1") is None  # fenced: no longer QUEUED


@pytest.mark.parametrize(
    "change",
    [
        {"function": "tests.tasks.count", "args": ["forged"]},
        {"args": [40, 2]},
        {"kwargs": {"b": 1}},
        {"name": "another-name"},
        {"task_list": "other"},
        {"callback": "tests.tasks.record"},
        {"timeout": 30.0},
        {"data": {"x": 1}},
    ],
)
def test_a_message_that_disagrees_with_its_row_runs_nothing(start_path, change, redis, caplog):
    msg = queue("tests.tasks.add", [1, 2])
    forged = dataclasses.replace(msg, **change)
    assert runner.execute(forged.to_body()) is None
    assert (row(msg).state, row(msg).executions) == (State.QUEUED, 0)  # rolled back
    assert "disagrees with its row on" in caplog.text
    assert runner.execute(msg.to_body()).result == 3  # the genuine message still runs


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement start")
def test_a_genuine_message_starts_in_one_statement():
    msg = queue("tests.tasks.add", [1, 2.5], kwargs={"k": {"x": [None, "é"]}})
    with CaptureQueriesContext(connection) as queries:
        truth = fenced_start.start(msg, header_limits(None), msg.task_id)
    assert truth.call() == msg.call()
    statements = [q["sql"].split()[0] for q in queries]
    assert [s for s in statements if s not in ("SAVEPOINT", "RELEASE")] == ["UPDATE"]
    assert (row(msg).state, row(msg).executions) == (State.RUNNING, 1)


@pytest.mark.parametrize(
    "change", [{"args": [True, 2]}, {"data": []}, {"name": "bad\x00"}, {"args": ["\ud800"]}]
)
def test_what_sql_compares_more_strictly_falls_back_to_the_rows_verdict(change):
    """Python takes True for 1 and [] for {}; PostgreSQL refuses NUL and lone surrogates.
    None of these can start in one statement: the general path decides, as before."""
    msg = queue("tests.tasks.add", [1, 2])
    outcome = runner.execute(dataclasses.replace(msg, **change).to_body())
    forged = "name" in change or "\ud800" in change.get("args", [])
    if forged:
        assert outcome is None and row(msg).state == State.QUEUED
    else:  # the row's call runs, as the general path always allowed
        assert (outcome.result, row(msg).state) == (3, State.DONE)


def test_celery_time_limits_and_task_id_must_be_the_rows():
    msg = queue("tests.tasks.add", [1, 2])
    assert runner.execute(msg.to_body(), limits=header_limits(60.0)) is None
    assert runner.execute(msg.to_body(), task_id="someone:1") is None
    assert row(msg).state == State.QUEUED
    outcome = runner.execute(msg.to_body(), limits=header_limits(None), task_id=msg.task_id)
    assert outcome.result == 3


@pytest.mark.parametrize("backoff", [math.nan, math.inf, 1e308])
def test_a_retry_with_an_unusable_backoff_still_ends_the_attempt(node, backoff):
    if connection.vendor == "mysql" and not math.isfinite(backoff):
        pytest.skip("MySQL/MariaDB cannot store NaN or infinity, so no row holds one")
    if connection.vendor == "sqlite" and math.isnan(backoff):
        pytest.skip("SQLite stores NaN as NULL (refused by the column), so no row holds one")
    msg = queue("tests.tasks.fail", ["once"], node=node.name)
    TaskRun.objects.filter(id=msg.run_id).update(max_attempts=2, retry_backoff=backoff)
    assert runner.execute(msg.to_body()).state == State.FAILED
    run = row(msg)
    assert (run.state, run.attempt, run.attempts[-1]["reason"]) == (State.QUEUED, 2, "exception")


def test_each_outcome_is_logged_once_at_its_level(caplog):
    caplog.set_level(logging.INFO, logger="distributed_tasks.runner")
    done = queue("tests.tasks.add", [1, 2], name="logged-done")
    failed = queue("tests.tasks.fail", ["boom"], name="logged-failed")
    runner.execute(done.to_body())
    runner.execute(failed.to_body())
    lines = [r for r in caplog.records if getattr(r, "action", "") in ("done", "failed")]
    assert [(r.levelno, r.task_name, r.state, r.reason) for r in lines] == [
        (logging.INFO, "logged-done", "DONE", ""),
        (logging.ERROR, "logged-failed", "FAILED", "exception"),
    ]
    for record, msg in zip(lines, (done, failed), strict=True):
        assert (record.run_id, record.attempt) == (msg.run_id, 1)
        assert record.duration is not None and record.duration >= 0


def test_celerys_success_line_for_the_entry_task_goes_to_debug(caplog):
    caplog.set_level(logging.INFO, logger="celery.app.trace")
    trace = logging.getLogger("celery.app.trace")
    line = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"
    trace.info(line, {"name": TASK_NAME, "id": "r:1", "runtime": 0.02, "return_value": "'FAILED'"})
    trace.info(line, {"name": "other.task", "id": "o", "runtime": 0.02, "return_value": "None"})
    assert [r.getMessage() for r in caplog.records if r.name == "celery.app.trace"] == [
        "Task other.task[o] succeeded in 0.02s: None"
    ]


def test_an_outcome_the_database_refuses_becomes_a_plain_failed(monkeypatch):
    msg = queue("tests.tasks.add", [1, 2])
    original = store.OrmStore.mark_finished

    def refuse_results(self, msg, outcome, **stamp):
        if outcome.result is not None:
            raise DataError("unsupported Unicode escape sequence")
        return original(self, msg, outcome, **stamp)

    monkeypatch.setattr(store.OrmStore, "mark_finished", refuse_results)
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.reason, run.active_name) == (State.FAILED, "exception", None)
    assert "database refused to store that outcome: DataError" in run.error


def drop_own_connection() -> None:
    """Have the server end this connection mid-write, as MariaDB does on a packet over
    ``max_allowed_packet``; Django sees an OperationalError, as when the server is away."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT CONNECTION_ID()")
            cursor.execute(f"KILL CONNECTION {int(cursor.fetchone()[0])}")
        else:
            pytest.fail("a database server is needed to drop a connection")


def execute_failing_results(monkeypatch, msg, failure) -> list:
    """Execute ``msg`` with ``failure()`` before each write of an outcome with a result
    (the real one: a plain FAILED has none); the outcomes so tried."""
    original, tries = store.OrmStore.mark_finished, []

    def failing(self, msg, outcome, **stamp):
        if outcome.result is not None:
            tries.append(outcome)
            failure()
        return original(self, msg, outcome, **stamp)

    monkeypatch.setattr(store.OrmStore, "mark_finished", failing)
    runner.execute(msg.to_body())
    return tries


@pytest.mark.parametrize("retries", [0, 2])
def test_an_outcome_whose_write_drops_the_connection_while_the_database_answers_fails(
    monkeypatch, retries
):
    """Retried for ever, the run stayed RUNNING and its pool process stuck. A new
    connection answers at once in between, so after ``STRIKES`` such failures the outcome
    counts as refused: a plain FAILED, and a run that succeeded is not run again, however
    many attempts it has left."""
    msg = queue("tests.tasks.add", [1, 2])
    TaskRun.objects.filter(id=msg.run_id).update(max_attempts=1 + retries)
    tries = execute_failing_results(monkeypatch, msg, drop_own_connection)
    assert len(tries) == outcomes.STRIKES
    run = row(msg)
    assert (run.state, run.reason, run.active_name) == (State.FAILED, "exception", None)
    assert (run.attempt, run.executions) == (1, 1)
    assert "The run ended DONE (no error), but the database refused to store" in run.error
    assert f"OperationalError {outcomes.STRIKES} times while the database answered" in run.error


def test_an_outcome_refused_on_a_live_connection_waits_for_the_database(monkeypatch):
    """A write refused while the connection stays up (MariaDB read-only during a
    switchover, a lock wait timeout) is not the outcome's fault: it is retried, however
    many times, and the real outcome is stored once writes work again."""
    msg = queue("tests.tasks.add", [1, 2])
    original, failures = store.OrmStore.mark_finished, [OperationalError(1290, "read-only")]
    failures *= outcomes.STRIKES + 2

    def read_only(self, msg, outcome, **stamp):
        if failures:
            raise failures.pop()
        return original(self, msg, outcome, **stamp)

    monkeypatch.setattr(store.OrmStore, "mark_finished", read_only)
    no_waits = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(resilience, "time", no_waits)  # the backoff, without its waits
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.result, failures) == (State.DONE, 3, [])


def test_a_20_mib_result_ends_its_run_on_every_database():
    """Stored where it fits (PostgreSQL, SQLite); on MariaDB, whose max_allowed_packet is
    16 MiB by default, a FAILED that says why, not a run RUNNING for ever."""
    msg = queue("tests.tasks.megabytes", [20])
    runner.execute(msg.to_body())
    run = row(msg)
    assert run.active_name is None
    if connection.vendor == "mysql":
        assert (run.state, run.reason) == (State.FAILED, "exception")
        assert "max_allowed_packet" in run.error
    else:
        assert (run.state, len(run.result)) == (State.DONE, 20 * 1024 * 1024)


def test_the_loss_of_a_forged_message_ends_nothing():
    """A forged message whose Celery time limit struck before its pool process dropped it."""
    msg = queue("tests.tasks.add", [1, 2])
    forged = dataclasses.replace(msg, function="tests.tasks.fail", args=["x"])
    lost.record_lost([forged.to_body()], lost.LostBy.TIMEOUT, timeout=0.001)
    assert row(msg).state == State.QUEUED
    # A copy of the genuine call with a tiny hard limit of its own, or another Celery id:
    # its loss ended the genuine attempt.
    sent = {"limits": header_limits(None), "task_id": msg.task_id}
    for copy in ({"limits": (0.001, None)}, {"limits": "x"}, {"task_id": "other"}):
        lost.record_lost([msg.to_body()], lost.LostBy.TIMEOUT, **{**sent, **copy})
        assert row(msg).state == State.QUEUED
    lost.record_lost([msg.to_body()], lost.LostBy.CRASH, **sent)  # genuine: tried again
    assert (row(msg).attempt, row(msg).attempts[-1]["reason"]) == (2, "worker_lost")


def test_a_retry_stays_on_this_node_when_placement_cannot_answer():
    """No live node in Redis (as when Redis does not answer): the retry is not lost."""
    msg = queue("tests.tasks.fail", ["once"], node="here@h")
    TaskRun.objects.filter(id=msg.run_id).update(max_attempts=2)
    runner.execute(msg.to_body())
    run = row(msg)
    assert (run.state, run.attempt, run.node) == (State.QUEUED, 2, "here@h")


def test_the_result_is_stored_as_returned_whatever_the_callback_does_to_it():
    """The callback got the result object and put a set in it: the write failed with a
    TypeError, which escaped and left the run RUNNING."""
    msg = queue(
        "tests.tasks.count", ["spoiled-count", {"n": 1}], callback="tests.tasks.spoiling_callback"
    )
    assert runner.execute(msg.to_body()).state == State.DONE
    assert (row(msg).state, row(msg).result) == (State.DONE, {"n": 1})


def pg_over_a_limit() -> None:
    """PostgreSQL's own ProgramLimitExceeded (SQLSTATE 54023, a call of over 100
    arguments): an OperationalError, as a result over jsonb's size limit raises."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT concat(" + ", ".join(["1"] * 101) + ")")


def test_an_outcome_over_a_postgresql_limit_is_refused_at_once(monkeypatch):
    """Retried for ever as "the database is away" (it is an OperationalError): the run
    stayed RUNNING and its pool process stuck."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's limits (SQLSTATE class 54)")
    msg = queue("tests.tasks.add", [1, 2])
    tries = execute_failing_results(monkeypatch, msg, pg_over_a_limit)
    run = row(msg)
    assert (len(tries), run.state, run.reason, run.active_name) == (
        1,
        State.FAILED,
        "exception",
        None,
    )
    assert "database refused to store that outcome: DatabaseError: " in run.error
    assert "cannot pass more than 100 arguments" in run.error


def read_only_session(on: bool) -> None:
    """This connection takes no writes (PostgreSQL: InternalError 25006; MariaDB: 1792),
    as a primary turned standby during a switchover answers."""
    mode = "ONLY" if on else "WRITE"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET SESSION CHARACTERISTICS AS TRANSACTION READ {mode}")
        elif connection.vendor == "mysql":
            cursor.execute(f"SET SESSION TRANSACTION READ {mode}")
        else:
            pytest.fail("a database server is needed for a read-only session")


def test_an_outcome_refused_by_a_read_only_database_waits_for_writes(monkeypatch):
    """PostgreSQL reports a read-only database as an InternalError: it counted as this
    outcome's fault, then the plain FAILED was refused too and its error escaped, the
    run left RUNNING. Writes are away: the outcome waits for them, then is stored."""
    msg = queue("tests.tasks.add", [1, 2])
    original, refusals = store.OrmStore.mark_finished, [3]

    def read_only(self, msg, outcome, **stamp):
        read_only_session(refusals[0] > 0)
        refusals[0] -= 1
        return original(self, msg, outcome, **stamp)

    monkeypatch.setattr(store.OrmStore, "mark_finished", read_only)
    no_waits = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(resilience, "time", no_waits)  # the backoff, without its waits
    try:
        runner.execute(msg.to_body())
    finally:
        read_only_session(False)
    run = row(msg)
    assert (run.state, run.result, refusals) == (State.DONE, 3, [-1])


def test_a_start_refused_by_a_read_only_database_waits_on_a_new_connection(monkeypatch):
    """The fenced start's InternalError escaped, and Celery acknowledged the message: the
    run stayed QUEUED with none. And a connection that a read-only server keeps answering
    is dropped, so the next try reaches the new primary."""
    msg = queue("tests.tasks.add", [1, 2])
    no_waits = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(resilience, "time", no_waits)  # the backoff, without its waits
    read_only_session(True)
    try:
        runner.execute(msg.to_body())
    finally:
        read_only_session(False)
    assert (row(msg).state, row(msg).result) == (State.DONE, 3)


def test_a_plain_failed_the_database_refuses_too_ends_in_a_log_line(monkeypatch, caplog):
    """Nothing escapes the pool process's last write: it says it gave up, and why; the
    watchdog ends the run once its node stops reporting it."""
    msg = queue("tests.tasks.add", [1, 2])

    def refuse_everything(self, msg, outcome, **stamp):
        raise DataError("refused by a trigger")

    monkeypatch.setattr(store.OrmStore, "mark_finished", refuse_everything)
    with caplog.at_level(logging.ERROR, logger="distributed_tasks.runner"):
        runner.execute(msg.to_body())
    assert row(msg).state == State.RUNNING
    (gave_up,) = [r.getMessage() for r in caplog.records if "Gave up" in r.getMessage()]
    assert "refused even a plain FAILED (DataError: refused by a trigger)" in gave_up


def test_a_task_class_that_cannot_be_built_fails_its_run_and_spares_the_node(caplog):
    """Its hook after a lost pool process is called in the node's main process: the
    constructor's error escaped into Celery there. The run ends all the same."""
    msg = queue("tests.tasks.Unbuildable")
    assert runner.execute(msg.to_body()).error == "this task cannot be built"
    died = queue("tests.tasks.Unbuildable")
    assert get_store().mark_running(died, "incarnation")
    with caplog.at_level(logging.ERROR, logger="distributed_tasks.runner"):
        lost.record_lost([died.to_body()], lost.LostBy.CRASH)
        assert hooks.drain()  # the hook runs on the hook thread
    assert (row(died).state, row(died).reason) == (State.FAILED, "worker_lost")
    assert "tests.tasks.Unbuildable could not be created for its on_failure hook" in caplog.text


@pytest.mark.parametrize("as_sent", [True, False], ids=["one-statement", "general"])
def test_a_start_that_committed_though_its_reply_was_lost_runs_its_attempt(
    start_path, as_sent, monkeypatch
):
    """The retry took the committed start for a stale message: the run stayed RUNNING with
    nothing executing it until the watchdog ended it (a failure that never happened)."""
    msg = queue("tests.tasks.add", [1, 2])
    no_waits = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(resilience, "time", no_waits)
    if not as_sent:
        monkeypatch.setattr(fenced_start, "_as_sent", lambda *args: False)
    real, tries = fenced_start.start, []

    def reply_lost(*args, **kwargs):
        tries.append(len(kwargs["stamps"]))  # the earlier tries' times
        truth = real(*args, **kwargs)
        if len(tries) == 1:
            assert truth is not None  # committed...
            raise OperationalError("server closed the connection unexpectedly")  # ...unseen
        return truth

    monkeypatch.setattr(fenced_start, "start", reply_lost)
    assert runner.execute(msg.to_body()).result == 3
    assert tries == [0, 1]
    assert (row(msg).state, row(msg).executions) == (State.DONE, 1)


def test_a_running_attempt_stamped_by_another_start_is_still_stale(start_path):
    """Only this start's own stamp proves the commit was its own: a copy of the message
    (another pool process of the same node) finds the attempt started by the other."""
    msg = queue("tests.tasks.add", [1, 2])
    node_incarnation = ""  # no current node in this process
    assert get_store().mark_running(msg, node_incarnation) is not None
    again = fenced_start.start(msg, None, None, stamps=[timezone.now()])
    assert again is None
    assert (row(msg).state, row(msg).executions) == (State.RUNNING, 1)


def test_an_outcome_stored_though_its_reply_was_lost_is_published(monkeypatch, redis):
    """The retry found the row no longer RUNNING and called the outcome fenced out: its
    status never reached Redis and run_finished was not sent."""
    msg = queue("tests.tasks.add", [1, 2], name="reply-lost")
    no_waits = SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(resilience, "time", no_waits)
    original, tries = store.OrmStore.mark_finished, []

    def reply_lost(self, msg, outcome, **stamp):
        tries.append(stamp["finished_at"])
        stored = original(self, msg, outcome, **stamp)
        if len(tries) == 1:
            assert stored  # committed...
            raise OperationalError("server closed the connection unexpectedly")  # ...unseen
        return stored

    monkeypatch.setattr(store.OrmStore, "mark_finished", reply_lost)
    finished = []

    def receiver(sender, message, outcome, **kwargs):
        finished.append(outcome.state)

    signals.run_finished.connect(receiver, weak=False)
    try:
        assert runner.execute(msg.to_body()).result == 3
    finally:
        signals.run_finished.disconnect(receiver)
    assert len(tries) == 2 and tries[0] < tries[1]  # each try stamps its own time
    assert (row(msg).state, row(msg).result, row(msg).finished_at) == (State.DONE, 3, tries[0])
    assert finished == [State.DONE]
    assert claims.read("default", "reply-lost")["state"] == "DONE"


def test_an_outcome_stamped_by_another_write_is_still_fenced_out():
    msg = queue("tests.tasks.add", [1, 2])
    assert get_store().mark_running(msg, "") is not None
    stamp = timezone.now()
    assert get_store().mark_finished(msg, Outcome.done(3), finished_at=stamp)
    assert get_store().finished_by(msg, Outcome.done(3), [stamp])
    assert not get_store().finished_by(msg, Outcome.done(3), [timezone.now()])


class StoreOfAnEarlierRelease(store.OrmStore):
    """A ``STORE`` written against the signatures before the worker stamped its writes."""

    def mark_running(self, msg, incarnation):
        return super().mark_running(msg, incarnation)

    def mark_finished(self, msg, outcome):
        return super().mark_finished(msg, outcome)


def test_a_store_written_before_the_stamps_still_runs_its_runs(monkeypatch):
    monkeypatch.setattr(fenced_start, "_as_sent", lambda *args: False)  # mark_running
    conf = {**settings.DISTRIBUTED_TASKS, "STORE": f"{__name__}.StoreOfAnEarlierRelease"}
    with override_settings(DISTRIBUTED_TASKS=conf):
        reset_caches()
        try:
            assert isinstance(get_store(), StoreOfAnEarlierRelease)
            msg = queue("tests.tasks.add", [1, 2])
            assert runner.execute(msg.to_body()).result == 3
        finally:
            reset_caches()
    assert (row(msg).state, row(msg).result) == (State.DONE, 3)
