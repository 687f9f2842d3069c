"""The direct Redis publish (envelope.py) writes what Celery's own path writes."""

import base64
import json
import time

import pytest
from django.conf import settings
from django.test import override_settings

from distributed_tasks import celery, envelope, keys
from distributed_tasks.conf import reset_caches
from distributed_tasks.messages import RunMessage

# Fields that differ between any two publishes (fresh uuids, the process, a clock, and a
# span id when an OpenTelemetry SDK is configured: tests/observability sets one up).
VARYING = {("properties", "delivery_tag"), ("properties", "reply_to"), ("headers", "eta"),
           ("headers", "traceparent"), ("headers", "tracestate")}  # fmt: skip


def message(run_id: str, **fields) -> RunMessage:
    base = {"attempt": 1, "node": "env@test", "task_list": "default", "name": f"n-{run_id}",
            "function": "tests.tasks.add", "args": [1, 2], "queued_at": time.time()}  # fmt: skip
    return RunMessage(run_id=run_id, **{**base, **fields})


def pushed(redis) -> dict[str, tuple[bytes, dict]]:
    """Each waiting message by its task id: (list key, envelope)."""
    out = {}
    for key in keys.queue_keys("env@test"):
        for raw in redis.lrange(key, 0, -1):
            env = json.loads(raw)
            out[env["headers"]["id"]] = (key, env)
    return out


def comparable(env: dict) -> dict:
    env = json.loads(json.dumps(env))
    for part, field in VARYING:
        env[part].pop(field, None)
    return env


@pytest.mark.parametrize(
    "fields,countdown",
    [({}, None), ({"timeout": 5.0, "priority": 80}, None), ({"priority": -100}, 3.0)],
)
def test_direct_envelope_matches_celerys(redis, fields, countdown, monkeypatch):
    direct = message("direct", **fields)
    via_celery = message("celery", **fields)
    celery.publish([(direct, countdown)])
    monkeypatch.setattr(envelope, "client", lambda: None)  # Celery's apply_async path
    celery.publish([(via_celery, countdown)])
    got = pushed(redis)
    (key_d, env_d), (key_c, env_c) = got["direct:1"], got["celery:1"]
    assert key_d == key_c  # the same priority list
    assert (env_d["headers"]["eta"] is None) is (countdown is None)
    assert ("traceparent" in env_d["headers"]) is ("traceparent" in env_c["headers"])
    ours, celerys = comparable(env_d), comparable(env_c)
    for env, run_id in ((ours, "direct"), (celerys, "celery")):
        body = json.loads(base64.b64decode(env.pop("body")))
        assert body[0][0]["run_id"] == run_id
        assert body[1:] == [{}, {"callbacks": None, "errbacks": None, "chain": None,
                                 "chord": None}]  # fmt: skip
        for part in ("headers", "properties"):
            for field in ("id", "root_id", "correlation_id", "argsrepr"):
                env[part].pop(field, None)
    assert ours == celerys


def test_project_app_or_amqp_broker_takes_celerys_path():
    ours = settings.DISTRIBUTED_TASKS
    for change in ({"CELERY_APP": "project.celery.app"}, {"BROKER_URL": "amqp://127.0.0.1//"}):
        with override_settings(DISTRIBUTED_TASKS={**ours, **change}):
            reset_caches()
            assert envelope.client() is None
    reset_caches()
    assert envelope.client() is not None


def test_a_batch_is_served_in_its_order_within_each_priority(redis):
    """One LPUSH per list: the worker (BRPOP, from the right) still gets each list's
    messages in the order they were published."""
    batch = [message(f"r{i}", priority=80 if i % 2 else 0) for i in range(6)]
    celery.publish([(m, None) for m in batch])
    served = {}
    for key in keys.queue_keys("env@test"):
        while (raw := redis.rpop(key)) is not None:
            served.setdefault(key, []).append(json.loads(raw)["headers"]["id"])
    assert sorted(served.values()) == [["r0:1", "r2:1", "r4:1"], ["r1:1", "r3:1", "r5:1"]]
