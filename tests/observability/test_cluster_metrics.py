"""Metrics scraped from a real node (prefork, recycled children), a real dt_beat and
/tasks/metrics after a known mix of runs: done, failed, retried, refused, a periodic slot."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from distributed_tasks import AlreadyRunning, InvalidName, start_async
from distributed_tasks.models import PeriodicTaskState
from distributed_tasks.periodic import PeriodicRun
from distributed_tasks.registry import path_of
from tests.cluster.conftest import release as release  # the fixture
from tests.cluster.conftest import wait_finished
from tests.observability.conftest import parse, sample
from tests.support import poll_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NODE, BEAT = "m1@obs", "beat-obs"
ENV = {"DT_TEST_PERIODIC": json.dumps({"broken": {"task": "tests.tasks.Broken", "interval": 2}})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_port(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory):
    return tmp_path_factory.mktemp("spans") / "node.jsonl"


@pytest.fixture(scope="module")
def ports(cluster_factory, spans_file):
    node_port, beat_port = free_port(), free_port()
    # One child per run (--max-tasks-per-child 1): counts of exited children must stay.
    cluster_factory.start_worker(
        NODE,
        concurrency=2,
        args=("--metrics-port", str(node_port), "--max-tasks-per-child", "1"),
        DT_LOG_JSON="1",  # README's JSON logging config
        DT_TEST_SPANS_FILE=str(spans_file),  # the pool processes' spans
        PROMETHEUS_MULTIPROC_DIR=str(spans_file.parent),  # not shared with other test runs
        **ENV,
    )
    cluster_factory.spawn(
        BEAT, ["dt_beat", "--name", BEAT, "--metrics-port", str(beat_port)], **ENV
    )
    cluster_factory.wait_live(NODE)
    cluster_factory.wait_leader()
    return node_port, beat_port


def test_counters_histograms_and_gauges_after_a_known_mix(
    ports, scraper, redis, release, cluster_factory, spans, spans_file
):
    node_port, beat_port = ports
    # Let 'broken' fail at least once, then disable it (as the admin does) and let it settle:
    # the database's counts are then what every metric must say.
    poll_until(
        lambda: PeriodicTaskState.objects.filter(name="broken", failures__gte=1).exists(),
        timeout=30,
        message=lambda: f"a slot of 'broken' to fail: {_periodic_rows()}",
    )
    PeriodicTaskState.objects.filter(name="broken").update(enabled=False)
    periodic = poll_until(_periodic_settled, timeout=30, message="'broken' to settle")
    web_before = scraper()
    for i in range(3):
        start_async("tests.tasks.add", [i, 1], name=f"obs-add-{i}")
    start_async("tests.tasks.fail", ["boom"], name="obs-fail")
    retried = start_async(
        "tests.tasks.fail", ["again"], name="obs-retry", max_attempts=2, retry_backoff=0.1
    )
    chatty = start_async("tests.tasks.chatty", ["hello"], name="obs-chatty")
    start_async("tests.tasks.wait_for", [release("obs:go")], name="obs-wait")
    with pytest.raises(AlreadyRunning):
        start_async("tests.tasks.add", [0, 0], name="obs-wait")
    with pytest.raises(InvalidName):
        start_async("tests.tasks.add", [0, 0], name="bad\nname")
    for name in ("obs-add-0", "obs-add-1", "obs-add-2", "obs-fail", "obs-retry", "obs-chatty"):
        wait_finished(name)

    # While obs-wait runs: node gauges on the node's own port and on /tasks/metrics.
    poll_until(
        lambda: _running(node_port),
        timeout=30,
        message=lambda: f"obs-wait to run on the node: {_seen(node_port)}",
    )
    node = scrape_port(node_port)
    web = scraper()
    for samples in (node, web):
        assert sample(samples, "dt_node_live", node=NODE) == 1
        assert sample(samples, "dt_node_capacity", node=NODE) == 2
        assert sample(samples, "dt_node_active_runs", node=NODE) == 1
        assert sample(samples, "dt_node_executing", node=NODE) == 1
        assert sample(samples, "dt_node_queue_depth", node=NODE) == 0
        assert 0 <= sample(samples, "dt_node_heartbeat_age_seconds", node=NODE) < 5
    assert sample(web, "dt_runs_active", state="RUNNING") == 1

    def delta(name, **labels):
        return (sample(web, name, **labels) or 0) - (sample(web_before, name, **labels) or 0)

    assert delta("dt_runs_started_total", task_list="default") == 7
    assert delta("dt_runs_refused_total", task_list="default", reason="already_running") == 1
    assert delta("dt_runs_refused_total", task_list="default", reason="invalid") == 1
    assert sample(web, "dt_periodic_failures_total", task="broken") == periodic.failures
    assert sample(web, "dt_periodic_skips_total", task="broken") == periodic.skips
    assert sample(web, "dt_leader", holder=BEAT) == 1 and sample(web, "dt_leader_epoch") >= 1

    redis.set("obs:go", 1)
    wait_finished("obs-wait")
    node = scrape_port(node_port)

    def finished(function, state, reason=""):
        labels = {"function": function, "task_list": "default", "state": state, "reason": reason}
        return sample(node, "dt_runs_finished_total", **labels)

    assert finished("tests.tasks.add", "DONE") == 3
    assert finished("tests.tasks.wait_for", "DONE") == 1
    assert finished("tests.tasks.chatty", "DONE") == 1
    assert finished("tests.tasks.fail", "FAILED", "exception") == 2
    assert finished(path_of(PeriodicRun), "FAILED", "exception") == periodic.failures
    retry_labels = {"function": "tests.tasks.fail", "task_list": "default", "reason": "exception"}
    assert sample(node, "dt_runs_retried_total", **retry_labels) == 1
    # Every attempt is timed (3 of fail: two final, one retried); queue waits of first attempts.
    assert sample(node, "dt_run_duration_seconds_count", function="tests.tasks.add") == 3
    assert sample(node, "dt_run_duration_seconds_count", function="tests.tasks.fail") == 3
    assert sample(node, "dt_run_queue_wait_seconds_count", function="tests.tasks.add") == 3
    assert sample(node, "dt_run_duration_seconds_sum", function="tests.tasks.add") > 0
    assert sample(node, "dt_node_queue_depth", node=NODE) == 0
    assert sample(node, "dt_node_active_runs", node=NODE) == 0

    beat = scrape_port(beat_port)
    assert sample(beat, "dt_leader_elections_total", holder=BEAT) == 1
    assert sample(beat, "dt_lease_renewals_total", holder=BEAT) >= 1
    slots = {
        dict(labels)["outcome"]: value
        for (name, labels), value in beat.items()
        if name == "dt_periodic_slots_total" and dict(labels)["task"] == "broken"
    }
    assert slots.pop("dispatched") == periodic.failures  # each dispatched slot failed
    for again in ("already_dispatched", "unavailable", "pending"):  # tried again: no skip
        slots.pop(again, None)
    assert sum(slots.values()) == periodic.skips  # no_node, skipped
    assert sample(beat, "dt_leader", holder=BEAT) == 1

    # Logs: JSON lines; the user's own record and ours carry the run's fields.
    lines = cluster_factory.log(NODE, tail=10**7).splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]

    def fields(record):
        keys = ("run_id", "task_name", "task_list", "node", "attempt")
        return tuple(record.get(k) for k in keys)

    (said,) = [r for r in records if r["logger"] == "tests.tasks"]
    assert said["message"] == "chatty says hello"
    assert fields(said) == (chatty.run_id, "obs-chatty", "default", NODE, 1)
    assert said["function"] == "tests.tasks.chatty"
    retry_lines = [r for r in records if r.get("action") == "retry"]
    assert [fields(r) for r in retry_lines] == [(retried.run_id, "obs-retry", "default", NODE, 1)]

    # Traces across processes: each start's producer span here is the parent of the
    # dt.run span a prefork pool process of the node ended.
    produced = {
        s.attributes["dt.name"]: s for s in spans.get_finished_spans() if s.name == "dt.start"
    }
    runs = [json.loads(line) for line in spans_file.read_text().splitlines()]
    for name in ("obs-add-0", "obs-add-1", "obs-add-2", "obs-chatty"):
        (run,) = [r for r in runs if r["name"] == "dt.run" and r["attributes"]["dt.name"] == name]
        assert run["parent_span_id"] == produced[name].context.span_id
        assert run["trace_id"] == produced[name].context.trace_id
        assert (run["kind"], run["attributes"]["dt.outcome"]) == ("CONSUMER", "DONE")
        assert run["attributes"]["dt.node"] == NODE


def _periodic_settled() -> PeriodicTaskState | None:
    """The disabled task's row once every slot it dispatched has ended and been counted
    (a slot claimed just before the switch may still be on its way to a node)."""
    from distributed_tasks.models import TaskRun

    row = PeriodicTaskState.objects.get(name="broken")
    runs = TaskRun.objects.filter(name="periodic:broken")
    if runs.exclude(state="FAILED").exists() or runs.count() != row.failures:
        return None
    return row


def _gauges(port: int) -> tuple[float | None, float | None]:
    """The node's active runs and the runs its heartbeat says it executes."""
    samples = scrape_port(port)
    return tuple(
        sample(samples, g, node=NODE) for g in ("dt_node_active_runs", "dt_node_executing")
    )


def _running(port: int) -> bool:
    """obs-wait is the node's one active run, its heartbeat says it executes it, and its
    row says RUNNING. The heartbeat counts a run from the moment the pool process takes
    it, before the process marks the row: under load the scrape could fall in between."""
    from distributed_tasks.models import TaskRun

    return (
        _gauges(port) == (1, 1)
        and TaskRun.objects.filter(name="obs-wait", state="RUNNING").exists()
    )


def _seen(port: int) -> str:
    """What ``_running`` read, for the message of a missed deadline."""
    return f"(active, executing) {_gauges(port)}, {_periodic_rows()}"


def _periodic_rows() -> str:
    from distributed_tasks.models import TaskRun

    return repr(
        (
            list(PeriodicTaskState.objects.values()),
            list(TaskRun.objects.values("name", "state", "node", "attempt", "reason", "error")),
        )
    )
