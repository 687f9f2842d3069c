"""The broker message that asks a node to execute one attempt of a run.

It is a plain JSON object (never a pickle). It carries the fencing triple
``(run_id, attempt, node)`` plus the call itself, so the worker needs no read
before its fenced QUEUED -> RUNNING update. The function path in it is looked
up in the registry, never imported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass, field, fields, replace
from typing import Any

from distributed_tasks.types import TaskHandle

logger = logging.getLogger("distributed_tasks.messages")

# An escaped NUL: "\u0000" after an even number of backslashes (an odd number
# means the backslash itself was escaped and the text is a literal "\u0000").
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# A surrogate code point in a str: never valid UTF-8 (a pair of them is two code points).
_SURROGATE = re.compile("[\ud800-\udfff]")


def strict_json(value: Any) -> str:
    """``value`` as compact JSON that every store accepts; ``ValueError`` says why not.

    Stricter than ``json.dumps``: NaN and infinities are not JSON, and PostgreSQL's
    JSONB cannot hold a NUL character, so both are refused before anything is written.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    check_nul(text)
    if "\\ud" in text:  # maybe a lone surrogate, which is not UTF-8 and databases refuse
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                "a string contains a lone surrogate (such as '\\ud800'), which is not UTF-8"
            ) from None
    return text


def check_nul(text: str) -> None:
    """``ValueError`` if the JSON ``text`` encodes a NUL (a plain substring test first: fast)."""
    if "\\u0000" in text and _NUL.search(text):
        raise ValueError(r"a string contains a NUL character (\x00), which databases refuse")


def storable(text: str, limit: int | None = None) -> str:
    """``text`` as every database stores it: NUL and lone surrogates escaped, at most
    ``limit`` characters. Used on what the worker writes that user code produced
    (error messages, class names, tracebacks): refusing them would leave the run RUNNING."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None else text[:limit]


# What a worker takes from the row, never from the message (issue 11 item 2).
CALL_FIELDS = ("task_list", "name", "function", "args", "kwargs", "callback", "timeout", "data")


class MalformedMessage(ValueError):
    """A message body that is not a run message of this version."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMessage:
    run_id: str
    attempt: int
    node: str
    task_list: str
    name: str
    function: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callback: str = ""
    queued_at: float = 0.0
    timeout: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    priority: int = 0  # -100..100, higher first among the runs waiting on a node

    @property
    def task_id(self) -> str:
        """Celery task id: one per attempt, so a worker can map requests to runs."""
        return f"{self.run_id}:{self.attempt}"

    def handle(self) -> TaskHandle:
        """What ``start_async`` returns for this attempt."""
        return TaskHandle(
            name=self.name,
            task_list=self.task_list,
            run_id=self.run_id,
            node=self.node,
            attempt=self.attempt,
            queued_at=dt.datetime.fromtimestamp(self.queued_at, tz=dt.UTC)
            if self.queued_at
            else None,
        )

    def differences(self, row: RunMessage) -> list[str]:
        """Fields of the call in which this message disagrees with its row's message."""
        mine, theirs = self.call(), row.call()
        return [key for key in CALL_FIELDS if mine[key] != theirs[key]]

    def call(self) -> dict[str, Any]:
        """What a worker executes (the rest only names the run and attempt)."""
        return {key: getattr(self, key) or None for key in CALL_FIELDS}

    def to_body(self) -> dict[str, Any]:
        # Shallow (the body is serialized at once): dataclasses.asdict deep-copies.
        return {key: getattr(self, key) for key in _FIELDS}

    def for_attempt(self, attempt: int, node: str) -> RunMessage:
        return replace(self, attempt=attempt, node=node)

    @classmethod
    def from_body(cls, body: Any) -> RunMessage:
        if not isinstance(body, dict):
            raise MalformedMessage(f"run message must be a JSON object, got {type(body).__name__}")
        if unknown := body.keys() - _FIELD_SET:
            # A newer release's field, during a rolling upgrade: what runs is the row's
            # call anyway, so it is left out, not the run (dropped, it would never run).
            _note_unknown(unknown)
            body = {key: value for key, value in body.items() if key in _FIELD_SET}
        try:
            msg = cls(**body)
        except TypeError as exc:
            raise MalformedMessage(f"run message lacks fields: {exc}") from None
        checks = {
            "run_id (a run id: a UUID)": run_hex(msg.run_id) is not None,
            "attempt (a whole number from 1)": isinstance(msg.attempt, int)
            and not isinstance(msg.attempt, bool)
            and 1 <= msg.attempt <= ATTEMPT_MAX,
            "node (a string)": isinstance(msg.node, str),
            "function (a string)": isinstance(msg.function, str),
            "args (a list)": isinstance(msg.args, list),
            "kwargs (an object)": isinstance(msg.kwargs, dict),
        }
        if wrong := [field for field, ok in checks.items() if not ok]:
            raise MalformedMessage(f"run message has wrong fields: {', '.join(wrong)}")
        return msg


ATTEMPT_MAX = 2**31 - 1  # the attempt column's range on every backend


def run_hex(value: Any) -> str | None:
    """The run id ``value`` names, as the 32 hex digits rows use; None when it is not one
    (a message or a claim not written by us: it would raise the database's own error)."""
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value).hex
    except ValueError:
        return None


_FIELDS = tuple(f.name for f in fields(RunMessage))
_FIELD_SET = frozenset(_FIELDS)
_unknown_seen: set[str] = set()


def _note_unknown(unknown: set[str]) -> None:
    """Log, once per field and process, that a message held fields this release lacks."""
    if len(_unknown_seen) < 100 and (new := {str(key) for key in unknown} - _unknown_seen):
        _unknown_seen.update(new)  # at most ~100: anyone with broker access names them
        logger.warning(
            "Run messages hold fields this release does not know (%s): they are ignored "
            "(a newer release sends them?); the run executes what its row holds",
            ", ".join(sorted(new))[:300],
        )
