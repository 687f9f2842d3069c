"""The flush between transactional tests survives being a deadlock's victim (tests/flush.py).

Another session plays the leader's fenced write: it holds the flush's last table and,
once the TRUNCATE waits for it, asks for the first one, which the TRUNCATE holds.
"""

import threading
from collections.abc import Callable

import pytest
from django.db import connection, connections, transaction
from django.test import TransactionTestCase

from tests.flush import lost_a_lock_conflict
from tests.support import poll_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgresql]

TRUNCATE_WAITS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'TRUNCATE%%'
"""


def flush_beside_a_writer(teardown: Callable[[TransactionTestCase], None]) -> None:
    """Run ``teardown`` while another session writes the flush's tables in the other order."""
    if connection.vendor != "postgresql":
        pytest.fail("this deadlock is PostgreSQL's: run the suite on PostgreSQL")
    # The flush's own order: the same set, built the same way, in this process.
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    quote = connection.ops.quote_name
    first, last = quote(tables[0]), quote(tables[-1])
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with transaction.atomic(), connections["default"].cursor() as cursor:
                cursor.execute("SET LOCAL deadlock_timeout = '30s'")  # the flush finds it
                cursor.execute(f"LOCK TABLE {last} IN ROW EXCLUSIVE MODE")
                held.set()

                def truncate_waits() -> bool:
                    cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction's is kept
                    cursor.execute(TRUNCATE_WAITS)
                    return cursor.fetchone()[0] > 0

                poll_until(truncate_waits, timeout=10, message="the TRUNCATE to wait")
                cursor.execute(f"LOCK TABLE {first} IN ROW EXCLUSIVE MODE")
        except BaseException as error:  # the test thread reports it
            failure.append(error)
        finally:
            held.set()
            connections["default"].close()

    held = threading.Event()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        held.wait(10)
        teardown(TransactionTestCase())
    finally:
        thread.join(30)
    assert not failure, failure


def test_django_s_flush_alone_fails_as_the_deadlock_s_victim():
    unwrapped = TransactionTestCase._fixture_teardown.__wrapped__
    with pytest.raises(Exception) as raised:
        flush_beside_a_writer(unwrapped)
    assert lost_a_lock_conflict(raised.value), raised.value


def test_the_teardown_flushes_again_and_empties_the_tables():
    from distributed_tasks.models import Leadership

    Leadership.objects.create(id=1, epoch=7)
    flush_beside_a_writer(TransactionTestCase._fixture_teardown)
    assert not Leadership.objects.exists()
