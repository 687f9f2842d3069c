"""Testing doubles for code that starts distributed tasks (the seed's Mox behaviour).

- :class:`FakeClient` records starts and answers ``get_status`` as scripted;
  nothing runs unless the test drains it.
- :class:`InlineClient` runs each started task at once, in-process.

Both keep the real client's interface and rules (validation, unique active
names, reuse window), share one bookkeeping (``recording.RecordingClient``), and
need neither Redis nor a database. Install one around the code under test::

    with fake_tasks() as fake:
        client.post("/applications/7/compile")
        fake.assert_started(compile, args=[7], name=ANY)

or use the pytest fixtures ``dt_fake`` / ``dt_inline`` (``pytest_plugin``). The
clients load on first use, so importing this package needs no app registry.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from distributed_tasks.testing.fake import FakeClient, InvalidScript
    from distributed_tasks.testing.inline import InlineClient
    from distributed_tasks.testing.recording import RecordingClient
    from distributed_tasks.testing.records import Run, Start

_LAZY = {
    "FakeClient": "distributed_tasks.testing.fake",
    "InvalidScript": "distributed_tasks.testing.fake",
    "InlineClient": "distributed_tasks.testing.inline",
    "RecordingClient": "distributed_tasks.testing.recording",
    "Run": "distributed_tasks.testing.records",
    "Start": "distributed_tasks.testing.records",
}

__all__ = [
    "FakeClient",
    "InlineClient",
    "InvalidScript",
    "RecordingClient",
    "Run",
    "Start",
    "fake_tasks",
    "inline_tasks",
    "install",
]

C = TypeVar("C")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed_tasks.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


@contextlib.contextmanager
def install(client: C) -> Iterator[C]:
    """Put ``client`` behind the module API (``start_async``, ``get_status``, ...) until exit.

    Installs nest: the innermost wins, and leaving it restores the one outside.
    """
    from distributed_tasks import api

    api._override.append(client)
    try:
        yield client
    finally:
        with contextlib.suppress(ValueError):  # already cleared by a test harness
            api._override.remove(client)


@contextlib.contextmanager
def fake_tasks(**options: Any) -> Iterator[FakeClient]:
    """A fresh :class:`FakeClient` behind the API; ``options`` go to its constructor."""
    from distributed_tasks.testing.fake import FakeClient

    with install(FakeClient(**options)) as fake:
        yield fake


@contextlib.contextmanager
def inline_tasks(**options: Any) -> Iterator[InlineClient]:
    """A fresh :class:`InlineClient` behind the API; ``options`` go to its constructor."""
    from distributed_tasks.testing.inline import InlineClient

    with install(InlineClient(**options)) as inline:
        yield inline
