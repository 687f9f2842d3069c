"""``dt_cancel``: ends QUEUED runs, asks RUNNING ones to stop, refuses finished ones."""

import json

import pytest
from django.core.management.base import CommandError

from distributed_tasks import State, claims, mirror, runner, start_async
from distributed_tasks.models import TaskRun
from distributed_tasks.store import get_store, message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancels_a_queued_run(run_command, node):
    handle = start_async(tasks.add, [1, 2], name="unwanted", task_list="ci")
    out = run_command("dt_cancel", "unwanted", "--task-list", "ci")
    assert out.strip() == (
        f"Cancelled 'unwanted' in task list 'ci' (run {handle.run_id}): FAILED (cancelled)."
    )
    run = TaskRun.objects.get(id=handle.run_id)
    assert (run.state, run.reason, run.active_name) == ("FAILED", "cancelled", None)


def test_json_output_is_the_new_status(run_command, node):
    start_async(tasks.add, [1, 2], name="unwanted")
    data = json.loads(run_command("dt_cancel", "unwanted", "--json"))
    assert (data["state"], data["reason"]) == ("FAILED", "cancelled")


def test_a_running_run_is_asked_to_stop_forced_after_the_grace(run_command, node):
    handle = start_async(tasks.add, [1, 2], name="busy")
    run = TaskRun.objects.get(name="busy")
    msg = message_for(run)
    assert get_store().mark_running(msg, "incarnation")
    mirror.publish(msg, claims.message_fields(msg, State.RUNNING))
    out = run_command("dt_cancel", "busy", "--force", "--grace", "4", "--by", "erin")
    assert out.strip() == (
        f"Asked 'busy' in task list 'default' (run {handle.run_id}, RUNNING on idle@test) to "
        "stop (forced after the grace period); dt_status shows when it ended."
    )
    row = TaskRun.objects.get(name="busy")
    assert (row.state, row.cancel_requested_by) == ("RUNNING", "erin")
    assert (row.cancel_deadline - row.cancel_requested_at).total_seconds() == pytest.approx(4)


def test_unknown_name_is_an_error(run_command):
    with pytest.raises(CommandError, match="No run of 'never-ran' in task list 'default'"):
        run_command("dt_cancel", "never-ran")


def test_a_finished_run_is_refused_without_a_traceback(manage_py, node):
    start_async(tasks.add, [1, 2], name="finished")
    run = TaskRun.objects.get(name="finished")
    runner.execute(message_for(run).to_body())
    result = manage_py("dt_cancel", "finished")
    assert result.returncode == 1
    assert "'finished' in task list 'default' already finished DONE at " in result.stderr
    assert "nothing to cancel" in result.stderr
    assert "Traceback" not in result.stderr
