"""A refused or failed start writes nothing: no row, no claim, no load count, no message.

Every bad input of issue 11 item 5 is refused before the claim; a failure after the
claim (PostgreSQL taken away through a proxy, the broker down) is rolled back for
every entry of the batch. Afterwards a valid start of the same name succeeds.
"""

import contextlib

import pytest
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.db.utils import load_backend
from django.test import override_settings

from distributed_tasks import (
    ClusterUnavailable,
    InvalidConfiguration,
    InvalidName,
    InvalidOption,
    NotSerializable,
    cancel,
    get_status,
    keys,
    retry,
    start_async,
    start_many,
)
from distributed_tasks.conf import reset_caches
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store
from tests import tasks
from tests.proxy import TcpProxy
from tests.support import needs_a_database_server, queued

pytestmark = pytest.mark.django_db(transaction=True)


def deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


BAD = {
    "lone surrogate": ({"args": ["\ud800"]}, NotSerializable),
    "surrogate in a kwargs key": ({"kwargs": {"\udc00": 1}}, NotSerializable),
    "max_attempts 2**40": ({"max_attempts": 2**40}, InvalidOption),
    "countdown NaN": ({"countdown": float("nan")}, InvalidOption),
    "countdown inf": ({"countdown": float("inf")}, InvalidOption),
    "countdown 1e12": ({"countdown": 1e12}, InvalidOption),
    "timeout NaN": ({"timeout": float("nan")}, InvalidOption),
    "retry_backoff inf": ({"retry_backoff": float("inf")}, InvalidOption),
    "deeply nested args": ({"args": [deep(50_000)]}, NotSerializable),
    "a set as args": ({"args": {1, 2}}, NotSerializable),
    "whitespace-only task list": ({"task_list": "   "}, InvalidName),
}


def nothing_left(redis, name: str, node: str = "idle@test", task_list: str = "default", loads=0):
    assert not TaskRun.objects.filter(name=name).exists(), "a row"
    assert not redis.exists(keys.run_key(task_list, name)), "a claim"
    assert int(redis.hget(keys.loads_key(), node) or 0) == loads, "a load count"
    assert len(queued(redis, node)) == loads, "a message"


def starts_again(name: str) -> None:
    handle = start_async(tasks.add, [1, 2], name=name)
    assert TaskRun.objects.get(name=name).run_id == handle.run_id


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_before_anything_is_written(node, redis, case):
    options, error = BAD[case]
    call = {"func": tasks.add, "args": [1, 2], "name": "bad", **options}
    with pytest.raises(error):
        start_async(**call)
    with pytest.raises(error):  # one bad entry refuses the whole batch
        start_many([{"func": tasks.add, "args": [3, 4], "name": "good"}, call])
    nothing_left(redis, "bad")
    nothing_left(redis, "good")
    starts_again("bad")


@pytest.mark.parametrize("name", [" ", "    "])
def test_whitespace_only_names_are_refused(node, redis, name):
    with pytest.raises(InvalidName, match="only whitespace"):
        start_async(tasks.add, [1, 2], name=name)
    assert TaskRun.objects.count() == 0 and queued(redis, node.name) == []


@pytest.mark.parametrize(
    "entry", [("add", [1, 2]), {"func": tasks.add, "name": "bad", "countdwon": 5}]
)
def test_start_many_entries_that_are_not_mappings_of_known_keys(node, redis, entry):
    with pytest.raises(InvalidOption, match="Entry 1"):
        start_many([{"func": tasks.add, "args": [1, 2], "name": "good"}, entry])
    nothing_left(redis, "good")
    nothing_left(redis, "bad")


@pytest.fixture
def database_proxy():
    """The store on a second connection to the test database, through a proxy the test kills
    (a connection made at run time: the test's database isolation allows it)."""
    target = connections["default"].settings_dict
    proxy = TcpProxy(target["HOST"] or "127.0.0.1", int(target["PORT"] or 5432)).start()
    proxied = {**target, "HOST": "127.0.0.1", "PORT": str(proxy.port)}
    connections["proxied"] = load_backend(target["ENGINE"]).DatabaseWrapper(proxied, "proxied")
    conf = {**settings.DISTRIBUTED_TASKS, "DATABASE_ALIAS": "proxied"}
    try:
        with override_settings(DISTRIBUTED_TASKS=conf):
            yield proxy
    finally:
        proxy.stop()
        connections["proxied"].close()
        del connections["proxied"]
        reset_caches()


@needs_a_database_server()
def test_reads_cancels_and_retries_with_the_database_away_say_so(node, redis, database_proxy):
    """The README's promise: never a driver's exception. Each says what to do next."""
    start_async(tasks.add, [1, 2], name="kept")  # recorded through the proxy
    redis.delete(keys.run_key("default", "kept"))  # a cache miss: the read needs the database
    database_proxy.stop()
    for call, then in [
        (lambda: get_status("kept"), "cannot be read now"),
        (lambda: cancel("kept"), "may not be recorded: check get_status('kept')"),
        (lambda: retry("kept"), "may not be recorded: check get_status('kept')"),
    ]:
        with pytest.raises(ClusterUnavailable, match="The database does not answer") as info:
            call()
        assert then in str(info.value)
    database_proxy.start()
    assert get_status("kept").state == "QUEUED"  # the broken connection was dropped


@needs_a_database_server()
def test_task_records_are_read_where_runs_are_kept(node, redis, database_proxy):
    """``TaskRun.find``/``all`` read ``DATABASE_ALIAS``, as ``get_status`` does."""
    start_async(tasks.add, [1, 2], name="kept")
    assert TaskRun.find("default", "kept")._state.db == "proxied"
    assert [run._state.db for run in TaskRun.all("default")] == ["proxied"]


@needs_a_database_server()
def test_database_down_after_the_claim_rolls_back_every_entry(node, redis, database_proxy):
    start_async(tasks.add, [1, 2], name="through-proxy")  # the proxied store works
    TaskRun.objects.all().delete()
    redis.delete(keys.run_key("default", "through-proxy"), keys.loads_key())
    redis.delete(*keys.queue_keys(node.name))
    database_proxy.stop()
    with pytest.raises(ClusterUnavailable, match="database does not answer"):
        start_async(tasks.add, [1, 2], name="one")
    with pytest.raises(ClusterUnavailable, match="database does not answer"):
        start_many([{"func": tasks.add, "args": [i, i], "name": f"many-{i}"} for i in range(3)])
    for name in ["one", "many-0", "many-1", "many-2"]:
        nothing_left(redis, name)
    database_proxy.start()
    connections["proxied"].close()
    starts_again("one")
    assert len(start_many([{"func": tasks.add, "name": f"many-{i}"} for i in range(3)])) == 3


def test_broker_down_rolls_back_the_row_claim_and_load(node, redis):
    conf = {**settings.DISTRIBUTED_TASKS, "BROKER_URL": "redis://127.0.0.1:1/0"}
    with override_settings(DISTRIBUTED_TASKS=conf), pytest.raises(ClusterUnavailable, match="brok"):
        start_many([{"func": tasks.add, "args": [i, i], "name": f"b-{i}"} for i in range(2)])
    for name in ["b-0", "b-1"]:
        nothing_left(redis, name)
    starts_again("b-0")


def test_a_batch_the_broker_refused_half_way_names_the_entries_that_went_out(
    node, redis, monkeypatch
):
    """kombu without ``Producer.batch`` (RabbitMQ) publishes one message at a time: the
    broker can go away after the first. That entry runs, so the error must say so (and
    carry its handle), not that nothing was started; the others are undone."""
    from kombu.exceptions import OperationalError as KombuError

    from distributed_tasks import celery

    real = celery.publish

    def first_only(messages, **kwargs):
        messages = list(messages)
        real(messages[:1], **kwargs)
        try:
            raise KombuError("Connection reset by peer")
        except KombuError as exc:
            raise celery.PublishFailed(1) from exc

    monkeypatch.setattr(celery, "publish", first_only)
    with pytest.raises(ClusterUnavailable) as raised:
        start_many([{"func": tasks.add, "args": [i, i], "name": f"half-{i}"} for i in range(3)])
    (first,) = raised.value.started
    message = str(raised.value)
    assert "nothing was started" not in message
    assert "The Celery broker does not answer (Connection reset by peer)" in message
    assert f"'half-0' (run {first.run_id}) went out before that and will run" in message
    assert TaskRun.objects.get(name="half-0").run_id == first.run_id
    assert [m for m in queued(redis, node.name)], "its message"
    nothing_left(redis, "half-1", loads=1)  # half-0's load and message
    nothing_left(redis, "half-2", loads=1)


@contextlib.contextmanager
def autocommit_off():
    """Manual transaction management on the default connection; rolled back and undone."""
    connection = connections["default"]
    connection.set_autocommit(False)
    try:
        yield
    finally:
        connection.rollback()
        connection.set_autocommit(True)


def test_a_start_under_manual_transaction_management_is_refused_and_says_how(
    node, redis, monkeypatch
):
    """Autocommit off and no atomic block: the row would not be committed when the message
    went out (the worker found no row and dropped it), and a rollback left a status."""
    with autocommit_off():
        with pytest.raises(InvalidConfiguration, match=r"inside transaction\.atomic\(\)"):
            start_async(tasks.add, [1, 2], name="manual")
        with pytest.raises(InvalidConfiguration, match="autocommit off"):
            start_many([{"func": tasks.add, "name": "manual"}])
    connection = connections["default"]
    connection.close()  # AUTOCOMMIT: False in DATABASES, read before connecting
    monkeypatch.setitem(connection.settings_dict, "AUTOCOMMIT", False)
    with pytest.raises(InvalidConfiguration, match="autocommit off"):
        start_async(tasks.add, [1, 2], name="manual")
    monkeypatch.setitem(connection.settings_dict, "AUTOCOMMIT", True)
    nothing_left(redis, "manual")
    starts_again("manual")


def test_a_retry_under_manual_transaction_management_is_refused_too(node, redis):
    from django.utils import timezone

    from distributed_tasks import retry

    start_async(tasks.add, [1, 2], name="failed")
    ended = {"state": "FAILED", "active_name": None, "finished_at": timezone.now()}
    TaskRun.objects.filter(name="failed").update(**ended)
    with autocommit_off(), pytest.raises(InvalidConfiguration, match="autocommit off"):
        retry("failed")
    assert TaskRun.objects.get(name="failed").state == "FAILED"
    assert retry("failed").attempt == 2


def test_a_cancel_under_manual_transaction_management_is_refused_before_any_write(node, redis):
    """Its status and signals wait for a commit hook that does not exist there."""
    from distributed_tasks import cancel

    start_async(tasks.add, [1, 2], name="kept")
    refused = pytest.raises(InvalidConfiguration, match="Cancelling a run with autocommit off")
    with autocommit_off(), refused:
        cancel("kept")
    assert TaskRun.objects.get(name="kept").state == "QUEUED"
    assert cancel("kept").state == "FAILED"


def test_redis_down_at_the_claim_is_cluster_unavailable_and_writes_nothing(node, redis):
    """Placement still has its cached view of the nodes; the claim finds Redis gone."""
    proxy = TcpProxy("127.0.0.1", redis.connection_pool.connection_kwargs["port"]).start()
    conf = {**settings.DISTRIBUTED_TASKS, "REDIS_URL": proxy.url(settings.REDIS_URL)}
    try:
        with override_settings(DISTRIBUTED_TASKS=conf):
            start_async(tasks.add, [1, 2], name="warm")  # caches the live nodes
            proxy.stop()
            with pytest.raises(ClusterUnavailable, match="Redis does not answer"):
                start_async(tasks.add, [1, 2], name="cold")
    finally:
        proxy.stop()
        reset_caches()
    assert not TaskRun.objects.filter(name="cold").exists()
    assert not redis.exists(keys.run_key("default", "cold"))
    assert int(redis.hget(keys.loads_key(), node.name)) == 1  # "warm" only
    assert len(queued(redis, node.name)) == 1
    starts_again("cold")


def test_a_batch_failing_half_way_through_its_inserts_leaves_no_row(node, redis, monkeypatch):
    """A conflict makes the batch insert one by one; the database dies after the first."""
    start_async(tasks.add, [1, 2], name="held")  # an active row...
    redis.delete(keys.run_key("default", "held"))  # ...whose claim Redis lost
    store, calls = get_store(), []
    real_insert = type(store).insert

    def insert(self, run):
        calls.append(run.name)
        if len(calls) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real_insert(self, run)

    monkeypatch.setattr(type(store), "insert", insert)
    with pytest.raises(ClusterUnavailable, match="database does not answer"):
        start_many([{"func": tasks.add, "name": "fresh"}, {"func": tasks.add, "name": "held"}])
    assert calls == ["fresh", "held"]  # "fresh" had its row before the failure
    assert not TaskRun.objects.filter(name="fresh").exists()
    assert not redis.exists(keys.run_key("default", "fresh"))
    assert int(redis.hget(keys.loads_key(), node.name)) == 1  # "held" only
    assert len(queued(redis, node.name)) == 1


def test_a_batch_whose_database_goes_away_mid_fallback_commits_no_row(node, redis, monkeypatch):
    """The one-by-one fallback is one transaction: rows inserted before the database went
    away are not left committed when it is still away for the rollback (review item 5)."""
    start_async(tasks.add, [1, 2], name="held")  # an active row whose claim Redis lost:
    redis.delete(keys.run_key("default", "held"))  # the batch insert conflicts
    store, calls = get_store(), []
    real_insert = type(store).insert

    def insert(self, run):
        calls.append(run.name)
        if run.name == "held":
            raise OperationalError("server closed the connection unexpectedly")
        return real_insert(self, run)

    def delete(self, run_id):
        raise OperationalError("the database is still away")

    monkeypatch.setattr(type(store), "insert", insert)
    monkeypatch.setattr(type(store), "delete", delete)
    with pytest.raises(ClusterUnavailable, match="database does not answer"):
        start_many([{"func": tasks.add, "name": "fresh"}, {"func": tasks.add, "name": "held"}])
    assert calls == ["fresh", "held"]
    nothing_left(redis, "fresh", loads=1)  # "held" keeps its count


def test_a_connection_lost_as_an_interface_error_is_the_database_away(node, redis, monkeypatch):
    """PyMySQL reports a connection lost mid-query as an InterfaceError, which Django does
    not count as a DatabaseError: the start still says the database does not answer, and
    the failed rollback of its row still gives its claim back (MySQL/MariaDB by hand)."""
    store = get_store()

    def lost(*args, **kwargs):
        raise InterfaceError(0, "")

    monkeypatch.setattr(type(store), "insert_many", lost)
    monkeypatch.setattr(type(store), "delete", lost)
    with pytest.raises(ClusterUnavailable, match="database does not answer"):
        start_async(tasks.add, [1, 2], name="lost")
    nothing_left(redis, "lost")


def test_a_row_committed_before_its_reply_was_lost_is_not_called_nothing_started(
    node, redis, monkeypatch
):
    """The INSERT commits, its reply is lost and the database is still away for the
    DELETE: the row stays (the orchestrator publishes it later), so the error must not
    say "nothing was started" but which run may start, and what to check."""
    store = get_store()
    real_insert_many = type(store).insert_many

    def committed_then_lost(self, rows):
        real_insert_many(self, rows)
        raise OperationalError("server closed the connection unexpectedly")

    def away(self, run_id):
        raise OperationalError("the database is still away")

    monkeypatch.setattr(type(store), "insert_many", committed_then_lost)
    monkeypatch.setattr(type(store), "delete", away)
    with pytest.raises(ClusterUnavailable) as raised:
        start_async(tasks.add, [1, 2], name="kept")
    run = TaskRun.objects.get(name="kept")
    message = str(raised.value)
    assert "nothing was started" not in message
    assert "database does not answer" in message
    assert f"'kept' (run {run.run_id}) may have been recorded" in message
    assert "get_status()" in message
    assert run.state == "QUEUED"  # for the orchestrator to publish once it is back
    assert not redis.exists(keys.run_key("default", "kept")), "its claim was given back"
