"""A node runs only what its rows hold, and no message stops it (issue 11 items 2 and 3).

Anyone who can write to the broker can put a message on ``dt.node.<node>``. A
forged run message (a real run, attempt and node, but another function, arguments
or name) runs nothing; raw bytes, unknown task names, malformed bodies and Celery's
``shutdown`` broadcast are logged and dropped while the node keeps serving.
"""

import dataclasses

import pytest
from kombu import Producer

from distributed_tasks import State, celery, keys, start_async
from distributed_tasks.health import queue_depths
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks
from tests.cluster.conftest import finished
from tests.faults.conftest import NODE, serves_again
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def test_a_forged_message_runs_only_what_the_row_holds(serving, redis):
    name = "genuine"
    # Its own message waits 4 s (countdown): the forged ones arrive first.
    start_async(tasks.count, [f"count:{name}", "row"], name=name, countdown=4)
    run = TaskRun.objects.get(name=name)
    genuine = message_for(run)
    forged = [
        dataclasses.replace(genuine, args=["count:forged", "message"]),
        dataclasses.replace(genuine, function="tests.tasks.sleep", args=[0.1]),
        dataclasses.replace(genuine, name="someone-else"),
        dataclasses.replace(genuine, timeout=99.0),
    ]
    celery.publish([(msg, None) for msg in forged])
    poll_until(
        lambda: serving.log(NODE, tail=50_000).count("that disagrees with its row") >= len(forged),
        timeout=20,
        message="the forged messages to be dropped",
    )
    assert TaskRun.objects.get(id=run.id).state == State.QUEUED  # untouched by them
    status = poll_until(finished(name), timeout=30, message=f"{name} to run")
    assert (status.state, status.result) == (State.DONE, "row")
    assert (redis.get(f"count:{name}"), redis.get("count:forged")) == (b"1", None)
    serves_again(serving, "after-forged")


def poison(app) -> None:
    """Raw bytes, a pickle, an unknown task, and our task with bodies that are not run
    messages."""
    queue = keys.queue_name(NODE)
    with app.producer_or_acquire() as producer:
        assert isinstance(producer, Producer)
        producer.publish(
            b"\x00\xffnot a message", routing_key=queue, content_type="application/data",
            content_encoding="binary",
        )  # fmt: skip
        producer.publish("plain text", routing_key=queue, content_type="application/text")
        producer.publish({"task": "nobody.knows"}, routing_key=queue, serializer="json")
        for content_type in ("application/data", "application/x-python-serialize"):
            producer.publish(
                b"\x80raw", routing_key=queue, content_type=content_type,
                content_encoding="binary", headers={"task": celery.TASK_NAME, "id": "x:1"},
            )  # fmt: skip
    app.send_task("no.such.task", args=[1], queue=queue)
    for args in (["not an object"], [], [{"run_id": 1}], [{}, "extra"]):
        app.send_task(celery.TASK_NAME, args=args, queue=queue)
    # Time limits the pool's timer cannot take: they stopped the node (review).
    for limits in ({"time_limit": "x"}, {"soft_time_limit": {}}, {"time_limit": float("nan")}):
        app.send_task(celery.TASK_NAME, args=[{}], queue=queue, **limits)


def test_poison_messages_are_dropped_and_the_node_keeps_serving(serving):
    poison(celery.get_app())
    poll_until(lambda: queue_depths([NODE]) == {NODE: 0}, timeout=20, message="the queue drained")
    serves_again(serving, "after-poison")


def test_a_shutdown_broadcast_does_not_stop_the_node(serving):
    app = celery.get_app()
    assert app.control.ping(destination=[NODE], timeout=1.0) == []  # remote control is off
    app.control.shutdown(destination=[NODE])
    app.control.broadcast("shutdown")
    serves_again(serving, "after-shutdown")
    assert app.control.ping(destination=[NODE], timeout=1.0) == []
    assert serving.running(NODE)
