"""``dt_start``: registered functions only, JSON arguments, the API's errors as CommandErrors."""

import json

import pytest
from django.conf import settings
from django.core.management.base import CommandError

from distributed_tasks import claims, keys
from distributed_tasks.models import TaskRun
from tests.support import database_port_variable, needs_a_database_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_starts_a_registered_function(run_command, node):
    out = run_command("dt_start", "tests.tasks.add", "[1, 2]", "--name", "sum-1")
    run = TaskRun.objects.get(name="sum-1")
    assert (run.function, run.args, run.state, run.node) == (
        "tests.tasks.add",
        [1, 2],
        "QUEUED",
        node.name,
    )
    assert f"Started: 'sum-1' in task list 'default', run {run.run_id}" in out
    assert f"on node {node.name}" in out


def test_json_output_is_the_handle(run_command, node):
    out = run_command(
        "dt_start", "tests.tasks.count", '["k"]', "--kwargs", '{"result": {"a": 1}}',
        "--name", "n", "--task-list", "ci", "--callback", "tests.tasks.record",
        "--timeout", "2.5", "--max-attempts", "3", "--retry-backoff", "0.5", "--json",
    )  # fmt: skip
    handle = json.loads(out)
    run = TaskRun.objects.get(name="n")
    assert handle == {
        "name": "n", "run_id": run.run_id, "node": node.name, "task_list": "ci",
        "attempt": 1, "existing": False,
        "queued_at": run.queued_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }  # fmt: skip
    assert (run.kwargs, run.callback, run.timeout, run.max_attempts, run.retry_backoff) == (
        {"result": {"a": 1}},
        "tests.tasks.record",
        2.5,
        3,
        0.5,
    )


def test_without_a_name_a_uuid_is_used(run_command, node):
    handle = json.loads(run_command("dt_start", "tests.tasks.add", "[1, 2]", "--json"))
    assert len(handle["name"]) == 32
    assert TaskRun.objects.get().name == handle["name"]


def test_a_second_start_is_refused_or_returns_the_existing_run(run_command, node):
    run_command("dt_start", "tests.tasks.add", "[1, 2]", "--name", "dup")
    with pytest.raises(CommandError, match="'dup' in task list 'default' is already QUEUED"):
        run_command("dt_start", "tests.tasks.add", "[1, 2]", "--name", "dup")
    out = run_command(
        "dt_start", "tests.tasks.add", "[1, 2]", "--name", "dup", "--on-conflict", "return_existing"
    )
    assert out.startswith("Already active: 'dup'")
    assert TaskRun.objects.filter(name="dup").count() == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["os.system", '["true"]'], "'os.system' is not a registered distributed task"),
        (["tests.tasks.ad", "[1, 2]"], "Did you mean 'tests.tasks.add'?"),
        (["tests.tasks.add", "[1,"], "is not valid JSON"),
        (["tests.tasks.add", '{"a": 1}'], "is JSON dict; pass a JSON list"),
        (["tests.tasks.add", "--kwargs", "[1]"], "is JSON list; pass a JSON object"),
        (["tests.tasks.add", "--callback", "os.remove"], "'os.remove' is not a registered"),
        (["tests.tasks.add", "--timeout", "0"], "greater than 0"),
        (["tests.tasks.add", "--timeout", "nan"], "greater than 0"),
        (["tests.tasks.add", "--max-attempts", "0"], "must be 1 or more"),
        (["tests.tasks.add", "--retry-backoff", "-1"], "greater than 0"),
        (["tests.tasks.add", "--name", "x" * 201], "1 to 200 characters"),
        (["tests.tasks.add", "--on-conflict", "ignore"], "invalid choice: 'ignore'"),
        (["tests.tasks.add", "[1]", "--kwargs", '{"b": "' + "x" * 300_000 + '"}'],
         "MAX_PAYLOAD_BYTES"),
        (["tests.tasks.add", '["\\ud800"]'], "lone surrogate"),
        (["tests.tasks.add", "[" * 200 + "]" * 200], "nested more than 100 levels"),
        (["tests.tasks.add", "[" * 100_000 + "]" * 100_000], "nests too deeply"),
        (["tests.tasks.add", "--max-attempts", str(2**40)], "at most"),
        (["tests.tasks.add", "--timeout", "1e12"], "at most"),
        (["tests.tasks.add", "--name", "   "], "only whitespace"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_changes_nothing(run_command, node, argv, words):
    with pytest.raises(CommandError, match=words.replace("(", r"\(").replace("?", r"\?")):
        run_command("dt_start", *argv)
    assert TaskRun.objects.count() == 0


@needs_a_database_server()
def test_database_down_is_an_error_not_a_traceback(manage_py, node, redis):
    """A subprocess whose database server is a proxy that was killed: one line, exit 1."""
    from tests.proxy import TcpProxy

    db = settings.DATABASES["default"]
    proxy = TcpProxy(db["HOST"], int(db["PORT"])).start()
    proxy.stop()  # its port now refuses connections, as a crashed server's would
    argv = ["dt_start", "tests.tasks.add", "[1]", "--name", "x"]
    done = manage_py(*argv, **{database_port_variable(): str(proxy.port)})
    assert done.returncode == 1
    assert "CommandError: The database does not answer" in done.stderr
    assert "Traceback" not in done.stderr
    assert not redis.exists(keys.run_key("default", "x"))
    assert int(redis.hget(keys.loads_key(), node.name) or 0) == 0


def test_no_live_node_is_an_error_that_says_what_to_start(run_command):
    with pytest.raises(CommandError, match="No live node serves task list 'default'"):
        run_command("dt_start", "tests.tasks.add", "[1, 2]", "--name", "lonely")
    assert TaskRun.objects.count() == 0
    assert claims.read("default", "lonely") == {}
