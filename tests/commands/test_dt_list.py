"""``dt_list``: runs from the database, filtered, newest first, streamed."""

import datetime as dt
import io
import json

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from distributed_tasks.models import TaskRun

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def record(name, state="DONE", *, node="w1@h", task_list="default", ago=0.0, **fields):
    active = state in ("QUEUED", "RUNNING")
    return TaskRun.objects.create(
        name=name,
        task_list=task_list,
        active_name=name if active else None,
        function="tests.tasks.add",
        state=state,
        node=node,
        queued_at=NOW - dt.timedelta(seconds=ago),
        **fields,
    )


@pytest.fixture
def runs():
    return [
        record(
            "old-done", "DONE", ago=50, started_at=NOW, finished_at=NOW + dt.timedelta(seconds=2)
        ),
        record("failed", "FAILED", ago=40, reason="exception"),
        record("running", "RUNNING", node="w2@h", ago=30),
        record("queued", "QUEUED", task_list="ci", ago=20),
        record("newest", "QUEUED", ago=10),
    ]


def names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:] if not line.startswith("Showing")]


def test_lists_runs_newest_first_as_a_table(run_command, runs):
    out = run_command("dt_list")
    header, *rows = out.splitlines()
    assert header.split() == [
        "NAME",
        "LIST",
        "STATE",
        "NODE",
        "TRY",
        "FUNCTION",
        "QUEUED",
        "TOOK",
        "REASON",
    ]
    assert names(out) == ["newest", "queued", "running", "failed", "old-done"]
    assert rows[-1].split()[-2:] == ["2.0s", "-"]  # duration of old-done, no reason
    assert rows[-2].split()[-1] == "exception"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--state", "queued"], ["newest", "queued"]),
        (["--state", "active"], ["newest", "queued", "running"]),
        (["--state", "finished"], ["failed", "old-done"]),
        (["--state", "DONE", "--state", "running"], ["running", "old-done"]),
        (["--task-list", "ci"], ["queued"]),
        (["--node", "w2@h"], ["running"]),
        (["--state", "active", "--node", "w1@h", "--task-list", "default"], ["newest"]),
    ],
)
def test_filters(run_command, runs, argv, expected):
    assert names(run_command("dt_list", *argv)) == expected


def test_limit_says_what_it_left_out(run_command, runs):
    out = run_command("dt_list", "--limit", "2")
    assert names(out) == ["newest", "queued"]
    assert out.splitlines()[-1] == "Showing the newest 2 of 5 runs; raise --limit to see more."


def test_json_is_an_array_of_runs(run_command, runs):
    data = json.loads(run_command("dt_list", "--json", "--state", "finished"))
    assert [r["name"] for r in data] == ["failed", "old-done"]
    assert data[1]["run_id"] == runs[0].run_id
    assert (data[1]["state"], data[1]["duration"], data[0]["reason"]) == ("DONE", 2.0, "exception")
    assert dt.datetime.fromisoformat(data[1]["queued_at"]) <= NOW
    assert json.loads(run_command("dt_list", "--json", "--node", "nowhere")) == []


def test_nothing_matches(run_command, runs):
    assert run_command("dt_list", "--task-list", "empty").strip() == "No runs match."


def test_many_rows_stream_with_widths_from_the_first_rows(run_command):
    TaskRun.objects.bulk_create(
        TaskRun(
            name=f"run-{i:04d}", function="f", state="DONE", queued_at=NOW - dt.timedelta(seconds=i)
        )
        for i in range(600)
    )
    record("a-much-longer-name-than-the-others", ago=10_000)
    out = run_command("dt_list", "--limit", "1000")
    lines = out.splitlines()
    assert len(lines) == 1 + 601
    assert names(out)[:2] == ["run-0000", "run-0001"]
    # The oldest row came after the widths were set from the first 200: it is cut, not wider.
    assert lines[-1].startswith("a-much-…")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--state", "lost"], "'lost' is not a run state; use one of QUEUED, RUNNING, DONE"),
        (["--limit", "0"], "0 must be 1 or more"),
        (["--task-list", "x" * 201], "task list must be 1 to 200 characters"),
    ],
)
def test_bad_arguments(run_command, argv, words):
    with pytest.raises(CommandError, match=words):
        run_command("dt_list", *argv)


def test_no_progress_bar_when_not_on_a_terminal(run_command, runs):
    err = io.StringIO()
    run_command("dt_list", stderr=err)
    assert err.getvalue() == ""
