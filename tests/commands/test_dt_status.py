"""``dt_status``: the state of a name as text or JSON."""

import json

import pytest
from django.core.management.base import CommandError

from distributed_tasks import (
    State,
    api,
    claims,
    mirror,
    progress,
    report_progress,
    runner,
    start_async,
)
from distributed_tasks.models import TaskRun
from distributed_tasks.store import message_for
from tests import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def execute(name: str) -> None:
    runner.execute(message_for(TaskRun.objects.get(name=name)).to_body())


def test_queued_run_as_text(run_command, node):
    handle = start_async(tasks.add, [1, 2], name="sum")
    out = run_command("dt_status", "sum")
    lines = dict(line.rsplit("  ", 1) for line in out.splitlines())
    lines = {label.strip(): value for label, value in lines.items()}
    assert (lines["task list"], lines["state"], lines["run"], lines["node"], lines["finished"]) == (
        "default",
        "QUEUED",
        handle.run_id,
        node.name,
        "-",
    )


def test_done_run_shows_its_result(run_command, node):
    start_async(tasks.count, ["k"], {"result": {"answer": 42}}, name="counted")
    execute("counted")
    out = run_command("dt_status", "counted")
    assert "state      DONE" in out
    assert '"answer": 42' in out


def test_a_result_in_any_script_reads_as_written(run_command, node):
    start_async(tasks.count, ["k"], {"result": {"café": "東京 ✓"}}, name="unicode")
    execute("unicode")
    out = run_command("dt_status", "unicode")
    assert '"café": "東京 ✓"' in out
    assert json.loads(run_command("dt_status", "unicode", "--json"))["result"] == {"café": "東京 ✓"}


def test_failed_run_shows_its_error(run_command, node):
    start_async(tasks.fail, ["broken"], name="bad-run", task_list="ci")
    execute("bad-run")
    out = run_command("dt_status", "bad-run", "--task-list", "ci")
    assert "state      FAILED" in out
    assert "reason     exception" in out
    assert "error      ValueError: broken" in out


def test_a_multi_line_result_prints_as_indented_json_lines(run_command, node):
    result = {"lines": ["one", "two"], "nested": {"depth": 2}}
    start_async(tasks.count, ["k"], {"result": result}, name="nested")
    execute("nested")
    out = run_command("dt_status", "nested")
    assert "\\n" not in out  # line breaks, not escapes of them
    shown = out[out.index("result     {") :].splitlines()
    assert all(line.startswith(" " * 11) for line in shown[1:])  # under the first line
    assert json.loads("\n".join(line[11:] for line in shown)) == result


def test_an_error_keeps_its_lines_and_tabs_but_escapes_terminal_controls(run_command, node):
    start_async(tasks.fail, ["first\n\tsecond\x1b[2J\rthird\x9b"], name="evil")
    execute("evil")
    out = run_command("dt_status", "evil")
    assert not {"\x1b", "\r", "\x9b"} & set(out)  # no escape sequence reaches the terminal
    assert out.endswith("error      ValueError: first\n           \tsecond\\x1b[2J\\rthird\\x9b\n")


def test_json_output_is_the_status(run_command, node):
    handle = start_async(tasks.add, [1, 2], name="sum")
    execute("sum")
    data = json.loads(run_command("dt_status", "sum", "--json"))
    assert (data["name"], data["state"], data["run_id"], data["result"]) == (
        "sum",
        "DONE",
        handle.run_id,
        3,
    )
    assert data["finished_at"].endswith("Z")  # ISO 8601, UTC


def test_unknown_name_is_not_found(run_command):
    out = run_command("dt_status", "never-ran")
    assert out.startswith("'never-ran' in task list 'default': NOT_FOUND")
    assert json.loads(run_command("dt_status", "never-ran", "--json"))["state"] == "NOT_FOUND"


def test_bad_name_is_a_usage_error(run_command):
    with pytest.raises(CommandError, match="non-printable"):
        run_command("dt_status", "bell\x07")


def test_history_lists_every_attempt_of_a_retried_run(run_command, node):
    from distributed_tasks import retry

    start_async(tasks.fail, ["disk full"], name="twice")
    execute("twice")
    retry("twice")
    out = run_command("dt_status", "twice", "--history")
    assert "state      QUEUED" in out and "error" not in out.split("attempt  node")[0]
    rows = [line.split() for line in out.split("attempt  node")[1].splitlines()[1:]]
    assert [row[:4] for row in rows] == [
        ["1", node.name, "FAILED", "exception"],
        ["2", node.name, "QUEUED", "-"],
    ]
    assert out.rstrip().splitlines()[-2].endswith("ValueError: disk full")
    data = json.loads(run_command("dt_status", "twice", "--history", "--json"))
    assert [(a["attempt"], a["state"]) for a in data["history"]] == [(1, "FAILED"), (2, "QUEUED")]
    assert (data["state"], data["error"]) == ("QUEUED", None)


def test_progress_and_a_cancel_request_are_shown(run_command, node):
    start_async(tasks.report_many, [4], name="shown")
    run = TaskRun.objects.get(name="shown")
    TaskRun.objects.filter(id=run.id).update(state="RUNNING")
    mirror.publish(message_for(run), claims.message_fields(message_for(run), State.RUNNING))
    api.cancel("shown", by="frank")
    with progress.running(message_for(run)):
        report_progress(0.42, "half way", items=21)
    out = run_command("dt_status", "shown")
    assert 'progress   42% half way {"items": 21}' in out
    assert "cancel     asked by frank at " in out
