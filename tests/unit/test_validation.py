import json

import pytest
from django.test import override_settings
from hypothesis import example, given
from hypothesis import strategies as st

from distributed_tasks.exceptions import (
    InvalidName,
    InvalidOption,
    NotRegistered,
    NotSerializable,
    PayloadTooLarge,
)
from distributed_tasks.validation import _too_deep, check_name, prepare, prepare_many
from tests import tasks


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters"),
        ("tab\there", "non-printable"),
        ("new\nline", "non-printable"),
        ("nul\x00", "non-printable"),
        (42, "must be a string"),
    ],
)
def test_bad_names(name, message):
    with pytest.raises(InvalidName, match=message):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "x" * 200, "compile-1", "with space", "ünïcødé"])
def test_good_names(name):
    assert check_name(name) == name


def test_default_name_is_uuid4_hex():
    request = prepare(tasks.add, [1, 2])
    assert len(request.name) == 32
    int(request.name, 16)


def test_unregistered_function():
    with pytest.raises(NotRegistered):
        prepare("builtins.print", ["x"])


def test_unregistered_callback():
    with pytest.raises(NotRegistered):
        prepare(tasks.add, [1, 2], callback="os.remove")


def test_non_json_args():
    with pytest.raises(NotSerializable, match="cannot be encoded as JSON"):
        prepare(tasks.add, [object(), 2])


def test_nan_is_not_json():
    with pytest.raises(NotSerializable):
        prepare(tasks.add, [float("nan"), 2])


def test_args_must_be_a_sequence():
    with pytest.raises(NotSerializable, match="list or tuple"):
        prepare(tasks.add, "12")


def test_kwargs_need_string_keys():
    with pytest.raises(NotSerializable, match="string keys"):
        prepare(tasks.add, [], {1: 2})


@override_settings(DISTRIBUTED_TASKS={"MAX_PAYLOAD_BYTES": 100})
def test_payload_limit():
    prepare(tasks.add, ["x" * 50])
    with pytest.raises(PayloadTooLarge, match="MAX_PAYLOAD_BYTES allows 100"):
        prepare(tasks.add, ["x" * 200])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("on_conflict", "ignore"),
        ("reuse", "sometimes"),
        ("timeout", 0),
        ("timeout", "5"),
        ("max_attempts", 0),
        ("max_attempts", 1.5),
        ("countdown", -1),
    ],
)
def test_bad_options(option, value):
    with pytest.raises(InvalidOption, match=option):
        prepare(tasks.add, [1, 2], **{option: value})


def test_defaults_come_from_the_registration():
    request = prepare("tests.tasks.with_options")
    assert (request.timeout, request.max_attempts) == (7, 3)


@pytest.mark.parametrize("value", ["nul\x00", {"k\x00": 1}, [["\x00"]]])
def test_nul_characters_are_refused_before_any_database_sees_them(value):
    with pytest.raises(NotSerializable, match="NUL character"):
        prepare(tasks.add, [value, 1])


def test_a_literal_backslash_u0000_is_fine():
    assert prepare(tasks.add, ["\\u0000", 1]).args == ["\\u0000", 1]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("countdown", float("nan")),
        ("countdown", float("inf")),
        ("countdown", 1e12),
        ("timeout", float("nan")),
        ("timeout", float("-inf")),
        ("retry_backoff", float("inf")),
        ("retry_backoff", float("nan")),
        ("max_attempts", 2**40),
        ("max_attempts", 2**2000),  # too large for a float: still a clear refusal
    ],
)
def test_numbers_must_be_finite_and_fit_their_column(option, value):
    with pytest.raises(InvalidOption, match=f"{option} must be .* at most"):
        prepare(tasks.add, [1, 2], **{option: value})


def test_the_largest_values_pass():
    request = prepare(tasks.add, [1, 2], max_attempts=2**31 - 1, countdown=3e8, timeout=3e8)
    assert (request.max_attempts, request.countdown) == (2**31 - 1, 3e8)


@pytest.mark.parametrize("depth", [101, 5_000, 100_000])
def test_deep_nesting_is_refused_without_a_recursion_error(depth):
    with pytest.raises(NotSerializable, match="nested more than 100 levels"):
        prepare(tasks.add, [nested(depth)])


def test_nesting_is_measured_outside_strings():
    prepare(tasks.add, [nested(100)])
    prepare(tasks.add, ["[" * 500, {"k": "{" * 500}])  # brackets in strings are text
    prepare(tasks.add, ['"[' * 500])  # with escaped quotes
    with pytest.raises(NotSerializable, match="nested"):
        prepare(tasks.add, ["]" * 500, nested(101)])


@pytest.mark.parametrize(
    "call",
    [
        {"args": ["\ud800"]},
        {"kwargs": {"k": "a\udfffb"}},
        {"kwargs": {"\ud83d": 1}},
        {"data": {"d": ["\udc00"]}},
    ],
)
def test_lone_surrogates_are_refused(call):
    with pytest.raises(NotSerializable, match="lone surrogate"):
        prepare(tasks.add, **call)


def test_surrogate_pairs_and_other_unicode_pass():
    assert prepare(tasks.add, ["😀 ünï"]).args == ["😀 ünï"]


@pytest.mark.parametrize("name", [" ", "    "])
def test_whitespace_only_names_are_refused(name):
    with pytest.raises(InvalidName, match="only whitespace"):
        prepare(tasks.add, [1, 2], name=name)
    with pytest.raises(InvalidName, match="only whitespace"):
        prepare(tasks.add, [1, 2], task_list=name)


@pytest.mark.parametrize("args", [{1, 2}, frozenset([1]), iter([1, 2]), range(2)])
def test_args_that_are_not_a_list_or_tuple_are_refused(args):
    with pytest.raises(NotSerializable, match="list or tuple"):
        prepare(tasks.add, args)


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([{"func": tasks.add, "args": [1, 2]}, ("add", [1])], "Entry 1 .* mapping"),
        ([{"func": tasks.add, "nmae": "typo"}], r"unknown keys \['nmae'\]"),
        ([{"args": [1, 2]}], "no 'func'"),
        ({"func": tasks.add}, "list of mappings"),
        ("func", "list of mappings"),
    ],
)
def test_start_many_entries_must_be_mappings_of_known_keys(calls, message):
    with pytest.raises(InvalidOption, match=message):
        prepare_many(calls)


def true_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(true_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(true_depth, value.values()), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)


@given(JSON, st.integers(min_value=0, max_value=8))
@example("[", 0)  # brackets only inside a string, limit 0: once read as too deep
@example([["]"]], 2)
def test_depth_is_measured_exactly_whatever_the_strings_hold(value, limit):
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert _too_deep(raw, limit) is (true_depth(value) > limit)
