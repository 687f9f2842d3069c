import dataclasses
import subprocess

import pytest
from django.conf import settings
from django.test import override_settings

from distributed_tasks.exceptions import InvalidConfiguration
from distributed_tasks.nodes import Heartbeat, NodeInfo, live_nodes, live_twin
from distributed_tasks.worker import WorkerNode, WorkerOptions


@pytest.fixture
def beats():
    started = []

    def start(name, **kw):
        beat = Heartbeat(NodeInfo(name=name, **kw))
        beat.start()
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop(leave=True)


def test_heartbeat_makes_a_node_live_with_its_info(beats, poll):
    beat = beats("w1@h", weight=3, task_lists=("reports",))
    view = poll(lambda: (v := live_nodes()).nodes and v, message="node live")
    info = view.nodes["w1@h"]
    assert (info.weight, info.task_lists, info.incarnation) == (
        3,
        ("reports",),
        beat.info.incarnation,
    )
    assert info.serves("reports") and not info.serves("default")
    assert view.age("w1@h") < 2
    assert view.version >= 1


def test_leaving_removes_the_node_at_once(beats, poll):
    beat = beats("w1@h")
    poll(lambda: "w1@h" in live_nodes().nodes, message="node live")
    version = live_nodes().version
    beat.stop(leave=True)
    view = live_nodes()
    assert "w1@h" not in view.nodes
    assert view.version > version


@override_settings(
    DISTRIBUTED_TASKS={
        "NODE_TIMEOUT": 0.5,
        "HEARTBEAT_INTERVAL": 0.1,
        "REDIS_URL": settings.REDIS_URL,
    }
)
def test_a_silent_node_times_out(beats, poll):
    beat = beats("w1@h")
    poll(lambda: "w1@h" in live_nodes().nodes, message="node live")
    beat.stop(leave=False)
    poll(lambda: "w1@h" not in live_nodes().nodes, timeout=3, message="node timed out")


def test_duplicate_node_names_are_reported(beats, poll, caplog):
    beats("same@h")
    other = beats("same@h")
    poll(lambda: other.beats > 1 and other._warned_duplicate, message="duplicate warning")
    assert "unique --node" in caplog.text


def test_fields_of_a_newer_version_do_not_make_a_node_unreadable():
    info = NodeInfo(name="newer@test", weight=2)
    raw = info.to_json()[:-1] + ',"added_later":{"x":1}}'
    assert NodeInfo.from_json(raw, last_seen_ms=5) == dataclasses.replace(info, last_seen_ms=5)


def test_a_worker_refuses_a_name_another_live_process_heartbeats_under(beats, poll):
    """Two processes under one name would take each other's runs for lost (review 3)."""
    twin = beats("twin@h", host="elsewhere")
    poll(lambda: twin.beats > 0, message="twin beats")
    assert live_twin(NodeInfo(name="twin@h")) == twin.info
    with pytest.raises(InvalidConfiguration, match="dt_worker -n other@%h"):
        WorkerNode(WorkerOptions(node="twin@h")).run()


def test_a_crashed_predecessor_on_this_host_does_not_delay_a_restart(beats, poll):
    gone = subprocess.Popen(["true"])
    gone.wait()
    crashed = beats("crashed@h", pid=gone.pid)
    poll(lambda: crashed.beats > 0, message="first beat")
    crashed.stop(leave=False)  # its heartbeat stays fresh for NODE_TIMEOUT
    assert live_twin(NodeInfo(name="crashed@h")) is None
