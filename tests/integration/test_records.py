"""Task records (the Ruby task gem): data, find/all, as_dict/from_dict round trips."""

import datetime as dt
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed_tasks import runner
from distributed_tasks.models import TaskRun
from distributed_tasks.records import data_attr
from distributed_tasks.store import get_store, message_for
from distributed_tasks.validation import prepare
from tests import tasks

pytestmark = pytest.mark.django_db

# What validation lets through: strict JSON without NUL characters (PostgreSQL refuses them).
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               max_size=20)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text
    # Below 1e16: PostgreSQL's JSONB stores numbers, not their text, and gives 1e+16 back
    # as the integer 10000000000000000; smaller floats keep their ".0" and come back floats.
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)  # fmt: skip
names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
                max_size=50).filter(str.isprintable)  # fmt: skip
moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                       timezones=st.just(dt.UTC))  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=names,
    task_list=names,
    args=st.lists(json_values, max_size=4),
    data=st.dictionaries(text, json_values, max_size=5),
    result=json_values,
    queued_at=moments,
    finished=st.booleans(),
)
def test_as_dict_from_dict_round_trips_through_json_and_the_database(
    name, task_list, args, data, result, queued_at, finished
):
    run = TaskRun(
        id=uuid.uuid4(),
        name=name,
        task_list=task_list,
        function="tests.tasks.add",
        args=args,
        data=data,
        result=result,
        queued_at=queued_at,
        state="DONE" if finished else "QUEUED",
        finished_at=queued_at + dt.timedelta(seconds=3) if finished else None,
        active_name=None if finished else name,
    )
    wire = json.loads(json.dumps(run.as_dict()))
    copy = TaskRun.from_dict(wire)
    assert copy.as_dict() == run.as_dict()
    TaskRun.objects.filter(task_list=task_list, active_name=name).delete()
    copy.save()
    stored = TaskRun.objects.get(id=run.id)
    assert stored.as_dict() == run.as_dict()
    stored.delete()


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ValueError, match="Unknown TaskRun fields"):
        TaskRun.from_dict({"name": "x", "colour": "red"})


def test_data_reaches_the_task_through_data_attr():
    request = prepare(
        tasks.FetchFile, name="fetch", data={"external_host": "datto.com", "filename": "file1.txt"}
    )
    run = TaskRun(
        id=uuid.uuid4(),
        name="fetch",
        active_name="fetch",
        function=request.function,
        data=request.data,
        node="w@h",
    )
    get_store().insert(run)
    outcome = runner.execute(message_for(run).to_body())
    assert outcome.result == "https://datto.com/file1.txt"
    assert TaskRun.find("default", "fetch").data == {
        "external_host": "datto.com",
        "filename": "file1.txt",
    }


def test_data_attr_defaults_and_missing_keys():
    class Record:
        data = {"filename": "a.txt"}
        filename = data_attr()
        host = data_attr("external_host")
        port = data_attr(default=443)

    record = Record()
    assert (record.filename, record.port) == ("a.txt", 443)
    with pytest.raises(AttributeError, match="no data key 'external_host'"):
        _ = record.host
    record.host = "datto.com"
    assert record.data["external_host"] == "datto.com"


def test_the_store_is_a_setting(settings):
    from distributed_tasks.conf import reset_caches
    from distributed_tasks.store import OrmStore

    class CountingStore(OrmStore):
        pass

    settings.DISTRIBUTED_TASKS = {
        **settings.DISTRIBUTED_TASKS,
        "STORE": "tests.integration.test_records.CountingStore",
    }
    reset_caches()
    globals()["CountingStore"] = CountingStore
    assert type(get_store()) is CountingStore
