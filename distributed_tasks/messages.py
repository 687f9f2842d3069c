"""The broker message that asks a node to execute one attempt of a run.

It is a plain JSON object (never a pickle). It carries the fencing triple
``(run_id, attempt, node)`` plus the call itself, so the worker needs no read
before its fenced QUEUED -> RUNNING update. The function path in it is looked
up in the registry, never imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


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

    @property
    def task_id(self) -> str:
        """Celery task id: one per attempt, so a worker can map requests to runs."""
        return f"{self.run_id}:{self.attempt}"

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    def for_attempt(self, attempt: int, node: str) -> RunMessage:
        return replace(self, attempt=attempt, node=node)

    @classmethod
    def from_body(cls, body: Any) -> RunMessage:
        if not isinstance(body, dict):
            raise MalformedMessage(f"run message must be a JSON object, got {type(body).__name__}")
        try:
            msg = cls(**body)
        except TypeError as exc:
            raise MalformedMessage(f"run message has unexpected fields: {exc}") from None
        checks = (
            isinstance(msg.run_id, str),
            isinstance(msg.attempt, int),
            isinstance(msg.node, str),
            isinstance(msg.function, str),
            isinstance(msg.args, list),
            isinstance(msg.kwargs, dict),
        )
        if not all(checks):
            raise MalformedMessage("run message fields have the wrong types")
        return msg
