"""``dt_check``: the health report, and its exit codes as a container probe sees them."""

import io
import json

import pytest
from django.core.management import call_command

from tests.support import database_port_variable, needs_a_database_server, poll_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthy_cluster_prints_ok_and_exits_normally(run_command, node, leader):
    out = run_command("dt_check")
    lines = out.splitlines()
    assert lines[0] == "status       healthy"
    assert lines[1].startswith("redis        ok (")
    assert f"leader       beat@test (epoch {leader.epoch})" in lines
    assert any(line.startswith("nodes        1 live: idle@test (") for line in lines)
    assert "active runs  0 QUEUED, 0 RUNNING" in lines


def test_degraded_cluster_lists_its_problems_and_exits_1(node):
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("dt_check", stdout=out)
    assert info.value.code == 1
    lines = out.getvalue().splitlines()
    assert (lines[0], lines[3]) == ("status       degraded", "leader       none")
    assert "- No orchestrator holds the lease" in "\n".join(lines[6:])


def test_json_report(run_command, node, leader):
    data = json.loads(run_command("dt_check", "--json"))
    assert (data["status"], data["problems"], data["leader"]["holder"]) == (
        "healthy",
        [],
        "beat@test",
    )


def test_exit_0_when_healthy(manage_py, node, leader):
    done = manage_py("dt_check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("status       healthy")


def test_exit_1_when_no_orchestrator_leads(manage_py, node):
    done = manage_py("dt_check")
    assert done.returncode == 1, done.stderr
    assert "- No orchestrator holds the lease" in done.stdout


def test_exit_2_when_redis_does_not_answer(manage_py):
    done = manage_py("dt_check", "--json", DT_TEST_REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 2, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["redis"]["ok"], data["database"]["ok"]) == ("down", False, True)


@needs_a_database_server()
def test_exit_2_when_the_database_does_not_answer(manage_py, node, leader):
    done = manage_py("dt_check", "--json", **{database_port_variable(): "1"})
    assert done.returncode == 2, done.stderr
    data = json.loads(done.stdout)
    assert (data["status"], data["redis"]["ok"], data["database"]["ok"]) == ("down", True, False)
    assert data["problems"][0].startswith("The database does not answer")


@pytest.mark.cluster
def test_probe_follows_a_real_orchestrator(cluster_factory, manage_py):
    """Healthy with a real worker and dt_beat; degraded once the only beat is killed."""
    cluster_factory.start_worker("w1@check")
    cluster_factory.start_beat("beat-check")
    try:
        cluster_factory.wait_live("w1@check")
        assert cluster_factory.wait_leader().holder == "beat-check"
        poll_until(
            lambda: manage_py("dt_check").returncode == 0,
            timeout=30,
            interval=0.2,
            message="dt_check to report healthy",
        )
        cluster_factory.kill("beat-check")
        done = poll_until(
            lambda: (d := manage_py("dt_check")).returncode == 1 and d,
            timeout=30,
            interval=0.2,
            message="dt_check to report the lost leader",
        )
        assert "- No orchestrator holds the lease" in done.stdout
    finally:
        cluster_factory.stop("w1@check")
        cluster_factory.stop("beat-check")
