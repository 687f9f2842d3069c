"""Structured log fields for runs: every record of ours about a run says which run.

Log lines name a run in their text for people; log pipelines need the same facts as
fields. ``run_extra(run, action)`` builds the ``extra`` dict our modules pass to a
logger call, with the same keys everywhere:

    ``run_id``, ``task_name``, ``task_list``, ``node``, ``attempt``, ``function``, ``action``

(``task_name``, not ``name``: ``LogRecord.name`` is the logger's name and ``logging``
refuses to overwrite it). Anything with those attributes works as ``run``: a
``RunMessage``, ``TaskHandle``, ``RunInfo`` or ``TaskRun`` (whose ``id`` is the run id),
or a message body (a dict with those keys).

Inside a run, ``bound(run)`` makes the run current for the pool process; the
``RunContextFilter`` then adds the same fields to *any* record passing a handler it is
installed on, including the user's own task logging. ``JsonFormatter`` writes one JSON
object per record, fields included; README.md shows a ``LOGGING`` config using both.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

RUN_FIELDS = ("run_id", "task_name", "task_list", "node", "attempt", "function")

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "distributed_tasks_run", default=None
)


def run_fields(run: Any) -> dict[str, Any]:
    """The run's identifying fields, read from whatever object describes it."""
    if isinstance(run, Mapping):  # a message body
        get = run.get
    else:

        def get(key: str) -> Any:
            return getattr(run, key, None)

    run_id = get("run_id") or get("id")
    return {
        "run_id": str(run_id) if run_id is not None else None,
        "task_name": get("name"),
        "task_list": get("task_list"),
        "node": get("node") or None,
        "attempt": get("attempt"),
        "function": get("function"),
    }


def run_extra(run: Any, action: str | None = None, **more: Any) -> dict[str, Any]:
    """``extra=`` for a log call about ``run``: its fields, the action, and ``more``."""
    fields = run_fields(run)
    if action is not None:
        fields["action"] = action
    fields.update(more)
    return fields


class RunLogAdapter(logging.LoggerAdapter):
    """A logger bound to one run: each call gets the run's fields merged into ``extra``.

    The call's own ``extra`` wins on a clash, so ``log.info(..., extra={"action": "x"})``
    works as with a plain logger.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def run_logger(logger: logging.Logger | str, run: Any) -> RunLogAdapter:
    """``logger`` (or the logger of that name) with ``run``'s fields on every record."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return RunLogAdapter(logger, run_fields(run))


def bind(run: Any) -> contextvars.Token:
    """Make ``run`` the current run (until ``unbind(token)``): for hooks that open and
    close in two calls, as Celery's ``task_prerun`` / ``task_postrun`` do."""
    return _current.set(run_fields(run))


def unbind(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def bound(run: Any) -> Iterator[None]:
    """Make ``run`` the current run of this thread/task while the block executes."""
    token = bind(run)
    try:
        yield
    finally:
        unbind(token)


def current() -> Mapping[str, Any] | None:
    """The fields of the run being executed here, or None outside a run."""
    return _current.get()


class RunContextFilter(logging.Filter):
    """Adds the current run's fields to records that do not already carry them.

    Install it on a handler (filters on a logger do not see records of its children),
    and records from any logger, the user's task code included, say which run they
    came from.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


_RUN_FILTER = RunContextFilter()
_tagged = 0  # how many loggers existed when ours were last tagged


def tag_our_loggers() -> None:
    """Put ``RunContextFilter`` on every ``distributed_tasks.*`` logger, so each record of
    ours emitted during a run names it whatever handlers the project configured.

    A filter on a logger sees only the records created on that very logger, hence one
    per module logger; loggers created since the last call are tagged on the next one.
    """
    global _tagged
    loggers = logging.root.manager.loggerDict
    if len(loggers) == _tagged:
        return
    for name, logger in list(loggers.items()):
        if name.startswith("distributed_tasks") and isinstance(logger, logging.Logger):
            logger.addFilter(_RUN_FILTER)  # once: addFilter skips a filter already there
    _tagged = len(loggers)


# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)
