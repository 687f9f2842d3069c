"""Checking a start before anything is written.

Every bad input is refused here with a message that says the rule, so a start
either passes all checks or changes nothing (no claim, no row, no message). The
checks cover what the stores would refuse later: numbers outside their column
(or not finite), strings that are not strict UTF-8 or hold NUL, and nesting deep
enough to overflow a decoder's stack. The payload is encoded once, by the C
encoder; only a payload with more brackets than ``MAX_DEPTH`` is measured for its
depth (a few C-speed passes over its brackets), so a common start costs a few
microseconds here.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distributed_tasks import registry, signals
from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import (
    InvalidName,
    InvalidOption,
    NotSerializable,
    PayloadTooLarge,
)
from distributed_tasks.messages import check_nul
from distributed_tasks.models import NAME_MAX_LENGTH
from distributed_tasks.types import MAX_SECONDS, OnConflict, Reuse

# Deeper arguments (or kwargs, data values) are refused: decoders (Python's json,
# PostgreSQL's jsonb) recurse, and a message must not overflow a worker's stack.
MAX_DEPTH = 100
# max_attempts is a PositiveIntegerField: a 32-bit signed integer on PostgreSQL.
MAX_ATTEMPTS = 2**31 - 1

_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_STRING = re.compile(rb'"[^"]*"')
# The allowed values of the choice options, read once (iterating an enum costs microseconds).
_ON_CONFLICT = tuple(c.value for c in OnConflict)
_REUSE = tuple(c.value for c in Reuse)


def check_name(value: Any, what: str = "name") -> str:
    """Names and task lists: 1-200 printable characters, not only whitespace."""
    if not isinstance(value, str):
        raise InvalidName(f"The task {what} must be a string, got {type(value).__name__}.")
    if not 1 <= len(value) <= NAME_MAX_LENGTH:
        raise InvalidName(
            f"The task {what} must be 1 to {NAME_MAX_LENGTH} characters long, got {len(value)}."
        )
    if not value.isprintable():
        raise InvalidName(
            f"The task {what} {value!r} contains control or other non-printable characters; "
            "use printable characters only."
        )
    if value.isspace():
        raise InvalidName(f"The task {what} {value!r} is only whitespace; give it a visible name.")
    return value


def _choice(value: Any, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:  # a tuple: == per item, so an unhashable value is refused too
        raise InvalidOption(f"{option}={value!r} is not one of {', '.join(map(repr, choices))}.")
    return value


def _positive(value: Any, option: str, maximum: float, *, integer: bool = False) -> Any:
    """``value`` if it is a number in (0, maximum]; NaN, infinities and huge ints fail the range."""
    kind = int if integer else (int, float)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value <= maximum:
        noun = "a whole number" if integer else "a finite number"
        raise InvalidOption(
            f"{option} must be {noun} greater than 0 and at most {maximum:g}, got {value!r}."
        )
    return value


def _too_deep(raw: bytes, limit: int) -> bool:
    """Whether the JSON ``raw`` nests deeper than ``limit``, in a few C-speed passes.

    Outside strings only brackets matter: escaped backslashes and quotes (inside
    strings) go first, then everything but quotes and brackets, then strings; each
    ``replace`` then removes one level of ``[]`` until nothing is left.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(_ONE_KIND, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in marks:  # some strings hold brackets
        marks = _STRING.sub(b"", marks)
    for _ in range(limit):
        if not marks:
            return False
        marks = marks.replace(b"[]", b"")
    return bool(marks)  # brackets left after ``limit`` levels (none at all: not too deep)


def encode_payload(value: Any, name: str) -> bytes:
    """``value`` as the UTF-8 JSON every store and decoder accepts, or ``NotSerializable``."""
    try:
        text = _ENCODER.encode(value)
        check_nul(text)
        raw = text.encode()  # strict UTF-8: a lone surrogate ("\\ud800") fails here
    except RecursionError:
        reason = f"nested more than {MAX_DEPTH} levels deep"
    except UnicodeEncodeError:
        reason = "a string holds a lone surrogate (such as '\\ud800'), which is not UTF-8"
    except (TypeError, ValueError) as exc:
        reason = str(exc)
    else:
        if not _too_deep(raw, MAX_DEPTH + 2):  # + the lists [args, kwargs, data] and args
            return raw
        reason = f"nested more than {MAX_DEPTH} levels deep"
    raise NotSerializable(
        f"args/kwargs/data of {name!r} cannot be encoded as JSON ({reason}). Pass "
        "JSON-compatible values (str, numbers, bools, None, lists, dicts) such as ids, not "
        "objects."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """A validated start: nothing in it can fail to encode or be refused later."""

    function: str
    args: list[Any]
    kwargs: dict[str, Any]
    name: str
    task_list: str
    callback: str
    on_conflict: str
    reuse: str
    timeout: float | None
    max_attempts: int
    retry_backoff: float
    data: dict[str, Any]
    countdown: float | None
    priority: int = 0


def check_priority(value: Any) -> int:
    """Django's range: a whole number from -100 to 100, higher runs first."""
    if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 100:
        raise InvalidOption(
            f"priority must be a whole number between -100 and 100 (higher runs first), "
            f"got {value!r}."
        )
    return value


@signals.refuses_invalid  # counted by metrics as refused (invalid)
def prepare(
    func: Any,
    args: Any = (),
    kwargs: Any = None,
    *,
    name: Any = None,
    callback: Any = None,
    task_list: Any = "default",
    on_conflict: Any = OnConflict.FAIL,
    reuse: Any = Reuse.ALLOW,
    timeout: Any = None,
    max_attempts: Any = None,
    retry_backoff: Any = None,
    countdown: Any = None,
    data: Any = None,
    priority: Any = 0,
) -> StartRequest:
    entry = registry.resolve(func)
    callback_path = registry.resolve(callback).path if callback is not None else ""
    name = uuid.uuid4().hex if name is None else check_name(name)
    check_name(task_list, "task list")
    if not isinstance(args, (list, tuple)):
        raise NotSerializable(
            f"args of {name!r} must be a list or tuple of positional arguments, "
            f"got {type(args).__name__}."
        )
    args = list(args)
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise NotSerializable(f"kwargs of {name!r} must be a dict with string keys.")
    data = {} if data is None else data
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise NotSerializable(f"data of {name!r} must be a dict with string keys.")
    size = len(encode_payload([args, kwargs, data], name))
    limit = get_settings().MAX_PAYLOAD_BYTES
    if size > limit:
        raise PayloadTooLarge(
            f"args/kwargs/data of {name!r} are {size} bytes of JSON; MAX_PAYLOAD_BYTES allows "
            f"{limit}. Store large data elsewhere and pass its id."
        )
    timeout = _positive(timeout, "timeout", MAX_SECONDS)
    if timeout is None:
        timeout = entry.timeout if entry.timeout is not None else get_settings().DEFAULT_TIMEOUT
    max_attempts = _positive(max_attempts, "max_attempts", MAX_ATTEMPTS, integer=True)
    return StartRequest(
        function=entry.path,
        args=args,
        kwargs=kwargs,
        name=name,
        task_list=task_list,
        callback=callback_path,
        on_conflict=_choice(on_conflict, _ON_CONFLICT, "on_conflict"),
        reuse=_choice(reuse, _REUSE, "reuse"),
        timeout=timeout,
        max_attempts=max_attempts or entry.max_attempts or 1,
        retry_backoff=_positive(retry_backoff, "retry_backoff", MAX_SECONDS) or 0.0,
        data=data,
        countdown=_positive(countdown, "countdown", MAX_SECONDS),
        priority=check_priority(priority),
    )


# The keys a start_many() entry may hold: prepare()'s own arguments.
_KEYS = frozenset(inspect.signature(prepare).parameters)


def prepare_many(calls: Iterable[Mapping[str, Any]]) -> list[StartRequest]:
    """Every entry of a ``start_many`` batch, validated before any is written."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Iterable):
        raise InvalidOption(
            f"start_many() takes a list of mappings (one per start), got {type(calls).__name__}."
        )
    requests = []
    for index, call in enumerate(calls):
        if not isinstance(call, Mapping):
            raise InvalidOption(
                f"Entry {index} of start_many() must be a mapping of start_async()'s "
                f"arguments (with 'func'), got {type(call).__name__}."
            )
        if "func" not in call or not _KEYS.issuperset(call):
            unknown = sorted(map(str, set(call) - _KEYS))
            problem = f"unknown keys {unknown}" if unknown else "no 'func'"
            raise InvalidOption(
                f"Entry {index} of start_many() has {problem}; its keys are start_async()'s "
                f"arguments: {', '.join(sorted(_KEYS))}."
            )
        requests.append(prepare(**call))
    return requests
