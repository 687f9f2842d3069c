"""What the ``dt_*`` commands share: argument validators, JSON and table output, progress.

Commands stay thin (parse, call the API or ``health``, print), so every piece of
parsing and formatting lives here once. Validators raise ``ArgumentTypeError``
so argparse reports them as usage errors before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import difflib
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

from django.core.management.base import CommandError, OutputWrapper
from django.core.serializers.json import DjangoJSONEncoder

from distributed_tasks import registry
from distributed_tasks.exceptions import DistributedTasksError, NotRegistered
from distributed_tasks.types import STORED_STATES
from distributed_tasks.validation import check_name

# -- argument validators ---------------------------------------------------------------


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


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """Report the API's errors (their messages state the rule) as command errors."""
    try:
        yield
    except DistributedTasksError as exc:
        raise CommandError(printable(exc, newlines=True)) from None


# -- output ----------------------------------------------------------------------------


def printable(value: Any, *, newlines: bool = False) -> str:
    """``value`` as text that is safe on a terminal: control and other non-printable
    characters (an escape sequence someone wrote into Redis, say) become ``\\x1b``-style
    escapes. ``newlines`` keeps line breaks (a traceback)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or (newlines and c == "\n") else ascii(c)[1:-1] for c in text
    )


def emit(out: TextIO | OutputWrapper, text: str) -> None:
    """Write ``text`` exactly (a command's OutputWrapper would add a newline of its own)."""
    if isinstance(out, OutputWrapper):
        out.write(text, ending="")
    else:
        out.write(text)
    out.flush()


def dumps(data: Any) -> str:
    """JSON as the views send it: Django's encoder (ISO 8601 datetimes)."""
    return json.dumps(data, cls=DjangoJSONEncoder, indent=2)


def when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def iso_when(value: str | None) -> str:
    """``when`` for an ISO 8601 string (as JSON fields such as ``TaskRun.attempts`` hold)."""
    return when(dt.datetime.fromisoformat(value)) if value else "-"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def write_json_array(out: TextIO | OutputWrapper, items: Iterable[Any]) -> int:
    """Stream a JSON array item by item, so a long listing never sits in memory."""
    count = 0
    previous = None
    emit(out, "[\n")
    for item in items:
        if previous is not None:
            emit(out, f"  {previous},\n")
        previous = json.dumps(item, cls=DjangoJSONEncoder)
        count += 1
    if previous is not None:
        emit(out, f"  {previous}\n")
    emit(out, "]\n")
    return count


class Table:
    """A text table that streams: column widths come from the first ``sample`` rows.

    Later rows wider than a column are cut with an ellipsis, so a long listing is
    printed as it is read instead of after the last row.
    """

    def __init__(
        self,
        out: TextIO | OutputWrapper,
        headers: Sequence[str],
        *,
        sample: int = 200,
        cap: int = 48,
    ):
        self.out = out
        self.headers = list(headers)
        self.sample = sample
        self.cap = cap
        self._pending: list[list[str]] = []
        self.widths: list[int] | None = None
        self.rows = 0

    def add(self, row: Sequence[Any]) -> None:
        cells = ["-" if v is None or v == "" else printable(v) for v in row]
        self.rows += 1
        if self.widths is None:
            self._pending.append(cells)
            if len(self._pending) >= self.sample:
                self._flush()
        else:
            self._line(cells)

    def close(self) -> None:
        if self.widths is None:
            self._flush()

    def _flush(self) -> None:
        columns = zip(self.headers, *self._pending, strict=False)
        self.widths = [min(self.cap, max(len(c) for c in col)) for col in columns]
        self._line(self.headers)
        for cells in self._pending:
            self._line(cells)
        self._pending = []

    def _line(self, cells: Sequence[str]) -> None:
        assert self.widths is not None
        fitted = [
            c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(cells, self.widths, strict=True)
        ]
        line = "  ".join(c.ljust(w) for c, w in zip(fitted, self.widths, strict=True))
        emit(self.out, line.rstrip() + "\n")


class Progress:
    """A one-line progress bar on a terminal; silent when ``enabled`` is false.

    Commands enable it only when stderr is a terminal, so pipes and logs get no
    carriage returns. It redraws at most ten times a second.
    """

    def __init__(
        self, total: int, out: TextIO | OutputWrapper, *, label: str, enabled: bool, width: int = 30
    ):
        self.total = max(total, 0)
        self.out = out
        self.label = label
        self.enabled = enabled and self.total > 0
        self.width = width
        self.done = 0
        self._drawn = 0.0

    def advance(self, step: int = 1) -> None:
        self.done += step
        if self.enabled and (time.monotonic() - self._drawn >= 0.1 or self.done >= self.total):
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        ratio = min(1.0, self.done / self.total)
        filled = int(ratio * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        emit(self.out, f"\r{self.label} [{bar}] {self.done}/{self.total}")

    def close(self) -> None:
        if self.enabled:
            self._draw()
            emit(self.out, "\n")
