"""Assertion helpers over recorded starts, in the spirit of the seed's Mox ``expect``.

Criteria compare with ``expected == actual``, so ``unittest.mock.ANY`` (or any
object with a matching ``__eq__``) works for a value the code under test chooses,
such as a generated request id. Functions and callbacks are given as registered
callables or dotted paths and compared by path.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import fields
from typing import Any

from distributed_tasks import registry
from distributed_tasks.exceptions import InvalidOption
from distributed_tasks.testing.records import CALL_FIELDS, Start
from distributed_tasks.validation import StartRequest

OPTION_FIELDS = tuple(f.name for f in fields(StartRequest) if f.name not in CALL_FIELDS)
CRITERIA = tuple(f for f in CALL_FIELDS if f != "function") + OPTION_FIELDS


def _check_criteria(criteria: dict[str, Any]) -> None:
    for key in criteria:
        if key not in CRITERIA:
            close = difflib.get_close_matches(key, CRITERIA, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidOption(
                f"{key!r} is not something a start records.{hint} "
                f"Match on func and {', '.join(CRITERIA)}."
            )


def _expected(key: str, value: Any) -> Any:
    if key in ("args", "kwargs", "data"):
        try:  # as the recorded start holds it: through JSON (tuples are lists, keys str)
            return json.loads(json.dumps(value))
        except (TypeError, ValueError):  # a matcher inside (mock.ANY...): compare as given
            return list(value) if key == "args" and isinstance(value, tuple) else value
    if key == "callback" and callable(value):  # a registered callable; ANY is not
        return registry.resolve(value).path
    return value


def _actual(start: Start, key: str) -> Any:
    return start.options[key] if key in OPTION_FIELDS else getattr(start, key)


def _describe(func: str | None, criteria: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in criteria.items())
    return f"{func or 'any function'}({shown})"


class StartAssertions:
    """Mixed into the in-memory clients; reads ``self.starts``."""

    starts: list[Start]

    def starts_of(self, func: Any = None, **criteria: Any) -> list[Start]:
        """The recorded starts matching every given criterion, oldest first."""
        _check_criteria(criteria)
        path = registry.resolve(func).path if func is not None else None
        wanted = {k: _expected(k, v) for k, v in criteria.items()}
        return [
            s
            for s in list(self.starts)
            if (path is None or s.function == path)
            and all(v == _actual(s, k) for k, v in wanted.items())
        ]

    def assert_started(self, func: Any = None, *, times: int | None = None, **criteria: Any):
        """Assert a matching start was recorded (exactly ``times`` if given); return the last."""
        found = self.starts_of(func, **criteria)
        if (not found and times is None) or (times is not None and len(found) != times):
            path = registry.resolve(func).path if func is not None else None
            expected = "a start" if times is None else f"{times} start(s)"
            raise AssertionError(
                f"Expected {expected} of {_describe(path, criteria)}, found {len(found)}.\n"
                f"{self._recorded()}"
            )
        return found[-1] if found else None

    def assert_not_started(self, func: Any = None, **criteria: Any) -> None:
        """Assert no recorded start matches."""
        found = self.starts_of(func, **criteria)
        if found:
            path = registry.resolve(func).path if func is not None else None
            raise AssertionError(
                f"Expected no start of {_describe(path, criteria)}, found {len(found)}.\n"
                f"{self._recorded()}"
            )

    def _recorded(self) -> str:
        if not self.starts:
            return "No start was recorded."
        lines = "\n".join(f"  {s.describe()}" for s in self.starts)
        return f"Recorded starts:\n{lines}"
