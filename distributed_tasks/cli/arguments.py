"""The ``dt_*`` commands' arguments: argparse ``type=`` validators and shared options.

Validators raise ``ArgumentTypeError`` so argparse reports them as usage errors
before anything runs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import socket
from collections.abc import Callable
from typing import Any

from distributed_tasks import registry
from distributed_tasks.exceptions import DistributedTasksError, NotRegistered
from distributed_tasks.types import STORED_STATES
from distributed_tasks.validation import check_name


def _json(value: str, kind: type, noun: str, example: str) -> Any:
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r} is not valid JSON ({exc}); pass {noun} such as {example}"
        ) from None
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"{value[:80]!r}... nests too deeply; pass {noun} such as {example}"
        ) from None
    if not isinstance(data, kind):
        raise argparse.ArgumentTypeError(
            f"{value!r} is JSON {type(data).__name__}; pass {noun} such as {example}"
        )
    return data


def json_list(value: str) -> list[Any]:
    return _json(value, list, "a JSON list", "'[1, \"two\"]'")


def json_object(value: str) -> dict[str, Any]:
    return _json(value, dict, "a JSON object", "'{\"retries\": 3}'")


def name_type(what: str, *, expand_host: bool = False) -> Callable[[str], str]:
    """An argparse ``type=`` for names (1-200 printable characters); ``%h`` = host name."""

    def validate(value: str) -> str:
        if expand_host:
            value = value.replace("%h", socket.gethostname())
        try:
            return check_name(value, what)
        except DistributedTasksError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    validate.__name__ = what.replace(" ", "_")  # argparse names the type in its errors
    return validate


run_name = name_type("name")
task_list_name = name_type("task list")
node_name = name_type("node name", expand_host=True)
beat_name = name_type("beat name", expand_host=True)


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return number


def port(value: str) -> int:
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1 to 65535)")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a number of seconds greater than 0")
    return number


def registered_task(value: str) -> str:
    """A dotted path on the allow-list; the registry is only looked up, never imported from."""
    try:
        return registry.resolve(value).path
    except NotRegistered:
        close = difflib.get_close_matches(value, registry.registered_paths(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a registered distributed task.{hint} Only functions decorated "
            "with @distributed_task in an installed app's tasks.py can be started."
        ) from None


STATE_ALIASES = {"ACTIVE": ("QUEUED", "RUNNING"), "FINISHED": ("DONE", "FAILED")}


def run_states(value: str) -> tuple[str, ...]:
    """``QUEUED``, ``running``, ``active`` (QUEUED+RUNNING), ``finished`` (DONE+FAILED)."""
    key = value.upper()
    stored = [s for s, _label in STORED_STATES]
    if key in STATE_ALIASES:
        return STATE_ALIASES[key]
    if key in stored:
        return (key,)
    choices = ", ".join([*stored, *(a.lower() for a in STATE_ALIASES)])
    raise argparse.ArgumentTypeError(f"{value!r} is not a run state; use one of {choices}")


def add_task_list(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "--task-list",
        type=task_list_name,
        default="default",
        help=help or "Task list of the name (default: 'default').",
    )


def add_name_arguments(parser: argparse.ArgumentParser) -> None:
    """The run name, ``--task-list`` and ``--json``: what commands about one name take."""
    parser.add_argument("name", type=run_name, help="The run name.")
    add_task_list(parser)
    add_json_flag(parser)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="Print JSON instead of text (for scripts)."
    )
