"""The shared output helpers of the commands: streaming table, JSON array, progress bar."""

import io
import json

import pytest

from distributed_tasks import cli


def test_table_takes_widths_from_its_sample_and_cuts_later_rows():
    out = io.StringIO()
    table = cli.Table(out, ["A", "B"], sample=2)
    table.add(["x", 1])
    table.add(["yy", None])
    assert out.getvalue() == "A   B\nx   1\nyy  -\n"
    table.add(["zzzz", 2])
    table.close()
    assert out.getvalue().splitlines()[-1] == "z…  2"


def test_table_with_fewer_rows_than_its_sample_prints_on_close():
    out = io.StringIO()
    table = cli.Table(out, ["NAME"])
    table.add(["a"])
    assert out.getvalue() == ""
    table.close()
    assert out.getvalue() == "NAME\na\n"


def test_json_array_streams_valid_json():
    out = io.StringIO()
    assert cli.write_json_array(out, iter([{"a": 1}, {"b": 2}])) == 2
    assert json.loads(out.getvalue()) == [{"a": 1}, {"b": 2}]
    empty = io.StringIO()
    cli.write_json_array(empty, [])
    assert json.loads(empty.getvalue()) == []


def test_progress_draws_a_bar_and_ends_the_line():
    out = io.StringIO()
    progress = cli.Progress(4, out, label="runs", enabled=True, width=4)
    for _ in range(4):
        progress.advance()
    progress.close()
    assert out.getvalue().endswith("\rruns [####] 4/4\n")
    assert out.getvalue().startswith("\rruns [#...] 1/4")


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    progress = cli.Progress(4, out, label="runs", enabled=False)
    progress.advance(4)
    progress.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "soon"])
def test_positive_float_refuses(value):
    with pytest.raises(Exception, match="seconds"):
        cli.positive_float(value)
