"""Checking a start before anything is written.

Every bad input is refused here with a message that says the rule, so a start
either passes all checks or changes nothing (no claim, no row, no message).
"""

from __future__ import annotations

import uuid
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
from distributed_tasks.messages import strict_json
from distributed_tasks.models import NAME_MAX_LENGTH
from distributed_tasks.types import OnConflict, Reuse


def check_name(value: Any, what: str = "name") -> str:
    """Names and task lists: 1-200 printable characters."""
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
    return value


def _choice(value: Any, choices: type, option: str) -> str:
    allowed = [c.value for c in choices]
    if value not in allowed:
        raise InvalidOption(f"{option}={value!r} is not one of {', '.join(map(repr, allowed))}.")
    return value


def _positive(value: Any, option: str, *, integer: bool = False) -> Any:
    kind = int if integer else (int, float)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        noun = "a whole number" if integer else "a number"
        raise InvalidOption(f"{option} must be {noun} greater than 0, got {value!r}.")
    return value


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
) -> StartRequest:
    entry = registry.resolve(func)
    callback_path = registry.resolve(callback).path if callback is not None else ""
    name = uuid.uuid4().hex if name is None else check_name(name)
    check_name(task_list, "task list")
    if isinstance(args, (str, bytes, dict)) or not hasattr(args, "__iter__"):
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
    try:
        payload = strict_json([args, kwargs, data])
    except ValueError as exc:
        raise NotSerializable(
            f"args/kwargs/data of {name!r} cannot be encoded as JSON ({exc}). Pass JSON-compatible "
            "values (str, numbers, bools, None, lists, dicts) such as ids, not objects."
        ) from None
    limit = get_settings().MAX_PAYLOAD_BYTES
    size = len(payload.encode())
    if size > limit:
        raise PayloadTooLarge(
            f"args/kwargs/data of {name!r} are {size} bytes of JSON; MAX_PAYLOAD_BYTES allows "
            f"{limit}. Store large data elsewhere and pass its id."
        )
    timeout = _positive(timeout, "timeout")
    if timeout is None:
        timeout = entry.timeout if entry.timeout is not None else get_settings().DEFAULT_TIMEOUT
    max_attempts = _positive(max_attempts, "max_attempts", integer=True)
    return StartRequest(
        function=entry.path,
        args=args,
        kwargs=kwargs,
        name=name,
        task_list=task_list,
        callback=callback_path,
        on_conflict=_choice(on_conflict, OnConflict, "on_conflict"),
        reuse=_choice(reuse, Reuse, "reuse"),
        timeout=timeout,
        max_attempts=max_attempts or entry.max_attempts or 1,
        retry_backoff=_positive(retry_backoff, "retry_backoff") or 0.0,
        data=data,
        countdown=_positive(countdown, "countdown"),
    )
