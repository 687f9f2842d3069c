"""What the ``dt_*`` commands print: terminal-safe text, JSON, tables, progress, and the
API's errors as command errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from django.core.management.base import CommandError, OutputWrapper
from django.core.serializers.json import DjangoJSONEncoder

from distributed_tasks.exceptions import DistributedTasksError

LAYOUT = "\n\t"  # the only controls a multi-line value keeps: they cannot rewrite a terminal


def printable(value: Any, *, newlines: bool = False) -> str:
    """``value`` as text that is safe on a terminal: control and other non-printable
    characters (an escape sequence someone wrote into Redis, say) become ``\\x1b``-style
    escapes. ``newlines`` keeps line breaks and tabs, so a traceback or indented JSON
    reads as it was written; a carriage return and every other C0/C1 control character
    (ESC, BEL, CSI...) stay escaped, since they could move the cursor or retitle the
    terminal."""
    text = str(value)
    if text.isprintable():
        return text
    keep = LAYOUT if newlines else ""
    return "".join(c if c.isprintable() or c in keep else ascii(c)[1:-1] for c in text)


def emit(out: TextIO | OutputWrapper, text: str) -> None:
    """Write ``text`` exactly (a command's OutputWrapper would add a newline of its own)."""
    if isinstance(out, OutputWrapper):
        out.write(text, ending="")
    else:
        out.write(text)
    out.flush()


def dumps(data: Any, *, readable: bool = False) -> str:
    """JSON as the views send it: Django's encoder (ISO 8601 datetimes). ``readable``
    keeps non-ASCII characters as they are (``café``, not ``caf\\u00e9``), for text a
    person reads once ``printable`` made it safe; ``--json`` output stays ASCII."""
    return json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=not readable)


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


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """Report the API's errors (their messages state the rule) as command errors."""
    try:
        yield
    except DistributedTasksError as exc:
        raise CommandError(printable(exc, newlines=True)) from None
