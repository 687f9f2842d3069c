import pytest
from django.test import override_settings

from distributed_tasks.exceptions import (
    InvalidName,
    InvalidOption,
    NotRegistered,
    NotSerializable,
    PayloadTooLarge,
)
from distributed_tasks.validation import check_name, prepare
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
