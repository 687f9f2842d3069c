"""How the admin pages show values: states, times, durations, errors, JSON, history.

One place for the formatting every page shares, so the runs list, a run's page, the
periodic list and the cluster page show a time, a state or an error the same way.
Everything returned here is escaped HTML (``format_html``), never raw user text:
errors and tracebacks come from user code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from distributed_tasks.types import Reason, State

EMPTY = "-"

# Readable on the admin's light and dark themes alike.
STATE_COLOURS = {
    State.QUEUED: "#808080",
    State.RUNNING: "#2b7bb9",
    State.DONE: "#2e8540",
    State.FAILED: "#ba2121",
}
# Periodic outcomes and history entries use the run colours; SKIPPED and MOVED ran nothing.
OUTCOME_COLOURS = {
    **{state.value: colour for state, colour in STATE_COLOURS.items()},
    "SKIPPED": STATE_COLOURS[State.QUEUED],
    "MOVED": STATE_COLOURS[State.QUEUED],
}

REASONS = dict(Reason.choices)


def state_badge(state: str, reason: str = "") -> SafeString:
    """The state in its colour; the reason of a failure shows on hover."""
    state = State(state)
    return format_html(
        '<strong class="dt-state dt-state-{}" style="color: {}" title="{}">{}</strong>',
        state.value.lower(),
        STATE_COLOURS[state],
        REASONS.get(reason, reason),
        state.label,
    )


def progress_bar(fraction: float | None, message: str, *, full: bool = False) -> SafeString | str:
    """A running run's progress: a bar and its percentage, the message on hover (``full``:
    beside it, for the run's page)."""
    if fraction is None and not message:
        return ""
    percent = "" if fraction is None else f"{fraction:.0%}"
    title = " — ".join(part for part in (percent, message) if part)
    bar = "" if fraction is None else format_html(
        '<progress class="dt-progress" max="1" value="{}" title="{}"></progress>', fraction, title
    )  # fmt: skip
    shown = title if full else percent
    return format_html('<span class="dt-progress-note" title="{}">{}</span>{}', title, shown, bar)


def run_state(run: Any) -> SafeString:
    """The runs list's state: the badge, a running run's progress, and a later attempt's
    number (the list has no attempt column)."""
    badge = state_badge(run.state, run.reason)
    if run.state == State.RUNNING:
        badge = format_html("{}{}", badge, progress_bar(run.progress, run.progress_message))
    if run.attempt <= 1:
        return badge
    return format_html('{}<span class="dt-attempt-note">attempt {}</span>', badge, run.attempt)


def run_progress(run: Any) -> SafeString | str:
    """A run's page: the bar, percentage and message, then the data as JSON."""
    bar = progress_bar(run.progress, run.progress_message, full=True)
    data = pretty_json(run.progress_data)
    return format_html("{}{}", bar, data or "") if bar or data else ""


def cancel_summary(run: Any) -> SafeString | str:
    """When a cancel was asked of a run, by whom, and a forced cancel's deadline."""
    if run.cancel_requested_at is None:
        return ""
    who = f" by {run.cancel_requested_by}" if run.cancel_requested_by else ""
    deadline = run.cancel_deadline
    forced = f"; forced at {timezone.localtime(deadline):%H:%M:%S}" if deadline else ""
    return format_html("{}{}{}", moment(run.cancel_requested_at), who, forced)


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def age(seconds: float) -> str:
    """A relative age, coarse as a person reads it: "12 s ago", "in 3 min", "2 days ago"."""
    amount = abs(seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if amount >= size:
            count = int(amount // size)
            text = f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}"
            break
    else:
        text = f"{int(amount)} s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def moment(value: dt.datetime | None, now: dt.datetime | None = None) -> SafeString | str:
    """A time with seconds and its relative age; the full date and zone on hover.

    Today's times show the clock only, older ones the date too.
    """
    if value is None:
        return EMPTY
    now = now or timezone.now()
    local = timezone.localtime(value)
    clock = "%H:%M:%S" if local.date() == timezone.localtime(now).date() else "%Y-%m-%d %H:%M:%S"
    return format_html(
        '<time class="dt-time" datetime="{}" title="{}">{}</time> <span class="dt-age">{}</span>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime(clock),
        age((now - value).total_seconds()),
    )


def time_column(field: str, description: str) -> Callable[[Any, Any], SafeString | str]:
    """A ModelAdmin column (or read-only field) showing ``field`` as a ``moment``."""

    def column(model_admin: Any, obj: Any) -> SafeString | str:
        return moment(getattr(obj, field))

    column.__name__ = field
    return admin.display(description=description, ordering=field)(column)


def first_line(text: str, limit: int = 70) -> str:
    """The first line of an error, cut at ``limit`` characters with an ellipsis."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def shortened(text: str, width: int) -> SafeString | str:
    """``text`` cut to ``width`` characters with an ellipsis, the whole of it on hover."""
    if len(text) <= width:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: width - 1])


def dotted_tail(path: str) -> SafeString:
    """``module.function`` of a dotted path: the package path is on hover."""
    return format_html('<span title="{}">{}</span>', path, ".".join(path.rsplit(".", 2)[-2:]))


def error_summary(error_type: str, error: str, limit: int = 70) -> SafeString | str:
    """``Type: first line`` of an error, the whole message on hover."""
    if not error and not error_type:
        return EMPTY
    kind = error_type.rsplit(".", 1)[-1]
    text = f"{kind}: {error}" if kind else error
    return format_html('<span class="dt-error" title="{}">{}</span>', text, first_line(text, limit))


def preformatted(text: str) -> SafeString | None:
    """Text as the user's code or the worker produced it, escaped, in a ``<pre>``.

    None when there is nothing to show: the caller puts the admin's empty value there
    (read-only fields, unlike list columns, would print "None").
    """
    if not text:
        return None
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def pretty_json(value: Any) -> SafeString | None:
    if value is None:
        return None
    return preformatted(json.dumps(value, indent=2, ensure_ascii=False))


def code_spans(text: str) -> SafeString:
    """Text whose `backticked` parts are shown as code (the rest escaped)."""
    parts = re.split(r"`([^`]+)`", text)
    shown = (format_html("<code>{}</code>", p) if i % 2 else p for i, p in enumerate(parts))
    return format_html_join("", "{}", ((part,) for part in shown))


def _parsed(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def history_table(history: Iterable[Mapping[str, Any]]) -> SafeString:
    """Every attempt of a run, oldest first: node, outcome, times, error (``TaskRun.history``)."""
    rows = []
    for entry in history:
        started, ended = _parsed(entry["started_at"]), _parsed(entry["ended_at"])
        took = format_seconds((ended - started).total_seconds()) if started and ended else EMPTY
        rows.append(
            format_html(
                '<tr class="dt-attempt"><td>{}</td><td>{}</td><td><strong style="color: {}">{}'
                "</strong> {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                entry["attempt"],
                entry["node"] or EMPTY,
                OUTCOME_COLOURS.get(entry["state"], "inherit"),
                entry["state"],
                entry["reason"],
                moment(started),
                took,
                error_summary(entry["error_type"], entry["error"], limit=120),
            )
        )
    return format_html(
        '<table class="dt-history"><thead><tr><th>attempt</th><th>node</th><th>outcome</th>'
        "<th>started</th><th>took</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "{}", ((row,) for row in rows)),
    )
